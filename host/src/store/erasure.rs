//! Right to erasure: the player's contacts (all their personal data) are deleted; what must be kept —
//! aggregates, consent history, the bare events — is moved to a random pseudonym that nothing links back
//! to the player id; the events lose their payload, trace id and client event id (which may embed the
//! player's id), and the player's hash goes on a list that refuses their events from then on. Messages
//! not sent yet are suppressed; the texts of sent ones (a first name, an offer) are removed. One
//! transaction; it holds the profile consumer's offset lock so that a consumer batch in flight cannot
//! write the old id back.

use super::{Backend, Db, now_ms};

/// How an erased player is remembered: never by their id.
pub fn player_hash(brand: &str, player: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{brand}\u{0}{player}").as_bytes()))
}

/// Whether a player was erased (their events are refused).
pub async fn is_erased(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 AS one FROM erased_players WHERE brand_id = $1 AND player_hash = $2")
        .bind(brand)
        .bind(player_hash(brand, player))
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// Erases a player; false if the brand never had such a player.
pub async fn erase(db: &Db, brand: &str, player: &str) -> anyhow::Result<bool> {
    let mut tx = db.begin_write().await?;
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT position FROM consumer_offsets WHERE consumer = 'profiles' FOR UPDATE")
            .fetch_optional(&mut *tx)
            .await?;
    }
    let known = super::events::player_known(&mut tx, brand, player).await?;
    if !known {
        return Ok(false);
    }
    let mut rnd = [0u8; 16];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let pseudonym = format!("erased_{}", hex::encode(rnd));
    sqlx::query("DELETE FROM contacts WHERE brand_id = $1 AND player_id = $2")
        .bind(brand)
        .bind(player)
        .execute(&mut *tx)
        .await?;
    // Messages not sent yet will not be: the player is gone.
    sqlx::query(
        "UPDATE deliveries SET status = 'suppressed', updated_at = $3,
             reasons = '[{\"code\":\"player_erased\",\"detail\":\"the player was erased\"}]'
         WHERE brand_id = $1 AND player_id = $2 AND status IN ('queued', 'deferred')",
    )
    .bind(brand)
    .bind(player)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    for table in [
        "events",
        "profiles",
        "player_days",
        "player_stakes",
        "consents",
        "decisions",
        "deliveries",
        "send_locks",
    ] {
        let sql = format!("UPDATE {table} SET player_id = $1 WHERE brand_id = $2 AND player_id = $3");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&pseudonym)
            .bind(brand)
            .bind(player)
            .execute(&mut *tx)
            .await?;
    }
    // Client-side identifiers (event ids, trace ids, payment and bet references) may embed the player's
    // id: they go. The aggregates computed from the payloads stay in player_days / player_stakes.
    sqlx::query(
        "UPDATE events SET event_id = 'erased_' || CAST(seq AS TEXT), trace_id = NULL, payload = '\"none\"'
         WHERE brand_id = $1 AND player_id = $2",
    )
    .bind(brand)
    .bind(&pseudonym)
    .execute(&mut *tx)
    .await?;
    // What was sent may carry personal data (a first name in the text) and client keys may embed the id.
    sqlx::query(
        "UPDATE deliveries SET subject = NULL, body = NULL, idempotency_key = 'erased_' || delivery_id
         WHERE brand_id = $1 AND player_id = $2",
    )
    .bind(brand)
    .bind(&pseudonym)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE decisions SET trace_id = NULL WHERE brand_id = $1 AND player_id = $2")
        .bind(brand)
        .bind(&pseudonym)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO erased_players (brand_id, player_hash, erased_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(brand)
        .bind(player_hash(brand, player))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    tracing::info!(brand, erased_at = now_ms(), "player erased");
    tx.commit().await?;
    if db.backend == Backend::Sqlite {
        // The old pages live on in the write-ahead log until a checkpoint copies the new ones over them.
        let mut done = false;
        for _ in 0..40 {
            // (busy, log pages, checkpointed pages); an error or busy = 1 means a reader was in the way.
            if let Ok(row) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&db.pool).await
                && sqlx::Row::try_get::<i64, _>(&row, 0)? == 0
            {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if !done {
            tracing::warn!("erasure committed, but the write-ahead log could not be checkpointed yet");
        }
    }
    Ok(true)
}
