//! Feedback from channels — delivered, open, click, soft and hard bounce, complaint, unsubscribe —
//! posted by the platform or by a provider's signed webhook. Idempotent: the same report twice changes
//! nothing the second time. An unsubscribe or a complaint withdraws the marketing consent of that
//! channel at once (a new consent version with source `feedback:…`); a hard bounce marks the contact
//! invalid; an in-app message opened is read. Each report and its effect commit together.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::store::deliveries::{self, Delivery, Status};
use crate::store::{Db, consents, contacts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackEvent {
    Delivered,
    Open,
    Click,
    SoftBounce,
    HardBounce,
    Complaint,
    Unsubscribe,
}

#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub delivery_id: String,
    pub event: FeedbackEvent,
    /// True when this report was seen before (nothing changed).
    pub duplicate: bool,
    /// The new consent version, when the report withdrew consent.
    pub consent_version: Option<i64>,
    pub status: String,
}

/// Applies one report to a delivery the caller has found and may see.
pub async fn apply(
    db: &Db,
    d: &Delivery,
    event: FeedbackEvent,
    occurred_at: i64,
    source: &str,
    now: i64,
) -> anyhow::Result<Applied> {
    // A withdrawal writes a consent version: a concurrent one may take its number, and it goes again.
    consents::retrying(move || async move {
        let name = crate::model::wire_name(event);
        let mut tx = db.begin_write().await?;
        let fresh =
            deliveries::record_feedback(&mut tx, &d.delivery_id, &name, occurred_at, source, now).await?;
        let mut applied = Applied {
            delivery_id: d.delivery_id.clone(),
            event,
            duplicate: !fresh,
            consent_version: None,
            status: d.status.as_str().to_string(),
        };
        if !fresh {
            return Ok(applied);
        }
        let when = jiff::Timestamp::from_millisecond(occurred_at).ok();
        let mut detail = json!({"feedback": name, "occurred_at": when, "source": source});
        match event {
            FeedbackEvent::Unsubscribe | FeedbackEvent::Complaint => {
                let changes = [("channel", d.channel.clone(), false)];
                let version = consents::record_in(
                    &mut tx,
                    &d.brand_id,
                    &d.player_id,
                    &changes,
                    &format!("feedback:{name}"),
                    now,
                )
                .await?;
                applied.consent_version = Some(version);
                detail["consent_withdrawn"] = json!({"channel": d.channel, "version": version});
            }
            FeedbackEvent::HardBounce => {
                if let Some(kind) = contact_kind(&d.channel) {
                    contacts::mark_invalid(&mut tx, &d.brand_id, &d.player_id, kind, now).await?;
                    detail["contact_invalid"] = json!(kind);
                }
            }
            _ => {}
        }
        // An in-app message opened is read (the first time counts).
        if event == FeedbackEvent::Open && d.channel == "in_app" {
            deliveries::mark_read(&mut tx, &d.delivery_id, occurred_at).await?;
        }
        // Delivery milestones move the status forward (from the status as it is now, not as it was read);
        // engagement is history only.
        let milestone = match event {
            FeedbackEvent::Delivered => Some((Status::Delivered, &[Status::Sent][..])),
            FeedbackEvent::HardBounce => Some((Status::Bounced, &[Status::Sent, Status::Delivered][..])),
            _ => None,
        };
        if let Some((to, from)) = milestone
            && deliveries::advance(&mut tx, &d.delivery_id, from, to, now).await?
        {
            applied.status = to.as_str().to_string();
        }
        deliveries::event(&mut tx, &d.delivery_id, now, &name, detail).await?;
        tx.commit().await?;
        Ok(applied)
    })
    .await
}

/// The contact a channel sends to, if any.
fn contact_kind(channel: &str) -> Option<&'static str> {
    match channel {
        "email" => Some("email"),
        "sms" | "phone" => Some("phone"),
        _ => None,
    }
}
