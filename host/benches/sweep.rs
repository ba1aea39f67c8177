//! `cargo bench -p pitboss --bench sweep`: segments over a whole synthetic population, on SQLite and on
//! PostgreSQL. Per backend: the whole sweep through the host (read the profiles in pages + evaluate with
//! the batch form + write what changed, with its `segment.*` events) — a first sweep in which a third of the
//! players enter, a second in which nothing changes, and a third after those members deposited, in which
//! they all leave — and the process's peak RSS; then the
//! evaluation alone over the same profiles held in memory: the native Rust rule as the baseline, the
//! reference `dormant-depositor` and `churn-risk` plugins in Rust and in Python (Python on a slice: it
//! is two orders of magnitude slower), each in profiles/s with its ratio to native.
//!
//! `PITBOSS_BENCH_PLAYERS` sets the population (default 1,000,000); `PITBOSS_BENCH_EVALUATE_ONLY=1` runs
//! only the evaluation, over synthetic profiles made in memory (no database);
//! `PITBOSS_BENCH_BACKEND=sqlite|postgres` runs one database only. PostgreSQL comes from
//! `PITBOSS_TEST_POSTGRES` (default: the local server) and is skipped if absent.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pitboss::auth::Role;
use pitboss::model as m;
use pitboss::plugins::{CallOptions, World};
use serde_json::{Value, json};
use support::server::{Backend, TestServer};

const DAY_MS: i64 = 86_400_000;

