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
//!
//! A turn's two writes (the gate's verdict before the call, how the turn ended) go to the worker's
//! writer, which applies those waiting together in one transaction, each in a savepoint of its own
//! (one that fails fails alone): on SQLite every write transaction waits for the one before it, and
//! one per write made the deliveries most of the host's write time at 2000 events/s. A turn goes on
//! once its write is committed.
//!
//! A worker keeps four times as many deliveries in hand as it makes provider calls at once
//! (`concurrency`): a turn waits for its claim and its two writes, on SQLite behind the consumers'
//! batches, far longer than for its provider call, and with one delivery in hand per call those waits
//! bounded the sends (16 in hand fell behind the 230 messages a second of the `engage` benchmark at
//! 2000 events/s).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::Context;
use super::channels::{Accepted, Channels, Outcome};
use super::outbox::{self, Message};
use crate::model::ConsentRecord;
use crate::model::{Channel, Product};
use crate::policy::{Decision, MessageClass, Priority};
use crate::profiles::ProfileView;
use crate::store::Db;
use crate::store::contacts::{self, Contact, ContactsKey};
use crate::store::deliveries::{self, Delivery, Status};

pub struct Worker {
    pub db: Db,
    pub key: ContactsKey,
    pub ctx: Arc<Context>,
    channels: Channels,
    /// One permit per provider call at once, held from the gate's verdict to the call's end.
    calls: Semaphore,
}

/// Deliveries in hand per provider call at once.
const IN_HAND_PER_CALL: usize = 4;

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> anyhow::Result<T> {
    Ok(serde_json::from_value(Value::String(s.to_string()))?)
}

impl Worker {
    pub fn new(db: Db, key: ContactsKey, ctx: Arc<Context>) -> anyhow::Result<Worker> {
        let channels = Channels::new(&ctx.settings)?;
        let calls = Semaphore::new(ctx.settings.delivery.concurrency);
        Ok(Worker { db, key, ctx, channels, calls })
    }

