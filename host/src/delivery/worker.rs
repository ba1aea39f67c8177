//! The workers: take due deliveries (claimed under a lease, so that of several hosts exactly one sends
//! each), ask the gate again right before sending — a player excluded after the message was queued
//! receives nothing — then hand the message to its channel, and record what happened. Failures are
//! retried with exponential backoff up to `max_attempts`, then dead-lettered.
//!
//! At most one accepted provider call per delivery, whatever crashes: the provider call is marked as
//! started, in the same commit as the gate's allow, before it is made. A delivery whose worker died
//! after that point is in doubt. HTTP providers are called again with the same idempotency key (they
//! answer a repeated key with the first call's result); an SMTP relay has no such key, so an e-mail in
//! doubt is dead-lettered as `in_doubt`, never sent twice.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Context;
use super::channels::{Accepted, Channels, Outcome};
use super::outbox::{self, Message};
use crate::model::{Channel, Product};
use crate::policy::{Decision, MessageClass, Priority};
use crate::store::Db;
use crate::store::contacts::{self, Contact, ContactsKey};
use crate::store::deliveries::{self, Delivery, Status};

pub struct Worker {
    pub db: Db,
    pub key: ContactsKey,
    pub ctx: Arc<Context>,
    channels: Channels,
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_value(Value::String(s.to_string()))?)
}

impl Worker {
    pub fn new(db: Db, key: ContactsKey, ctx: Arc<Context>) -> anyhow::Result<Worker> {
        let channels = Channels::new(&ctx.settings)?;
        Ok(Worker { db, key, ctx, channels })
    }

