//! Messaging, the send service: one message to one player — erasure check, profile, template rendered in the
//! player's locale, the gate, the outbox — idempotent on the caller's key. The HTTP API, journeys,
//! triggers and the CLI all send through it; nothing reaches a player another way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::Core;
use crate::delivery::outbox::{self, Content, Enqueued, Message};
use crate::delivery::templates::{self, TemplateError};
use crate::model::Channel;
use crate::policy::Priority;
use crate::profiles::ProfileError;
use crate::store::deliveries::Delivery;

/// A message as the platform words it (`POST /v1/messaging/send`).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub channel: Channel,
    pub player_id: String,
    pub template_id: String,
    #[serde(default)]
    pub personalization: BTreeMap<String, String>,
    #[serde(default = "default_policy")]
    pub frequency_policy_id: String,
    #[serde(default)]
    pub priority: Priority,
    pub campaign_id: Option<String>,
    /// Which brand, when the caller may act for several; resolved before the send (kept out of the
    /// request's hash, which takes the brand as resolved).
    pub brand_id: Option<String>,
}

fn default_policy() -> String {
    "fp_default".into()
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A field of the request is wrong.
    #[error("{message}")]
    Invalid { message: String, field: &'static str },
    #[error("the player was erased")]
    Erased,
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("no template `{template_id}` for the player's locale {locale}, its language or the default")]
    UnknownTemplate { template_id: String, locale: String },
    #[error(transparent)]
    Template(TemplateError),
    #[error("this idempotency key was used for a different request")]
    KeyConflict,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn invalid(message: impl Into<String>, field: &'static str) -> SendError {
    SendError::Invalid { message: message.into(), field }
}

/// Sends (or, for a key used before with the same request, answers what it sent): the delivery as
/// written, QUEUED, DEFERRED or SUPPRESSED with its reasons.
pub async fn send(
    core: &Core,
    brand: &str,
    idempotency_key: &str,
    mut req: SendRequest,
) -> Result<Delivery, SendError> {
    req.brand_id = None;
    if req.channel == Channel::Phone {
        return Err(invalid(
            "phone contact is made by agents; the host sends email, sms, push and in_app",
            "channel",
        ));
    }
    // The same key for the same request is the same delivery, whoever asks again.
    let request_hash =
        hex::encode(Sha256::digest(serde_json::to_vec(&(brand, &req)).map_err(anyhow::Error::from)?));
    match outbox::existing(&core.db, brand, idempotency_key, &request_hash).await? {
        Some(Enqueued::Existing(d)) => return Ok(d),
        Some(_) => return Err(SendError::KeyConflict),
        None => {}
    }
    let ctx = &core.delivery;
    let policy = ctx.policies.frequency(&req.frequency_policy_id).ok_or_else(|| {
        invalid(format!("no frequency policy `{}`", req.frequency_policy_id), "frequency_policy_id")
    })?;
    if req.campaign_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > 64) {
        return Err(invalid("campaign_id: 1 to 64 characters", "campaign_id"));
    }
    {
        let mut conn = core.db.pool.acquire().await.map_err(anyhow::Error::from)?;
        if crate::store::erasure::is_erased(&mut conn, brand, &req.player_id)
            .await
            .map_err(anyhow::Error::from)?
        {
            return Err(SendError::Erased);
        }
    }
    let stored = core.profiles.current(brand, &req.player_id).await?;
    let view = stored.at(brand, &req.player_id, core.clock().now());
    let locale = view.profile.locale.clone();
    let rendered = templates::render(&core.db, brand, &req.template_id, &locale, &req.personalization)
        .await?
        .map_err(|e| match e {
            TemplateError::NotFound(_) => {
                SendError::UnknownTemplate { template_id: req.template_id.clone(), locale: locale.clone() }
            }
            other => SendError::Template(other),
        })?;
    let m = Message {
        brand,
        player: &req.player_id,
        channel: req.channel,
        class: outbox::class_of(rendered.topic, req.personalization.contains_key("offer_id")),
        priority: req.priority,
        template_id: &req.template_id,
        campaign_id: req.campaign_id.as_deref(),
        policy,
    };
    let content = Content {
        delivery_id: &crate::delivery::new_delivery_id(),
        idempotency_key,
        request_hash: &request_hash,
        locale: &rendered.locale,
        subject: rendered.subject.as_deref(),
        body: &rendered.body,
    };
    match outbox::enqueue(&core.db, ctx, &m, &content, &view, &stored.consent_history).await? {
        Enqueued::New(d) | Enqueued::Existing(d) => Ok(d),
        Enqueued::Conflict => Err(SendError::KeyConflict),
    }
}
