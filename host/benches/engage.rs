//! `cargo bench -p pitboss --bench engage`: the trigger loop under a steady event rate, on SQLite and
//! PostgreSQL. A host with the three example triggers active (the big-loss rule and the churn-risk
//! segment bound, the SMTP and push sinks local) takes `bet.settled`, `payment.failed` and
//! `session.started` events at 1000 and 2000 events/s over real HTTP, for its players (after three
//! seconds at 1000 events/s to warm up, see `warm_up`). Then, from the
//! database, per event a trigger took: event accepted → the trigger's decision, and for the messages it
//! sent, event accepted → the provider's acceptance (p50, p95, p99). The baseline in the same run: the
//! same decisions in native Rust over the same events (the trigger's conditions and the big-loss rule).
//! Last, the journey scheduler: players waiting at a journey's wait, all due at once, and the steps it
//! takes per second (each a send through the gate).
//!
//! `PITBOSS_BENCH_PLAYERS` (default 100000) players; `PITBOSS_BENCH_SECONDS` (default 10) per rate;
//! `PITBOSS_BENCH_WAITING` (default the players) journey runs; `PITBOSS_BENCH_BACKEND=sqlite|postgres`
//! runs one database only. PostgreSQL comes from
//! `PITBOSS_TEST_POSTGRES` (default: the local server); it is skipped if absent.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pitboss::auth::Role;
use pitboss::config::Settings;
use serde_json::{Value, json};
use support::provider::{Behaviour, ProviderServer};
use support::server::{Backend, TestServer};
use support::smtp::SmtpSink;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A fixed-offset zone where it is about noon now, so that quiet hours stay out of the measurement.
fn noon_zone() -> String {
    let hour = i64::from(jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).hour());
    let offset = (12 - hour + 24) % 24;
    let offset = if offset > 12 { offset - 24 } else { offset };
    // Etc/GMT-3 is UTC+3.
    match offset {
        0 => "Etc/UTC".into(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

struct Bench {
    s: TestServer,
    platform: String,
    marketing: String,
    _smtp: SmtpSink,
    _push: ProviderServer,
}

async fn host(backend: Backend, players: u64) -> Option<Bench> {
    let smtp = SmtpSink::start().await;
    let push = ProviderServer::start("bench-secret", Behaviour::Accept).await;
    let config = format!(
        "[brands.A]\nlicences = [\"GB\"]\nemail_from = \"A <crm@a.example>\"\n\
         unsubscribe_url = \"https://a.example/u/{{delivery_id}}\"\n\
         [smtp]\nrelay = \"{}\"\n[[providers.push]]\nname = \"push\"\nurl = \"{}\"\nsecret = \"bench-secret\"\n\
         [delivery]\npoll_ms = 50\n",
        smtp.addr, push.url
    );
    let s = TestServer::start_with(backend, Settings::from_toml(&config).unwrap()).await?;
    let platform = s.key(Role::Platform, &["A"]).await;
    let marketing = s.key(Role::Marketing, &["A"]).await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga").await;
    let admin = s.key_of(Role::Admin, &["A"], "Ada").await;
    let (carla, dave) = (
        support::registry::officer(&s, &admin, "Carla").await,
        support::registry::officer(&s, &admin, "Dave").await,
    );
    for (plugin, slot, config) in
        [("big-loss", "big-loss", json!({"loss_minor": "5000"})), ("churn-risk", "churning", json!({}))]
    {
        let m = support::registry::manifest(plugin, "1.0.0", "segment", &["*"]);
        let id = support::registry::approved(&s, &operator, &[&carla, &dave], plugin, &m).await;
        let body =
            json!({"brand_id": "A", "jurisdiction": "*", "plugin_id": id, "rule": slot, "config": config});
        assert_eq!(s.post(&operator, "/admin/bindings", &body).await.0, 201);
    }
    // The players: registered today, seen today (nobody is churning), e-mail and push consent.
    let zone = noon_zone();
    let today = jiff::Timestamp::now().to_string();
    let t0 = Instant::now();
    for chunk in (0..players).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"event_id": format!("reg_{i}"), "event_type": "player.registered", "player_id": format!("p_{i}"),
                   "brand_id": "A", "occurred_at": today, "payload": {"jurisdiction": "GB", "locale": "en-GB",
                   "time_zone": zone, "currency": "GBP", "email": format!("p_{i}@example.com"), "birth_date": "1990-01-01"}})
            })
            .collect();
        let (st, v) = s.post(&platform, "/v1/events", &Value::Array(batch)).await;
        assert_eq!(st, 202, "{v}");
    }
    let consents =
        json!({"channels": {"email": true, "push": true}, "products": {"casino": true}, "source": "signup"});
    for chunk in (0..players).collect::<Vec<_>>().chunks(8) {
        let puts: Vec<_> = chunk
            .iter()
            .map(|i| {
                let req = s.http.put(format!("{}/v1/players/p_{i}/consents", s.base)).bearer_auth(&platform);
                tokio::spawn(req.json(&consents).send())
            })
            .collect();
        for put in puts {
            assert_eq!(put.await.unwrap().unwrap().status().as_u16(), 200);
        }
    }
    wait_for(&s, "engage").await;
    if backend == Backend::Postgres {
        // The tables were filled within seconds: statistics, as autovacuum gathers them within its
        // first minute, so that what is measured is a running host, not the planner's first guesses
        // (without them it reads every contact of the brand for a batch's birth dates).
        sqlx::query("ANALYZE").execute(&s.db.pool).await.unwrap();
    }
    eprintln!(
        "{backend:?}: {players} players registered with consents in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Some(Bench { s, platform, marketing, _smtp: smtp, _push: push })
}

