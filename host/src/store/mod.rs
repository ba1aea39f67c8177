//! The database: SQLite (one file, WAL) by default, PostgreSQL when the URL says so, with the same
//! schema and migration numbers (`migrations/sqlite`, `migrations/postgres`). Queries are written once,
//! with `$n` placeholders, which both drivers accept.

pub mod consents;
pub mod contacts;
pub mod decisions;
pub mod deliveries;
pub mod engage;
pub mod erasure;
pub mod events;
pub mod offers;
pub mod segments;

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::{AnyPool, Row as _, any::AnyPoolOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a connection talks to (for code that holds a connection, not the `Db`).
    pub fn of(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite's checkpoints, run in the background while the database is open.
    _checkpoints: Option<Arc<Checkpoints>>,
    /// SQLite: this process's writers queue here for the write lock (see `begin_write`).
    writers: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// How long a SQLite writer waits for the write lock before it fails with "database is locked".
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Db {
    /// Connects (creating a SQLite file if needed) and brings the schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            // Create the file on first start.
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") { url.to_string() } else { format!("{url}{sep}mode=rwc") };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_string())
        } else {
            anyhow::bail!("unsupported database URL `{url}` (sqlite://FILE or postgres://…)");
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer; a busy writer is waited for, not failed.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        let busy = format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis());
                        sqlx::query(sqlx::AssertSqlSafe(busy)).execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        // Checkpoints run in the background (`Checkpoints`), not inside a request's commit.
                        sqlx::query("PRAGMA wal_autocheckpoint = 0").execute(&mut *conn).await?;
                        // Deleted content is overwritten, not left in free pages (erasure must mean it).
                        sqlx::query("PRAGMA secure_delete = ON").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("connecting to {}", redact(&url)))?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.context("running migrations")?;
        let writers = (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let checkpoints = (backend == Backend::Sqlite)
            .then(|| Arc::new(Checkpoints(tokio::spawn(Checkpoints::run(pool.clone(), writers.clone())))));
        Ok(Db { pool, backend, _checkpoints: checkpoints, writers })
    }
}

/// Whether an error is SQLite's write lock staying taken past its timeout (SQLite's busy error, or a
/// turn of this host waited out): nothing is wrong with the request, and trying again later works.
pub fn is_busy(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("database is locked")
}

/// SQLite: this process's turn to write, once the writers before it are done (nothing on PostgreSQL).
async fn write_turn(
    writers: &Option<Arc<tokio::sync::Mutex<()>>>,
    patience: std::time::Duration,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, sqlx::Error> {
    let Some(writers) = writers else { return Ok(None) };
    match tokio::time::timeout(patience, writers.clone().lock_owned()).await {
        Ok(turn) => Ok(Some(turn)),
        Err(_) => {
            // Worded as SQLite's own busy error (`is_busy`).
            let why = format!("database is locked: waited {patience:?} for this host's turn to write");
            Err(sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, why)))
        }
    }
}

/// A checkpoint that waits for the writer (`FULL`, `TRUNCATE`), in this process's write turn: SQLite's
/// own wait for it would poll and could starve behind the queue. Its row: (busy, log pages,
/// checkpointed pages).
async fn checkpoint(
    pool: &AnyPool,
    writers: &Option<Arc<tokio::sync::Mutex<()>>>,
    mode: &str,
) -> Result<sqlx::any::AnyRow, sqlx::Error> {
    let _turn = write_turn(writers, BUSY_TIMEOUT).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA wal_checkpoint({mode})"))).fetch_one(pool).await
}

/// SQLite writes a commit to the WAL; a checkpoint copies the WAL into the database file. Left to
/// SQLite, the checkpoint runs inside whichever commit takes the WAL past 1000 pages, and the request
/// behind that commit waits for it (an offer's p99 went from 1.9 to 3.6 ms). The host checkpoints in
/// the background instead: a passive checkpoint (it waits for no reader or writer) every 250 ms, and a
/// full one (it waits for the writer in turn) when the WAL is past [`Checkpoints::MAX_WAL_PAGES`], so
/// the WAL stays bounded under any write load. Stops with the last clone of the `Db`.
struct Checkpoints(tokio::task::JoinHandle<()>);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpoints {
    /// About 64 MiB of 4 KiB pages.
    const MAX_WAL_PAGES: i64 = 16_384;

