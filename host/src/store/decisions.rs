//! Decision records: every plugin call the host makes for a player, with the version and binding that
//! made it, a hash of its input, its output, its cost and outcome — "why was this player in that segment,
//! offered that?".

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Db, now_ms};

#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    pub seq: i64,
    pub at: i64,
    pub brand_id: String,
    pub player_id: String,
    pub world: String,
    pub plugin_id: String,
    pub binding_id: String,
    pub input_hash: String,
    pub output: Value,
    /// `ok`, or the failure's code.
    pub outcome: String,
    pub fuel: i64,
    pub duration_ns: i64,
    pub trace_id: Option<String>,
}

pub struct NewDecision<'a> {
    pub brand_id: &'a str,
    pub player_id: &'a str,
    pub world: &'a str,
    pub plugin_id: &'a str,
    pub binding_id: &'a str,
    pub input_hash: &'a str,
    pub output: &'a Value,
    pub outcome: &'a str,
    pub fuel: u64,
    pub duration_ns: u64,
    pub trace_id: Option<&'a str>,
}

/// Records a decision in the caller's connection (or transaction); its seq.
pub async fn record_in(conn: &mut sqlx::AnyConnection, d: &NewDecision<'_>) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "INSERT INTO decisions (at, brand_id, player_id, world, plugin_id, binding_id, input_hash, output, outcome, fuel, duration_ns, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING seq",
    )
    .bind(now_ms())
    .bind(d.brand_id)
    .bind(d.player_id)
    .bind(d.world)
    .bind(d.plugin_id)
    .bind(d.binding_id)
    .bind(d.input_hash)
    .bind(d.output.to_string())
    .bind(d.outcome)
    .bind(d.fuel as i64)
    .bind(d.duration_ns as i64)
    .bind(d.trace_id)
    .fetch_one(conn)
    .await?;
    Ok(row.try_get("seq")?)
}

pub async fn for_player(
    db: &Db,
    brand: &str,
    player: &str,
    limit: i64,
) -> anyhow::Result<Vec<DecisionRecord>> {
    let rows = sqlx::query(
        "SELECT seq, at, brand_id, player_id, world, plugin_id, binding_id, input_hash, output, outcome, fuel, duration_ns, trace_id
         FROM decisions WHERE brand_id = $1 AND player_id = $2 ORDER BY seq DESC LIMIT $3",
    )
    .bind(brand)
    .bind(player)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(DecisionRecord {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                brand_id: r.try_get("brand_id")?,
                player_id: r.try_get("player_id")?,
                world: r.try_get("world")?,
                plugin_id: r.try_get("plugin_id")?,
                binding_id: r.try_get("binding_id")?,
                input_hash: r.try_get("input_hash")?,
                output: serde_json::from_str(&r.try_get::<String, _>("output")?).unwrap_or(Value::Null),
                outcome: r.try_get("outcome")?,
                fuel: r.try_get("fuel")?,
                duration_ns: r.try_get("duration_ns")?,
                trace_id: r.try_get("trace_id")?,
            })
        })
        .collect()
}

/// Erasure: decision records stay, under the pseudonym, without the caller's trace id.
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(async move {
        super::erasure::rename(tx, "decisions", e).await?;
        sqlx::query("UPDATE decisions SET trace_id = NULL WHERE brand_id = $1 AND player_id = $2")
            .bind(e.brand)
            .bind(e.pseudonym)
            .execute(&mut **tx)
            .await?;
        Ok(())
    })
}
