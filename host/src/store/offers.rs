//! The rows of offers and the bonus ledger that are a player's (the tables are `offers`').

/// Erasure: the ledger is kept (it is the operator's accounting) under the pseudonym; platform calls
/// not made yet are dropped with a reason.
pub fn erasure_step<'a>(
    tx: &'a mut super::Tx,
    e: &'a super::erasure::Erased<'a>,
) -> super::erasure::StepFuture<'a> {
    Box::pin(async move {
        for table in ["offers", "bonuses"] {
            super::erasure::rename(tx, table, e).await?;
        }
        // A held message names the player; the player's spend counter is keyed by the id.
        sqlx::query("UPDATE offers SET pending_send = NULL WHERE brand_id = $1 AND player_id = $2")
            .bind(e.brand)
            .bind(e.pseudonym)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE offer_spend SET scope = $3 WHERE brand_id = $1 AND scope = $2")
            .bind(e.brand)
            .bind(format!("player:{}", e.player))
            .bind(format!("player:{}", e.pseudonym))
            .execute(&mut **tx)
            .await?;
        super::erasure::rename(tx, "platform_calls", e).await?;
        sqlx::query(
            "UPDATE platform_calls SET body = '{\"erased\":true}',
                 status = CASE WHEN status = 'sent' THEN status ELSE 'dead' END,
                 last_error = CASE WHEN status = 'sent' THEN last_error ELSE 'the player was erased' END
             WHERE brand_id = $1 AND player_id = $2",
        )
        .bind(e.brand)
        .bind(e.pseudonym)
        .execute(&mut **tx)
        .await?;
        Ok(())
    })
}
