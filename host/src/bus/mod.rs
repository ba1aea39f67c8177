//! The bus: events committed to the log are handed to consumers in log order (so each player's events
//! are handled in the order they were accepted). Consumers remember how far they got — the offset moves
//! in the same transaction as the consumer's own writes — so a restart resumes exactly where it stopped:
//! no event counted twice, none lost.
//!
//! Log order is (writing transaction, seq). On PostgreSQL concurrent requests commit in any order, so a
//! higher `seq` can be visible while a lower one is still being written; a consumer therefore reads only
//! what was written by transactions older than the oldest one still running (the snapshot's xmin), in
//! (tx_id, seq) order: nothing can ever appear below a position it has passed. SQLite has one writer at
//! a time: there tx_id is 0 and the order is plain seq.
//!
//! On SQLite a consumer that follows another one joins its group (profiles, then the triggers, the
//! segments and the bonuses, which follow it): a group takes a batch of each of its consumers, in
//! order, in one transaction and one turn of the write lock, each with its own offset and up to its
//! leader's new offset; the consumers at the same offset (all of them, once caught up) share one read
//! of the log.
//! Consumers taking their turns one by one spent most of an event's way waiting for the write lock,
//! four times over; a group fails over to one by one when a batch fails, so that one consumer's failing
//! event holds back no other. On PostgreSQL consumers run side by side, each in its own transactions.
//!
//! An event whose effects cannot be applied (a sum out of range, a payload that no longer reads) is set
//! aside with its error — listed by the admin API, counted in `/metrics` — and the consumer goes on; a
//! failure of the system (the database away, a lost race) is retried and never sets anything aside.
//!
//! `Bus` is what producers see; the embedded implementation reads the event table. A NATS JetStream
//! implementation will sit behind the same trait.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{Notify, watch};

use crate::model::{EventPayload, EventType};
use crate::store::{Backend, Db, now_ms};

/// The producer's side.
pub trait Bus: Send + Sync {
    /// Events were committed to the log: wake the consumers.
    fn notify(&self);
}

/// A place in the log: events are read in (tx, seq) order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The id of the transaction that wrote the event (0 on SQLite and for rows older than the column).
    pub tx: i64,
    pub seq: i64,
}

/// One event as consumers receive it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: i64,
    pub tx: i64,
    pub brand_id: String,
    pub event_id: String,
    pub player_id: String,
    pub event_type: EventType,
    pub occurred_at: i64,
    /// When the host accepted it (wall clock, ms).
    pub received_at: i64,
    pub payload: EventPayload,
}

impl Position {
    /// Past every event: the ceiling of a consumer that follows no other.
    const END: Position = Position { tx: i64::MAX, seq: i64::MAX };
}

impl LoggedEvent {
    pub fn position(&self) -> Position {
        Position { tx: self.tx, seq: self.seq }
    }

    /// The event as the model has it (what a plugin is shown).
    pub fn event(&self) -> crate::model::Event {
        crate::model::Event {
            event_id: self.event_id.clone(),
            event_type: self.event_type,
            occurred_at: jiff::Timestamp::from_millisecond(self.occurred_at).unwrap_or_default(),
            payload: self.payload.clone(),
        }
    }
}

/// A handler's way of saying that an event's effects cannot be applied, ever (e.g. a sum that would
/// leave its range): the event is set aside at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unapplicable(pub String);

/// A consumer: applies a batch of events, in log order, in the transaction the offset moves in.
pub trait Handler: Send + Sync + 'static {
    /// `passed`: what the consumers before this one in the transaction read and pass on.
    fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
        passed: &mut Passed,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;

    /// Called after a committed batch, with the events it held (cache invalidation and such).
    fn committed(&self, _events: &[LoggedEvent]) {}
}

/// What consumers pass on to those after them in the same transaction (a SQLite group's): values read
/// there, one of each type, so that a later consumer need not read them again. It lives as long as the
/// transaction; a consumer that changes what such a value was read from takes it out first.
#[derive(Default)]
pub struct Passed(std::collections::HashMap<std::any::TypeId, Box<dyn std::any::Any + Send>>);

impl Passed {
    /// The value of type `T` passed on so far (empty at first).
    pub fn get<T: Default + Send + 'static>(&mut self) -> &mut T {
        let value = self.0.entry(std::any::TypeId::of::<T>()).or_insert_with(|| Box::new(T::default()));
        value.downcast_mut().expect("kept under its own type")
    }

    /// Takes out the value of type `T`: what it was read from is about to change.
    pub fn forget<T: 'static>(&mut self) {
        self.0.remove(&std::any::TypeId::of::<T>());
    }
}