    /// Works until `stop`, then finishes the deliveries in hand. Looks for due deliveries when woken
    /// (something was queued) and on every poll (retries and deferrals coming due); while the last look
    /// filled every free place (more may be due), again once half the places are free: each look is a
    /// write transaction, and one per freed place made the looks a sixth of the host's write time.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let settings = &self.ctx.settings.delivery;
        let places = settings.concurrency.saturating_mul(IN_HAND_PER_CALL);
        let (queue, waiting) = mpsc::unbounded_channel();
        let writer = tokio::spawn(Writer { db: self.db.clone(), ctx: self.ctx.clone() }.run(waiting));
        let writes = Writes(queue);
        let mut poll = tokio::time::interval(Duration::from_millis(settings.poll_ms));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_hand: JoinSet<()> = JoinSet::new();
        let (mut look, mut more) = (true, false);
        while !*stop.borrow() {
            let free = places.saturating_sub(in_hand.len());
            if free > 0 && (look || (more && 2 * free >= places)) {
                let now = self.ctx.clock.now_ms();
                let lease = now + settings.lease_ms as i64;
                look = false;
                match deliveries::claim_due(&self.db, now, lease, free as i64).await {
                    Ok(taken) => {
                        more = taken.len() == free;
                        for d in taken {
                            let (w, writes) = (self.clone(), writes.clone());
                            in_hand.spawn(async move {
                                let id = d.delivery_id.clone();
                                if let Err(e) = w.process(&writes, d).await {
                                    tracing::error!(delivery_id = %id, error = format!("{e:#}"), "delivery");
                                    if let Err(e) = w.broke(&writes, &id, &e).await {
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
                _ = self.ctx.wake.notified() => look = true,
                _ = poll.tick() => look = true,
                _ = stop.changed() => {}
            }
        }
        while in_hand.join_next().await.is_some() {}
        drop(writes);
        let _ = writer.await;
    }

    /// One turn with a delivery this worker claimed (the row as claimed).
    async fn process(&self, writes: &Writes, d: Delivery) -> anyhow::Result<()> {
        let now = self.ctx.clock.now();
        if in_doubt(&d) {
            let why = "the host stopped once the SMTP call had begun; the relay may have accepted it, so it is not sent again";
            return self
                .finish(writes, &d, Status::DeadLetter, Step::Gave("in_doubt", why.into()), now)
                .await;
        }
        let Some(call) = self.gate_again(writes, &d, now).await? else {
            return Ok(());
        };
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
                        return self
                            .finish(writes, &d, Status::DeadLetter, Step::Gave("no_contact", why), now)
                            .await;
                    }
                    Contact::Invalid => {
                        let why = format!("the player's {kind} contact bounced hard");
                        return self
                            .finish(writes, &d, Status::Suppressed, Step::Gave("contact_invalid", why), now)
                            .await;
                    }
                    Contact::Unreadable => {
                        let why =
                            format!("the player's {kind} contact does not decrypt with this host's key");
                        return self
                            .finish(
                                writes,
                                &d,
                                Status::DeadLetter,
                                Step::Gave("contact_unreadable", why),
                                now,
                            )
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
        drop(call);
        let now = self.ctx.clock.now();
        match outcome {
            Outcome::Accepted(accepted) => {
                let seconds = (now.as_millisecond() - d.created_at).max(0) as f64 / 1000.0;
                self.ctx.metrics.send_to_provider(&d.channel, seconds);
                if let Some(caused) = d.caused_at {
                    let since = (crate::store::now_ms() - caused).max(0) as f64 / 1000.0;
                    self.ctx.metrics.event_to_provider(&d.channel, since);
                }
                self.finish(writes, &d, Status::Sent, Step::Accepted(accepted), now).await
            }
            Outcome::Permanent(e) => {
                self.finish(writes, &d, Status::DeadLetter, Step::Gave("permanent_failure", e), now).await
            }
            Outcome::Retry(e) => self.retry_or_give_up(writes, &d, e, now).await,
        }
    }

    /// Another attempt after the backoff, or the dead letter once `max_attempts` are used.
    async fn retry_or_give_up(
        &self,
        writes: &Writes,
        d: &Delivery,
        error: String,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let s = &self.ctx.settings.delivery;
        if d.attempts + 1 >= i64::from(s.max_attempts) {
            let why = format!("{} attempts; last: {error}", d.attempts + 1);
            return self
                .finish(writes, d, Status::DeadLetter, Step::Gave("attempts_exhausted", why), now)
                .await;
        }
        let shift = u32::try_from(d.attempts).unwrap_or(u32::MAX).min(30);
        let wait = s.backoff_initial_ms.saturating_mul(1 << shift).min(s.backoff_max_ms);
        let at = now.as_millisecond() + wait as i64;
        self.finish(writes, d, Status::Queued, Step::Retry(error, at), now).await
    }

    /// A turn that broke on our side (the database, a row that does not read) counts as an attempt, so a
    /// delivery that always breaks ends in the dead letter instead of coming back forever. An e-mail
    /// whose SMTP call may have begun is in doubt, as after a crash.
    async fn broke(&self, writes: &Writes, id: &str, e: &anyhow::Error) -> anyhow::Result<()> {
        let now = self.ctx.clock.now();
        let mut conn = self.db.pool.acquire().await?;
        let Some(d) = deliveries::get(&mut conn, id).await? else { return Ok(()) };
        drop(conn);
        if d.status != Status::Sending {
            return Ok(()); // the turn had already recorded how it ended
        }
        if in_doubt(&d) {
            let why = format!("the turn broke once the SMTP call had begun ({e:#}); not sent again");
            return self.finish(writes, &d, Status::DeadLetter, Step::Gave("in_doubt", why), now).await;
        }
        self.retry_or_give_up(writes, &d, format!("internal error: {e:#}"), now).await
    }

    /// The gate, right before sending, exactly as on the send path (this delivery left out of what was
    /// sent). Writes its verdict; if the message may go now, the permit for its provider call.
    async fn gate_again(
        &self,
        writes: &Writes,
        d: &Delivery,
        now: Timestamp,
    ) -> anyhow::Result<Option<SemaphorePermit<'_>>> {
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
            self.finish(writes, d, Status::Queued, Step::Wait(why, at), now).await?;
            return Ok(None);
        }
        let stored =
            crate::profiles::load_without_activity(&self.db, &self.key, &d.brand_id, &d.player_id).await?;
        let known = self.ctx.policies.frequency(&d.frequency_policy).is_some();
        let Some(stored) = stored.filter(|_| known) else {
            let why = if known { "unknown_player" } else { "unknown_frequency_policy" };
            self.finish(writes, d, Status::Suppressed, Step::Gave(why, "at send time".into()), now).await?;
            return Ok(None);
        };
        let view = stored.at(&d.brand_id, &d.player_id, now);
        let consents = stored.consent_history;
        // The permit is waited for only while a whole attempt still fits in the lease: past the lease
        // another worker may take the delivery, so a turn that cannot start in time gives it back (no
        // attempt used) and it is claimed again.
        let attempt = i64::try_from(self.ctx.settings.longest_attempt_ms()).unwrap_or(i64::MAX);
        let left = d
            .lease_until
            .map_or(i64::MAX, |until| until.saturating_sub(attempt).saturating_sub(self.ctx.clock.now_ms()));
        let wait = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        let call = match tokio::time::timeout(wait, self.calls.acquire()).await {
            Ok(call) if left > 0 => call?,
            _ => {
                let why = "no provider call could start within the delivery's lease".to_string();
                let now = self.ctx.clock.now();
                self.finish(writes, d, Status::Queued, Step::Wait(why, now.as_millisecond()), now).await?;
                return Ok(None);
            }
        };
        let allowed = writes.apply(Write::Gate(Box::new(Regate { d: d.clone(), view, consents }))).await?;
        Ok(allowed.then_some(call))
    }

    /// Records how the turn ended: the delivery's new status and a line of its history.
    async fn finish(
        &self,
        writes: &Writes,
        d: &Delivery,
        status: Status,
        step: Step,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let refused = match &step {
            Step::Gave(code, _) if status == Status::Suppressed => Some(*code),
            _ => None,
        };
        writes.apply(Write::End(End { delivery_id: d.delivery_id.clone(), status, step, now })).await?;
        if let Some(code) = refused {
            self.ctx.metrics.refusal(code);
        }
        Ok(())
    }
}

/// A turn's way to the writer.
#[derive(Clone)]
struct Writes(mpsc::UnboundedSender<(Write, oneshot::Sender<anyhow::Result<bool>>)>);

impl Writes {
    /// Once the write is committed: for the gate, whether the message may go now.
    async fn apply(&self, w: Write) -> anyhow::Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.0.send((w, reply)).map_err(|_| anyhow::anyhow!("the delivery writer has stopped"))?;
        answer.await.map_err(|_| anyhow::anyhow!("the delivery writer has stopped"))?
    }
}

/// What a turn writes.
enum Write {
    /// The gate's verdict right before sending.
    Gate(Box<Regate>),
    /// How the turn ended.
    End(End),
}

/// The gate again, exactly as on the send path (this delivery left out of what was sent), for the
/// player as read just before.
struct Regate {
    d: Delivery,
    view: ProfileView,
    consents: Vec<ConsentRecord>,
}

struct End {
    delivery_id: String,
    status: Status,
    step: Step,
    now: Timestamp,
}

impl Write {
    /// Players in one order: on PostgreSQL the gate takes each player's send lock until the commit.
    fn player(&self) -> (&str, &str) {
        match self {
            Write::Gate(g) => (&g.d.brand_id, &g.d.player_id),
            Write::End(_) => ("", ""),
        }
    }

    async fn apply(&self, conn: &mut sqlx::AnyConnection, ctx: &Context) -> anyhow::Result<bool> {
        match self {
            Write::Gate(g) => g.apply(conn, ctx).await,
            Write::End(e) => e.apply(conn).await.map(|()| true),
        }
    }
}

impl Regate {
    /// Writes the gate's verdict; true if the message may go now (the provider call is marked as begun).
    async fn apply(&self, conn: &mut sqlx::AnyConnection, ctx: &Context) -> anyhow::Result<bool> {
        let d = &self.d;
        let policy = ctx
            .policies
            .frequency(&d.frequency_policy)
            .ok_or_else(|| anyhow::anyhow!("unknown frequency policy `{}`", d.frequency_policy))?;
        let class = match d.class.as_str() {
            "transactional" => MessageClass::Transactional,
            "rg_informational" => MessageClass::RgInformational,
            _ => MessageClass::Marketing {
                product: parse::<Product>(d.product.as_deref().unwrap_or_default())?,
                bonus_offer: d.bonus_offer,
            },
        };
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
        let (decision, now) =
            outbox::gate(&mut *conn, ctx, &m, &self.view, &self.consents, Some(&d.delivery_id)).await?;
        let mut g = outbox::gated(&decision, now);
        let allowed = matches!(decision, Decision::Allow { .. });
        if allowed {
            g.status = Status::Sending;
        }
        deliveries::regated(&mut *conn, &d.delivery_id, &g, allowed, now.as_millisecond()).await?;
        let detail = outbox::decision_detail(&decision, "send");
        deliveries::event(&mut *conn, &d.delivery_id, now.as_millisecond(), g.status.as_str(), detail)
            .await?;
        Ok(allowed)
    }
}

impl End {
    async fn apply(&self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<()> {
        let (status, now_ms) = (self.status, self.now.as_millisecond());
        // (a provider was called, provider, its message id, error, next attempt, history detail)
        let (called, provider, message_id, error, next, detail) = match &self.step {
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
        let reasons = match &self.step {
            Step::Gave(code, why) if status != Status::DeadLetter => {
                Some(json!([{"code": code, "detail": why}]))
            }
            _ => None,
        };
        let turn = deliveries::TurnEnd {
            status,
            attempted: called,
            provider,
            provider_message_id: message_id,
            error,
            next_attempt_at: next,
            reasons,
            in_doubt: matches!(self.step, Step::Gave("in_doubt", _)),
        };
        deliveries::end_turn(&mut *conn, &self.delivery_id, &turn, now_ms).await?;
        deliveries::event(&mut *conn, &self.delivery_id, now_ms, status.as_str(), detail).await?;
        Ok(())
    }
}

/// Applies the turns' writes, those waiting together in one transaction.
struct Writer {
    db: Db,
    ctx: Arc<Context>,
}

impl Writer {
    /// At most this many writes in one transaction.
    const MOST: usize = 64;

    /// Until every turn's way to it is dropped.
    async fn run(self, mut waiting: mpsc::UnboundedReceiver<(Write, oneshot::Sender<anyhow::Result<bool>>)>) {
        let mut batch = Vec::with_capacity(Self::MOST);
        while waiting.recv_many(&mut batch, Self::MOST).await > 0 {
            batch.sort_by(|(a, _), (b, _)| a.player().cmp(&b.player()));
            let writes: Vec<&Write> = batch.iter().map(|(w, _)| w).collect();
            let results = self.together(&writes).await;
            for ((_, reply), result) in batch.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
    }

    /// Each write in a savepoint; all of them fail if the transaction does not commit.
    async fn together(&self, writes: &[&Write]) -> Vec<anyhow::Result<bool>> {
        let failed = |e: &dyn std::fmt::Display| writes.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect();
        let mut tx = match self.db.begin_write().await {
            Ok(tx) => tx,
            Err(e) => return failed(&e),
        };
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            match tx.in_savepoint(async |tx| w.apply(tx, &self.ctx).await).await {
                Ok(result) => results.push(result),
                // The savepoint failed: nothing of the transaction holds.
                Err(e) => return failed(&e),
            }
        }
        match tx.commit().await {
            Ok(()) => results,
            Err(e) => failed(&e),
        }
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
