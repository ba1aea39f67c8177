//! Right to erasure: the player's contacts (all their personal data) are deleted; what must be kept —
//! aggregates, consent history, the bare events — is moved to a random pseudonym that nothing links back
//! to the player id; the events lose their payload, trace id and client event id (which may embed the
//! player's id), and the player's hash goes on a list that refuses their events from then on. Messages
//! not sent yet are suppressed; the texts of sent ones (a first name, an offer) are removed. One
//! transaction; it holds every consumer's offset lock so that a consumer batch in flight cannot write the
//! old id back. Each part that keeps player data contributes its step (`Core::erasure_steps`).

use super::{Backend, Db, Tx, now_ms};

/// How an erased player is remembered: never by their id.
pub fn player_hash(brand: &str, player: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{brand}\u{0}{player}").as_bytes()))
}

/// How an erased player's rows are named from then on: this prefix and random hex.
pub const PSEUDONYM_PREFIX: &str = "erased_";

/// Whether a player id is an erased player's pseudonym (nothing is decided for it).
pub fn is_pseudonym(player: &str) -> bool {
    player.starts_with(PSEUDONYM_PREFIX)
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

/// Who is being erased, as each part's step sees it: their rows move from `player` to `pseudonym`.
pub struct Erased<'a> {
    pub brand: &'a str,
    pub player: &'a str,
    pub pseudonym: &'a str,
    pub at: i64,
}

/// A part's share of an erasure, in the erasure's transaction: forget what identifies the player in the
/// tables the part owns. Each part that keeps player data registers one (`Core::erasure_steps`).
pub type Step = for<'a> fn(&'a mut Tx, &'a Erased<'a>) -> StepFuture<'a>;
pub type StepFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// Moves a player's rows of `table` to the pseudonym (a step's usual first move).
pub async fn rename(tx: &mut Tx, table: &str, e: &Erased<'_>) -> anyhow::Result<()> {
    let sql = format!("UPDATE {table} SET player_id = $1 WHERE brand_id = $2 AND player_id = $3");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(e.pseudonym)
        .bind(e.brand)
        .bind(e.player)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Erases a player, every part's step in one transaction; false if the brand never had such a player.
pub async fn erase(db: &Db, brand: &str, player: &str, steps: &[(&str, Step)]) -> anyhow::Result<bool> {
    let mut tx = db.begin_write().await?;
    if db.backend == Backend::Postgres {
        // Every consumer's offset: a batch in flight cannot write the old id back.
        sqlx::query("SELECT position FROM consumer_offsets FOR UPDATE").fetch_all(&mut *tx).await?;
    }
    let known = super::events::player_known(&mut tx, brand, player).await?;
    if !known {
        return Ok(false);
    }
    let mut rnd = [0u8; 16];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let pseudonym = format!("{PSEUDONYM_PREFIX}{}", hex::encode(rnd));
    let erased = Erased { brand, player, pseudonym: &pseudonym, at: now_ms() };
    for (name, step) in steps {
        step(&mut tx, &erased).await.map_err(|e| e.context(format!("erasure step `{name}`")))?;
    }
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
            if let Ok(row) = db.truncate_wal().await
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
