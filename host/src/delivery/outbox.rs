//! The outbox's write side: a message is gated and stored in one transaction that holds the player's
//! send lock, so what was already sent is counted and this message's place under the caps reserved by
//! one sender at a time — 100 concurrent sends against a cap of 3 give exactly 3. The same gate runs
//! again, the same way, when a worker is about to send.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Context;
use super::templates::Topic;
use crate::model::{ConsentRecord, Product, wire_name};
use crate::policy::ledger::{self, GateContext, Player};
use crate::policy::{Decision, MessageClass};
use crate::profiles::ProfileView;
use crate::store::Db;
use crate::store::deliveries::{self, Gated, NewDelivery, Status};

pub use crate::policy::ledger::{Message, class_name};

/// Asks the gate, under the player's send lock, with what was already sent (see `policy::ledger`), and
/// counts its refusals in the metrics. The caller writes the result in the same transaction.
pub async fn gate(
    conn: &mut sqlx::AnyConnection,
    ctx: &Context,
    m: &Message<'_>,
    view: &ProfileView,
    consents: &[ConsentRecord],
    exclude: Option<&str>,
) -> anyhow::Result<(Decision, Timestamp)> {
    let packs = ctx.policies.packs.current();
    let gate_ctx = GateContext { packs: &packs, licensed: ctx.policies.licences(m.brand), clock: &ctx.clock };
    let player = Player { profile: &view.profile, age: view.age, consents };
    let (decision, now) = ledger::gate(conn, &gate_ctx, m, &player, exclude).await?;
    if let Decision::Deny { reasons } | Decision::Defer { reasons, .. } = &decision {
        for r in reasons {
            ctx.metrics.refusal(r.code);
        }
    }
    Ok((decision, now))
}

/// What a template's topic makes of a message; a marketing message carrying an offer (`offer_id` in
/// its personalization) is a bonus offer, with the stricter age rule.
pub fn class_of(topic: Topic, bonus_offer: bool) -> MessageClass {
    let product = match topic {
        Topic::Transactional => return MessageClass::Transactional,
        Topic::RgInformational => return MessageClass::RgInformational,
        Topic::Casino => Product::Casino,
        Topic::Sports => Product::Sports,
        Topic::Poker => Product::Poker,
        Topic::Bingo => Product::Bingo,
    };
    MessageClass::Marketing { product, bonus_offer }
}

/// The stored form of a gate decision.
pub fn gated(d: &Decision, now: Timestamp) -> Gated {
    match d {
        Decision::Allow { basis } => Gated {
            status: Status::Queued,
            reasons: json!([]),
            basis: Some(json!(basis)),
            counted_at: Some(now.as_millisecond()),
            next_attempt_at: Some(now.as_millisecond()),
        },
        Decision::Defer { until, reasons } => Gated {
            status: Status::Deferred,
            reasons: json!(reasons),
            basis: None,
            // Its place under the caps of the day it will go out.
            counted_at: Some(until.as_millisecond()),
            next_attempt_at: Some(until.as_millisecond()),
        },
        Decision::Deny { reasons } => Gated {
            status: Status::Suppressed,
            reasons: json!(reasons),
            basis: None,
            counted_at: None,
            next_attempt_at: None,
        },
    }
}

/// A gate decision as one line of history.
pub fn decision_detail(d: &Decision, at: &str) -> Value {
    let mut v = json!(d);
    v["gate"] = json!(at);
    v
}

pub enum Enqueued {
    New(deliveries::Delivery),
    /// The idempotency key was used before, for this very request.
    Existing(deliveries::Delivery),
    /// The idempotency key was used before, for another request.
    Conflict,
}

/// What is sent, besides what the gate looks at.
#[derive(Debug, Clone)]
pub struct Content<'a> {
    pub delivery_id: &'a str,
    pub idempotency_key: &'a str,
    /// Of the request: the same key with another request is a conflict.
    pub request_hash: &'a str,
    /// The template's locale actually used.
    pub locale: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// When the host accepted the event that caused the message, if one did.
    pub caused_at: Option<i64>,
}

/// Gates a message and writes the delivery in a transaction of its own. A concurrent request with the
/// same idempotency key gets the delivery the first one wrote.
pub async fn enqueue(
    db: &Db,
    ctx: &Context,
    m: &Message<'_>,
    content: &Content<'_>,
    profile: &ProfileView,
    consents: &[ConsentRecord],
) -> anyhow::Result<Enqueued> {
    let mut tx = db.begin_write().await?;
    let enqueued = enqueue_in(&mut tx, ctx, m, content, profile, consents).await?;
    tx.commit().await?;
    if let Enqueued::New(d) = &enqueued
        && d.status == Status::Queued
    {
        ctx.wake.notify_one();
    }
    Ok(enqueued)
}

/// Gates a message and writes the delivery in the caller's transaction (a bus consumer's, a journey
/// step's), so that the send commits with the rest of what the caller does, or not at all. The caller
/// wakes the workers once it committed a queued delivery (`Context::wake`).
pub async fn enqueue_in(
    conn: &mut sqlx::AnyConnection,
    ctx: &Context,
    m: &Message<'_>,
    content: &Content<'_>,
    profile: &ProfileView,
    consents: &[ConsentRecord],
) -> anyhow::Result<Enqueued> {
    let (channel, priority) = (wire_name(m.channel), wire_name(m.priority));
    let (product, bonus_offer) = match m.class {
        MessageClass::Marketing { product, bonus_offer } => (Some(wire_name(product)), bonus_offer),
        _ => (None, false),
    };
    let new = NewDelivery {
        delivery_id: content.delivery_id,
        brand: m.brand,
        player: m.player,
        idempotency_key: content.idempotency_key,
        request_hash: content.request_hash,
        channel: &channel,
        template_id: m.template_id,
        locale: content.locale,
        class: class_name(m.class),
        product: product.as_deref(),
        bonus_offer,
        priority: &priority,
        campaign_id: m.campaign_id,
        frequency_policy: &m.policy.id,
        subject: content.subject,
        body: content.body,
        caused_at: content.caused_at,
    };
    let (decision, now) = gate(conn, ctx, m, profile, consents, None).await?;
    let g = gated(&decision, now);
    // As written: once committed, a worker may take it at once.
    let Some(written) = deliveries::insert(conn, &new, &g, now.as_millisecond()).await? else {
        // The key was taken meanwhile (it waited for that writer to commit): what it stands for.
        return existing_in(conn, m.brand, content.idempotency_key, content.request_hash)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a conflicting delivery vanished"));
    };
    let at = now.as_millisecond();
    deliveries::event(conn, new.delivery_id, at, g.status.as_str(), decision_detail(&decision, "request"))
        .await?;
    Ok(Enqueued::New(written))
}

/// What an idempotency key already stands for, if it was used.
pub async fn existing_in(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    key: &str,
    request_hash: &str,
) -> anyhow::Result<Option<Enqueued>> {
    Ok(deliveries::by_key(conn, brand, key)
        .await?
        .map(|d| if d.request_hash == request_hash { Enqueued::Existing(d) } else { Enqueued::Conflict }))
}
