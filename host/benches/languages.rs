//! `cargo bench -p pitboss --bench languages`: the same segment plugin (`dormant-depositor`) in Rust,
//! Python (componentize-py) and JavaScript (componentize-js), measured in one run: component size,
//! compile time, time to the first decision after a restart (compiled code loaded from the disk cache),
//! the cost of a decision with a fresh isolated instance, and the per-profile cost of the batch form (one
//! instance per 1024 profiles) — each with its ratio to Rust.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pitboss::plugins::{CallOptions, Runtime, RuntimeConfig, World};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:9.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let profile = support::profile("p_bench");
    let opts = CallOptions::new(World::Segment, support::now());
    let cache = tempfile::tempdir().unwrap();
    let plugins: Vec<(&str, Vec<u8>)> = vec![
        ("Rust", support::wasm("dormant-depositor")),
        ("Python", support::guest("python", "dormant-depositor")),
        ("JavaScript", support::guest("js", "dormant-depositor")),
    ];
    let mut rows = Vec::new();
    for (language, bytes) in &plugins {
        // Compile (no cache), which also writes the disk cache.
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let t = Instant::now();
        let plugin = rt.load(bytes).unwrap();
        let compile = t.elapsed();
        // A restart: a new runtime loads the compiled code from disk, then decides once.
        let restarted = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_path_buf()),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let t = Instant::now();
        let p2 = restarted.load(bytes).unwrap();
        let first = restarted.segment(&p2, &opts, &profile, None);
        let first_decision = t.elapsed();
        assert!(first.outcome.is_ok());
        // Steady state: a fresh instance per decision.
        let n = if *language == "Rust" { 5000 } else { 300 };
        for _ in 0..n / 10 {
            rt.segment(&plugin, &opts, &profile, None).outcome.unwrap();
        }
        let samples: Vec<Duration> = (0..9)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n / 9 {
                    rt.segment(&plugin, &opts, &profile, None).outcome.unwrap();
                }
                t.elapsed() / (n / 9) as u32
            })
            .collect();
        let run = rt.segment(&plugin, &opts, &profile, None);
        // The batch form: one instance for a chunk of 1024 profiles, with the fuel and time of its decisions.
        let population: Vec<_> = (0..4096).map(|i| support::profile(&format!("p_{i}"))).collect();
        let batch = median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    rt.segment_batch(&plugin, &opts, &population).outcome.unwrap();
                    t.elapsed() / population.len() as u32
                })
                .collect(),
        );
        rows.push((
            language,
            bytes.len(),
            compile,
            first_decision,
            median(samples),
            run.usage.fuel,
            run.usage.peak_memory_bytes,
            batch,
        ));
    }
    let rust = rows[0];
    println!();
    println!("dormant-depositor in three languages (fresh isolated instance per decision, fuel on):");
    println!(
        "  {:<11} {:>10} {:>13} {:>22} {:>13} {:>9} {:>11} {:>12} {:>20}",
        "language",
        "size",
        "compile",
        "first decision (cache)",
        "per decision",
        "vs Rust",
        "fuel",
        "peak memory",
        "batch, per profile"
    );
    for (language, size, compile, first, per, fuel, peak, batch) in &rows {
        println!(
            "  {:<11} {:>7.1} MB {} {:>22} {} {:>8.0}× {:>11} {:>9.1} MB {:>14.2} µs ({:.0}×)",
            language,
            *size as f64 / 1e6,
            ms(*compile),
            ms(*first),
            ms(*per),
            per.as_secs_f64() / rust.4.as_secs_f64(),
            fuel,
            *peak as f64 / (1 << 20) as f64,
            batch.as_secs_f64() * 1e6,
            batch.as_secs_f64() / rust.7.as_secs_f64()
        );
    }
}
