//! Load for the HTTP benchmarks: keep-alive clients sending for a while, each request's latency kept,
//! and a no-op axum handler behind the same stack as the ceiling to compare with. Server and clients
//! share one process and its cores, the same way for every target, so ratios compare like with like.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keep-alive clients at once (`PITBOSS_BENCH_CLIENTS`, default 16; 1 gives the latency of a request
/// alone).
pub fn clients() -> usize {
    std::env::var("PITBOSS_BENCH_CLIENTS").ok().and_then(|s| s.parse().ok()).filter(|n| *n >= 1).unwrap_or(16)
}

/// Runs a benchmark's body on a two-thread runtime, with each measurement's length in seconds
/// (`PITBOSS_BENCH_SECONDS`, default 5).
pub fn run<F: std::future::Future<Output = ()>>(body: impl FnOnce(f64) -> F) {
    let seconds: f64 =
        std::env::var("PITBOSS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(body(seconds));
}

pub struct Measured {
    pub name: String,
    /// Units (events, messages) per second.
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `clients()` clients for `seconds`; `request(client, n)` builds the request for units n.. n + `units`,
/// which must answer 2xx.
pub async fn load<F>(name: &str, seconds: f64, units: usize, request: F) -> Measured
where
    F: Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients())
        .map(|_| {
            let (request, counter) = (request.clone(), counter.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let first = counter.fetch_add(units as u64, Ordering::Relaxed);
                    let t = Instant::now();
                    let r = request(&http, first).send().await.expect("request");
                    assert!(r.status().is_success(), "{:?}", r.text().await);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    Measured {
        name: name.to_string(),
        per_s: (all.len() * units) as f64 / elapsed,
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// The ceiling: an axum handler at `path` that answers 202 without doing anything, on this runtime.
pub async fn noop_server(path: &str) -> String {
    let app = axum::Router::new().route(
        path,
        axum::routing::post(|_body: axum::body::Bytes| async { (axum::http::StatusCode::ACCEPTED, "{}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Prints the results with their ratio to the first (the ceiling).
pub fn print(title: &str, unit: &str, results: &[Measured]) {
    let ceiling = results[0].per_s;
    println!();
    println!("{title}");
    println!("  {:<36} {:>12} {:>10} {:>10} {:>9}", "target", format!("{unit}/s"), "p50", "p99", "vs no-op");
    for r in results {
        println!(
            "  {:<36} {:>12.0} {:>8.2}ms {:>8.2}ms {:>8.1}%",
            r.name,
            r.per_s,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            100.0 * r.per_s / ceiling
        );
    }
}
