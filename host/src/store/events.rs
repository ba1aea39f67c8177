//! Writing the event log. A request's events are durably committed, with their personal fields in the
//! contacts store, before anyone is told they were accepted; or none of them is written. An event id seen
//! before (per brand) is not stored again: its original outcome is returned.
//!
//! Group commit on SQLite: one writer task takes every request waiting at that moment and commits them in
//! one transaction (each request in a savepoint of its own, so one request's refusal does not touch the
//! others). A commit — an fsync — then serves many requests, and writers never queue on the database's
//! lock. PostgreSQL groups concurrent commits itself: there each request commits on its own connection.

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::contacts::{self, ContactsKey};
use super::{Db, now_ms};
use crate::events::ValidEvent;
use crate::model::wire_name;

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Newly written, at this position of the log.
    Accepted { seq: i64 },
    /// Seen before with the same body: the original position.
    Duplicate { seq: i64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Event `index` reuses an id with another body; nothing of the batch was written.
    #[error("event {index} reuses an event_id with a different body")]
    Conflict { index: usize, seq: i64 },
    /// Event `index` is about a player who was erased; nothing of the batch was written.
    #[error("event {index} is about an erased player")]
    Erased { index: usize },
    /// Event `index` is valid on its own but the host refuses it (e.g. a jurisdiction no pack covers);
    /// nothing of the batch was written.
    #[error("event {index}: {}", error.message)]
    Refused { index: usize, error: crate::events::FieldError },
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        AppendError::Db(e.into())
    }
}

/// Most events one group commit takes.
const GROUP_EVENTS: usize = 2_000;

type Reply = oneshot::Sender<Result<Vec<Stored>, AppendError>>;

/// The handle requests append through; cheap to clone.
#[derive(Clone)]
pub enum Appender {
    /// SQLite: requests go to the group-commit writer task.
    Grouped(mpsc::Sender<(Vec<ValidEvent>, Reply)>),
    /// PostgreSQL: each request commits on its own connection (the server groups concurrent commits
    /// itself; a single writer would only serialise the round trips).
    Direct(Box<(Db, ContactsKey)>),
}

impl Appender {
    pub fn spawn(db: Db, key: ContactsKey) -> Self {
        if db.backend == super::Backend::Postgres {
            return Appender::Direct(Box::new((db, key)));
        }
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(writer(db, key, rx));
        Appender::Grouped(jobs)
    }

    /// Stores `events` (all or none); the outcome of each, in order.
    pub async fn append(&self, events: Vec<ValidEvent>) -> Result<Vec<Stored>, AppendError> {
        let (reply, answer) = oneshot::channel();
        match self {
            Appender::Direct(direct) => {
                let job = [(events, reply)];
                commit_group(&direct.0, &direct.1, &job).await?.pop().expect("one result")
            }
            Appender::Grouped(jobs) => {
                let stopped = || AppendError::Db(anyhow::anyhow!("the event writer stopped"));
                jobs.send((events, reply)).await.map_err(|_| stopped())?;
                answer.await.map_err(|_| stopped())?
            }
        }
    }
}

async fn writer(db: Db, key: ContactsKey, mut rx: mpsc::Receiver<(Vec<ValidEvent>, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.0.len();
        let mut group = vec![first];
        while size < GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.0.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        match commit_group(&db, &key, &group).await {
            Ok(results) => {
                for ((_, reply), result) in group.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                for (_, reply) in group {
                    let _ = reply.send(Err(AppendError::Db(anyhow::anyhow!("{message}"))));
                }
            }
        }
    }
}