/// Events read per transaction.
const BATCH: i64 = 256;

/// A consumer as a capability registers it: a name (its offset's key) and its handler, started by the
/// server with the others. A new capability adds its consumers to `Core::consumers`; nothing else
/// changes.
pub struct Consumer {
    pub name: &'static str,
    reads: Reads,
    handler: Box<dyn Stage>,
}

/// What a consumer reads of the log.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    /// The consumer this one follows: it takes only events that one has applied (segments read the
    /// profiles the profile consumer wrote).
    leader: Option<&'static str>,
    /// Only the platform's events: those the host emits (`segment.*`, `bonus.*` of the bonus engine)
    /// are passed over in the read itself, never parsed or handed to the consumer.
    platform_only: bool,
}

/// A handler behind a pointer, as a consumer keeps it.
trait Stage: Send + Sync {
    fn handle<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
        events: &'a [LoggedEvent],
        passed: &'a mut Passed,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>>;
    fn committed(&self, events: &[LoggedEvent]);
}

impl<H: Handler> Stage for H {
    fn handle<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
        events: &'a [LoggedEvent],
        passed: &'a mut Passed,
    ) -> futures_util::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Handler::handle(self, conn, events, passed))
    }

    fn committed(&self, events: &[LoggedEvent]) {
        Handler::committed(self, events)
    }
}

pub type ConsumerTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Consumer {
    pub fn new<H: Handler>(name: &'static str, handler: H) -> Consumer {
        Consumer { name, reads: Reads::default(), handler: Box::new(handler) }
    }

    /// Takes only the events `leader` has applied; started with its leader (`start`), it joins the
    /// leader's group.
    pub fn after(mut self, leader: &'static str) -> Consumer {
        self.reads.leader = Some(leader);
        self
    }

    /// Takes only the events the platform sends: the host's own (`EventType::HOST_EMITTED`) are
    /// passed over as the log is read. A sweep writes hundreds of thousands of `segment.*` events;
    /// a consumer that ignores them no longer reads, parses and commits past each batch of them.
    pub fn platform_events_only(mut self) -> Consumer {
        self.reads.platform_only = true;
        self
    }
}

/// Runs consumers on `bus` until `stop` turns true. On SQLite a consumer that follows another one
/// listed before it joins that one's group, and a group takes its consumers' batches in one
/// transaction, in the order listed: an event crosses the profile, the triggers, the segments and the
/// bonus engine in one turn of the write lock and one commit instead of one each, and a follower never
/// waits for its leader's batch to be committed and announced. On PostgreSQL, where writers do not
/// take turns, each consumer runs on its own, side by side with the others.
pub fn start(
    consumers: Vec<Consumer>,
    bus: &Arc<EmbeddedBus>,
    stop: &watch::Receiver<bool>,
) -> Vec<ConsumerTask> {
    let mut groups: Vec<Vec<Consumer>> = Vec::new();
    for c in consumers {
        let joins = |g: &&mut Vec<Consumer>| g.iter().any(|o| Some(o.name) == c.reads.leader);
        match groups.iter_mut().find(joins).filter(|_| bus.db.backend == Backend::Sqlite) {
            Some(group) => group.push(c),
            None => groups.push(vec![c]),
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let (bus, stop) = (bus.clone(), stop.clone());
            Box::pin(async move { bus.run(group, stop).await }) as ConsumerTask
        })
        .collect()
}

pub struct EmbeddedBus {
    db: Db,
    wake: Arc<Notify>,
    /// A consumer committed a batch: the consumers that follow it may go on.
    progress: Notify,
}

impl Bus for EmbeddedBus {
    fn notify(&self) {
        self.wake.notify_waiters();
    }
}

/// What a consumer remembers between batches: after a batch failed, events are taken one at a time up
/// to its end, so that the one that fails is found and the others still go through.
#[derive(Debug, Default)]
struct Progress {
    single_until: Option<Position>,
}

/// An event as read from the log, or where one that does not read lies, with the error.
type LogRow = Result<LoggedEvent, (Position, String)>;

/// Where a row of the log lies, whether it reads or not.
fn row_position(row: &LogRow) -> Position {
    match row {
        Ok(e) => e.position(),
        Err((at, _)) => *at,
    }
}

/// A consumer's share of what was read of the log: its events in order, up to the first event of its
/// range that does not read; where its offset may move (the last event it took or passed over);
/// whether that was every event it could take.
struct Share {
    events: Vec<LoggedEvent>,
    unreadable: Option<(Position, String)>,
    to: Option<Position>,
    drained: bool,
}

