//! The log and its consumers under load and under bad input: every accepted event reaches the profiles
//! exactly once whatever order concurrent transactions commit in, on one host or two; an event whose
//! effects cannot be applied is set aside without stopping anyone else's; shutdown always ends.

use crate::support;

use std::time::Duration;

use pitboss::auth::Role;
use serde_json::{Value, json};
use support::server::{Backend, TestServer};

/// Every player's applied deposits and bets equal the stored (accepted) ones.
pub async fn assert_applied_equals_accepted(db: &pitboss::store::Db) {
    use sqlx::Row;
    let pairs = |sql: &'static str| async move {
        let mut v: Vec<(String, i64)> = sqlx::query(sql)
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get::<String, _>(0).unwrap(), r.try_get::<i64, _>(1).unwrap()))
            .collect();
        v.sort();
        v
    };
    let accepted = pairs(
        "SELECT player_id, COUNT(*) FROM events WHERE event_type IN ('payment.captured', 'bet.placed')
         GROUP BY player_id",
    )
    .await;
    let applied =
        pairs("SELECT player_id, CAST(SUM(deposits + bets) AS BIGINT) FROM player_days GROUP BY player_id")
            .await;
    assert!(!accepted.is_empty());
    assert_eq!(applied, accepted, "applied (left) and accepted (right) events per player");
}

fn registered(player: &str) -> Value {
    support::registered(player, json!({}))
}

/// A deposit or a bet, alternating, for one of 20 players.
fn activity(client: usize, n: usize) -> Value {
    let player = format!("p_{:02}", (client * 7 + n) % 20);
    let id = format!("c{client}_{n}");
    let (kind, payload) = if n.is_multiple_of(2) {
        ("payment.captured", json!({"payment_id": id, "amount_minor": 1000, "currency": "EUR"}))
    } else {
        ("bet.placed", json!({"bet_id": id, "stake_minor": 100, "currency": "EUR", "category": "slots"}))
    };
    json!({"event_id": id, "event_type": kind, "player_id": player, "brand_id": "A",
           "occurred_at": "2026-11-21T10:00:00Z", "payload": payload})
}

