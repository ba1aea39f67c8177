//! `cargo bench -p pitboss --bench offers`: `POST /v1/offers/generate` over real HTTP — profile read,
//! the scorer in the runtime, every host check, the budgets' conditional updates and the offer's write
//! — with the Rust, Python and JavaScript `next-best-offer` scorers bound in turn, beside a no-op axum
//! handler in the same run as the ceiling; then the bonus engine: `bet.settled` events of players who
//! each hold an active bonus (the `wager-progress` rule), posted in batches of 500, and how fast the
//! `bonuses` consumer moves the ledger, beside the `profiles` consumer on the same events.
//!
//! PostgreSQL comes from `PITBOSS_TEST_POSTGRES` (default: the local server); it is skipped if absent.
//! `PITBOSS_BENCH_SECONDS` sets each measurement (default 5), `PITBOSS_BENCH_PLAYERS` the players
//! (default 500), `PITBOSS_BENCH_BETS` the bets (default 20000), `PITBOSS_BENCH_BACKEND=sqlite|postgres`
//! one database only.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pitboss::auth::Role;
use pitboss::config::Settings;
use serde_json::{Value, json};
use support::load::{Measured, clients, load, noop_server, print};
use support::provider::{Behaviour, ProviderServer};
use support::registry::{approve, manifest, officer, sign, upload};
use support::server::{Backend, TestServer};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Host {
    s: TestServer,
    platform: String,
    operator: String,
    officers: Vec<support::registry::Officer>,
    _wallet: ProviderServer,
}

async fn host(backend: Backend, players: u64) -> Option<Host> {
    let wallet = ProviderServer::start("bench-secret", Behaviour::Accept).await;
    let config = format!(
        "[brands.A]\nlicences = [\"MT\"]\nhigh_value_minor = 1000000000\noffer_player_daily_minor = 1000000000000\noffer_budget_daily_minor = 1000000000000\n\n[platform]\nurl = \"{}\"\nsecret = \"bench-secret\"\n",
        wallet.url
    );
    let s = TestServer::start_with(backend, Settings::from_toml(&config).unwrap()).await?;
    s.clock.set(support::rig::noon_tomorrow());
    let admin = s.key(Role::Admin, &["A"]).await;
    let h = Host {
        platform: s.key(Role::Platform, &["A"]).await,
        operator: s.key(Role::Operator, &["A"]).await,
        officers: vec![officer(&s, &admin, "Carla").await, officer(&s, &admin, "Dave").await],
        s,
        _wallet: wallet,
    };
    let marketing = h.s.key(Role::Marketing, &["A"]).await;
    for t in [
        json!({"name": "bonus_cashback", "kind": "cashback", "products": ["casino"], "jurisdictions": ["*"],
               "bounds": {"max_percent": 10, "max_cap_minor": 1000, "max_wager_multiplier": 10, "max_validity_hours": 48}}),
        json!({"name": "fs_studio_x", "kind": "free_spins", "products": ["casino"], "jurisdictions": ["*"],
               "bounds": {"max_cap_minor": 1000, "max_wager_multiplier": 10, "max_validity_hours": 72, "max_spins": 50},
               "cost": {"spin_value_minor": 10}, "providers": ["studio_x"]}),
        json!({"name": "dep_match_100", "kind": "deposit_match", "products": ["casino"], "jurisdictions": ["*"],
               "bounds": {"max_percent": 100, "max_cap_minor": 10000, "max_wager_multiplier": 10, "max_validity_hours": 168}}),
    ] {
        let (st, v) = h.s.post(&marketing, "/admin/offer-templates", &t).await;
        assert_eq!(st, 201, "{v}");
    }
    for chunk in (0..players).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Value> = chunk.iter().map(|i| json!({"event_id": format!("reg_{i}"), "event_type": "player.registered",
            "player_id": format!("p_{i}"), "brand_id": "A", "occurred_at": "2026-11-01T10:00:00Z",
            "payload": {"jurisdiction": "MT", "locale": "en-GB", "time_zone": "UTC", "currency": "EUR", "birth_date": "1990-01-01"}})).collect();
        assert_eq!(h.s.post(&h.platform, "/v1/events", &Value::Array(batch)).await.0, 202);
    }
    for i in 0..players {
        let c = json!({"channels": {"email": true}, "products": {"casino": true}, "profiling": true, "source": "bench"});
        assert_eq!(h.s.put(&h.platform, &format!("/v1/players/p_{i}/consents"), &c).await.0, 200);
    }
    h.s.settled().await;
    Some(h)
}