impl Share {
    /// Of `rows`, every row of the consumer's range in log order: those `takes` wants are its events.
    /// `complete`: no event of its range lies beyond them.
    fn of(rows: impl Iterator<Item = LogRow>, takes: impl Fn(&LoggedEvent) -> bool, complete: bool) -> Share {
        let mut share = Share { events: Vec::new(), unreadable: None, to: None, drained: complete };
        for row in rows {
            match row {
                Ok(e) => {
                    share.to = Some(e.position());
                    if takes(&e) {
                        share.events.push(e);
                    }
                }
                Err(bad) => {
                    share.unreadable = Some(bad);
                    share.drained = false;
                    break;
                }
            }
        }
        share
    }

    /// Also past the host's events a filtered read passed over, up to `seen` (unless an event of its
    /// range does not read).
    fn past(mut self, seen: Option<Position>) -> Share {
        if self.unreadable.is_none() {
            self.to = self.to.max(seen);
        }
        self
    }
}

/// Reads the log after `after`, up to `horizon` (exclusive, on tx) and `ceiling` (inclusive); only
/// the platform's events if `platform_only`.
async fn read_after(
    conn: &mut sqlx::AnyConnection,
    after: Position,
    (horizon, ceiling): (i64, Position),
    limit: i64,
    platform_only: bool,
) -> anyhow::Result<Vec<LogRow>> {
    let [sql, _, _] = log_reads(Backend::of(conn), platform_only);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.tx)
        .bind(after.seq)
        .bind(horizon)
        .bind(limit)
        .bind(ceiling.tx)
        .bind(ceiling.seq)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            logged_of(row).map_err(|e| {
                let (tx, seq) = (row.try_get("tx_id").unwrap_or(0), row.try_get("seq").unwrap_or(0));
                (Position { tx, seq }, format!("the stored event does not read: {e:#}"))
            })
        })
        .collect())
}

/// How consumers read the log, each found with an index seek:
/// 1. the events after a position ($1 tx, $2 seq), below a horizon ($3) and up to a ceiling ($5, $6),
///    at most $4 (only the platform's if `platform_only`);
/// 2. whether any event lies after a position ($1, $2);
/// 3. the last event after a position ($1, $2) and up to a bound ($3, $4): where a read that passed
///    over the host's events may move the offset to.
///
/// PostgreSQL seeks a row value in the (tx_id, seq) index; SQLite seeks only on a row value's first
/// column — it would scan every event from the first — so there, where tx_id is always 0, the range
/// and the order are on seq, its rowid. (Public for the test that checks the plans.)
pub fn log_reads(backend: Backend, platform_only: bool) -> [String; 3] {
    let (after, upto, order, backwards) = match backend {
        Backend::Postgres => {
            ("(tx_id, seq) > ($1, $2)", "(tx_id, seq) <= ($3, $4)", "tx_id, seq", "tx_id DESC, seq DESC")
        }
        Backend::Sqlite => ("seq > $2", "seq <= $4", "seq", "seq DESC"),
    };
    let only = if platform_only {
        let names: Vec<String> =
            EventType::HOST_EMITTED.iter().map(|t| format!("'{}'", crate::model::wire_name(t))).collect();
        format!(" AND event_type NOT IN ({})", names.join(", "))
    } else {
        String::new()
    };
    [
        format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE {after} AND tx_id < $3 AND (tx_id, seq) <= ($5, $6){only}
             ORDER BY {order} LIMIT $4"
        ),
        format!("SELECT 1 AS one FROM events WHERE {after} ORDER BY {order} LIMIT 1"),
        format!("SELECT tx_id, seq FROM events WHERE {after} AND {upto} ORDER BY {backwards} LIMIT 1"),
    ]
}

const EVENT_COLUMNS: &str =
    "seq, tx_id, brand_id, event_id, player_id, event_type, occurred_at, received_at, payload";

fn logged_of(row: &sqlx::any::AnyRow) -> anyhow::Result<LoggedEvent> {
    let event_type: String = row.try_get("event_type")?;
    let payload: String = row.try_get("payload")?;
    Ok(LoggedEvent {
        seq: row.try_get("seq")?,
        tx: row.try_get("tx_id")?,
        brand_id: row.try_get("brand_id")?,
        event_id: row.try_get("event_id")?,
        player_id: row.try_get("player_id")?,
        event_type: serde_json::from_value(serde_json::Value::String(event_type))?,
        occurred_at: row.try_get("occurred_at")?,
        received_at: row.try_get("received_at")?,
        payload: serde_json::from_str(&payload)?,
    })
}

