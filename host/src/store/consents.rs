//! Consents per channel and per product, plus profiling: versioned, never overwritten (§11: for each
//! communication we can say under which consent version it went out).

use sqlx::Row;

use super::{Db, now_ms};
use crate::model::{Channel, Consents, Product};

pub use crate::model::ConsentRecord;

/// Writes a new version with `changes` (scope, name, granted); returns its number. Concurrent writers
/// for one player each get their own version (a collision is retried).
pub async fn record(
    db: &Db,
    brand: &str,
    player: &str,
    changes: &[(&str, String, bool)],
    source: &str,
) -> anyhow::Result<i64> {
    retrying(move || async move {
        let mut tx = db.begin_write().await?;
        let version = record_in(&mut tx, brand, player, changes, source, now_ms()).await?;
        tx.commit().await?;
        Ok(version)
    })
    .await
}

/// Runs a transaction that writes a consent version again (five tries in all) when it lost the race
/// for the version number to a concurrent writer.
pub async fn retrying<T, F: Future<Output = anyhow::Result<T>>>(
    transaction: impl Fn() -> F,
) -> anyhow::Result<T> {
    for _ in 1..5 {
        match transaction().await {
            Err(e) if e.downcast_ref::<sqlx::Error>().is_some_and(is_collision) => continue,
            done => return done,
        }
    }
    transaction().await
}

/// Two writers took the same version number; the loser may try again.
fn is_collision(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `record` inside the caller's transaction (a collision is the caller's to retry: `retrying`).
pub async fn record_in(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
    changes: &[(&str, String, bool)],
    source: &str,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let version: i64 = sqlx::query(
        "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM consents WHERE brand_id = $1 AND player_id = $2",
    )
    .bind(brand)
    .bind(player)
    .fetch_one(&mut *conn)
    .await?
    .try_get("v")?;
    for (scope, name, granted) in changes {
        sqlx::query(
            "INSERT INTO consents (brand_id, player_id, version, scope, name, granted, source, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(brand)
        .bind(player)
        .bind(version)
        .bind(*scope)
        .bind(name)
        .bind(i64::from(*granted))
        .bind(source)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(version)
}

pub async fn history(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
) -> anyhow::Result<Vec<ConsentRecord>> {
    let rows = sqlx::query(
        "SELECT version, scope, name, granted, source, recorded_at FROM consents
         WHERE brand_id = $1 AND player_id = $2 ORDER BY version, scope, name",
    )
    .bind(brand)
    .bind(player)
    .fetch_all(conn)
    .await?;
    rows.iter().map(record_of).collect()
}

fn record_of(r: &sqlx::any::AnyRow) -> anyhow::Result<ConsentRecord> {
    Ok(ConsentRecord {
        version: r.try_get("version")?,
        scope: r.try_get("scope")?,
        name: r.try_get("name")?,
        granted: r.try_get::<i64, _>("granted")? != 0,
        source: r.try_get("source")?,
        recorded_at: jiff::Timestamp::from_millisecond(r.try_get("recorded_at")?)?,
    })
}

/// The consent histories of a brand's players in `(after, last]`, by player.
pub async fn histories(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    which: super::Players<'_>,
) -> anyhow::Result<std::collections::HashMap<String, Vec<ConsentRecord>>> {
    type Row = (String, i64, String, String, i64, String, i64);
    let columns = "player_id, version, scope, name, granted, source, recorded_at";
    let from = format!("consents WHERE brand_id = $1 AND {}", which.condition(super::Backend::of(conn), 2));
    let order = "player_id, version, scope, name";
    let mut out: std::collections::HashMap<String, Vec<ConsentRecord>> = Default::default();
    for (player, version, scope, name, granted, source, recorded_at) in
        super::json_rows::<Row>(conn, columns, &from, order, |q| which.bind(q.bind(brand))).await?
    {
        let recorded_at = jiff::Timestamp::from_millisecond(recorded_at)?;
        let record = ConsentRecord { version, scope, name, granted: granted != 0, source, recorded_at };
        out.entry(player).or_default().push(record);
    }
    Ok(out)
}

/// The consents in force: the latest record of each item.
pub fn current(history: &[ConsentRecord]) -> (Consents, i64) {
    let mut latest: std::collections::BTreeMap<(&str, &str), bool> = Default::default();
    for r in history {
        latest.insert((&r.scope, &r.name), r.granted);
    }
    let granted = |scope: &str| -> Vec<serde_json::Value> {
        latest
            .iter()
            .filter(|((s, _), g)| *s == scope && **g)
            .map(|((_, n), _)| serde_json::Value::String(n.to_string()))
            .collect()
    };
    let consents = Consents {
        channels: granted("channel")
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Channel>(v).ok())
            .collect(),
        products: granted("product")
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Product>(v).ok())
            .collect(),
        profiling: latest.get(&("profiling", "profiling")).copied().unwrap_or(false),
    };
    (consents, history.last().map_or(0, |r| r.version))
}

/// Erasure: the consent history stays (what was sent under which consent must remain explainable), under
/// the pseudonym.
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(super::erasure::rename(tx, "consents", e))
}