impl Host {
    /// Uploads and approves `bytes` as `name` `version` of `world`, and binds it for the brand.
    async fn bind(&self, name: &str, version: &str, world: &str, bytes: Vec<u8>, config: Value) {
        let m = manifest(name, version, world, &["*"]);
        let (st, v) = upload(&self.s, &self.operator, &m, bytes.clone()).await;
        assert!(st == 201 || st == 200, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        for o in &self.officers {
            let (st, v) = approve(&self.s, o, &id, &sign(&self.s, o, &m, &bytes)).await;
            assert!(st == 201 || st == 200, "{v}");
        }
        let body = json!({"brand_id": "A", "jurisdiction": "*", "plugin_id": id, "config": config});
        let (st, v) = self.s.post(&self.operator, "/admin/bindings", &body).await;
        assert_eq!(st, 201, "{v}");
    }
}

fn request(n: u64, players: u64) -> Value {
    json!({"player_id": format!("p_{}", n % players), "context": {"intent": "reengage", "channel": "email"},
           "constraints": {"rg_safe": true}})
}

async fn generate(name: &str, url: String, key: String, players: u64, seconds: f64) -> Measured {
    load(name, seconds, 1, move |http, n| http.post(&url).bearer_auth(&key).json(&request(n, players))).await
}

/// Every player accepts an offer and holds an active bonus; then `bets` settled bets at the players,
/// in batches of 500. Returns (bets/s the `bonuses` consumer applied, bets/s of the `profiles`
/// consumer, progress moves written).
async fn ledger(h: &Host, players: u64, bets: u64) -> (f64, f64, i64) {
    for i in 0..players {
        let (st, o) = h.s.post(&h.platform, "/v1/offers/generate", &request(i, players)).await;
        assert_eq!((st, o["state"].as_str()), (200, Some("issued")), "{o}");
        let (st, b) = h
            .s
            .post(&h.platform, &format!("/v1/offers/{}/accept", o["offer_id"].as_str().unwrap()), &json!({}))
            .await;
        assert!(st == 201 || st == 200, "{b}");
    }
    while h.s.count("SELECT COUNT(*) FROM bonuses WHERE state <> 'active'").await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = (h.s.clock.now() + jiff::SignedDuration::from_mins(1)).to_string();
    h.s.clock.advance(jiff::SignedDuration::from_mins(2));
    let batches: Vec<Value> = (0..bets)
        .collect::<Vec<_>>()
        .chunks(500)
        .map(|chunk| {
            Value::Array(
                chunk
                    .iter()
                    .map(|n| {
                        json!({"event_id": format!("bet_{n}"), "event_type": "bet.settled",
                "player_id": format!("p_{}", n % players), "brand_id": "A", "occurred_at": at,
                "payload": {"bet_id": format!("b{n}"), "stake_minor": 100, "win_minor": 0, "currency": "EUR",
                            "category": "slots", "in_bonus": true}})
                    })
                    .collect(),
            )
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        assert_eq!(h.s.post(&h.platform, "/v1/events", batch).await.0, 202);
    }
    let (mut profiles_done, mut bonuses_done) = (None, None);
    while profiles_done.is_none() || bonuses_done.is_none() {
        for (consumer, done) in [("profiles", &mut profiles_done), ("bonuses", &mut bonuses_done)] {
            if done.is_none() && !pitboss::bus::pending(&h.s.db, consumer).await.unwrap() {
                *done = Some(started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moves = h.s.count("SELECT COUNT(*) FROM bonus_moves WHERE action = 'progress'").await;
    (bets as f64 / bonuses_done.unwrap(), bets as f64 / profiles_done.unwrap(), moves)
}

fn main() {
    let players = env("PITBOSS_BENCH_PLAYERS", 500);
    let bets = env("PITBOSS_BENCH_BETS", 20_000);
    support::load::run(|seconds| async move {
        let mut results = Vec::new();
        results.push(
            generate(
                "no-op axum handler (ceiling)",
                noop_server("/v1/offers/generate").await,
                "x".into(),
                players,
                seconds,
            )
            .await,
        );
        let mut engine = Vec::new();
        for (backend, label) in [(Backend::Sqlite, "SQLite"), (Backend::Postgres, "PostgreSQL")] {
            let only = std::env::var("PITBOSS_BENCH_BACKEND").unwrap_or_default();
            if !only.is_empty() && !format!("{backend:?}").eq_ignore_ascii_case(&only) {
                continue;
            }
            let Some(h) = host(backend, players).await else {
                println!("{label}: skipped (not reachable)");
                continue;
            };
            let url = format!("{}/v1/offers/generate", h.s.base);
            // Rust last: it stays bound for the ledger's part.
            for (language, bytes) in [
                ("Python", support::guest("python", "next-best-offer")),
                ("JavaScript", support::guest("js", "next-best-offer")),
                ("Rust", support::wasm("next-best-offer")),
            ] {
                h.bind(
                    "next-best-offer",
                    &format!("1.0.0-{}", language.to_lowercase()),
                    "offer-scorer",
                    bytes,
                    json!({}),
                )
                .await;
                results.push(
                    generate(
                        &format!("{label}, {language} scorer"),
                        url.clone(),
                        h.platform.clone(),
                        players,
                        seconds,
                    )
                    .await,
                );
            }
            h.bind("wager-progress", "1.0.0", "bonus-rule", support::wasm("wager-progress"), json!({})).await;
            // The offers generated above hold no bonus: every player accepts one now.
            engine.push((label, ledger(&h, players, bets).await));
            h.s.stop().await;
        }
        let title = format!(
            "POST /v1/offers/generate, {players} players, 3 templates, {} keep-alive clients, {seconds} s each, server and clients in one process:",
            clients()
        );
        print(&title, "offers", &results);
        println!();
        println!(
            "bet.settled → the bonus ledger ({bets} bets over {players} players, each with an active bonus, posted in batches of 500):"
        );
        for (label, (bonuses, profiles, moves)) in engine {
            println!(
                "  {label:<12} bonuses consumer {bonuses:>7.0} bets/s   profiles consumer (same events) {profiles:>7.0} bets/s   {moves} progress moves"
            );
        }
    });
}