/// A player's latest events in the log, oldest first (those that no longer read are left out).
pub async fn latest_of_player(
    conn: &mut sqlx::AnyConnection,
    (brand, player): (&str, &str),
    limit: i64,
) -> anyhow::Result<Vec<LoggedEvent>> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE brand_id = $1 AND player_id = $2 ORDER BY tx_id DESC, seq DESC LIMIT $3"
    );
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(player).bind(limit).fetch_all(conn).await?;
    let mut out: Vec<LoggedEvent> = rows.iter().filter_map(|r| logged_of(r).ok()).collect();
    out.reverse();
    Ok(out)
}

/// Whether an error is the event's own — its values cannot be stored (a number out of range, a
/// constraint it breaks) — rather than the system's (the database away, a table missing, a lost race):
/// the event's is set aside, the system's is retried, for every event alike.
fn never_applies(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Unapplicable>().is_some()
            || c.downcast_ref::<sqlx::Error>().is_some_and(|s| match s {
                sqlx::Error::Database(d) => {
                    let code = d.code().unwrap_or_default();
                    // PostgreSQL: data exception (22…), integrity constraint (23…) other than a unique key a
                    // concurrent writer took. SQLite: our overflow triggers, a CHECK or NOT NULL.
                    code.starts_with("22")
                        || (code.starts_with("23") && !d.is_unique_violation())
                        || d.message().contains("integer overflow")
                        || d.message().contains("constraint failed") && !d.is_unique_violation()
                }
                _ => false,
            })
    })
}

impl EmbeddedBus {
    pub fn new(db: Db) -> Self {
        EmbeddedBus { db, wake: Arc::new(Notify::new()), progress: Notify::new() }
    }

    /// The first transaction id whose events may not be read yet: on PostgreSQL the oldest transaction
    /// still running, read before the consumer's own transaction starts (which would hold it back).
    async fn horizon(&self) -> anyhow::Result<i64> {
        Ok(match self.db.backend {
            Backend::Sqlite => i64::MAX,
            Backend::Postgres => sqlx::query("SELECT txid_snapshot_xmin(txid_current_snapshot()) AS h")
                .fetch_one(&self.db.pool)
                .await?
                .try_get("h")?,
        })
    }

    /// Applies every event after a group's offsets, in order, remembering across calls which event
    /// failed. A group takes a batch of each of its consumers in one transaction; when a batch fails or
    /// an event does not read, its consumers go one by one until the failing event is found. True when
    /// committed events are left that could not be read yet (a transaction older than them still runs).
    async fn drain(&self, group: &[Consumer], progress: &mut [Progress]) -> anyhow::Result<bool> {
        if group.len() > 1 && progress.iter().all(|p| p.single_until.is_none()) {
            match self.drain_together(group).await? {
                Together::Done(pending) => return Ok(pending),
                Together::Failed => {}
            }
        }
        // One by one; one that fails holds back none of the others.
        let (mut pending, mut failed) = (false, None);
        for (c, progress) in group.iter().zip(progress) {
            match self.drain_one(c, progress).await {
                Ok(p) => pending |= p,
                Err(e) => failed = Some(e.context(c.name)),
            }
        }
        failed.map_or(Ok(pending), Err)
    }

    /// Whether a consumer has events to take, looked for without the write lock: woken consumers most
    /// often find nothing new, and on SQLite the lock is the one every writer waits for. With its
    /// offset.
    async fn has_work(&self, c: &Consumer, horizon: i64) -> anyhow::Result<(bool, Position)> {
        let mut conn = self.db.pool.acquire().await?;
        let ceiling = ceiling(&mut conn, c.reads).await?;
        let at = offset_of(&mut conn, c.name).await?;
        Ok((!read_after(&mut conn, at, (horizon, ceiling), 1, false).await?.is_empty(), at))
    }

    /// Whether any of a group's consumers has events to take, looked for without the write lock, from
    /// one read of every offset: a consumer behind its leader in the group has, and one that leads has
    /// if an event lies after its offset (up to its own leader's, outside the group). Otherwise the
    /// group's lowest offset (a consumer's offset is always an event's position).
    async fn group_work(&self, group: &[Consumer], horizon: i64) -> anyhow::Result<Result<(), Position>> {
        let mut conn = self.db.pool.acquire().await?;
        let offsets = all_offsets(&mut conn).await?;
        let at = |name: &str| offsets.get(name).copied().unwrap_or_default();
        let mut lowest = Position::END;
        for c in group {
            lowest = lowest.min(at(c.name));
            let ceiling = match c.reads.leader {
                Some(leader) if group.iter().any(|o| o.name == leader) => {
                    if at(c.name) < at(leader) {
                        return Ok(Ok(()));
                    }
                    continue;
                }
                Some(leader) => at(leader),
                None => Position::END,
            };
            if !read_after(&mut conn, at(c.name), (horizon, ceiling), 1, false).await?.is_empty() {
                return Ok(Ok(()));
            }
        }
        Ok(Err(lowest))
    }