/// A running host's tables hold fires, deliveries and days of play, and autovacuum has gathered their
/// statistics: three seconds of load before the measured rates, then (on PostgreSQL) ANALYZE. Without
/// it the statistics were those of the ANALYZE after registration, when those tables were empty, and
/// at 2000 events/s the triggers fell 0.6-1.8 s behind instead of ~0.1 s.
async fn warm_up(b: &Bench, backend: Backend, players: u64) {
    steady(b, "warm", 1000, 3, players).await;
    wait_for(&b.s, "engage").await;
    if backend == Backend::Postgres {
        sqlx::query("ANALYZE").execute(&b.s.db.pool).await.unwrap();
    }
}

/// Loads the three example bundles and activates everything.
async fn examples(b: &Bench) {
    for bundle in ["payment-failed-prompt.json", "big-loss-cashback.json", "churn-winback.json"] {
        let text = std::fs::read_to_string(support::repo().join("examples/engage").join(bundle)).unwrap();
        let bundle: Value = serde_json::from_str(&text).unwrap();
        for seg in bundle["segments"].as_array().into_iter().flatten() {
            b.s.post(&b.marketing, "/admin/segments", seg).await;
        }
        for t in bundle["templates"].as_array().into_iter().flatten() {
            let path = format!(
                "/admin/templates/{}/{}",
                t["template_id"].as_str().unwrap(),
                t["locale"].as_str().unwrap()
            );
            let body = json!({"topic": t["topic"], "subject": t["subject"], "body": t["body"]});
            assert_eq!(b.s.put(&b.marketing, &path, &body).await.0, 200);
        }
        for (key, path) in [("journeys", "/admin/journeys"), ("triggers", "/admin/triggers")] {
            for def in bundle[key].as_array().into_iter().flatten() {
                let (st, v) = b.s.post(&b.marketing, path, def).await;
                assert_eq!(st, 201, "{v}");
                let id = v["id"].as_str().unwrap();
                b.s.post(&b.marketing, &format!("{path}/{id}/activate"), &json!({"version": 1})).await;
            }
        }
    }
}

