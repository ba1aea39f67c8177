//! The rows of triggers and journeys that are a player's (the tables are `engage`'s).

/// A player's erasure: their trigger fires, journey runs and steps go.
pub fn erasure_step<'a>(
    tx: &'a mut crate::store::Tx,
    e: &'a crate::store::erasure::Erased<'a>,
) -> crate::store::erasure::StepFuture<'a> {
    Box::pin(async move {
        for sql in [
            "DELETE FROM journey_steps WHERE run_id IN (SELECT id FROM journey_runs WHERE brand_id = $1 AND player_id = $2)",
            "DELETE FROM journey_runs WHERE brand_id = $1 AND player_id = $2",
            "DELETE FROM trigger_fires WHERE brand_id = $1 AND player_id = $2",
        ] {
            sqlx::query(sql).bind(e.brand).bind(e.player).execute(&mut **tx).await?;
        }
        Ok(())
    })
}