    /// One batch of each consumer of a group, in one transaction, until none has work or one fails.
    /// The log is read once for the consumers at the group's lowest offset (all of them, once they
    /// have caught up with each other), each taking its share up to its leader's new offset; one
    /// elsewhere reads its own.
    async fn drain_together(&self, group: &[Consumer]) -> anyhow::Result<Together> {
        loop {
            let horizon = self.horizon().await?;
            if let Err(lowest) = self.group_work(group, horizon).await? {
                return Ok(Together::Done(pending_after(&self.db, lowest).await?));
            }
            let mut tx = self.db.begin_write().await?;
            let positions = lock_offsets(&mut tx, group.iter().map(|c| c.name)).await?;
            let lowest = positions.iter().copied().min().unwrap_or_default();
            let read = read_after(&mut tx, lowest, (horizon, Position::END), BATCH, false).await?;
            let end = read.last().map_or(lowest, row_position);
            let short = (read.len() as i64) < BATCH;
            let mut moved = positions.clone();
            let mut passed = Passed::default();
            let mut taken = Vec::with_capacity(group.len());
            let mut drained = true;
            for (i, c) in group.iter().enumerate() {
                let ceiling = match c.reads.leader {
                    Some(leader) => match group.iter().position(|o| o.name == leader) {
                        Some(j) => moved[j],
                        None => offset_of(&mut tx, leader).await?,
                    },
                    None => Position::END,
                };
                let batch = if positions[i] == lowest {
                    let range = read.iter().filter(|row| {
                        let at = row_position(row);
                        at > lowest && at <= ceiling
                    });
                    let platform_only = c.reads.platform_only;
                    let takes = |e: &LoggedEvent| !(platform_only && e.event_type.emitted_by_host());
                    let share = Share::of(range.cloned(), takes, short || end >= ceiling);
                    self.apply(&mut tx, c, share, &mut passed).await?
                } else {
                    self.batch(&mut tx, c, (horizon, ceiling), positions[i], BATCH, &mut passed).await?
                };
                match batch {
                    Batch::Handled { events, drained: all, to } => {
                        drained &= all;
                        moved[i] = to;
                        taken.push(events);
                    }
                    Batch::Nothing => taken.push(Vec::new()),
                    Batch::Unreadable(..) | Batch::Failed(..) => {
                        let _ = tx.rollback().await;
                        return Ok(Together::Failed);
                    }
                }
            }
            tx.commit().await?;
            for (c, events) in group.iter().zip(&taken) {
                if !events.is_empty() {
                    c.handler.committed(events);
                }
            }
            self.progress.notify_waiters();
            if drained {
                let lowest = moved.iter().copied().min().unwrap_or_default();
                return Ok(Together::Done(pending_after(&self.db, lowest).await?));
            }
        }
    }