    async fn run(pool: AnyPool, writers: Option<Arc<tokio::sync::Mutex<()>>>) {
        use sqlx::Row;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            tick.tick().await;
            let passive = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await;
            let behind = match &passive {
                Ok(row) => row.try_get::<i64, _>(1).unwrap_or(0) > Self::MAX_WAL_PAGES,
                Err(_) => false,
            };
            let outcome =
                if behind { checkpoint(&pool, &writers, "FULL").await.map(drop) } else { passive.map(drop) };
            if let Err(e) = outcome
                && !pool.is_closed()
            {
                tracing::warn!(error = %e, "SQLite checkpoint failed; the next one tries again");
            }
        }
    }
}

impl Db {
    /// SQLite: copies the write-ahead log into the database and empties it, in this process's write
    /// turn; (busy, log pages, checkpointed pages), busy = 1 when a reader was in the way.
    pub async fn truncate_wal(&self) -> Result<sqlx::any::AnyRow, sqlx::Error> {
        checkpoint(&self.pool, &self.writers, "TRUNCATE").await
    }

    /// One write statement on its own, in this process's write turn on SQLite (see `begin_write`).
    pub async fn execute<'q>(
        &self,
        statement: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let _turn = write_turn(&self.writers, BUSY_TIMEOUT).await?;
        statement.execute(&self.pool).await
    }

    /// A transaction that will write. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`):
    /// a transaction that reads first and writes later would otherwise fail with "database is locked"
    /// instead of waiting when another writer is busy.
    ///
    /// On SQLite the process's writers first queue, in order, on an in-process lock held until the
    /// transaction ends. SQLite's own wait for a busy lock sleeps and polls (up to 100 ms between
    /// looks) while holding a pooled connection: with a consumer, the appender and the delivery
    /// workers all writing, most of an event's way to its decision was spent asleep there. Other
    /// processes on the same file (the CLI, a second host) still meet at SQLite's lock. The wait is
    /// bounded like SQLite's busy timeout.
    pub async fn begin_write(&self) -> Result<Tx, sqlx::Error> {
        let turn = write_turn(&self.writers, BUSY_TIMEOUT).await?;
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx { inner, backend: self.backend, _turn: turn })
    }
}

/// A write transaction that knows its backend, so that what differs between SQLite and PostgreSQL
/// inside it (locks, the audit chain's serialisation) is decided from the transaction itself. Derefs
/// to the connection. End it with `commit` or `rollback`: dropped, it rolls back too, but later, on its
/// connection's own time, after the write turn was given up — the next SQLite writer could find the
/// lock still taken and wait for it in SQLite's polling busy handler.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    /// SQLite: this process's write turn, given up after the transaction (fields drop in order).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }

    /// Runs `f` in a savepoint of the transaction: what it wrote stays if it succeeds and is undone
    /// alone if it fails, the transaction going on (a group commit's items). Err only when the
    /// savepoint itself fails, and with it the transaction.
    pub async fn in_savepoint<T, E>(
        &mut self,
        f: impl AsyncFnOnce(&mut Tx) -> Result<T, E>,
    ) -> Result<Result<T, E>, sqlx::Error> {
        sqlx::query("SAVEPOINT item").execute(&mut **self).await?;
        let result = f(self).await;
        if result.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT item").execute(&mut **self).await?;
        }
        sqlx::query("RELEASE SAVEPOINT item").execute(&mut **self).await?;
        Ok(result)
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }
}

