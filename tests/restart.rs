//! The server process killed (SIGKILL) in the middle of a stream and started again gives the same
//! profiles as a run without the kill: no event lost, none counted twice. SIGTERM stops it cleanly.
//! Runs the real binary, on SQLite and on PostgreSQL.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::server::{Backend, TestDb};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed assertion must not leave a server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(db_url: &str) -> Server {
    let data = std::env::temp_dir().join(format!("pitboss-restart-{}", std::process::id()));
    start_with(db_url, &data, &[], Some(KEY)).await
}

/// `pitboss serve` on `db_url` with its data in `data_dir`, more arguments, and a contacts key or none.
async fn start_with(db_url: &str, data_dir: &std::path::Path, args: &[&str], key: Option<&str>) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pitboss"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database-url", db_url])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("PITBOSS_CONTACTS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(key) = key {
        command.env("PITBOSS_CONTACTS_KEY", key);
    }
    let child = command.spawn().unwrap();
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let health = format!("{}/healthz", server.base);
    support::eventually("the server coming up", Duration::from_secs(6), || async {
        reqwest::get(&health).await.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    server
}

fn create_key(db_url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pitboss"))
        .args(["keys", "create", "--role", "platform", "--brand", "A", "--database-url", db_url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// 20 players × 30 events, in batches of 20.
fn stream() -> Vec<Value> {
    let now = jiff::Timestamp::now();
    let mut events = Vec::new();
    for i in 0..30 {
        for p in 0..20 {
            let player = format!("p_{p:02}");
            let at = (now - jiff::SignedDuration::from_hours(24 * (29 - i) + p)).to_string();
            let id = format!("{player}_{i:02}");
            let e = match i % 5 {
                0 if i == 0 => {
                    json!({"event_type": "player.registered", "payload": {"jurisdiction": "DE", "locale": "de-DE", "time_zone": "Europe/Berlin", "currency": "EUR", "email": format!("{player}@example.com")}})
                }
                0 => json!({"event_type": "session.started", "payload": {"session_id": id}}),
                1 => {
                    json!({"event_type": "payment.captured", "payload": {"payment_id": id, "amount_minor": 1000 + 10 * i + p, "currency": "EUR"}})
                }
                2 => {
                    json!({"event_type": "bet.placed", "payload": {"bet_id": id, "stake_minor": 100 + i, "currency": "EUR", "provider": format!("prov_{}", p % 3), "category": "slots"}})
                }
                3 => {
                    json!({"event_type": "bet.settled", "payload": {"bet_id": id, "stake_minor": 100 + i, "win_minor": 40 * (p % 4), "currency": "EUR", "category": "slots"}})
                }
                _ => {
                    json!({"event_type": "rg.limit_set", "payload": {"kind": "deposit", "period": "day", "amount_minor": 10_000 + i, "currency": "EUR"}})
                }
            };
            let mut e = e;
            e["event_id"] = json!(id);
            e["player_id"] = json!(player);
            e["brand_id"] = json!("A");
            e["occurred_at"] = json!(at);
            events.push(e);
        }
    }
    events
}

async fn post_all(server: &Server, key: &str, batches: &[&[Value]]) {
    let http = reqwest::Client::new();
    for batch in batches {
        let r = http
            .post(format!("{}/v1/events", server.base))
            .bearer_auth(key)
            .json(batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
}

async fn settled(db_url: &str) {
    use sqlx::Row;
    let db = pitboss::store::Db::open(db_url).await.unwrap();
    support::eventually("the consumer catching up", Duration::from_secs(20), || async {
        let any: i64 =
            sqlx::query("SELECT COUNT(*) FROM events").fetch_one(&db.pool).await.unwrap().try_get(0).unwrap();
        (any > 0 && !pitboss::bus::pending(&db, "profiles").await.unwrap()).then_some(())
    })
    .await;
    db.pool.close().await;
}

async fn profiles(server: &Server, key: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for p in 0..20 {
        let r =
            http.get(format!("{}/v1/players/p_{p:02}", server.base)).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        out.push(v);
    }
    out
}

fn terminate(mut server: Server) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the server cleanly: {status:?}");
}

async fn killed_and_restarted_equals_uninterrupted(backend: Backend) {
    let events = stream();
    let batches: Vec<&[Value]> = events.chunks(20).collect();

    let Some(reference_db) = TestDb::new(backend).await else { return };
    let server = start(&reference_db.url).await;
    let key = create_key(&reference_db.url);
    post_all(&server, &key, &batches).await;
    settled(&reference_db.url).await;
    let expected = profiles(&server, &key).await;
    terminate(server);

    let Some(db) = TestDb::new(backend).await else { return };
    let server = start(&db.url).await;
    let key = create_key(&db.url);
    post_all(&server, &key, &batches[..15]).await;
    drop(server); // SIGKILL, the consumer mid-stream
    let server = start(&db.url).await;
    // The client did not know what got through before the kill: it sends everything again.
    post_all(&server, &key, &batches).await;
    settled(&db.url).await;
    let got = profiles(&server, &key).await;
    terminate(server);
    assert_eq!(got, expected);
    assert!(expected.iter().all(|p| p["features"]["dep_count_30d"].as_u64().unwrap() > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_gives_the_same_profiles_sqlite() {
    killed_and_restarted_equals_uninterrupted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_then_restarted_gives_the_same_profiles_postgres() {
    killed_and_restarted_equals_uninterrupted(Backend::Postgres).await;
}

/// The README's quick start, `serve --dev`, survives a restart: the development key is kept beside the
/// data, so the contacts written before read again after. A host given another key reads them as
/// unreadable — no age — and answers as usual, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_reads_its_contacts_after_a_restart() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let data = tempfile::tempdir().unwrap();
    let server = start_with(&db.url, data.path(), &["--dev"], None).await;
    let key = create_key(&db.url);
    let reg = json!({"event_id": "evt_1", "event_type": "player.registered", "player_id": "p_123", "brand_id": "A",
        "occurred_at": "2026-11-01T10:00:00Z", "payload": {"jurisdiction": "DE", "locale": "de-DE",
        "time_zone": "Europe/Berlin", "currency": "EUR", "email": "alex@example.com", "birth_date": "1990-05-17"}});
    post_all(&server, &key, &[std::slice::from_ref(&reg)]).await;
    settled(&db.url).await;
    let band = |server: &Server| {
        let url = format!("{}/v1/players/p_123", server.base);
        let key = key.clone();
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v["age_band"].as_str().unwrap_or_default().to_string())
        }
    };
    assert_eq!(band(&server).await, (200, "35-54".to_string()));
    terminate(server);
    assert!(data.path().join("dev-contacts.key").exists());

    let server = start_with(&db.url, data.path(), &["--dev"], None).await;
    assert_eq!(band(&server).await, (200, "35-54".to_string()), "the same key after a restart");
    terminate(server);

    let other = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let server = start_with(&db.url, data.path(), &[], Some(other)).await;
    assert_eq!(band(&server).await, (200, "unknown".to_string()), "another key: unreadable, not a failure");
    terminate(server);
}

/// kill -9 in the middle of a steady stream from concurrent clients on PostgreSQL: the clients retry
/// what did not get its 202 (against the host started again), and afterwards every player's applied
/// events equal the accepted ones — none lost, none applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_during_a_steady_stream_on_postgres_applies_every_accepted_event() {
    use std::sync::{Arc, Mutex};
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let data = tempfile::tempdir().unwrap();
    let server = start_with(&db.url, data.path(), &[], Some(KEY)).await;
    let key = create_key(&db.url);
    let players: Vec<Value> = (0..20)
        .map(|p| json!({"event_id": format!("reg_{p}"), "event_type": "player.registered", "player_id": format!("p_{p:02}"),
            "brand_id": "A", "occurred_at": "2026-11-20T10:00:00Z",
            "payload": {"jurisdiction": "DE", "locale": "de-DE", "time_zone": "Europe/Berlin", "currency": "EUR"}}))
        .collect();
    post_all(&server, &key, &[&players]).await;
    let base = Arc::new(Mutex::new(server.base.clone()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (base, key) = (base.clone(), key.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                for n in 0..150 {
                    let id = format!("c{client}_{n}");
                    let player = format!("p_{:02}", (client * 3 + n) % 20);
                    let e = if n % 2 == 0 {
                        json!({"event_type": "payment.captured", "payload": {"payment_id": id, "amount_minor": 500, "currency": "EUR"}})
                    } else {
                        json!({"event_type": "bet.placed", "payload": {"bet_id": id, "stake_minor": 100, "currency": "EUR", "category": "slots"}})
                    };
                    let mut e = e;
                    e["event_id"] = json!(id);
                    e["player_id"] = json!(player);
                    e["brand_id"] = json!("A");
                    e["occurred_at"] = json!("2026-11-21T10:00:00Z");
                    // Until accepted: a refused connection or a cut-off answer is sent again.
                    loop {
                        let url = format!("{}/v1/events", base.lock().unwrap());
                        match http.post(url).bearer_auth(&key).json(&e).send().await {
                            Ok(r) if r.status().as_u16() == 202 => break,
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let before = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE event_id LIKE 'c%'")
        .fetch_one(&pitboss::store::Db::open(&db.url).await.unwrap().pool)
        .await
        .unwrap();
    drop(server); // SIGKILL mid-stream
    assert!(before > 0 && before < 8 * 150, "killed in the middle of the stream ({before} stored)");
    let server = start_with(&db.url, data.path(), &[], Some(KEY)).await;
    *base.lock().unwrap() = server.base.clone();
    for c in clients {
        c.await.unwrap();
    }
    settled(&db.url).await;
    let opened = pitboss::store::Db::open(&db.url).await.unwrap();
    crate::event_log::assert_applied_equals_accepted(&opened).await;
    let stored = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE event_id LIKE 'c%'")
        .fetch_one(&opened.pool)
        .await
        .unwrap();
    assert_eq!(stored, 8 * 150, "every event stored once");
    terminate(server);
}

/// SQLite's WAL is copied into the database file in the background, not inside a request's commit:
/// writes the size of several automatic checkpoints reach the file without any commit checkpointing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_run_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pitboss.db");
    let db = pitboss::store::Db::open(&format!("sqlite://{}", path.display())).await.unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    sqlx::query("CREATE TABLE filler (x TEXT)").execute(&db.pool).await.unwrap();
    for _ in 0..40 {
        sqlx::query("INSERT INTO filler (x) VALUES ($1)")
            .bind("x".repeat(100_000))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // 4 MB in the WAL; the database file takes it at the next checkpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&path).unwrap().len() < before + 4_000_000 {
        assert!(std::time::Instant::now() < deadline, "no checkpoint copied the WAL into the file");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
