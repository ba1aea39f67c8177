//! API keys: stored as the sha256 of the key (keys are 256 random bits, so a plain hash is enough to
//! make the table useless to whoever reads it). Creating and revoking a key are audited.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Principal, Role};
use crate::audit;
use crate::store::{Db, now_ms};

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key as listed (never the key itself, nor its hash).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub role: String,
    pub brands: Vec<String>,
    pub holder: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The principal the command line acts as (bootstrap keys, `pitboss keys create`).
pub fn cli_actor() -> Principal {
    Principal { key_id: "cli".into(), role: Role::Admin, brands: Vec::new(), holder: "command line".into() }
}

/// Creates a key and returns (id, key): the only time the key is ever shown.
pub async fn create(
    db: &Db,
    actor: &Principal,
    role: Role,
    brands: &[String],
    holder: &str,
) -> anyhow::Result<(String, String)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = format!("pb_{}", hex::encode(secret));
    let id = format!("key_{}", &hash(&key)[..16]);
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, role, brands, holder, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(hash(&key))
    .bind(role.as_str())
    .bind(serde_json::to_string(brands)?)
    .bind(holder)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"role": role.as_str(), "brands": brands, "holder": holder});
    audit::record(&mut tx, actor, "key.create", &id, brands, detail).await?;
    tx.commit().await?;
    Ok((id, key))
}

/// The principal a presented key stands for, unless unknown or revoked.
pub async fn lookup(db: &Db, key: &str) -> anyhow::Result<Option<Principal>> {
    let row = sqlx::query(
        "SELECT id, role, brands, holder FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(key))
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let role: String = row.try_get("role")?;
    let brands: String = row.try_get("brands")?;
    Ok(Some(Principal {
        key_id: row.try_get("id")?,
        role: role.parse().map_err(|e: String| anyhow::anyhow!(e))?,
        brands: serde_json::from_str(&brands)?,
        holder: row.try_get("holder")?,
    }))
}

pub async fn list(db: &Db) -> anyhow::Result<Vec<KeyInfo>> {
    let rows = sqlx::query(
        "SELECT id, role, brands, holder, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyInfo {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                brands: serde_json::from_str(&r.try_get::<String, _>("brands")?)?,
                holder: r.try_get("holder")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
}

/// Revokes a key; returns the hash of the revoked key (for caches), or `None` if there was no such
/// active key.
pub async fn revoke(db: &Db, actor: &Principal, id: &str) -> anyhow::Result<Option<String>> {
    let mut tx = db.begin_write().await?;
    let row = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING key_hash, brands",
    )
    .bind(now_ms())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let brands: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("brands")?)?;
    audit::record(&mut tx, actor, "key.revoke", id, &brands, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(Some(row.try_get("key_hash")?))
}
