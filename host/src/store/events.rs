//! Writing the event log. A batch is one transaction: every event of it is durably committed, with its
//! personal fields in the contacts store, before anyone is told it was accepted; or nothing is written.
//! An event id seen before (per brand) is not stored again: its original outcome is returned.

use sqlx::Row;

use super::contacts::{self, ContactsKey};
use super::{Db, now_ms};
use crate::events::{ValidEvent, type_name};

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
    #[error(transparent)]
    Db(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        AppendError::Db(e.into())
    }
}

/// Stores `events` in one transaction; the outcome of each, in order.
pub async fn append(db: &Db, key: &ContactsKey, events: &[ValidEvent]) -> Result<Vec<Stored>, AppendError> {
    let mut tx = db.begin_write().await?;
    let mut out = Vec::with_capacity(events.len());
    let received = now_ms();
    let mut checked: Vec<&str> = Vec::new();
    for (index, e) in events.iter().enumerate() {
        if !checked.contains(&e.player_id.as_str()) {
            if super::erasure::is_erased(&mut tx, &e.brand_id, &e.player_id).await? {
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
        .bind(type_name(e.event.event_type))
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
                    contacts::upsert(&mut tx, key, &e.brand_id, &e.player_id, kind, &value).await?;
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
                // Dropping the transaction rolls the whole batch back.
                return Err(AppendError::Conflict { index: out.len(), seq });
            }
            out.push(Stored::Duplicate { seq });
        }
    }
    tx.commit().await?;
    Ok(out)
}
