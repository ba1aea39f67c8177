//! The bus: events committed to the log are handed to consumers in log order (so each player's events
//! are handled in the order they were accepted). Consumers remember how far they got — the offset moves
//! in the same transaction as the consumer's own writes — so a restart resumes exactly where it stopped:
//! no event counted twice, none lost.
//!
//! `Bus` is what producers see; the embedded implementation reads the event table. A NATS JetStream
//! implementation will sit behind the same trait.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{Notify, watch};

use crate::model::{EventPayload, EventType};
use crate::store::{Backend, Db};

/// The producer's side.
pub trait Bus: Send + Sync {
    /// Events were committed to the log: wake the consumers.
    fn notify(&self);
}

/// One event as consumers receive it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub seq: i64,
    pub brand_id: String,
    pub player_id: String,
    pub event_type: EventType,
    pub occurred_at: i64,
    pub payload: EventPayload,
}

/// A consumer: applies a batch of events, in log order, in the transaction the offset moves in.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;

    /// Called after a committed batch, with the events it held (cache invalidation and such).
    fn committed(&self, _events: &[LoggedEvent]) {}
}

/// Events read per transaction.
const BATCH: i64 = 256;

pub struct EmbeddedBus {
    db: Db,
    wake: Arc<Notify>,
}

impl Bus for EmbeddedBus {
    fn notify(&self) {
        self.wake.notify_waiters();
    }
}

impl EmbeddedBus {
    pub fn new(db: Db) -> Self {
        EmbeddedBus { db, wake: Arc::new(Notify::new()) }
    }

    /// The consumer's position in the log.
    pub async fn offset(&self, consumer: &str) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT position FROM consumer_offsets WHERE consumer = $1")
            .bind(consumer)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("position")?,
            None => 0,
        })
    }

    /// Applies every event after the consumer's offset, in order; returns how many it applied.
    pub async fn drain<H: Handler>(&self, consumer: &str, handler: &H) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let mut tx = self.db.begin_write().await?;
            // On PostgreSQL the offset row is locked for the batch: erasure takes the same lock.
            let lock = if self.db.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
            let sql = format!("SELECT position FROM consumer_offsets WHERE consumer = $1{lock}");
            let position: i64 =
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(consumer).fetch_optional(&mut *tx).await? {
                    Some(r) => r.try_get("position")?,
                    None => 0,
                };
            let rows = sqlx::query(
                "SELECT seq, brand_id, player_id, event_type, occurred_at, payload FROM events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(position)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut events = Vec::with_capacity(rows.len());
            for row in rows {
                let event_type: String = row.try_get("event_type")?;
                let payload: String = row.try_get("payload")?;
                events.push(LoggedEvent {
                    seq: row.try_get("seq")?,
                    brand_id: row.try_get("brand_id")?,
                    player_id: row.try_get("player_id")?,
                    event_type: serde_json::from_value(serde_json::Value::String(event_type))?,
                    occurred_at: row.try_get("occurred_at")?,
                    payload: serde_json::from_str(&payload)?,
                });
            }
            handler.handle(&mut tx, &events).await?;
            let last = events.last().expect("non-empty").seq;
            sqlx::query(
                "INSERT INTO consumer_offsets (consumer, position) VALUES ($1, $2)
                 ON CONFLICT (consumer) DO UPDATE SET position = excluded.position",
            )
            .bind(consumer)
            .bind(last)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            handler.committed(&events);
            total += events.len();
        }
    }

    /// Runs a consumer until `shutdown` turns true: drains, then waits for a notification (or a second,
    /// for events written by another process).
    pub async fn run<H: Handler>(&self, consumer: &str, handler: H, mut shutdown: watch::Receiver<bool>) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            // Registered before draining, so a notification that arrives meanwhile is not lost.
            woken.as_mut().enable();
            if let Err(e) = self.drain(consumer, &handler).await {
                tracing::error!(consumer, error = %format!("{e:#}"), "consumer failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