    /// Applies every event after one consumer's offset, batch by batch.
    async fn drain_one(&self, c: &Consumer, progress: &mut Progress) -> anyhow::Result<bool> {
        loop {
            let horizon = self.horizon().await?;
            // On SQLite, where every writer queues for one lock, a consumer looks for work before it
            // queues; on PostgreSQL, where each statement is a round trip, the batch's own read finds
            // out (and says so with `Batch::Nothing`).
            if self.db.backend == Backend::Sqlite {
                let (work, at) = self.has_work(c, horizon).await?;
                if !work {
                    // Past the batch that failed: its group may take batches together again.
                    if progress.single_until.is_some_and(|end| at >= end) {
                        progress.single_until = None;
                    }
                    return pending(&self.db, c.name).await;
                }
            }
            let mut tx = self.db.begin_write().await?;
            let position = lock_offsets(&mut tx, [c.name]).await?[0];
            let single = progress.single_until.is_some_and(|end| position < end);
            if !single {
                progress.single_until = None;
            }
            let limit = if single { 1 } else { BATCH };
            let ceiling = ceiling(&mut tx, c.reads).await?;
            match self.batch(&mut tx, c, (horizon, ceiling), position, limit, &mut Passed::default()).await? {
                Batch::Nothing => {
                    tx.rollback().await?;
                    return pending(&self.db, c.name).await;
                }
                Batch::Handled { events, drained, .. } => {
                    tx.commit().await?;
                    if !events.is_empty() {
                        c.handler.committed(&events);
                    }
                    self.progress.notify_waiters();
                    if drained {
                        return pending(&self.db, c.name).await;
                    }
                }
                Batch::Unreadable(at, error) => {
                    tracing::error!(consumer = c.name, seq = at.seq, %error, "event set aside");
                    set_aside(&mut tx, c.name, at, &error).await?;
                    tx.commit().await?;
                }
                Batch::Failed(last, n, e) => {
                    // The handler's error is the one that matters; a failed rollback closes the
                    // connection anyway.
                    let _ = tx.rollback().await;
                    if n > 1 {
                        // Find the one that fails: one at a time up to the end of this batch.
                        tracing::warn!(consumer = c.name, error = %format!("{e:#}"), "a batch failed; applying its events one by one");
                        progress.single_until = Some(last);
                        continue;
                    }
                    if !never_applies(&e) {
                        return Err(e);
                    }
                    let error = format!("{e:#}");
                    // Under the offset's lock again, and only if no other host moved it meanwhile: a
                    // second host may have set this event aside and gone on already.
                    let mut tx = self.db.begin_write().await?;
                    if lock_offsets(&mut tx, [c.name]).await?[0] == position {
                        tracing::error!(consumer = c.name, seq = last.seq, %error, "event set aside: its effects cannot be applied");
                        set_aside(&mut tx, c.name, last, &error).await?;
                        tx.commit().await?;
                    }
                }
            }
        }
    }

    /// One batch of a consumer in the caller's transaction: its own read of the log after `position`,
    /// up to `ceiling`, then its handler.
    async fn batch(
        &self,
        tx: &mut sqlx::AnyConnection,
        c: &Consumer,
        (horizon, ceiling): (i64, Position),
        position: Position,
        limit: i64,
        passed: &mut Passed,
    ) -> anyhow::Result<Batch> {
        let rows = read_after(&mut *tx, position, (horizon, ceiling), limit, c.reads.platform_only).await?;
        // A read that passed over the host's events and came back short has seen every event up to the
        // horizon and the ceiling: the offset may move to the last of them.
        let seen_to = if c.reads.platform_only && (rows.len() as i64) < limit {
            let bound = ceiling.min(Position { tx: horizon.saturating_sub(1), seq: i64::MAX });
            last_before(&mut *tx, position, bound).await?
        } else {
            None
        };
        let short = (rows.len() as i64) < limit;
        let share = Share::of(rows.into_iter(), |_| true, short);
        self.apply(tx, c, share.past(seen_to), passed).await
    }

    /// Hands a consumer its share of the log and moves its offset, in the caller's transaction.
    async fn apply(
        &self,
        tx: &mut sqlx::AnyConnection,
        c: &Consumer,
        share: Share,
        passed: &mut Passed,
    ) -> anyhow::Result<Batch> {
        let Some(last) = share.events.last().map(LoggedEvent::position) else {
            if let Some((at, error)) = share.unreadable {
                return Ok(Batch::Unreadable(at, error));
            }
            let Some(to) = share.to else { return Ok(Batch::Nothing) };
            move_offset(&mut *tx, c.name, to).await?;
            return Ok(Batch::Handled { events: Vec::new(), drained: share.drained, to });
        };
        match c.handler.handle(&mut *tx, &share.events, passed).await {
            Ok(()) => {
                let to = share.to.unwrap_or(last);
                move_offset(&mut *tx, c.name, to).await?;
                Ok(Batch::Handled { events: share.events, drained: share.drained, to })
            }
            Err(e) => Ok(Batch::Failed(last, share.events.len(), e)),
        }
    }

