//! API keys: stored as the sha256 of the key (keys are 256 random bits, so a plain hash is enough to
//! make the table useless to whoever reads it).

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, now_ms};
use crate::auth::{Principal, Role};

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key and returns it: the only time it is ever shown.
pub async fn create(db: &Db, role: Role, brands: &[String]) -> anyhow::Result<(String, String)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = format!("pb_{}", hex::encode(secret));
    let id = format!("key_{}", &hash(&key)[..16]);
    sqlx::query("INSERT INTO api_keys (id, key_hash, role, brands, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(hash(&key))
        .bind(role.as_str())
        .bind(serde_json::to_string(brands)?)
        .bind(now_ms())
        .execute(&db.pool)
        .await?;
    Ok((id, key))
}

/// The principal a presented key stands for, unless unknown or revoked.
pub async fn lookup(db: &Db, key: &str) -> anyhow::Result<Option<Principal>> {
    let row = sqlx::query("SELECT id, role, brands FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
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
    }))
}