/// One transaction for the whole group, a savepoint per request.
async fn commit_group(
    db: &Db,
    key: &ContactsKey,
    group: &[(Vec<ValidEvent>, Reply)],
) -> anyhow::Result<Vec<Result<Vec<Stored>, AppendError>>> {
    let mut tx = db.begin_write().await?;
    let mut results = Vec::with_capacity(group.len());
    if let [(events, _)] = group {
        // Alone: the transaction itself is the request's all-or-nothing.
        return match append_in(&mut tx, key, events).await {
            Ok(stored) => {
                tx.commit().await?;
                Ok(vec![Ok(stored)])
            }
            Err(AppendError::Db(e)) => Err(e),
            Err(refused) => {
                tx.rollback().await?;
                Ok(vec![Err(refused)])
            }
        };
    }
    for (events, _) in group {
        sqlx::query("SAVEPOINT request").execute(&mut *tx).await?;
        match append_in(&mut tx, key, events).await {
            Ok(stored) => {
                sqlx::query("RELEASE SAVEPOINT request").execute(&mut *tx).await?;
                results.push(Ok(stored));
            }
            Err(AppendError::Db(e)) => return Err(e),
            Err(refused) => {
                sqlx::query("ROLLBACK TO SAVEPOINT request").execute(&mut *tx).await?;
                sqlx::query("RELEASE SAVEPOINT request").execute(&mut *tx).await?;
                results.push(Err(refused));
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

/// Writes one request's events inside the group's transaction.
async fn append_in(
    tx: &mut sqlx::AnyConnection,
    key: &ContactsKey,
    events: &[ValidEvent],
) -> Result<Vec<Stored>, AppendError> {
    let mut out = Vec::with_capacity(events.len());
    let received = now_ms();
    let mut checked: Vec<&str> = Vec::new();
    for (index, e) in events.iter().enumerate() {
        if !checked.contains(&e.player_id.as_str()) {
            if super::erasure::is_erased(tx, &e.brand_id, &e.player_id).await? {
                return Err(AppendError::Erased { index });
            }
            checked.push(&e.player_id);
        }
        let payload = serde_json::to_string(&e.event.payload).map_err(anyhow::Error::from)?;
        let inserted = sqlx::query(
            "INSERT INTO events (brand_id, event_id, player_id, event_type, occurred_at, received_at, trace_id, payload, body_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (brand_id, event_id) DO NOTHING
             RETURNING seq",
        )
        .bind(&e.brand_id)
        .bind(&e.event.event_id)
        .bind(&e.player_id)
        .bind(wire_name(e.event.event_type))
        .bind(e.event.occurred_at.as_millisecond())
        .bind(received)
        .bind(e.trace_id.as_deref())
        .bind(payload)
        .bind(&e.body_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = inserted {
            let seq: i64 = row.try_get("seq")?;
            let p = &e.personal;
            for (kind, value) in [
                ("email", p.email.clone()),
                ("phone", p.phone.clone()),
                ("birth_date", p.birth_date.map(|d| d.to_string())),
            ] {
                if let Some(value) = value {
                    contacts::upsert(tx, key, &e.brand_id, &e.player_id, kind, &value).await?;
                }
            }
            out.push(Stored::Accepted { seq });
        } else {
            let row = sqlx::query("SELECT seq, body_hash FROM events WHERE brand_id = $1 AND event_id = $2")
                .bind(&e.brand_id)
                .bind(&e.event.event_id)
                .fetch_one(&mut *tx)
                .await?;
            let seq: i64 = row.try_get("seq")?;
            let hash: String = row.try_get("body_hash")?;
            if hash != e.body_hash {
                // The caller rolls the request back.
                return Err(AppendError::Conflict { index: out.len(), seq });
            }
            out.push(Stored::Duplicate { seq });
        }
    }
    Ok(out)
}

/// Erasure: the player's events move to the pseudonym and lose what may embed their id — client event
/// ids, trace ids, payloads (payment and bet references). The aggregates computed from them stay.
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(async move {
        super::erasure::rename(tx, "events", e).await?;
        sqlx::query(
            "UPDATE events SET event_id = 'erased_' || CAST(seq AS TEXT), trace_id = NULL, payload = '\"none\"'
             WHERE brand_id = $1 AND player_id = $2",
        )
        .bind(e.brand)
        .bind(e.pseudonym)
        .execute(&mut **tx)
        .await?;
        Ok(())
    })
}

/// Does the brand have this player (any event of theirs)?
pub async fn player_known(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 AS one FROM events WHERE brand_id = $1 AND player_id = $2 LIMIT 1")
        .bind(brand)
        .bind(player)
        .fetch_optional(conn)
        .await?
        .is_some())
}