async fn wait_for(s: &TestServer, consumer: &str) {
    while pitboss::bus::pending(&s.db, consumer).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The n-th event of a run: 7 in 10 settled bets (one in ten a loss above the rule's 5000), 1 in 10 a
/// failed card check, 2 in 10 sessions.
fn nth_event(run: &str, n: u64, players: u64) -> Value {
    let p = format!("p_{}", (n * 7919) % players);
    let at = jiff::Timestamp::now().to_string();
    let id = format!("{run}_{n}");
    let (kind, payload) = match n % 10 {
        0..=6 => {
            let stake = if n.is_multiple_of(70) { 9000 } else { 500 };
            (
                "bet.settled",
                json!({"bet_id": id, "stake_minor": stake, "currency": "GBP", "win_minor": 0,
                                   "game_id": "g1", "provider": "studio_x", "category": "slots"}),
            )
        }
        7 => (
            "payment.failed",
            json!({"payment_id": id, "amount_minor": 5000, "currency": "GBP", "reason_code": "3ds_failed"}),
        ),
        _ => ("session.started", json!({"session_id": id})),
    };
    json!({"event_id": id, "event_type": kind, "player_id": p, "brand_id": "A", "occurred_at": at, "payload": payload})
}

/// Posts `rate` events a second for `seconds`, in batches every 20 ms (each batch its own request, so a
/// slow answer does not slow the pace); the events posted, and those refused (503 busy: the host could
/// not keep up).
async fn steady(b: &Bench, run: &str, rate: u64, seconds: u64, players: u64) -> (u64, u64) {
    let per_tick = (rate / 50).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0;
    let mut sent = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let batch: Vec<Value> = (n..n + per_tick).map(|k| nth_event(run, k, players)).collect();
        n += per_tick;
        let (http, url, key) = (b.s.http.clone(), format!("{}/v1/events", b.s.base), b.platform.clone());
        let size = batch.len() as u64;
        sent.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(key).json(&Value::Array(batch)).send().await.unwrap();
            match r.status().as_u16() {
                202 => 0,
                503 => size,
                other => panic!("POST /v1/events answered {other}"),
            }
        }));
    }
    let mut refused = 0;
    for s in sent {
        refused += s.await.unwrap();
    }
    (n, refused)
}

fn percentiles(mut v: Vec<i64>) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
    [at(0.5), at(0.95), at(0.99)]
}

/// Event → decision for the fires of this run, and event → provider for the messages they sent.
async fn latencies(s: &TestServer, run: &str) -> (usize, [f64; 3], usize, [f64; 3]) {
    let like = format!("{run}_%");
    let decisions: Vec<i64> = sqlx::query_scalar(
        "SELECT f.at - e.received_at FROM trigger_fires f JOIN events e ON e.brand_id = f.brand_id AND e.event_id = f.event_id
         WHERE f.event_id LIKE $1",
    )
    .bind(&like)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    let provider: Vec<i64> = sqlx::query_scalar(
        "SELECT d.updated_at - d.caused_at FROM trigger_fires f JOIN deliveries d ON d.delivery_id = f.delivery_id
         WHERE f.event_id LIKE $1 AND d.status = 'sent' AND d.caused_at IS NOT NULL",
    )
    .bind(&like)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    (decisions.len(), percentiles(decisions), provider.len(), percentiles(provider))
}

/// The baseline: the trigger's conditions and the big-loss rule in native Rust over the same events.
fn native(run: &str, events: u64, players: u64) -> f64 {
    let all: Vec<Value> = (0..events).map(|n| nth_event(run, n, players)).collect();
    let start = Instant::now();
    let mut fired = 0u64;
    for e in &all {
        let p = &e["payload"];
        fired += match e["event_type"].as_str() {
            Some("bet.settled") => u64::from(
                p["stake_minor"].as_i64().unwrap_or(0) - p["win_minor"].as_i64().unwrap_or(0) > 5000,
            ),
            Some("payment.failed") => u64::from(
                ["3ds_failed", "3ds_timeout", "avs_failed", "avs_mismatch"]
                    .contains(&p["reason_code"].as_str().unwrap_or("")),
            ),
            _ => 0,
        };
    }
    std::hint::black_box(fired);
    start.elapsed().as_nanos() as f64 / events as f64
}

