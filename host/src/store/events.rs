//! Writing the event log. A request's events are durably committed, with their personal fields in the
//! contacts store, before anyone is told they were accepted; or none of them is written. An event id seen
//! before (per brand) is not stored again: its original outcome is returned.
//!
//! Group commit on SQLite: one writer task takes every request waiting at that moment and commits them in
//! one transaction (each request in a savepoint of its own, so one request's refusal does not touch the
//! others). A commit — an fsync — then serves many requests, and writers never queue on the database's
//! lock. PostgreSQL groups concurrent commits itself: there each request commits on its own connection.

use std::collections::{HashMap, HashSet};

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
        match tx.in_savepoint(async |tx| append_in(tx, key, events).await).await? {
            Err(AppendError::Db(e)) => return Err(e),
            result => results.push(result),
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
    let received = now_ms();
    let erased = erased_among(tx, events).await?;
    // The rows in a few multi-row statements, in the request's order (the log's seqs follow it); an id
    // already taken writes nothing and comes back as nothing.
    let mut inserted: HashMap<String, i64> = HashMap::new();
    let backend = super::Backend::of(tx);
    for chunk in events.chunks(super::rows_per_statement(backend, 9)) {
        let sql = format!(
            "INSERT INTO events (brand_id, event_id, player_id, event_type, occurred_at, received_at, trace_id, payload, body_hash)
             VALUES {} ON CONFLICT (brand_id, event_id) DO NOTHING RETURNING brand_id, event_id, seq",
            super::values_list(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            let payload = serde_json::to_string(&e.event.payload).map_err(anyhow::Error::from)?;
            q = q
                .bind(&e.brand_id)
                .bind(&e.event.event_id)
                .bind(&e.player_id)
                .bind(wire_name(e.event.event_type))
                .bind(e.event.occurred_at.as_millisecond())
                .bind(received)
                .bind(e.trace_id.as_deref())
                .bind(payload)
                .bind(&e.body_hash);
        }
        for row in q.fetch_all(&mut *tx).await? {
            let (brand, id): (String, String) = (row.try_get("brand_id")?, row.try_get("event_id")?);
            inserted.insert(format!("{brand}\u{0}{id}"), row.try_get("seq")?);
        }
    }
    let mut out = Vec::with_capacity(events.len());
    for (index, e) in events.iter().enumerate() {
        if erased.contains(&(e.brand_id.as_str(), e.player_id.as_str())) {
            // The caller rolls the request back.
            return Err(AppendError::Erased { index });
        }
        // Written by this request: by its first event of the id (a second one is a duplicate of it).
        if let Some(seq) = inserted.remove(&format!("{}\u{0}{}", e.brand_id, e.event.event_id)) {
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
                return Err(AppendError::Conflict { index, seq });
            }
            out.push(Stored::Duplicate { seq });
        }
    }
    Ok(out)
}

/// The request's erased players (their events are refused), read together brand by brand.
async fn erased_among<'e>(
    tx: &mut sqlx::AnyConnection,
    events: &'e [ValidEvent],
) -> Result<HashSet<(&'e str, &'e str)>, sqlx::Error> {
    let mut by_brand: HashMap<&str, HashMap<String, &str>> = HashMap::new();
    for e in events {
        let hash = super::erasure::player_hash(&e.brand_id, &e.player_id);
        by_brand.entry(&e.brand_id).or_default().insert(hash, &e.player_id);
    }
    let mut erased = HashSet::new();
    for (brand, players) in by_brand {
        let sql = format!(
            "SELECT player_hash FROM erased_players WHERE brand_id = $1 AND {}",
            super::one_of(super::Backend::of(tx), "player_hash", 2)
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(super::json_list(players.keys()));
        for row in q.fetch_all(&mut *tx).await? {
            let hash: String = row.try_get("player_hash")?;
            erased.extend(players.get(&hash).map(|p| (brand, *p)));
        }
    }
    Ok(erased)
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