fn players() -> usize {
    std::env::var("PITBOSS_BENCH_PLAYERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// Peak resident set of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Writes `n` German players straight into the profile tables (the consumer's own shape): last seen 0 to
/// 59 days ago, every second one with e-mail consent, every third one with a deposit in the last 45 days.
async fn seed(s: &TestServer, n: usize) {
    let now = support::now().as_millisecond();
    let today = now / DAY_MS;
    let chunk = 1000;
    let mut tx = s.db.pool.begin().await.unwrap();
    for start in (0..n).step_by(chunk) {
        let ids: Vec<usize> = (start..(start + chunk).min(n)).collect();
        let values = |f: &dyn Fn(usize) -> Option<String>| {
            ids.iter().filter_map(|&i| f(i)).collect::<Vec<_>>().join(",")
        };
        let profiles = values(&|i| {
            let seen = now - (i as i64 % 60) * DAY_MS;
            let state = json!({"jurisdiction": "DE", "locale": "de-DE", "time_zone": "Europe/Berlin", "currency": "EUR",
                               "registered_at": now - 400 * DAY_MS, "first_seen_at": now - 400 * DAY_MS, "last_seen_at": seen});
            Some(format!("('A', 'p_{i:08}', '{state}', 0)"))
        });
        let consents = values(&|i| {
            (i % 2 == 0).then(|| format!("('A', 'p_{i:08}', 1, 'channel', 'email', 1, 'bench', {now})"))
        });
        let days = values(&|i| {
            (i % 3 == 0)
                .then(|| format!("('A', 'p_{i:08}', {}, 1, 2500, 0, 0, 0, 0)", today - (i as i64 % 45)))
        });
        for (table, rows) in [("profiles", profiles), ("consents", consents), ("player_days", days)] {
            if !rows.is_empty() {
                let sql = format!("INSERT INTO {table} VALUES {rows}");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
            }
        }
        if start % 100_000 == 0 && start > 0 {
            tx.commit().await.unwrap();
            tx = s.db.pool.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// Every player with e-mail consent (every second one) deposits today, written straight into the
/// profile tables as `seed` writes: the dormant depositors all leave at the next sweep.
async fn deposit_today(s: &TestServer, n: usize) {
    let today = support::now().as_millisecond() / DAY_MS;
    let mut tx = s.db.pool.begin().await.unwrap();
    for start in (0..n).step_by(1000) {
        let rows: Vec<String> = (start..(start + 1000).min(n))
            .filter(|i| i % 2 == 0)
            .map(|i| format!("('A', 'p_{i:08}', {today}, 1, 2500, 0, 0, 0, 0)"))
            .collect();
        if !rows.is_empty() {
            let sql = format!("INSERT INTO player_days VALUES {} ON CONFLICT DO NOTHING", rows.join(","));
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// The native baseline: `dormant-depositor`'s rule in Rust.
fn native_dormant(p: &m::Profile) -> bool {
    p.jurisdiction == "DE"
        && p.consents.channels.contains(&m::Channel::Email)
        && p.features.dep_count_30d == 0
        && p.features.days_since_last_seen > 7
}

async fn sweep(s: &TestServer, key: &str, segment: &str) -> (Duration, Value) {
    let t = Instant::now();
    let (st, v) = s.post(key, &format!("/admin/segments/{segment}/refresh"), &json!({})).await;
    assert_eq!(st, 202, "{v}");
    let path = format!("/admin/segments/{segment}/sweeps/{}", v["sweep_id"].as_str().unwrap());
    loop {
        let (_, w) = s.get(key, &path).await;
        if w["state"] == "done" || w["state"] == "failed" {
            assert_eq!(w["state"], "done", "{w}");
            return (t.elapsed(), w["figures"].clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after a sweep the host's consumers took to finish its `segment.*` events: the next sweep
/// starts on a host that is done with them.
async fn consumers_done(s: &TestServer) -> Duration {
    let t = Instant::now();
    use pitboss::{engage, offers, profiles, segments};
    for consumer in [profiles::CONSUMER, segments::CONSUMER, engage::CONSUMER, offers::engine::CONSUMER] {
        while pitboss::bus::pending(&s.db, consumer).await.unwrap() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    t.elapsed()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn bench(backend: Backend, name: &str, n: usize) {
    let Some(s) = TestServer::start(backend).await else {
        println!("{name}: skipped (no database)");
        return;
    };
    s.clock.set(support::now());
    let admin = s.key_of(Role::Admin, &["A"], "Ada Admin").await;
    let operator = s.key_of(Role::Operator, &["A"], "Olga Operator").await;
    let carla = support::registry::officer(&s, &admin, "Carla Compliance").await;
    let (st, seg) =
        s.post(&operator, "/admin/segments", &json!({"name": "dormant", "sweep_minutes": 60})).await;
    assert_eq!(st, 201, "{seg}");
    let segment = seg["id"].as_str().unwrap().to_string();
    let manifest = support::registry::manifest("dormant-depositor", "1.0.0", "segment", &["DE"]);
    let rule = support::registry::approved(&s, &operator, &[&carla], "dormant-depositor", &manifest).await;
    let bind = json!({"brand_id": "A", "jurisdiction": "DE", "plugin_id": rule, "segment": "dormant"});
    assert_eq!(s.post(&operator, "/admin/bindings", &bind).await.0, 201);
    sweep(&s, &operator, &segment).await; // the empty population: the scheduled sweeps are behind us

    let t = Instant::now();
    seed(&s, n).await;
    if backend == Backend::Postgres {
        // The tables were filled within seconds: statistics, as autovacuum gathers them within its
        // first minute, so that what is measured is a running host, not the planner's first guesses
        // (without them it sorted the brand's remaining players to find where each page ends).
        sqlx::query("ANALYZE").execute(&s.db.pool).await.unwrap();
    }
    println!("{name}: seeded {n} players in {:.1} s", t.elapsed().as_secs_f64());

    println!("\n{name}, whole sweep through the host (read + evaluate + write), {n} players:");
    println!(
        "{:<34} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "", "wall s", "profiles/s", "read s", "eval s", "write s", "entered", "left", "+ events s"
    );
    // Each sweep, and whether the members deposit first (so that they leave).
    for (label, members_deposit) in [
        ("first sweep (a third of them enter)", false),
        ("second sweep (nothing changes)", false),
        ("third sweep (the members leave)", true),
    ] {
        if members_deposit {
            deposit_today(&s, n).await;
        }
        let (wall, f) = sweep(&s, &operator, &segment).await;
        let secs = |k: &str| f[k].as_f64().unwrap_or(0.0) / 1e3;
        let events = consumers_done(&s).await;
        println!(
            "{label:<34} {:>9.2} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>9} {:>11.2}",
            wall.as_secs_f64(),
            rate(n, wall),
            secs("read_ms"),
            secs("evaluate_ms"),
            secs("write_ms"),
            f["entered"].as_u64().unwrap_or(0),
            f["left"].as_u64().unwrap_or(0),
            events.as_secs_f64()
        );
    }
    println!("peak RSS of the process after the sweeps: {:.0} MiB", peak_rss_mib());

    // The evaluation alone, over the same profiles in memory.
    let t = Instant::now();
    let key = pitboss::store::contacts::ContactsKey::generate().0;
    let mut pages = pitboss::profiles::Population::read(s.db.clone(), key, "A".into(), 4096, |page| {
        page.profiles.into_iter().map(|(p, sp)| sp.at("A", &p, support::now()).profile).collect::<Vec<_>>()
    });
    let mut profiles = Vec::with_capacity(n);
    while let Some(page) = pages.next().await.unwrap() {
        profiles.extend(page);
    }
    let read = t.elapsed();
    println!(
        "\n{name}, evaluation alone ({} profiles read in {:.2} s, {:.0}/s):",
        profiles.len(),
        read.as_secs_f64(),
        rate(profiles.len(), read)
    );
    evaluation(&profiles).await;
    s.stop().await;
}

/// The evaluation alone over `profiles` held in memory: the native rule, then each reference plugin's
/// batch form through `segments::batch` (what sweeps call), with its ratio to native.
async fn evaluation(profiles: &[m::Profile]) {
    let t = Instant::now();
    let members = profiles.iter().filter(|p| native_dormant(p)).count();
    let native = t.elapsed();
    let native_rate = rate(profiles.len(), native);
    println!("{:<40} {:>14} {:>10} {:>9}", "", "profiles/s", "× native", "members");
    println!("{:<40} {:>14.0} {:>10} {:>9}", "native Rust dormant-depositor", native_rate, "1", members);
    let rt = std::sync::Arc::new(
        pitboss::plugins::Runtime::new(pitboss::plugins::RuntimeConfig {
            cache_dir: Some(support::code_cache()),
            ..Default::default()
        })
        .unwrap(),
    );
    let opts = CallOptions::new(World::Segment, support::now());
    let python_slice = profiles.len().min(100_000);
    // Shared as a sweep shares a page's profiles with the evaluation (made before the clock starts).
    let profiles: Vec<std::sync::Arc<m::Profile>> =
        profiles.iter().cloned().map(std::sync::Arc::new).collect();
    for (label, bytes, slice) in [
        ("Rust dormant-depositor (batch form)", support::wasm("dormant-depositor"), profiles.len()),
        ("Rust churn-risk (batch form)", support::wasm("churn-risk"), profiles.len()),
        (
            "Python dormant-depositor (batch form)",
            support::guest("python", "dormant-depositor"),
            python_slice,
        ),
        ("Python churn-risk (batch form)", support::guest("python", "churn-risk"), python_slice),
    ] {
        let plugin = rt.load(&bytes).unwrap();
        let input = profiles[..slice].to_vec();
        let t = Instant::now();
        let (out, _) = pitboss::segments::batch(&rt, &plugin, &opts, input).await.unwrap();
        let took = t.elapsed();
        let members = out.iter().filter(|o| matches!(o, Ok(ms) if ms.member)).count();
        let r = rate(slice, took);
        println!("{:<40} {:>14.0} {:>10.1} {:>9}   ({slice} profiles)", label, r, native_rate / r, members);
        if let Some(Err(e)) = out.iter().find(|o| o.is_err()) {
            let failed = out.iter().filter(|o| o.is_err()).count();
            println!("{:<40} {failed} decisions failed, e.g.: {e}", "");
        }
    }
    println!("peak RSS of the process: {:.0} MiB", peak_rss_mib());
}

/// Profiles in the shape `seed` writes, made in memory: the evaluation alone without a database.
fn synthetic(n: usize) -> Vec<m::Profile> {
    (0..n)
        .map(|i| {
            let mut p = support::profile(&format!("p_{i:08}"));
            p.consents.channels.retain(|c| i % 2 == 0 || *c != m::Channel::Email);
            p.features.dep_count_30d = u32::from(i % 3 == 0 && i % 45 < 30);
            p.features.days_since_last_seen = (i % 60) as u32;
            p
        })
        .collect()
}

fn main() {
    let n = players();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if std::env::var_os("PITBOSS_BENCH_EVALUATE_ONLY").is_some() {
            println!("evaluation alone, {n} synthetic profiles in memory:");
            return evaluation(&synthetic(n)).await;
        }
        let only = std::env::var("PITBOSS_BENCH_BACKEND").unwrap_or_default();
        for (backend, name) in [(Backend::Sqlite, "SQLite"), (Backend::Postgres, "PostgreSQL")] {
            if only.is_empty() || format!("{backend:?}").eq_ignore_ascii_case(&only) {
                bench(backend, name, n).await;
            }
        }
    });
}