/// Players waiting at the win-back journey's wait, all due now: how fast the scheduler takes the steps.
async fn scheduler(b: &Bench, waiting: u64) -> (u64, f64) {
    let s = &b.s;
    let journey: String = sqlx::query_scalar("SELECT id FROM journeys WHERE name = 'churn-winback'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let now = s.clock.now_ms();
    let mut tx = s.db.begin_write().await.unwrap();
    for chunk in (0..waiting).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| format!("('jr_bench_{i}', '{journey}', 1, 'A', 'p_{i}', 'email', 2, 'active', {now}, {now}, 'bench', 0, 0, {now})"))
            .collect();
        let sql = format!(
            "INSERT INTO journey_runs (id, journey_id, version, brand_id, player_id, node, step, state, due_at, entered_at, entered_via, entered_seq, entered_tx, updated_at) VALUES {}",
            values.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    let start = Instant::now();
    if s.db.backend == pitboss::store::Backend::Postgres {
        // As autovacuum would after so many rows: with the statistics of an almost empty table the
        // planner sorted every due run to take sixteen (49 ms a time with 60k due).
        sqlx::query("ANALYZE journey_runs").execute(&s.db.pool).await.unwrap();
    }
    let steps = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM journey_steps WHERE run_id LIKE 'jr_bench_%'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap()
    };
    // Each run takes two steps: the e-mail, then the exit.
    while steps().await < (2 * waiting) as i64 && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken = steps().await as u64;
    (taken, taken as f64 / start.elapsed().as_secs_f64())
}

fn main() {
    let players = env("PITBOSS_BENCH_PLAYERS", 100_000);
    let seconds = env("PITBOSS_BENCH_SECONDS", 10);
    let waiting = env("PITBOSS_BENCH_WAITING", players);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let only = std::env::var("PITBOSS_BENCH_BACKEND").unwrap_or_default();
            if !only.is_empty() && !format!("{backend:?}").eq_ignore_ascii_case(&only) {
                continue;
            }
            let Some(b) = host(backend, players).await else {
                println!("{backend:?}: skipped (no database)");
                continue;
            };
            examples(&b).await;
            // The new segment's first sweep over every player, out of the way of the measurement.
            while b.s.count("SELECT COUNT(*) FROM segment_sweeps WHERE state = 'done'").await == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!();
            println!(
                "{backend:?}: {players} players, the three example triggers active, {seconds} s per rate"
            );
            println!(
                "  {:<10} {:>8} {:>8} {:>7} {:>29} {:>8} {:>29}",
                "rate",
                "events",
                "refused",
                "fires",
                "event→decision p50/p95/p99 ms",
                "sent",
                "event→provider p50/p95/p99 ms"
            );
            warm_up(&b, backend, players).await;
            for rate in [1000, 2000] {
                let run = format!("r{rate}");
                let (n, refused) = steady(&b, &run, rate, seconds, players).await;
                wait_for(&b.s, "engage").await;
                // The workers deliver what the triggers queued.
                while b.s.count("SELECT COUNT(*) FROM deliveries WHERE status IN ('queued', 'sending')").await
                    > 0
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let (fires, d, sent, p) = latencies(&b.s, &run).await;
                println!(
                    "  {:<10} {n:>8} {refused:>8} {fires:>7} {:>29} {sent:>8} {:>29}",
                    format!("{rate}/s"),
                    format!("{:.0} / {:.0} / {:.0}", d[0], d[1], d[2]),
                    format!("{:.0} / {:.0} / {:.0}", p[0], p[1], p[2]),
                );
                println!(
                    "  {:<10} native Rust, the same decisions: {:.0} ns per event",
                    "baseline",
                    native(&run, n, players)
                );
            }
            let (taken, per_s) = scheduler(&b, waiting).await;
            println!(
                "  journey scheduler: {waiting} players due at once, {taken} steps at {per_s:.0} steps/s"
            );
            b.s.stop().await;
        }
    });
}
