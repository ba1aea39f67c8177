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
use crate::profiles::{ProfileError, StoredProfile};
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
/// written, QUEUED, DEFERRED or SUPPRESSED with its reasons. Waits for the player's accepted events to
/// be applied first, and writes in a transaction of its own.
pub async fn send(
    core: &Core,
    brand: &str,
    idempotency_key: &str,
    req: SendRequest,
) -> Result<Delivery, SendError> {
    let mut conn = core.db.pool.acquire().await.map_err(anyhow::Error::from)?;
    let prepared = prepare(core, &mut conn, brand, idempotency_key, req).await?;
    drop(conn);
    let prepared = match prepared {
        Prepared::Done(d) => return Ok(*d),
        Prepared::Ready(p) => p,
    };
    let stored = core.profiles.current(brand, &prepared.req.player_id).await?;
    let mut tx = core.db.begin_write().await.map_err(anyhow::Error::from)?;
    let delivery = prepared.enqueue_in(core, &mut tx, &stored).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    if delivery.status == crate::store::deliveries::Status::Queued {
        core.delivery.wake.notify_one();
    }
    Ok(delivery)
}

/// Sends in the caller's transaction, on the profile the caller read (a bus consumer's, a journey
/// step's: the send commits with what they write, or not at all); `caused_at`, when the host accepted
/// the event that caused it. The caller wakes the delivery workers (`core.delivery.wake`) once it
/// committed a queued delivery.
pub async fn send_in(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    (brand, idempotency_key): (&str, &str),
    req: SendRequest,
    stored: &StoredProfile,
    caused_at: Option<i64>,
) -> Result<Delivery, SendError> {
    match prepare(core, conn, brand, idempotency_key, req).await? {
        Prepared::Done(d) => Ok(*d),
        Prepared::Ready(mut p) => {
            p.caused_at = caused_at;
            p.enqueue_in(core, conn, stored).await
        }
    }
}

enum Prepared {
    /// The key was used before for this very request: what it sent.
    Done(Box<Delivery>),
    Ready(Box<Ready>),
}

struct Ready {
    brand: String,
    key: String,
    req: SendRequest,
    request_hash: String,
    policy: crate::policy::FrequencyPolicy,
    caused_at: Option<i64>,
}

/// Checks the request and its key, and that the player was not erased.
async fn prepare(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    idempotency_key: &str,
    mut req: SendRequest,
) -> Result<Prepared, SendError> {
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
    match outbox::existing_in(conn, brand, idempotency_key, &request_hash).await? {
        Some(Enqueued::Existing(d)) => return Ok(Prepared::Done(Box::new(d))),
        Some(_) => return Err(SendError::KeyConflict),
        None => {}
    }
    let policy = core.delivery.policies.frequency(&req.frequency_policy_id).ok_or_else(|| {
        invalid(format!("no frequency policy `{}`", req.frequency_policy_id), "frequency_policy_id")
    })?;
    if req.campaign_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > 64) {
        return Err(invalid("campaign_id: 1 to 64 characters", "campaign_id"));
    }
    if crate::store::erasure::is_erased(conn, brand, &req.player_id).await.map_err(anyhow::Error::from)? {
        return Err(SendError::Erased);
    }
    Ok(Prepared::Ready(Box::new(Ready {
        brand: brand.to_string(),
        key: idempotency_key.to_string(),
        req,
        request_hash,
        policy: policy.clone(),
        caused_at: None,
    })))
}

impl Ready {
    /// Renders the template in the player's locale, asks the gate and writes the delivery.
    async fn enqueue_in(
        self,
        core: &Core,
        conn: &mut sqlx::AnyConnection,
        stored: &StoredProfile,
    ) -> Result<Delivery, SendError> {
        let Ready { brand, key, req, request_hash, policy, caused_at } = self;
        let view = stored.at(&brand, &req.player_id, core.clock().now());
        let locale = view.profile.locale.clone();
        let rendered = templates::render(conn, &brand, &req.template_id, &locale, &req.personalization)
            .await?
            .map_err(|e| match e {
                TemplateError::NotFound(_) => SendError::UnknownTemplate {
                    template_id: req.template_id.clone(),
                    locale: locale.clone(),
                },
                other => SendError::Template(other),
            })?;
        let m = Message {
            brand: &brand,
            player: &req.player_id,
            channel: req.channel,
            class: outbox::class_of(rendered.topic, req.personalization.contains_key("offer_id")),
            priority: req.priority,
            template_id: &req.template_id,
            campaign_id: req.campaign_id.as_deref(),
            policy: &policy,
        };
        let content = Content {
            delivery_id: &crate::delivery::new_delivery_id(),
            idempotency_key: &key,
            request_hash: &request_hash,
            locale: &rendered.locale,
            subject: rendered.subject.as_deref(),
            body: &rendered.body,
            caused_at,
        };
        let enqueued =
            outbox::enqueue_in(conn, &core.delivery, &m, &content, &view, &stored.consent_history).await?;
        match enqueued {
            Enqueued::New(d) | Enqueued::Existing(d) => Ok(d),
            Enqueued::Conflict => Err(SendError::KeyConflict),
        }
    }
}
