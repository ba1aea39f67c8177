//! A real server for HTTP tests: on a fresh SQLite file or a fresh PostgreSQL database (one per test,
//! dropped afterwards), listening on a free port, reached with a real HTTP client.
//!
//! PostgreSQL comes from `PITBOSS_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Without it, PostgreSQL tests fail when `CI` is set and are skipped, loudly, otherwise.

use std::time::Duration;

use pitboss::auth::Role;
use pitboss::clock::Clock;
use pitboss::config::Settings;
use pitboss::store::Db;
use pitboss::store::contacts::ContactsKey;
use serde_json::Value;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("PITBOSS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of its own for one test.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pub sqlite_file: Option<std::path::PathBuf>,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` when PostgreSQL is unreachable outside CI (the test is then skipped, and says so).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("pitboss.db");
                Some(TestDb {
                    url: format!("sqlite://{}", file.display()),
                    backend,
                    sqlite_file: Some(file),
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                sqlx::any::install_default_drivers();
                let conn = sqlx::AnyPool::connect(&admin).await;
                let pool = match conn {
                    Ok(p) => p,
                    Err(e) if std::env::var_os("CI").is_some() => {
                        panic!("PostgreSQL at {admin} is required in CI: {e}")
                    }
                    Err(e) => {
                        eprintln!(
                            "SKIPPED (PostgreSQL unreachable at {admin}: {e}); set PITBOSS_TEST_POSTGRES to run it"
                        );
                        return None;
                    }
                };
                let mut rnd = [0u8; 6];
                getrandom::fill(&mut rnd).unwrap();
                let name = format!("pitboss_t_{}", hex::encode(rnd));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let (base, _) = admin.rsplit_once('/').unwrap();
                Some(TestDb {
                    url: format!("{base}/{name}"),
                    backend,
                    sqlite_file: None,
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, on a thread of its own: Drop cannot await.
            let admin = postgres_admin_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::AnyPool::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&pool)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestServer {
    contacts_key: ContactsKey,
    pub settings: Settings,
    /// The host's delivery clock; shared with every host this server starts.
    pub clock: Clock,
    pub base: String,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub db: Db,
    pub test_db: TestDb,
    /// Jurisdictions whose versions need an impact report before approval (none unless a test asks;
    /// it takes effect at the next restart).
    pub require_impact: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, Settings::default()).await
    }

    /// A server with a config file's settings (brands, relay, providers, policies).
    pub async fn start_with(backend: Backend, settings: Settings) -> Option<TestServer> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("PITBOSS_LOG").unwrap_or("pitboss=info".into()))
            .try_init();
        let test_db = TestDb::new(backend).await?;
        let db = Db::open(&test_db.url).await.expect("open test database");
        let (contacts_key, _) = ContactsKey::generate();
        let key = contacts_key.clone();
        let data_dir = tempfile::tempdir().unwrap();
        let clock = Clock::default();
        let (base, stop, task) = spawn_host(db.clone(), key, data_dir.path(), (&settings, &[]), &clock).await;
        Some(TestServer {
            contacts_key,
            settings,
            clock,
            base,
            data_dir,
            http: reqwest::Client::new(),
            db,
            test_db,
            require_impact: Vec::new(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub async fn key(&self, role: Role, brands: &[&str]) -> String {
        self.key_of(role, brands, &format!("{} holder", role.as_str())).await
    }

    /// A key issued to a named holder (four-eyes checks compare holders).
    pub async fn key_of(&self, role: Role, brands: &[&str], holder: &str) -> String {
        let brands: Vec<String> = brands.iter().map(|b| b.to_string()).collect();
        let actor = pitboss::auth::keys::cli_actor();
        pitboss::auth::keys::create(&self.db, &actor, role, &brands, holder).await.unwrap().1
    }

    /// A request written by hand on a socket (what a client library refuses to send); its status and body.
    pub async fn raw(&self, request: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket =
            tokio::net::TcpStream::connect(self.base.trim_start_matches("http://")).await.unwrap();
        let _ = socket.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r =
            self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, key: &str, path: &str, body: &'static str) -> (u16, Value) {
        let r =
            self.http.post(format!("{}{path}", self.base)).bearer_auth(key).body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        let r =
            self.http.put(format!("{}{path}", self.base)).bearer_auth(key).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.delete(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the profile consumer has applied everything in the log.
    pub async fn settled(&self) {
        super::eventually("the profile consumer catching up", Duration::from_secs(5), || async {
            (!pitboss::bus::pending(&self.db, "profiles").await.unwrap()).then_some(())
        })
        .await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        use sqlx::Row;
        sqlx::query(sql).fetch_one(&self.db.pool).await.unwrap().try_get::<i64, _>(0).unwrap()
    }

    /// Asserts that none of `needles` is stored anywhere: every byte of the SQLite file and its WAL, or
    /// every row of every PostgreSQL table as text.
    pub async fn assert_nowhere(&self, needles: &[&str]) {
        match &self.test_db.sqlite_file {
            Some(file) => {
                for path in [file.clone(), file.with_extension("db-wal")] {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    for n in needles {
                        assert!(
                            !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                            "{n} in {}",
                            path.display()
                        );
                    }
                }
            }
            None => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = 'public'",
                )
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
                assert!(tables.len() > 3);
                for table in tables {
                    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT CAST(t AS TEXT) FROM (SELECT * FROM {table}) t"
                    )))
                    .fetch_all(&self.db.pool)
                    .await
                    .unwrap();
                    for n in needles {
                        assert!(!rows.iter().any(|r| r.contains(n)), "{n} in {table}");
                    }
                }
            }
        }
    }

    /// A second host process on the same database and data directory (as when scaled out); returns its
    /// base URL and what stops it.
    pub async fn second_host(
        &self,
    ) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
        spawn_host(
            self.db.clone(),
            self.contacts_key.clone(),
            self.data_dir.path(),
            (&self.settings, &self.require_impact),
            &self.clock,
        )
        .await
    }

    /// Stops the server and starts it again on the same database and data directory (a new port).
    pub async fn restart(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        self.start_again().await;
    }

    /// Kills the host where it stands, as a crash would: its tasks are dropped mid-work (a provider
    /// call in flight is cut off), nothing is finished or flushed.
    pub async fn crash(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.stop.take();
    }

    /// Starts the host again after `crash` (a new port).
    pub async fn start_again(&mut self) {
        let (base, stop, task) = spawn_host(
            self.db.clone(),
            self.contacts_key.clone(),
            self.data_dir.path(),
            (&self.settings, &self.require_impact),
            &self.clock,
        )
        .await;
        (self.base, self.stop, self.task) = (base, Some(stop), Some(task));
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Runs a host on a free port with the tests' options (the shared code cache; GB needs two approvers);
/// returns its base URL, what stops it, and its task.
async fn spawn_host(
    db: Db,
    key: ContactsKey,
    data_dir: &std::path::Path,
    (settings, require_impact): (&Settings, &[String]),
    clock: &Clock,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = pitboss::config::ServeOptions {
        data_dir: data_dir.to_path_buf(),
        code_cache: Some(super::code_cache()),
        dual_approval: vec!["GB".into()],
        require_impact: require_impact.to_vec(),
        config: None,
        settings: settings.clone(),
        clock: clock.clone(),
    };
    let task = tokio::spawn(async move {
        pitboss::server::run(db, key, &options, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    (base, stop, task)
}

/// Runs an async test body on SQLite and on PostgreSQL: `both!(name, body_fn)`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) =
                    $crate::support::server::TestServer::start($crate::support::server::Backend::Sqlite).await
                {
                    super::$body(&s).await;
                    s.stop().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) =
                    $crate::support::server::TestServer::start($crate::support::server::Backend::Postgres)
                        .await
                {
                    super::$body(&s).await;
                    s.stop().await;
                }
            }
        }
    };
}
