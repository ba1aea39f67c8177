//! The audit log: every admin action (keys, uploads, approvals, bindings, revocations), append-only,
//! hash-chained. Each entry's hash covers the previous entry's hash and its own content, so editing or
//! deleting an entry breaks the chain at that point; `verify` finds it. (Dropping the newest entries
//! leaves a valid shorter chain: compare `verify`'s head hash with one kept elsewhere to catch that.)

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Backend, Db, Tx, now_ms};

/// Who did something: any caller with a key id and a holder's name (API keys, the command line).
pub trait Actor {
    fn key_id(&self) -> &str;
    fn holder(&self) -> &str;
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: i64,
    pub at: i64,
    pub actor_key_id: String,
    pub actor_holder: String,
    pub action: String,
    pub target: String,
    pub brands: Vec<String>,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

struct Fields<'a> {
    at: i64,
    key_id: &'a str,
    holder: &'a str,
    action: &'a str,
    target: &'a str,
    brands: &'a str,
    detail: &'a str,
}

fn entry_hash(prev: &str, f: &Fields) -> String {
    let mut h = Sha256::new();
    for part in [prev, &f.at.to_string(), f.key_id, f.holder, f.action, f.target, f.brands, f.detail] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends an entry inside the caller's transaction (the action and its record commit together).
pub async fn record(
    tx: &mut Tx,
    actor: &(dyn Actor + Sync),
    action: &str,
    target: &str,
    brands: &[String],
    detail: Value,
) -> anyhow::Result<()> {
    if tx.backend() == Backend::Postgres {
        // One appender at a time, or two entries could share a predecessor.
        sqlx::query("SELECT pg_advisory_xact_lock(7420001)").execute(&mut **tx).await?;
    }
    let conn: &mut sqlx::AnyConnection = tx;
    let prev: String = sqlx::query("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("hash"))
        .transpose()?
        .unwrap_or_else(|| GENESIS.to_string());
    let at = now_ms();
    let detail = detail.to_string();
    let brands = serde_json::to_string(brands)?;
    let fields = Fields {
        at,
        key_id: actor.key_id(),
        holder: actor.holder(),
        action,
        target,
        brands: &brands,
        detail: &detail,
    };
    let hash = entry_hash(&prev, &fields);
    sqlx::query(
        "INSERT INTO audit_log (at, actor_key_id, actor_holder, action, target, brands, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(at)
    .bind(actor.key_id())
    .bind(actor.holder())
    .bind(action)
    .bind(target)
    .bind(&brands)
    .bind(&detail)
    .bind(prev)
    .bind(hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn list(db: &Db, after: i64, limit: i64) -> anyhow::Result<Vec<Entry>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor_key_id, actor_holder, action, target, brands, detail, prev_hash, hash FROM audit_log
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Entry {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                actor_key_id: r.try_get("actor_key_id")?,
                actor_holder: r.try_get("actor_holder")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                brands: serde_json::from_str(&r.try_get::<String, _>("brands")?).unwrap_or_default(),
                detail: serde_json::from_str(&r.try_get::<String, _>("detail")?).unwrap_or(Value::Null),
                prev_hash: r.try_get("prev_hash")?,
                hash: r.try_get("hash")?,
            })
        })
        .collect()
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub entries: u64,
    /// The hash of the newest entry: keep it elsewhere to detect a truncated log later.
    pub head: String,
    /// The first entry that does not check out, and why.
    pub broken_at: Option<(i64, String)>,
}

pub async fn verify(db: &Db) -> anyhow::Result<Verdict> {
    let mut prev = GENESIS.to_string();
    let mut entries = 0;
    let mut after = 0;
    loop {
        let rows = sqlx::query(
            "SELECT seq, at, actor_key_id, actor_holder, action, target, brands, detail, prev_hash, hash FROM audit_log
             WHERE seq > $1 ORDER BY seq LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Verdict { entries, head: prev, broken_at: None });
        }
        for r in rows {
            let seq: i64 = r.try_get("seq")?;
            let stored_prev: String = r.try_get("prev_hash")?;
            let hash: String = r.try_get("hash")?;
            if stored_prev != prev {
                let why = "its predecessor is missing or was changed".to_string();
                return Ok(Verdict { entries, head: prev, broken_at: Some((seq, why)) });
            }
            let text = |c: &str| r.try_get::<String, _>(c);
            let (key_id, holder, action, target, brands, detail) = (
                text("actor_key_id")?,
                text("actor_holder")?,
                text("action")?,
                text("target")?,
                text("brands")?,
                text("detail")?,
            );
            let fields = Fields {
                at: r.try_get("at")?,
                key_id: &key_id,
                holder: &holder,
                action: &action,
                target: &target,
                brands: &brands,
                detail: &detail,
            };
            let expected = entry_hash(&prev, &fields);
            if expected != hash {
                return Ok(Verdict {
                    entries,
                    head: prev,
                    broken_at: Some((seq, "its content was changed".into())),
                });
            }
            prev = hash;
            entries += 1;
            after = seq;
        }
    }
}
