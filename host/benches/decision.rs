//! `cargo bench -p pitboss --bench decision`: the `dormant-depositor` decision measured in one run as
//! (a) native Rust code of the same rule, (b) Wasm with a fresh isolated instance per decision (fuel on),
//! (c) the batch form over 100k profiles — each with its ratio to (a) — plus, to see where (b) goes,
//! the cost of a fresh store + instance without any call.
//!
//! Figures are medians of several samples; the machine is noisy, the ratios less so.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use pitboss::model::{Channel, Membership, Profile};
use pitboss::plugins::{CallOptions, Limits, World};

const POPULATION: usize = 100_000;

/// The rule of plugins/dormant-depositor, natively.
fn native_rule(p: &Profile) -> Membership {
    let f = &p.features;
    let out = |r: String| Membership { member: false, score: None, reason: Some(r) };
    if p.jurisdiction != "DE" {
        out(format!("jurisdiction {} is not DE", p.jurisdiction))
    } else if !p.consents.channels.contains(&Channel::Email) {
        out("no e-mail consent".into())
    } else if f.dep_count_30d > 0 {
        out(format!("{} deposits in 30 days", f.dep_count_30d))
    } else if f.days_since_last_seen <= 7 {
        out(format!("last seen {} days ago", f.days_since_last_seen))
    } else {
        Membership {
            member: true,
            score: None,
            reason: Some(format!("no deposit in 30 days, last seen {} days ago", f.days_since_last_seen)),
        }
    }
}

/// A varied, deterministic population.
fn population() -> Vec<Profile> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..POPULATION)
        .map(|i| {
            let mut p = support::profile(&format!("p_{i:06}"));
            let r = next();
            p.jurisdiction = ["DE", "DE", "GB", "NL", "MT"][(r % 5) as usize].into();
            p.features.dep_count_30d = ((r >> 8) % 3) as u32;
            p.features.days_since_last_seen = ((r >> 16) % 30) as u32;
            p.features.churn_score = ((r >> 24) % 100) as f64 / 100.0;
            if (r >> 32) % 4 == 0 {
                p.consents.channels.clear();
            }
            p
        })
        .collect()
}

/// Median time per iteration over `samples` samples of `iters` iterations.
fn per_iter(samples: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iters.min(1000) {
        f();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters as u32
        })
        .collect();
    times.sort();
    times[samples / 2]
}

fn show(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 { format!("{ns:8.1} ns") } else { format!("{:8.2} µs", ns / 1_000.0) }
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported, everything runs.
    let people = population();
    let rt = support::runtime();
    let plugin = support::load(&rt, "dormant-depositor");
    let opts = CallOptions::new(World::Segment, support::now());
    let batch_opts =
        CallOptions { limits: Limits { fuel: Limits::CEILING.fuel, ..opts.limits }, ..opts.clone() };

    // The same answers first: the comparison is only fair if both compute the same thing.
    let wasm_batch = rt.segment_batch(&plugin, &batch_opts, &people).outcome.expect("batch");
    for (p, m) in people.iter().zip(&wasm_batch) {
        assert_eq!(&native_rule(p), m, "native and Wasm disagree on {}", p.player_id);
    }
    let members = wasm_batch.iter().filter(|m| m.member).count();

    let mut i = 0;
    let native = per_iter(15, 100_000, || {
        i = (i + 1) % POPULATION;
        black_box(native_rule(black_box(&people[i])));
    });
    let mut i = 0;
    let fresh = per_iter(15, 2_000, || {
        i = (i + 1) % POPULATION;
        let run = rt.segment(&plugin, &opts, black_box(&people[i]), None);
        black_box(run.outcome.unwrap());
    });
    let instantiate = per_iter(15, 2_000, || rt.instantiate_only(&plugin, &opts).unwrap());
    let fuel = rt.segment(&plugin, &opts, &people[0], None).usage.fuel;
    let batch_total = per_iter(5, 1, || {
        black_box(rt.segment_batch(&plugin, &batch_opts, &people).outcome.unwrap());
    });
    let batch = batch_total / POPULATION as u32;

    let ratio = |d: Duration| d.as_nanos() as f64 / native.as_nanos().max(1) as f64;
    println!();
    println!("dormant-depositor, {POPULATION} varied profiles ({members} members), per decision (median):");
    println!("  (a) native Rust, same rule                     {}   1.0×", show(native));
    println!(
        "  (b) Wasm, fresh isolated instance, fuel on     {}   {:.0}×   ({fuel} fuel)",
        show(fresh),
        ratio(fresh)
    );
    println!("      of which a fresh store + instance, no call {}", show(instantiate));
    println!(
        "  (c) Wasm batch form, {POPULATION} profiles          {}   {:.1}×   ({:.2} M profiles/s, {} instances)",
        show(batch),
        ratio(batch),
        1e3 / batch.as_nanos() as f64,
        POPULATION.div_ceil(pitboss::plugins::BATCH_CHUNK)
    );
    println!("  whole batch of {POPULATION}                       {}", show(batch_total));
}
