//! The platform calls: what the ledger asks the platform's wallet to do (`bonus.grant`,
//! `bonus.release`, `bonus.forfeit`), kept in an outbox written in the ledger's transaction and posted
//! by a worker as signed webhooks with an idempotency key (`grant:{bonus_id}`…). A call is claimed under
//! a lease, so of several hosts one posts it; a host that dies mid-call leaves it to be posted again
//! with the same key, which the platform answers as the first time: at most one grant per bonus. A
//! grant the platform accepted makes the bonus active. Failures are retried with the delivery backoff,
//! then the call is dead (shown on the bonus).
//!
//! The same loop ends bonuses whose wagering deadline passed, and offers past their time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use tokio::sync::{Notify, watch};

use super::ledger::{self, Bonus, Move, State};
use crate::core::Core;

/// Writes the call `kind` about the bonus, once (its key is its id).
pub async fn queue_in(conn: &mut sqlx::AnyConnection, b: &Bonus, kind: &str, at: i64) -> anyhow::Result<()> {
    let call_id = format!("{kind}:{}", b.bonus_id);
    let t = &b.terms;
    let body = json!({
        "type": format!("bonus.{kind}"), "idempotency_key": call_id, "bonus_id": b.bonus_id,
        "offer_id": b.offer_id, "brand_id": b.brand_id, "player_id": b.player_id, "template": b.template,
        "kind": t.kind, "amount": {"amount_minor": b.granted_minor, "currency": b.currency},
        "spins": t.spins, "wager_multiplier": t.wager_multiplier,
        "wagering_required_minor": b.wagering_required_minor, "wagering_done_minor": b.wagering_done_minor,
        "max_bet_minor": t.max_bet_minor, "max_cashout_minor": t.max_cashout_minor,
        "expires_at": crate::store::rfc3339(b.expires_at), "state": b.state.name(),
    });
    sqlx::query(
        "INSERT INTO platform_calls (call_id, brand_id, player_id, bonus_id, kind, body, status, attempts,
             next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7) ON CONFLICT (call_id) DO NOTHING",
    )
    .bind(&call_id)
    .bind(&b.brand_id)
    .bind(&b.player_id)
    .bind(&b.bonus_id)
    .bind(kind)
    .bind(body.to_string())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops a grant not posted yet (its bonus ended first).
pub async fn cancel_grant_in(conn: &mut sqlx::AnyConnection, b: &Bonus, why: &str) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE platform_calls SET status = 'dead', last_error = $2 WHERE call_id = $1 AND status = 'queued'",
    )
    .bind(format!("grant:{}", b.bonus_id))
    .bind(format!("the bonus ended before its grant: {why}"))
    .execute(conn)
    .await?;
    Ok(())
}

/// The calls about a bonus, as its owner sees them.
pub async fn of_bonus(
    conn: &mut sqlx::AnyConnection,
    bonus_id: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let rows = sqlx::query(
        "SELECT call_id, kind, status, attempts, last_error, created_at, sent_at FROM platform_calls
         WHERE bonus_id = $1 ORDER BY created_at, call_id",
    )
    .bind(bonus_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "idempotency_key": r.try_get::<String, _>("call_id")?,
                "kind": r.try_get::<String, _>("kind")?,
                "status": r.try_get::<String, _>("status")?,
                "attempts": r.try_get::<i64, _>("attempts")?,
                "last_error": r.try_get::<Option<String>, _>("last_error")?,
                "created_at": crate::store::rfc3339(r.try_get("created_at")?),
                "sent_at": r.try_get::<Option<i64>, _>("sent_at")?.map(crate::store::rfc3339),
            }))
        })
        .collect()
}

struct Call {
    call_id: String,
    bonus_id: String,
    kind: String,
    body: String,
    attempts: i64,
}

