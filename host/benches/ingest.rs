//! `cargo bench -p pitboss --bench ingest`: load on `POST /v1/events` over real HTTP with keep-alive —
//! single events and batches of 100, against SQLite and PostgreSQL — and, in the same run, a no-op axum
//! handler behind the same stack as the ceiling. Server and clients share this process and its cores,
//! the same way for every target, so the ratios compare like with like.
//!
//! PostgreSQL comes from `PITBOSS_TEST_POSTGRES` (default: the local server); it is skipped if absent.
//! `PITBOSS_BENCH_SECONDS` sets the duration of each measurement (default 5).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::server::{Backend, TestDb};

const CLIENTS: usize = 16;

struct Result {
    name: String,
    events_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn event(n: u64) -> Value {
    json!({"event_id": format!("ev_{n}"), "event_type": "bet.placed", "player_id": format!("p_{}", n % 1000),
           "brand_id": "A", "occurred_at": "2026-11-23T12:00:00Z",
           "payload": {"bet_id": format!("b_{n}"), "stake_minor": 100, "currency": "EUR", "provider": "studio_x", "category": "slots"}})
}

/// `CLIENTS` keep-alive clients posting for `seconds`; `batch` events per request (1: a single event).
async fn load(name: &str, url: String, key: String, batch: usize, seconds: f64) -> Result {
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, key, counter) = (url.clone(), key.clone(), counter.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let first = counter.fetch_add(batch as u64, Ordering::Relaxed);
                    let body = if batch == 1 {
                        event(first)
                    } else {
                        Value::Array((first..first + batch as u64).map(event).collect())
                    };
                    let t = Instant::now();
                    let r = http.post(&url).bearer_auth(&key).json(&body).send().await.expect("request");
                    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
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
    Result {
        name: name.to_string(),
        events_per_s: (all.len() * batch) as f64 / elapsed,
        p50: all[all.len() / 2],
        p99: all[all.len() * 99 / 100],
    }
}

/// The ceiling: an axum handler that answers 202 without doing anything, on the same runtime.
async fn noop_server() -> String {
    let app = axum::Router::new().route(
        "/v1/events",
        axum::routing::post(|_body: axum::body::Bytes| async { (axum::http::StatusCode::ACCEPTED, "{}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn pitboss_server(backend: Backend) -> Option<(TestDb, String, String)> {
    let test_db = TestDb::new(backend).await?;
    let db = pitboss::store::Db::open(&test_db.url).await.unwrap();
    let key = pitboss::store::keys::create(
        &db,
        &pitboss::store::keys::cli_actor(),
        Role::Platform,
        &["A".to_string()],
        "bench",
    )
    .await
    .unwrap()
    .1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
    let (contacts_key, _) = pitboss::store::contacts::ContactsKey::generate();
    let data_dir = tempfile::tempdir().unwrap().keep();
    tokio::spawn(async move {
        let options = pitboss::config::ServeOptions {
            data_dir,
            code_cache: None,
            dual_approval: Vec::new(),
            config: None,
            settings: Default::default(),
            clock: Default::default(),
        };
        pitboss::server::run(db, contacts_key, &options, listener, std::future::pending()).await
    });
    Some((test_db, url, key))
}

fn main() {
    let seconds: f64 =
        std::env::var("PITBOSS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut results = Vec::new();
        let noop = noop_server().await;
        results.push(load("no-op axum handler (ceiling)", noop, "x".into(), 1, seconds).await);
        let mut keep = Vec::new();
        for (backend, label) in [(Backend::Sqlite, "SQLite"), (Backend::Postgres, "PostgreSQL")] {
            let Some((db, url, key)) = pitboss_server(backend).await else {
                println!("{label}: skipped (not reachable)");
                continue;
            };
            results.push(load(&format!("{label}, single events"), url.clone(), key.clone(), 1, seconds).await);
            results.push(load(&format!("{label}, batches of 100"), url, key, 100, seconds).await);
            keep.push(db);
        }
        let ceiling = results[0].events_per_s;
        println!();
        println!("POST /v1/events, {CLIENTS} keep-alive clients, {seconds} s each, server and clients in one process:");
        println!("  {:<32} {:>12} {:>10} {:>10} {:>9}", "target", "events/s", "p50", "p99", "vs no-op");
        for r in &results {
            println!(
                "  {:<32} {:>12.0} {:>8.2}ms {:>8.2}ms {:>8.1}%",
                r.name,
                r.events_per_s,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3,
                100.0 * r.events_per_s / ceiling
            );
        }
        drop(keep);
    });
}
