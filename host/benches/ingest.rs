//! `cargo bench -p pitboss --bench ingest`: load on `POST /v1/events` over real HTTP with keep-alive —
//! single events and batches of 100, against SQLite and PostgreSQL — and, in the same run, a no-op axum
//! handler behind the same stack as the ceiling. Server and clients share this process and its cores,
//! the same way for every target, so the ratios compare like with like.
//!
//! PostgreSQL comes from `PITBOSS_TEST_POSTGRES` (default: the local server); it is skipped if absent.
//! `PITBOSS_BENCH_SECONDS` sets the duration of each measurement (default 5).

#[path = "../../tests/support/mod.rs"]
mod support;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::load::{Measured, clients, load, noop_server, print};
use support::server::{Backend, TestDb};

fn event(n: u64) -> Value {
    json!({"event_id": format!("ev_{n}"), "event_type": "bet.placed", "player_id": format!("p_{}", n % 1000),
           "brand_id": "A", "occurred_at": "2026-11-23T12:00:00Z",
           "payload": {"bet_id": format!("b_{n}"), "stake_minor": 100, "currency": "EUR", "provider": "studio_x", "category": "slots"}})
}

/// Posts `batch` events per request (1: a single event).
async fn events(name: &str, url: String, key: String, batch: usize, seconds: f64) -> Measured {
    load(name, seconds, batch, move |http, first| {
        let body = if batch == 1 {
            event(first)
        } else {
            Value::Array((first..first + batch as u64).map(event).collect())
        };
        http.post(&url).bearer_auth(&key).json(&body)
    })
    .await
}

async fn pitboss_server(backend: Backend) -> Option<(TestDb, String, String)> {
    let test_db = TestDb::new(backend).await?;
    let db = pitboss::store::Db::open(&test_db.url).await.unwrap();
    let key = pitboss::auth::keys::create(
        &db,
        &pitboss::auth::keys::cli_actor(),
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
            require_impact: vec![],
            config: None,
            settings: Default::default(),
            clock: Default::default(),
        };
        pitboss::server::run(db, contacts_key, &options, listener, std::future::pending()).await
    });
    Some((test_db, url, key))
}

fn main() {
    support::load::run(|seconds| async move {
        let mut results = Vec::new();
        let noop = noop_server("/v1/events").await;
        results.push(events("no-op axum handler (ceiling)", noop, "x".into(), 1, seconds).await);
        let mut keep = Vec::new();
        for (backend, label) in [(Backend::Sqlite, "SQLite"), (Backend::Postgres, "PostgreSQL")] {
            let Some((db, url, key)) = pitboss_server(backend).await else {
                println!("{label}: skipped (not reachable)");
                continue;
            };
            results
                .push(events(&format!("{label}, single events"), url.clone(), key.clone(), 1, seconds).await);
            results.push(events(&format!("{label}, batches of 100"), url, key, 100, seconds).await);
            keep.push(db);
        }
        let title = format!(
            "POST /v1/events, {} keep-alive clients, {seconds} s each, server and clients in one process:",
            clients()
        );
        print(&title, "events", &results);
        drop(keep);
    });
}