async fn claim_due(core: &Core, now: i64, lease_until: i64) -> anyhow::Result<Vec<Call>> {
    const OUTBOX: crate::store::Outbox = crate::store::Outbox {
        table: "platform_calls",
        key: "call_id",
        due: &["queued"],
        also_set: ", attempts = attempts + 1",
    };
    // In a write transaction, so that on SQLite the claim takes its turn with the process's writers.
    let mut tx = core.db.begin_write().await?;
    let returning = "call_id, bonus_id, kind, body, attempts";
    let rows = OUTBOX.claim(&mut tx, returning, (now, lease_until), 16).await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Call {
                call_id: r.try_get("call_id")?,
                bonus_id: r.try_get("bonus_id")?,
                kind: r.try_get("kind")?,
                body: r.try_get("body")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .collect()
}

/// Posts due calls and ends overdue bonuses until `stop`: when woken (an acceptance), and every
/// `poll_ms`.
pub async fn run(core: Arc<Core>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let settings = core.delivery.settings.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.delivery.provider_timeout_ms))
        .build()
        .expect("an HTTP client");
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Err(e) = expire_due(&core).await {
            tracing::error!(error = %format!("{e:#}"), "ending overdue bonuses");
        }
        if let Some(platform) = &settings.platform {
            let now = core.clock().now_ms();
            match claim_due(&core, now, now + settings.delivery.lease_ms as i64).await {
                Ok(calls) => {
                    for call in calls {
                        let id = call.call_id.clone();
                        if let Err(e) = post(&core, &http, platform, call).await {
                            tracing::error!(call_id = %id, error = %format!("{e:#}"), "platform call");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "looking for due platform calls"),
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(Duration::from_millis(settings.delivery.poll_ms)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn post(
    core: &Core,
    http: &reqwest::Client,
    platform: &crate::config::PlatformSettings,
    call: Call,
) -> anyhow::Result<()> {
    if call.kind == "grant" && !grantable(core, &call).await? {
        return Ok(());
    }
    let timestamp = (core.clock().now_ms() / 1000).to_string();
    let answer = http
        .post(&platform.url)
        .header("content-type", "application/json")
        .header("Idempotency-Key", &call.call_id)
        .header("X-Pitboss-Timestamp", &timestamp)
        .header(
            "X-Pitboss-Signature",
            crate::delivery::channels::sign(&platform.secret, &timestamp, call.body.as_bytes()),
        )
        .body(call.body.clone())
        .send()
        .await;
    let error = match answer {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => Some("timed out".to_string()),
        Err(e) => Some(e.to_string()),
    };
    let now = core.clock().now_ms();
    let mut tx = core.db.begin_write().await?;
    match error {
        None => {
            sqlx::query(
                "UPDATE platform_calls SET status = 'sent', sent_at = $2, last_error = NULL, lease_until = NULL
                 WHERE call_id = $1 AND status = 'sending'",
            )
            .bind(&call.call_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if call.kind == "grant"
                && let Some(mut b) = ledger::get(&mut tx, &call.bonus_id).await?
            {
                b.granted_at = Some(now);
                if b.state == State::Issued {
                    // The wagering deadline runs from the grant.
                    let days = i64::from(b.terms.bonus_validity_days);
                    b.expires_at = now + days * 86_400_000;
                    let mv = Move::new("activate", State::Active, "the platform granted the bonus")
                        .amount(b.granted_minor);
                    ledger::apply_in(&mut tx, &mut b, State::Issued, &mv, now).await?;
                } else if !b.state.live() {
                    // It ended while its grant was in flight: the platform takes it back.
                    queue_in(&mut tx, &b, "forfeit", now).await?;
                }
            }
        }
        Some(error) => {
            let d = &core.delivery.settings.delivery;
            let dead = call.attempts >= i64::from(d.max_attempts);
            let shift = (call.attempts - 1).clamp(0, 20) as u32;
            let backoff = (d.backoff_initial_ms.saturating_mul(1u64 << shift)).min(d.backoff_max_ms) as i64;
            sqlx::query(
                "UPDATE platform_calls SET status = $2, next_attempt_at = $3, last_error = $4, lease_until = NULL
                 WHERE call_id = $1 AND status = 'sending'",
            )
            .bind(&call.call_id)
            .bind(if dead { "dead" } else { "queued" })
            .bind(now + backoff)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            tracing::warn!(call_id = %call.call_id, %error, dead, "the platform did not take a call");
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Whether a grant may still go: its bonus is issued and the player's RG state allows bonus money. If
/// not, the call is dropped and (RG) the bonus forfeited, with the reason.
async fn grantable(core: &Core, call: &Call) -> anyhow::Result<bool> {
    let mut tx = core.db.begin_write().await?;
    let Some(mut b) = ledger::get(&mut tx, &call.bonus_id).await? else { return Ok(false) };
    let now = core.clock().now();
    let blocked = match b.state {
        State::Issued => crate::profiles::load_in(&mut tx, &core.contacts_key, &b.brand_id, &b.player_id)
            .await?
            .and_then(|s| crate::policy::gate::rg_codes(&s.at(&b.brand_id, &b.player_id, now).profile))
            .map(|codes| format!("responsible gambling: {codes}")),
        other => Some(format!("the bonus is {}", other.name())),
    };
    let Some(why) = blocked else { return Ok(true) };
    if b.state == State::Issued {
        let mv = Move::new("forfeit", State::Forfeited, why.clone());
        ledger::apply_in(&mut tx, &mut b, State::Issued, &mv, now.as_millisecond()).await?;
    }
    sqlx::query(
        "UPDATE platform_calls SET status = 'dead', last_error = $2, lease_until = NULL WHERE call_id = $1",
    )
    .bind(&call.call_id)
    .bind(format!("not granted: {why}"))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(false)
}

/// Ends the bonuses whose wagering deadline passed (a bonus with no event since is still ended on time),
/// and marks open offers past their time expired.
pub async fn expire_due(core: &Core) -> anyhow::Result<()> {
    let now = core.clock().now_ms();
    core.db
        .execute(
            sqlx::query(
                "UPDATE offers SET state = 'expired', updated_at = $1
                 WHERE state IN ('issued', 'pending_approval') AND expires_at <= $1",
            )
            .bind(now),
        )
        .await?;
    let ids: Vec<String> = sqlx::query(
        "SELECT bonus_id FROM bonuses WHERE state IN ('issued', 'active', 'locked') AND expires_at <= $1
         ORDER BY expires_at LIMIT 100",
    )
    .bind(now)
    .fetch_all(&core.db.pool)
    .await?
    .iter()
    .map(|r| r.try_get("bonus_id"))
    .collect::<Result<_, _>>()?;
    for id in ids {
        let mut tx = core.db.begin_write().await?;
        if let Some(mut b) = ledger::get(&mut tx, &id).await?
            && b.state.live()
            && b.expires_at <= now
        {
            let from = b.state;
            let mv = Move::new("expire", State::Expired, "the wagering deadline passed");
            ledger::apply_in(&mut tx, &mut b, from, &mv, now).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