    /// Works until `stop`, then finishes the deliveries in hand.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let settings = &self.ctx.settings.delivery;
        let poll = Duration::from_millis(settings.poll_ms);
        let mut in_hand: JoinSet<()> = JoinSet::new();
        while !*stop.borrow() {
            let free = settings.concurrency.saturating_sub(in_hand.len());
            if free > 0 {
                let now = self.ctx.clock.now_ms();
                let lease = now + settings.lease_ms as i64;
                match deliveries::claim_due(&self.db, now, lease, free as i64).await {
                    Ok(taken) => {
                        for d in taken {
                            let w = self.clone();
                            in_hand.spawn(async move {
                                let id = d.delivery_id.clone();
                                if let Err(e) = w.process(d).await {
                                    tracing::error!(delivery_id = %id, error = format!("{e:#}"), "delivery");
                                    if let Err(e) = w.broke(&id, &e).await {
                                        // Left to its lease: the next worker takes it up again.
                                        tracing::error!(delivery_id = %id, error = format!("{e:#}"), "recording");
                                    }
                                }
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = format!("{e:#}"), "looking for due deliveries"),
                }
            }
            tokio::select! {
                Some(_) = in_hand.join_next(), if !in_hand.is_empty() => {}
                _ = self.ctx.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        while in_hand.join_next().await.is_some() {}
    }

    /// One turn with a delivery this worker claimed (the row as claimed).
    async fn process(&self, d: Delivery) -> anyhow::Result<()> {
        let now = self.ctx.clock.now();
        if in_doubt(&d) {
            let why = "the host stopped once the SMTP call had begun; the relay may have accepted it, so it is not sent again";
            return self.finish(&d, Status::DeadLetter, Step::Gave("in_doubt", why.into()), now).await;
        }
        if !self.gate_again(&d, now).await? {
            return Ok(());
        }
        let channel: Channel = parse(&d.channel)?;
        let kind = match channel {
            Channel::Email => Some("email"),
            Channel::Sms | Channel::Phone => Some("phone"),
            Channel::Push | Channel::InApp => None,
        };
        let to = match kind {
            None => d.player_id.clone(),
            Some(kind) => {
                match contacts::for_delivery(
                    &mut *self.db.pool.acquire().await?,
                    &self.key,
                    &d.brand_id,
                    &d.player_id,
                    kind,
                )
                .await?
                {
                    Contact::Valid(to) => to,
                    Contact::Missing => {
                        let why = format!("the player has no {kind} contact");
                        return self.finish(&d, Status::DeadLetter, Step::Gave("no_contact", why), now).await;
                    }
                    Contact::Invalid => {
                        let why = format!("the player's {kind} contact bounced hard");
                        return self
                            .finish(&d, Status::Suppressed, Step::Gave("contact_invalid", why), now)
                            .await;
                    }
                    Contact::Unreadable => {
                        let why =
                            format!("the player's {kind} contact does not decrypt with this host's key");
                        return self
                            .finish(&d, Status::DeadLetter, Step::Gave("contact_unreadable", why), now)
                            .await;
                    }
                }
            }
        };
        let providers = &self.ctx.settings.providers;
        let outcome = match channel {
            Channel::Email => {
                self.channels
                    .email(self.ctx.settings.brands.get(&d.brand_id), &d, &to, &self.ctx.metrics)
                    .await
            }
            Channel::Push => {
                self.channels.http(&providers.push, &d, &to, now.as_second(), &self.ctx.metrics).await
            }
            Channel::Sms => {
                self.channels.http(&providers.sms, &d, &to, now.as_second(), &self.ctx.metrics).await
            }
            Channel::InApp => {
                self.ctx.metrics.attempt("in_app", "inbox", "accepted");
                Accepted::by("inbox")
            }
            Channel::Phone => Outcome::Permanent("phone messages are made by agents, not sent".into()),
        };
        let now = self.ctx.clock.now();
        match outcome {
            Outcome::Accepted(accepted) => {
                let seconds = (now.as_millisecond() - d.created_at).max(0) as f64 / 1000.0;
                self.ctx.metrics.send_to_provider(&d.channel, seconds);
                if let Some(caused) = d.caused_at {
                    let since = (crate::store::now_ms() - caused).max(0) as f64 / 1000.0;
                    self.ctx.metrics.event_to_provider(&d.channel, since);
                }
                self.finish(&d, Status::Sent, Step::Accepted(accepted), now).await
            }
            Outcome::Permanent(e) => {
                self.finish(&d, Status::DeadLetter, Step::Gave("permanent_failure", e), now).await
            }
            Outcome::Retry(e) => self.retry_or_give_up(&d, e, now).await,
        }
    }

    /// Another attempt after the backoff, or the dead letter once `max_attempts` are used.
    async fn retry_or_give_up(&self, d: &Delivery, error: String, now: Timestamp) -> anyhow::Result<()> {
        let s = &self.ctx.settings.delivery;
        if d.attempts + 1 >= i64::from(s.max_attempts) {
            let why = format!("{} attempts; last: {error}", d.attempts + 1);
            return self.finish(d, Status::DeadLetter, Step::Gave("attempts_exhausted", why), now).await;
        }
        let shift = u32::try_from(d.attempts).unwrap_or(u32::MAX).min(30);
        let wait = s.backoff_initial_ms.saturating_mul(1 << shift).min(s.backoff_max_ms);
        let at = now.as_millisecond() + wait as i64;
        self.finish(d, Status::Queued, Step::Retry(error, at), now).await
    }

    /// A turn that broke on our side (the database, a row that does not read) counts as an attempt, so a
    /// delivery that always breaks ends in the dead letter instead of coming back forever. An e-mail
    /// whose SMTP call may have begun is in doubt, as after a crash.
    async fn broke(&self, id: &str, e: &anyhow::Error) -> anyhow::Result<()> {
        let now = self.ctx.clock.now();
        let mut conn = self.db.pool.acquire().await?;
        let Some(d) = deliveries::get(&mut conn, id).await? else { return Ok(()) };
        drop(conn);
        if d.status != Status::Sending {
            return Ok(()); // the turn had already recorded how it ended
        }
        if in_doubt(&d) {
            let why = format!("the turn broke once the SMTP call had begun ({e:#}); not sent again");
            return self.finish(&d, Status::DeadLetter, Step::Gave("in_doubt", why), now).await;
        }
        self.retry_or_give_up(&d, format!("internal error: {e:#}"), now).await
    }

    /// The gate, right before sending, exactly as on the send path (this delivery left out of what was
    /// sent). Writes its verdict; true if the message may go now.
    async fn gate_again(&self, d: &Delivery, now: Timestamp) -> anyhow::Result<bool> {
        // Read afresh, not from a cache, once the player's accepted events are applied: an exclusion or an
        // unsubscribe recorded a moment ago must count.
        let player = (d.brand_id.as_str(), d.player_id.as_str());
        let patience = std::time::Duration::from_secs(2);
        if crate::bus::caught_up(&self.db, &|| {}, crate::profiles::CONSUMER, player, patience)
            .await?
            .is_none()
        {
            // Not the message's fault: it waits, without using up an attempt.
            let why = "the player's latest events are not applied yet".to_string();
            let at = now.as_millisecond() + 1_000;
            self.finish(d, Status::Queued, Step::Wait(why, at), now).await?;
            return Ok(false);
        }
        let stored =
            crate::profiles::load_without_activity(&self.db, &self.key, &d.brand_id, &d.player_id).await?;
        let policy = self.ctx.policies.frequency(&d.frequency_policy);
        let (Some(stored), Some(policy)) = (stored, policy) else {
            let why = if policy.is_none() { "unknown_frequency_policy" } else { "unknown_player" };
            self.finish(d, Status::Suppressed, Step::Gave(why, "at send time".into()), now).await?;
            return Ok(false);
        };
        let class = match d.class.as_str() {
            "transactional" => MessageClass::Transactional,
            "rg_informational" => MessageClass::RgInformational,
            _ => MessageClass::Marketing {
                product: parse::<Product>(d.product.as_deref().unwrap_or_default())?,
                bonus_offer: d.bonus_offer,
            },
        };
        let profile = stored.at(&d.brand_id, &d.player_id, now);
        let m = Message {
            brand: &d.brand_id,
            player: &d.player_id,
            channel: parse(&d.channel)?,
            class,
            priority: parse::<Priority>(&d.priority)?,
            template_id: &d.template_id,
            campaign_id: d.campaign_id.as_deref(),
            policy,
        };
        let mut tx = self.db.begin_write().await?;
        let (decision, now) =
            outbox::gate(&mut tx, &self.ctx, &m, &profile, &stored.consent_history, Some(&d.delivery_id))
                .await?;
        let mut g = outbox::gated(&decision, now);
        let allowed = matches!(decision, Decision::Allow { .. });
        if allowed {
            g.status = Status::Sending;
        }
        deliveries::regated(&mut tx, &d.delivery_id, &g, allowed, now.as_millisecond()).await?;
        deliveries::event(
            &mut tx,
            &d.delivery_id,
            now.as_millisecond(),
            g.status.as_str(),
            outbox::decision_detail(&decision, "send"),
        )
        .await?;
        tx.commit().await?;
        Ok(allowed)
    }

    /// Records how the turn ended: the delivery's new status and a line of its history.
    async fn finish(&self, d: &Delivery, status: Status, step: Step, now: Timestamp) -> anyhow::Result<()> {
        let now_ms = now.as_millisecond();
        // (a provider was called, provider, its message id, error, next attempt, history detail)
        let (called, provider, message_id, error, next, detail) = match &step {
            Step::Accepted(a) => {
                (true, Some(a.provider.as_str()), a.provider_message_id.as_deref(), None, None, json!(a))
            }
            Step::Retry(e, at) => {
                let next = Timestamp::from_millisecond(*at).ok();
                (true, None, None, Some(e.as_str()), Some(*at), json!({"error": e, "next_attempt_at": next}))
            }
            Step::Wait(why, at) => {
                let next = Timestamp::from_millisecond(*at).ok();
                (false, None, None, None, Some(*at), json!({"waiting": why, "next_attempt_at": next}))
            }
            Step::Gave(code, why) => {
                let called = matches!(*code, "permanent_failure" | "attempts_exhausted");
                (
                    called,
                    None,
                    None,
                    Some(why.as_str()),
                    None,
                    json!({"reasons": [{"code": code, "detail": why}]}),
                )
            }
        };
        // A refusal replaces the gate's reasons; a dead letter keeps them (its cause is in the history).
        let reasons = match &step {
            Step::Gave(code, why) if status != Status::DeadLetter => {
                Some(json!([{"code": code, "detail": why}]))
            }
            _ => None,
        };
        let mut tx = self.db.begin_write().await?;
        let turn = deliveries::TurnEnd {
            status,
            attempted: called,
            provider,
            provider_message_id: message_id,
            error,
            next_attempt_at: next,
            reasons,
            in_doubt: matches!(step, Step::Gave("in_doubt", _)),
        };
        deliveries::end_turn(&mut tx, &d.delivery_id, &turn, now_ms).await?;
        deliveries::event(&mut tx, &d.delivery_id, now_ms, status.as_str(), detail).await?;
        tx.commit().await?;
        if let Step::Gave(code, _) = step
            && status == Status::Suppressed
        {
            self.ctx.metrics.refusal(code);
        }
        Ok(())
    }
}

/// An e-mail whose SMTP call was marked as begun in a turn that did not record its end: the relay may
/// have it. (Each recorded end clears the mark.)
fn in_doubt(d: &Delivery) -> bool {
    d.channel == "email" && d.provider_call_at.is_some()
}

/// How a worker's turn with a delivery ended.
enum Step {
    Accepted(Accepted),
    /// Try again at this time.
    Retry(String, i64),
    /// Wait until this time, on our side: no attempt is used.
    Wait(String, i64),
    /// Stopped, with a code and why.
    Gave(&'static str, String),
}