/// An outbox a worker claims rows of: its table, key column, the statuses a row is due in (with
/// `next_attempt_at`), and what a claim sets besides `status = 'sending'` and `lease_until`. The table
/// has an index on (status, next_attempt_at).
pub struct Outbox {
    pub table: &'static str,
    pub key: &'static str,
    pub due: &'static [&'static str],
    pub also_set: &'static str,
}

impl Outbox {
    /// Claims, in the caller's write transaction, up to `limit` rows a worker may take now until
    /// `lease_until`: those whose worker's lease ran out, then those due in each status, oldest first;
    /// the rows as `returning` names them. One statement per status, each an index range read that
    /// stops at `limit`: one statement for all of them sorted every due row of a backlog to take a few
    /// (18 ms on SQLite and 53 ms on PostgreSQL with 90k queued, inside the write lock). Of several
    /// hosts racing, each row goes to one: the condition is checked again on the row as it is when
    /// locked (and PostgreSQL skips rows another host is claiming).
    pub async fn claim(
        &self,
        tx: &mut sqlx::AnyConnection,
        returning: &str,
        (now, lease_until): (i64, i64),
        limit: i64,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let backend = Backend::of(tx);
        let skip_locked = if backend == Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let Outbox { table, key, also_set, .. } = self;
        let status = unindexed(backend, "status");
        let due = self.due.iter().map(|s| (*s, "next_attempt_at"));
        let mut rows = Vec::new();
        for (is, time) in std::iter::once(("sending", "lease_until")).chain(due) {
            let room = limit - rows.len() as i64;
            if room <= 0 {
                break;
            }
            // The rows picked are looked up by key, then checked again.
            let sql = format!(
                "UPDATE {table} SET status = 'sending', lease_until = $2{also_set}
                 WHERE {key} IN (SELECT {key} FROM {table} WHERE status = '{is}' AND {time} <= $1
                                 ORDER BY next_attempt_at LIMIT $3 {skip_locked})
                   AND {status} = '{is}' AND {time} <= $1
                 RETURNING {returning}"
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(lease_until).bind(room);
            rows.extend(query.fetch_all(&mut *tx).await?);
        }
        Ok(rows)
    }
}

/// Which players of a brand a read of many takes: the ids in (after, last], or a list.
#[derive(Debug, Clone, Copy)]
pub enum Players<'a> {
    Range(&'a str, &'a str),
    List(&'a [String]),
}

impl Players<'_> {
    /// The condition on `player_id`, its parameters numbered from `$first` (a list is one: see
    /// [`one_of`]).
    pub fn condition(&self, backend: Backend, first: usize) -> String {
        match self {
            Players::Range(..) => format!("player_id > ${first} AND player_id <= ${}", first + 1),
            Players::List(_) => one_of(backend, "player_id", first),
        }
    }

    /// Binds the condition's parameters, in order.
    pub fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        match self {
            Players::Range(after, last) => q.bind(after.to_string()).bind(last.to_string()),
            Players::List(ids) => q.bind(json_list(ids.iter())),
        }
    }
}

/// Rows per multi-row statement ([`values_list`]) of `params` parameters a row. sqlx binds each of a
/// SQLite statement's parameters by its name, which SQLite finds in a list as long as the statement's
/// parameters: binding costs the square of their number (a sweep's 200-row inserts of seven
/// parameters spent a fifth of the host's time in that lookup). So on SQLite a statement carries
/// about [`SQLITE_PARAMS`]; PostgreSQL binds in order and takes 200 rows, far below its limit.
pub fn rows_per_statement(backend: Backend, params: usize) -> usize {
    match backend {
        Backend::Postgres => 200,
        Backend::Sqlite => (SQLITE_PARAMS / params.max(1)).clamp(1, 200),
    }
}

/// The parameters a multi-row statement carries on SQLite (see [`rows_per_statement`]).
pub const SQLITE_PARAMS: usize = 96;