/// `clients` concurrent clients, each posting `per_client` single events to the hosts in turn,
/// pausing `pause` between posts (zero: as fast as the hosts take them).
async fn stream(hosts: &[String], key: &str, clients: usize, per_client: usize, pause: Duration) {
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (http, key, hosts) = (http.clone(), key.to_string(), hosts.to_vec());
        tasks.spawn(async move {
            for n in 0..per_client {
                let base = &hosts[(client + n) % hosts.len()];
                let r = http
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(&key)
                    .json(&activity(client, n))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

async fn concurrent_clients_lose_no_event(backend: Backend, two_hosts: bool, pause: Duration) {
    let Some(s) = TestServer::start(backend).await else { return };
    let key = s.key(Role::Platform, &["A"]).await;
    for p in 0..20 {
        assert_eq!(s.post(&key, "/v1/events", &registered(&format!("p_{p:02}"))).await.0, 202);
    }
    let mut hosts = vec![s.base.clone()];
    let second = if two_hosts {
        let (base, stop, task) = s.second_host().await;
        hosts.push(base);
        Some((stop, task))
    } else {
        None
    };
    stream(&hosts, &key, 24, 60, pause).await;
    s.settled().await;
    assert_applied_equals_accepted(&s.db).await;
    if let Some((stop, task)) = second {
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_host_moderate_rate_loses_no_event() {
    concurrent_clients_lose_no_event(Backend::Postgres, false, Duration::from_millis(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_host_saturated_loses_no_event() {
    concurrent_clients_lose_no_event(Backend::Postgres, false, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_hosts_moderate_rate_lose_no_event() {
    concurrent_clients_lose_no_event(Backend::Postgres, true, Duration::from_millis(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_hosts_saturated_lose_no_event() {
    concurrent_clients_lose_no_event(Backend::Postgres, true, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_clients_lose_no_event() {
    concurrent_clients_lose_no_event(Backend::Sqlite, false, Duration::ZERO).await;
}

/// The player's own calendar day of an instant, as the profiles count it (days since 1970-01-01).
fn day_of(at: &str, time_zone: &str) -> i64 {
    let date = at
        .parse::<jiff::Timestamp>()
        .unwrap()
        .to_zoned_datetime(jiff::tz::TimeZone::get(time_zone).unwrap())
        .date();
    i64::from((date - jiff::civil::date(1970, 1, 1)).get_days())
}

async fn an_event_that_cannot_be_applied_is_set_aside(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let admin = s.key(Role::Admin, &["A"]).await;
    // Amounts out of range never get in.
    let mut huge = json!({"event_id": "pay_huge", "event_type": "payment.captured", "player_id": "p_a",
        "brand_id": "A", "occurred_at": "2026-11-21T10:00:00Z",
        "payload": {"payment_id": "pay_huge", "amount_minor": 9223372036854775807_i64, "currency": "EUR"}});
    let (st, v) = s.post(&key, "/v1/events", &huge).await;
    assert_eq!((st, v["error"]["field"].as_str()), (422, Some("payload.amount_minor")), "{v}");
    huge["payload"]["amount_minor"] = json!(-5);
    assert_eq!(s.post(&key, "/v1/events", &huge).await.0, 422);

    // A player whose day total is already at the edge of the range (as data written by an older
    // version, or by years of play): one more deposit cannot be added.
    for p in ["p_a", "p_b"] {
        assert_eq!(s.post(&key, "/v1/events", &registered(p)).await.0, 202);
    }
    s.settled().await;
    sqlx::query(
        "INSERT INTO player_days (brand_id, player_id, day, deposits, deposit_sum, stakes, wins, bets, sessions)
         VALUES ('A', 'p_a', $1, 1, 9223372036854775000, 0, 0, 0, 0)",
    )
    .bind(day_of("2026-11-21T10:00:00Z", "Europe/Berlin"))
    .execute(&s.db.pool)
    .await
    .unwrap();
    let deposit = |id: &str, player: &str| {
        json!({"event_id": id, "event_type": "payment.captured", "player_id": player, "brand_id": "A",
               "occurred_at": "2026-11-21T10:00:00Z",
               "payload": {"payment_id": id, "amount_minor": 5000, "currency": "EUR"}})
    };
    // In one batch with other players' events, and alone after them.
    let batch = json!([
        deposit("pay_b1", "p_b"),
        deposit("pay_a1", "p_a"),
        registered("p_c"),
        deposit("pay_b2", "p_b")
    ]);
    assert_eq!(s.post(&key, "/v1/events", &batch).await.0, 202);
    assert_eq!(s.post(&key, "/v1/events", &deposit("pay_a2", "p_a")).await.0, 202);
    s.settled().await;

    // Everyone else's events went through; the player's profile still answers.
    let (st, b) = s.get(&key, "/v1/players/p_b").await;
    assert_eq!((st, b["features"]["dep_count_30d"].as_u64()), (200, Some(2)), "{b}");
    assert_eq!(s.get(&key, "/v1/players/p_c").await.0, 200);
    assert_eq!(s.get(&key, "/v1/players/p_a").await.0, 200);
    let (st, list) = s.get(&admin, "/admin/set-aside-events").await;
    assert_eq!(st, 200, "{list}");
    let ids: Vec<&str> =
        list["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&"pay_a1") && ids.contains(&"pay_a2"), "{list}");
    assert!(
        list["events"][0]["error"].as_str().unwrap().contains("range")
            || list["events"][0]["error"].as_str().unwrap().contains("overflow"),
        "{list}"
    );
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pitboss_events_set_aside_total{consumer=\"profiles\"} 2"), "{metrics}");
    // Another brand's admin sees none of it.
    let other = s.key(Role::Admin, &["B"]).await;
    assert_eq!(s.get(&other, "/admin/set-aside-events").await.1["events"], json!([]));
}

/// Shutdown ends even while the consumer keeps failing (here: its database is gone).
async fn shutdown_ends_while_the_consumer_fails(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("p_z")).await.0, 202);
    s.settled().await;
    sqlx::query("DROP TABLE player_days").execute(&s.db.pool).await.unwrap();
    let deposit = json!({"event_id": "pay_z", "event_type": "payment.captured", "player_id": "p_z",
        "brand_id": "A", "occurred_at": "2026-11-21T10:00:00Z",
        "payload": {"payment_id": "pay_z", "amount_minor": 5000, "currency": "EUR"}});
    assert_eq!(s.post(&key, "/v1/events", &deposit).await.0, 202);
    tokio::time::sleep(Duration::from_millis(700)).await;
}

crate::both!(set_aside, an_event_that_cannot_be_applied_is_set_aside);

/// An event in the log that no longer reads (its payload or type written by hand, or by a version
/// that wrote another shape) is set aside on its own, with why; the player's other events still go
/// through.
async fn an_event_that_does_not_read_is_set_aside(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    let admin = s.key(Role::Admin, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("p_b")).await.0, 202);
    s.settled().await;
    let deposit = |id: &str| {
        json!({"event_id": id, "event_type": "payment.captured", "player_id": "p_b", "brand_id": "A",
               "occurred_at": "2026-11-21T10:00:00Z",
               "payload": {"payment_id": id, "amount_minor": 5000, "currency": "EUR"}})
    };
    assert_eq!(s.post(&key, "/v1/events", &deposit("pay_b1")).await.0, 202);
    sqlx::query(
        "INSERT INTO events (brand_id, event_id, player_id, event_type, occurred_at, received_at, payload, body_hash)
         VALUES ('A', 'bad_payload', 'p_b', 'payment.captured', 0, 0, '{\"amount_minor\": \"lots\"', 'x'),
                ('A', 'bad_type', 'p_b', 'payment.teleported', 0, 0, '{}', 'x')",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(s.post(&key, "/v1/events", &deposit("pay_b2")).await.0, 202);
    s.settled().await;

    let (st, b) = s.get(&key, "/v1/players/p_b").await;
    assert_eq!((st, b["features"]["dep_count_30d"].as_u64()), (200, Some(2)), "{b}");
    let (st, list) = s.get(&admin, "/admin/set-aside-events").await;
    assert_eq!(st, 200, "{list}");
    let profiles: Vec<(&str, &str)> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["consumer"] == "profiles")
        .map(|e| (e["event_id"].as_str().unwrap(), e["error"].as_str().unwrap()))
        .collect();
    assert_eq!(profiles.len(), 2, "{list}");
    for (id, error) in profiles {
        assert!(["bad_payload", "bad_type"].contains(&id), "{list}");
        assert!(error.contains("does not read"), "{list}");
    }
}

crate::both!(unreadable, an_event_that_does_not_read_is_set_aside);

/// A consumer that keeps failing (here the triggers': their table is gone) holds back neither the
/// consumers it follows nor the others.
async fn a_failing_follower_holds_back_no_leader(s: &TestServer) {
    let key = s.key(Role::Platform, &["A"]).await;
    assert_eq!(s.post(&key, "/v1/events", &registered("p_f")).await.0, 202);
    s.settled().await;
    sqlx::query("DROP TABLE trigger_versions").execute(&s.db.pool).await.unwrap();
    let deposit = json!({"event_id": "pay_f", "event_type": "payment.captured", "player_id": "p_f",
        "brand_id": "A", "occurred_at": "2026-11-21T10:00:00Z",
        "payload": {"payment_id": "pay_f", "amount_minor": 5000, "currency": "EUR"}});
    assert_eq!(s.post(&key, "/v1/events", &deposit).await.0, 202);
    s.settled().await;
    let (st, p) = s.get(&key, "/v1/players/p_f").await;
    assert_eq!((st, p["features"]["dep_count_30d"].as_u64()), (200, Some(1)), "{p}");
    for consumer in ["segments", "bonuses"] {
        support::eventually(consumer, Duration::from_secs(5), || async {
            (!pitboss::bus::pending(&s.db, consumer).await.unwrap()).then_some(())
        })
        .await;
    }
    assert!(pitboss::bus::pending(&s.db, "engage").await.unwrap());
}

crate::both!(failing_follower, a_failing_follower_holds_back_no_leader);

/// The consumers' reads of the log seek an index to their position instead of scanning the log from
/// its first event (which, at a million events, cost each consumer 0.1–0.2 s per read). The plans are
/// checked, not timed: SQLite's must seek the rowid; PostgreSQL's, with sequential scans priced out,
/// must be an index scan whose condition holds the position.
async fn reads_of_the_log_seek_their_position(s: &TestServer) {
    use pitboss::store::Backend as Db;
    use sqlx::Row;
    // A connection of its own, closed at the end: the setting below must not reach the host's pool.
    let mut conn = s.db.pool.acquire().await.unwrap().detach();
    let postgres = s.db.backend == Db::Postgres;
    if postgres {
        sqlx::query("SET enable_seqscan = off").execute(&mut conn).await.unwrap();
    }
    let [read, any, last] = pitboss::bus::log_reads(s.db.backend, false);
    let [platform_only, _, _] = pitboss::bus::log_reads(s.db.backend, true);
    for sql in [read, any, last, platform_only] {
        let explain = if postgres { "EXPLAIN" } else { "EXPLAIN QUERY PLAN" };
        // Position (0, 5), horizon and ceiling at the end, 256 events: as many as the statement takes.
        let values = [0, 5, i64::MAX, 256, i64::MAX, i64::MAX];
        let taken = (1..=values.len()).filter(|n| sql.contains(&format!("${n}"))).max().unwrap();
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("{explain} {sql}")));
        for v in &values[..taken] {
            query = query.bind(*v);
        }
        let rows = query.fetch_all(&mut conn).await.unwrap();
        let column = if postgres { 0 } else { 3 };
        let plan: Vec<String> = rows.iter().map(|r| r.try_get::<String, _>(column).unwrap()).collect();
        let plan = plan.join("\n");
        if postgres {
            assert!(!plan.contains("Seq Scan"), "{sql}:\n{plan}");
            let seek = |l: &str| l.contains("Index Cond:") && l.contains("ROW(tx_id, seq) > ROW(");
            assert!(plan.lines().any(seek), "{sql}:\n{plan}");
        } else {
            assert!(plan.contains("USING INTEGER PRIMARY KEY (rowid>?"), "{sql}:\n{plan}");
        }
    }
}

crate::both!(log_reads, reads_of_the_log_seek_their_position);

mod shutdown {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ends_while_the_consumer_fails_sqlite() {
        let Some(s) = TestServer::start(Backend::Sqlite).await else { return };
        shutdown_ends_while_the_consumer_fails(&s).await;
        tokio::time::timeout(Duration::from_secs(20), s.stop()).await.expect("shutdown ends");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ends_while_the_consumer_fails_postgres() {
        let Some(s) = TestServer::start(Backend::Postgres).await else { return };
        shutdown_ends_while_the_consumer_fails(&s).await;
        tokio::time::timeout(Duration::from_secs(20), s.stop()).await.expect("shutdown ends");
    }
}
