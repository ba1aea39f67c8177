//! `cargo bench -p pitboss --bench send`: load on `POST /v1/messaging/send` over real HTTP — the gate,
//! the player's send lock and the outbox write per request — on SQLite and PostgreSQL, with a no-op axum
//! handler in the same run as the ceiling. Two kinds of message over 1000 players: transactional in-app
//! messages (all queued, and delivered to the inbox by the workers meanwhile) and marketing the players
//! never consented to (the gate refuses them: the request path alone). Then how long the delivered ones
//! took from the send request to the inbox (p50, p95, p99).
//!
//! PostgreSQL comes from `PITBOSS_TEST_POSTGRES` (default: the local server); it is skipped if absent.
//! `PITBOSS_BENCH_SECONDS` sets the duration of each measurement (default 5).

#[path = "../../tests/support/mod.rs"]
mod support;

use pitboss::auth::Role;
use pitboss::config::Settings;
use serde_json::{Value, json};
use support::load::{Measured, clients, load, noop_server, print};
use support::server::{Backend, TestServer};

const PLAYERS: u64 = 1000;

fn message(n: u64, template: &str) -> Value {
    json!({"channel": "in_app", "player_id": format!("p_{}", n % PLAYERS), "template_id": template,
           "personalization": {"first_name": "Alex"}, "frequency_policy_id": "fp_default"})
}

async fn sends(name: &str, url: String, key: String, template: &'static str, seconds: f64) -> Measured {
    let run = format!("{name}{}", jiff::Timestamp::now().as_millisecond());
    load(name, seconds, 1, move |http, n| {
        http.post(&url)
            .bearer_auth(&key)
            .header("X-Idempotency-Key", format!("{run}_{n}"))
            .json(&message(n, template))
    })
    .await
}

async fn host(backend: Backend) -> Option<(TestServer, String)> {
    let settings = Settings::from_toml("[brands.A]\nlicences = [\"GB\"]\n").unwrap();
    let s = TestServer::start_with(backend, settings).await?;
    let key = s.key(Role::Platform, &["A"]).await;
    let marketing = s.key(Role::Marketing, &["A"]).await;
    for chunk in (0..PLAYERS).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk.iter().map(|i| json!({"event_id": format!("reg_{i}"), "event_type": "player.registered",
            "player_id": format!("p_{i}"), "brand_id": "A", "occurred_at": "2026-11-01T10:00:00Z",
            "payload": {"jurisdiction": "GB", "locale": "en-GB", "time_zone": "UTC", "currency": "GBP", "birth_date": "1990-01-01"}})).collect();
        assert_eq!(s.post(&key, "/v1/events", &Value::Array(batch)).await.0, 202);
    }
    for (id, topic) in [("tpl_receipt", "transactional"), ("tpl_promo", "casino")] {
        let t = json!({"topic": topic, "body": "Hello {{first_name}}"});
        assert_eq!(s.put(&marketing, &format!("/admin/templates/{id}/default"), &t).await.0, 200);
    }
    s.settled().await;
    // Noon UTC: no quiet hours get in the way.
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    s.clock.set(
        today
            .tomorrow()
            .unwrap()
            .at(12, 0, 0, 0)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp(),
    );
    Some((s, key))
}

/// Waits for the workers to empty the outbox; then how many were delivered, how many a second once the
/// load had stopped (the workers alone), and the send → inbox latency of each (p50, p95, p99).
async fn delivered(s: &TestServer) -> (i64, f64, [f64; 3]) {
    while s.count("SELECT COUNT(*) FROM deliveries WHERE status IN ('queued', 'sending')").await > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let last_send = s.count("SELECT MAX(created_at) FROM deliveries").await;
    let span = s.count("SELECT MAX(updated_at) FROM deliveries").await - last_send;
    let drained: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'sent' AND updated_at > $1")
            .bind(last_send)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    let mut ms: Vec<i64> =
        sqlx::query_scalar("SELECT updated_at - created_at FROM deliveries WHERE status = 'sent'")
            .fetch_all(&s.db.pool)
            .await
            .unwrap();
    ms.sort();
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)] as f64;
    (ms.len() as i64, drained as f64 / (span.max(1) as f64 / 1000.0), [at(0.5), at(0.95), at(0.99)])
}

fn main() {
    support::load::run(|seconds| async move {
        let mut results = Vec::new();
        let noop = noop_server("/v1/messaging/send").await;
        results.push(sends("no-op axum handler (ceiling)", noop, "x".into(), "tpl_receipt", seconds).await);
        let mut latencies = Vec::new();
        for (backend, label) in [(Backend::Sqlite, "SQLite"), (Backend::Postgres, "PostgreSQL")] {
            let Some((s, key)) = host(backend).await else {
                println!("{label}: skipped (not reachable)");
                continue;
            };
            let url = format!("{}/v1/messaging/send", s.base);
            results.push(
                sends(
                    &format!("{label}, transactional, queued"),
                    url.clone(),
                    key.clone(),
                    "tpl_receipt",
                    seconds,
                )
                .await,
            );
            latencies.push((label, delivered(&s).await));
            results
                .push(sends(&format!("{label}, marketing, refused"), url, key, "tpl_promo", seconds).await);
            s.stop().await;
        }
        let title = format!(
            "POST /v1/messaging/send, {} keep-alive clients, {seconds} s each, server and clients in one process:",
            clients()
        );
        print(&title, "messages", &results);
        println!();
        println!("send request → in the inbox (workers delivering while the load ran):");
        for (label, (n, rate, [p50, p95, p99])) in latencies {
            println!(
                "  {label:<12} {n:>7} delivered ({rate:>4.0}/s once the load stopped)   p50 {p50:>7.0} ms   p95 {p95:>7.0} ms   p99 {p99:>7.0} ms"
            );
        }
    });
}