/// `column` is one of the values of the parameter `$param`, a JSON array of texts ([`json_list`]).
/// One parameter whatever the list's length: the statement's text does not change with it, so each
/// connection prepares it once (a list of `$n` was a new statement for every length, parsed and
/// planned again), and SQLite binds one parameter instead of hundreds. On PostgreSQL the values are an
/// array (`= ANY`), which the planner takes for a few values: an index scan for any length and any
/// size of table (with 200 `$n`, or `IN (SELECT …)`, it planned a sequential scan of a 10k-player
/// brand's 30k consents: 11–14 ms against 3.6 ms).
pub fn one_of(backend: Backend, column: &str, param: usize) -> String {
    match backend {
        Backend::Postgres => {
            format!("{column} = ANY (ARRAY(SELECT json_array_elements_text(${param}::json)))")
        }
        Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
    }
}

/// `column` in a condition beside keys to look up (a list, a subquery's), hidden from SQLite's
/// planner: without statistics it prefers a range of the column's index to the keys' lookups, and the
/// range may hold a backlog (a queue of deliveries: 29 ms a statement with 90k). SQLite's unary `+`
/// keeps the index out; PostgreSQL's planner has statistics.
pub fn unindexed(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Postgres => column.to_string(),
        Backend::Sqlite => format!("+{column}"),
    }
}

/// The values of a [`one_of`] condition, as its parameter.
pub fn json_list<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> String {
    let values: Vec<serde_json::Value> = values.into_iter().map(|v| v.as_ref().into()).collect();
    serde_json::Value::Array(values).to_string()
}

/// The `VALUES` list of a multi-row statement: `rows` tuples of `cols` parameters, numbered from `$1`.
pub fn values_list(rows: usize, cols: usize) -> String {
    let tuple = |r: usize| {
        let marks: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
        format!("({})", marks.join(", "))
    };
    (0..rows).map(tuple).collect::<Vec<_>>().join(", ")
}

/// The rows of `SELECT {columns} FROM {from} ORDER BY {order}` as one JSON array of arrays, read in one
/// row: a bulk read then costs one row through the driver instead of one per row (about 10 µs each
/// through sqlx's `Any` driver, most of a sweep's reading). `columns` are plain columns or
/// [`JSON_STATE`]; `from` may end with a `WHERE`; `$n` parameters are bound by the caller.
pub async fn json_rows<'q, T: serde::de::DeserializeOwned>(
    conn: &mut sqlx::AnyConnection,
    columns: &str,
    from: &str,
    order: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
) -> anyhow::Result<Vec<T>> {
    let sql = if Backend::of(conn) == Backend::Postgres {
        let columns = columns.replace(JSON_STATE, "state::json");
        format!(
            "SELECT COALESCE(json_agg(json_build_array({columns}) ORDER BY {order}), '[]')::text FROM {from}"
        )
    } else {
        let columns = columns.replace(JSON_STATE, "json(state)");
        format!("SELECT json_group_array(json_array({columns}) ORDER BY {order}) FROM {from}")
    };
    let json: String = bind(sqlx::query(sqlx::AssertSqlSafe(sql))).fetch_one(conn).await?.try_get(0)?;
    Ok(serde_json::from_str(&json)?)
}

/// In [`json_rows`]' columns: the `state` column (JSON text) as the JSON value itself, not a string.
pub const JSON_STATE: &str = "@state";

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch, now.
/// Milliseconds since the epoch as RFC 3339 (what the API shows).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_lists_number_their_parameters_row_by_row() {
        assert_eq!(super::values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(super::values_list(1, 1), "($1)");
    }

    /// A writer that waited its whole turn out is busy (the API answers 503 `busy`), like SQLite's own
    /// busy error.
    #[tokio::test]
    async fn a_turn_waited_out_is_busy() {
        let writers = Some(std::sync::Arc::new(tokio::sync::Mutex::new(())));
        let patience = std::time::Duration::from_millis(20);
        let _held = super::write_turn(&writers, patience).await.unwrap();
        let waited = super::write_turn(&writers, patience).await.unwrap_err();
        assert!(super::is_busy(&waited), "{waited}");
    }
}