    /// Runs a group of consumers until `shutdown` turns true: drains, then waits for a notification
    /// (or a second, for events written by another process). A failure is retried after a pause;
    /// shutdown always ends the loop, failing or not. A group whose first consumer has a `leader` (in
    /// another group) takes only the events the leader applied, and is woken when it commits.
    async fn run(&self, group: Vec<Consumer>, mut shutdown: watch::Receiver<bool>) {
        let mut progress: Vec<Progress> = group.iter().map(|_| Progress::default()).collect();
        let led = group[0].reads.leader.is_some();
        loop {
            let woken = self.wake.notified();
            let progressed = self.progress.notified();
            tokio::pin!(woken, progressed);
            // Registered before draining, so a notification that arrives meanwhile is not lost.
            woken.as_mut().enable();
            progressed.as_mut().enable();
            // How long to wait, and whether a notification ends the wait sooner.
            let (pause, listen) = match self.drain(&group, &mut progress).await {
                Err(e) => {
                    tracing::error!(consumer = group[0].name, error = %format!("{e:#}"), "consumer failed; retrying");
                    (Duration::from_millis(500), false)
                }
                // Events are committed but not all can be read: an older transaction still runs, or
                // they were committed while the last batch was taken (that writer's notification
                // ends the wait).
                Ok(true) => (Duration::from_millis(10), true),
                Ok(false) => (Duration::from_secs(1), true),
            };
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = woken, if listen => {}
                _ = progressed, if listen && led => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// What a batch came to, in the caller's transaction.
enum Batch {
    /// Nothing to take.
    Nothing,
    /// Handled (or passed over: no events) and the offset moved `to`; whether that was every event
    /// it could read (it read fewer than it could take), so that looking again finds only what was
    /// committed since, which wakes the consumer anyway.
    Handled { events: Vec<LoggedEvent>, drained: bool, to: Position },
    /// The first event does not read: it is to be set aside.
    Unreadable(Position, String),
    /// The handler failed on a batch ending at this position, of this many events.
    Failed(Position, usize, anyhow::Error),
}

/// What a group's batches together came to.
enum Together {
    /// Nothing left to take; whether committed events wait behind a running transaction.
    Done(bool),
    /// A batch failed or an event did not read: its consumers go one by one.
    Failed,
}

/// Where a consumer may read up to: its leader's offset.
async fn ceiling(conn: &mut sqlx::AnyConnection, reads: Reads) -> anyhow::Result<Position> {
    match reads.leader {
        Some(leader) => offset_of(conn, leader).await,
        None => Ok(Position::END),
    }
}

/// Takes the consumers' offsets for the caller's write transaction; their positions, in order. Each
/// row is written (created if missing), which locks it: on PostgreSQL a second host's consumer waits,
/// and so does an erasure (it takes every offset's lock, so that a batch in flight cannot write an
/// erased id back). A position returned is the row's latest, read after any wait.
async fn lock_offsets<'a>(
    conn: &mut sqlx::AnyConnection,
    consumers: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<Vec<Position>> {
    // (Collected first: a lazy iterator held across the await is not provably Send.)
    let names: Vec<&str> = consumers.into_iter().collect();
    let rows: Vec<String> = (0..names.len()).map(|i| format!("(${}, 0, 0)", i + 1)).collect();
    let sql = format!(
        "INSERT INTO consumer_offsets (consumer, position, tx_id) VALUES {}
         ON CONFLICT (consumer) DO UPDATE SET consumer = excluded.consumer RETURNING consumer, tx_id, position",
        rows.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for name in &names {
        query = query.bind(*name);
    }
    let mut locked = std::collections::HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let at = Position { tx: row.try_get("tx_id")?, seq: row.try_get("position")? };
        locked.insert(row.try_get::<String, _>("consumer")?, at);
    }
    names
        .iter()
        .map(|n| locked.get(*n).copied().ok_or_else(|| anyhow::anyhow!("offset of {n} not locked")))
        .collect()
}

/// Every consumer's offset (a handful of rows).
async fn all_offsets(
    conn: &mut sqlx::AnyConnection,
) -> anyhow::Result<std::collections::HashMap<String, Position>> {
    let rows = sqlx::query("SELECT consumer, tx_id, position FROM consumer_offsets").fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            Ok((r.try_get("consumer")?, Position { tx: r.try_get("tx_id")?, seq: r.try_get("position")? }))
        })
        .collect()
}

async fn offset_of(conn: &mut sqlx::AnyConnection, consumer: &str) -> anyhow::Result<Position> {
    let sql = "SELECT tx_id, position FROM consumer_offsets WHERE consumer = $1";
    Ok(match sqlx::query(sql).bind(consumer).fetch_optional(conn).await? {
        Some(r) => Position { tx: r.try_get("tx_id")?, seq: r.try_get("position")? },
        None => Position::default(),
    })
}

/// The last event after `after` and up to `bound` (inclusive).
async fn last_before(
    conn: &mut sqlx::AnyConnection,
    after: Position,
    bound: Position,
) -> anyhow::Result<Option<Position>> {
    let [_, _, sql] = log_reads(Backend::of(conn), false);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after.tx)
        .bind(after.seq)
        .bind(bound.tx)
        .bind(bound.seq)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok(Position { tx: r.try_get("tx_id")?, seq: r.try_get("seq")? })).transpose()
}

async fn move_offset(conn: &mut sqlx::AnyConnection, consumer: &str, to: Position) -> anyhow::Result<()> {
    sqlx::query("UPDATE consumer_offsets SET tx_id = $2, position = $3 WHERE consumer = $1")
        .bind(consumer)
        .bind(to.tx)
        .bind(to.seq)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records an event the consumer cannot apply and moves past it, in the caller's transaction.
async fn set_aside(
    conn: &mut sqlx::AnyConnection,
    consumer: &str,
    at: Position,
    error: &str,
) -> anyhow::Result<()> {
    let error: String = error.chars().take(2000).collect();
    sqlx::query(
        "INSERT INTO set_aside_events (consumer, seq, error, set_aside_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer, seq) DO NOTHING",
    )
    .bind(consumer)
    .bind(at.seq)
    .bind(error)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    move_offset(conn, consumer, at).await
}

/// Whether committed events beyond the consumer's offset exist, including those a transaction still
/// running keeps from being read yet.
pub async fn pending(db: &Db, consumer: &str) -> anyhow::Result<bool> {
    let at = offset_of(&mut *db.pool.acquire().await?, consumer).await?;
    pending_after(db, at).await
}

/// Whether committed events lie after `at`.
async fn pending_after(db: &Db, at: Position) -> anyhow::Result<bool> {
    let [_, sql, _] = log_reads(db.backend, false);
    let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at.tx).bind(at.seq);
    Ok(query.fetch_optional(&db.pool).await?.is_some())
}

/// Waits until `consumer` has applied (or set aside) every event of the player committed so far, calling
/// `wake` to hurry it; the position of the player's latest event once it has (the zero position for a
/// player without events), `None` if it did not within `patience`. What changes whether a player may be
/// contacted arrives as events: a decision or a send waits for them, so that none is taken on a state
/// older than what the platform was told was accepted.
pub async fn caught_up(
    db: &Db,
    wake: &(dyn Fn() + Sync),
    consumer: &str,
    (brand, player): (&str, &str),
    patience: Duration,
) -> anyhow::Result<Option<Position>> {
    let until = tokio::time::Instant::now() + patience;
    // What was committed when asked; events that come in while waiting are not waited for.
    let latest = match sqlx::query(
        "SELECT tx_id, seq FROM events WHERE brand_id = $1 AND player_id = $2 ORDER BY tx_id DESC, seq DESC LIMIT 1",
    )
    .bind(brand)
    .bind(player)
    .fetch_optional(&db.pool)
    .await?
    {
        Some(r) => Position { tx: r.try_get("tx_id")?, seq: r.try_get("seq")? },
        None => Position::default(),
    };
    loop {
        let mut conn = db.pool.acquire().await?;
        if offset_of(&mut conn, consumer).await? >= latest {
            return Ok(Some(latest));
        }
        drop(conn);
        if tokio::time::Instant::now() >= until {
            return Ok(None);
        }
        wake();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One event set aside by a consumer, as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetAside {
    pub consumer: String,
    pub seq: i64,
    pub brand_id: String,
    pub event_id: String,
    pub event_type: String,
    pub error: String,
    pub set_aside_at: Option<jiff::Timestamp>,
}

/// The events set aside, newest first, of the given brands.
pub async fn set_aside_list(db: &Db, brands: &[String], limit: i64) -> anyhow::Result<Vec<SetAside>> {
    let mut out = Vec::new();
    for brand in brands {
        let rows = sqlx::query(
            "SELECT s.consumer, s.seq, s.error, s.set_aside_at, e.brand_id, e.event_id, e.event_type
             FROM set_aside_events s JOIN events e ON e.seq = s.seq
             WHERE e.brand_id = $1 ORDER BY s.set_aside_at DESC, s.seq DESC LIMIT $2",
        )
        .bind(brand)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
        for r in rows {
            out.push(SetAside {
                consumer: r.try_get("consumer")?,
                seq: r.try_get("seq")?,
                brand_id: r.try_get("brand_id")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                error: r.try_get("error")?,
                set_aside_at: jiff::Timestamp::from_millisecond(r.try_get("set_aside_at")?).ok(),
            });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse((e.set_aside_at, e.seq)));
    out.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(out)
}

/// How many events each consumer set aside, for `/metrics`.
pub async fn set_aside_counts(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT consumer, COUNT(*) AS n FROM set_aside_events GROUP BY consumer ORDER BY consumer",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter().map(|r| Ok((r.try_get("consumer")?, r.try_get("n")?))).collect()
}
