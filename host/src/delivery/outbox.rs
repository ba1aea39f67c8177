//! The outbox's write side: a message is gated and stored in one transaction that holds the player's
//! send lock, so what was already sent is counted and this message's place under the caps reserved by
//! one sender at a time — 100 concurrent sends against a cap of 3 give exactly 3. The same gate runs
//! again, the same way, when a worker is about to send.

use jiff::{SignedDuration, Timestamp, ToSpan, tz::TimeZone};
use serde_json::{Value, json};

use super::Context;
use super::templates::Topic;
use crate::model::{Channel, Product, wire_name};
use crate::policy::{self, Decision, FrequencyPolicy, MessageClass, Priority, Sent};
use crate::profiles::ProfileView;
use crate::store::Db;
use crate::store::consents::ConsentRecord;
use crate::store::deliveries::{self, Counted, Gated, NewDelivery};

/// What the gate needs to know about a message besides the player.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub brand: &'a str,
    pub player: &'a str,
    pub channel: Channel,
    pub class: MessageClass,
    pub priority: Priority,
    pub template_id: &'a str,
    pub campaign_id: Option<&'a str>,
    pub policy: &'a FrequencyPolicy,
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

pub fn class_name(class: MessageClass) -> &'static str {
    match class {
        MessageClass::Marketing { .. } => "marketing",
        MessageClass::Transactional => "transactional",
        MessageClass::RgInformational => "rg_informational",
    }
}

/// The player's local day and week (from Monday) containing an instant, as [start, end) in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Windows {
    day: (i64, i64),
    week: (i64, i64),
}

fn local_windows(time_zone: &str, at: Timestamp) -> Windows {
    let tz = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let local = at.to_zoned_datetime(tz);
    let start_of = |date: jiff::civil::Date| {
        date.to_datetime(jiff::civil::Time::midnight())
            .to_zoned_datetime(local.time_zone().clone())
            .map(|z| z.timestamp().as_millisecond())
            .ok()
    };
    let date = local.date();
    let monday = date.checked_sub(i64::from(local.weekday().to_monday_zero_offset()).days()).ok();
    let ms = at.as_millisecond();
    let day_start = start_of(date).unwrap_or(ms);
    let day_end = date.tomorrow().ok().and_then(start_of).unwrap_or(day_start + 86_400_000);
    let week_start = monday.and_then(start_of).unwrap_or(day_start);
    let week_end = monday
        .and_then(|m| m.checked_add(7.days()).ok())
        .and_then(start_of)
        .unwrap_or(week_start + 7 * 86_400_000);
    Windows { day: (day_start, day_end), week: (week_start, week_end) }
}

/// Counts what was sent, as the gate sees it, leaving out `exclude` (the delivery being re-checked). A
/// message counts in the day and week it went out — or, deferred, will go out.
fn tally(counted: &[Counted], m: &Message, w: Windows, exclude: Option<&str>) -> Sent {
    let channel = wire_name(m.channel);
    let priority = wire_name(m.priority);
    let within = |at: i64, (start, end): (i64, i64)| u32::from(at >= start && at < end);
    let mut s = Sent::default();
    for c in counted.iter().filter(|c| Some(c.delivery_id.as_str()) != exclude) {
        let at = Timestamp::from_millisecond(c.counted_at).ok();
        if c.template_id == m.template_id {
            s.template_last_sent = s.template_last_sent.max(at);
        }
        if c.campaign_id.is_some() && c.campaign_id.as_deref() == m.campaign_id {
            s.campaign_last_sent = s.campaign_last_sent.max(at);
        }
        if c.class != "marketing" {
            continue;
        }
        let (today, week) = (within(c.counted_at, w.day), within(c.counted_at, w.week));
        s.marketing_today += today;
        s.marketing_this_week += week;
        if c.priority == priority {
            s.class_today += today;
            s.class_this_week += week;
            if c.channel == channel {
                s.channel_today += today;
                s.channel_this_week += week;
            }
        }
    }
    s
}

/// Takes the player's send lock, counts what was sent and asks the gate; returns the decision and its
/// time. The time is read once the lock is held, so that one player's decisions are ordered in time as
/// they are in fact. The caller writes the result in the same transaction.
///
/// A deferred message is a promise: it must fit under the caps of the day it will go out, counted with
/// what is already deferred to that day; if that day is full, the answer is a refusal now, not a
/// suppression later.
pub async fn gate(
    conn: &mut sqlx::AnyConnection,
    ctx: &Context,
    m: &Message<'_>,
    view: &ProfileView,
    consents: &[ConsentRecord],
    exclude: Option<&str>,
) -> anyhow::Result<(Decision, Timestamp)> {
    let profile = &view.profile;
    deliveries::lock_player(conn, m.brand, m.player).await?;
    let now = ctx.clock.now();
    let windows = local_windows(&profile.time_zone, now);
    let since = Timestamp::from_millisecond(windows.week.0)?
        .min(now - m.policy.dedup_window())
        .min(now - m.policy.campaign_cooldown())
        .min(now - SignedDuration::from_hours(24 * 8));
    // Everything counted from then on, including what is deferred to a later day.
    let counted = deliveries::counted_since(conn, m.brand, m.player, since.as_millisecond()).await?;
    let packs = ctx.packs.current();
    let decide = |sent: &Sent| {
        policy::decide(&policy::Request {
            channel: m.channel,
            class: m.class,
            profile,
            age: view.age,
            consents,
            pack: packs.for_jurisdiction(&profile.jurisdiction),
            licensed: ctx.licences(m.brand),
            policy: m.policy,
            priority: m.priority,
            sent,
            now,
        })
    };
    let mut decision = decide(&tally(&counted, m, windows, exclude));
    if let Decision::Defer { until, .. } = &decision {
        let then = local_windows(&profile.time_zone, *until);
        if then != windows
            && let refused @ Decision::Deny { .. } = decide(&tally(&counted, m, then, exclude))
        {
            decision = refused;
        }
    }
    if let Decision::Deny { reasons } | Decision::Defer { reasons, .. } = &decision {
        for r in reasons {
            ctx.metrics.refusal(r.code);
        }
    }
    Ok((decision, now))
}

/// The stored form of a gate decision.
pub fn gated(d: &Decision, now: Timestamp) -> Gated {
    match d {
        Decision::Allow { basis } => Gated {
            status: "queued",
            reasons: json!([]),
            basis: Some(json!(basis)),
            counted_at: Some(now.as_millisecond()),
            next_attempt_at: Some(now.as_millisecond()),
        },
        Decision::Defer { until, reasons } => Gated {
            status: "deferred",
            reasons: json!(reasons),
            basis: None,
            // Its place under the caps of the day it will go out.
            counted_at: Some(until.as_millisecond()),
            next_attempt_at: Some(until.as_millisecond()),
        },
        Decision::Deny { reasons } => Gated {
            status: "suppressed",
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
}

/// Gates a message and writes the delivery. A concurrent request with the same idempotency key gets
/// the delivery the first one wrote.
pub async fn enqueue(
    db: &Db,
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
    };
    let mut tx = db.begin_write().await?;
    let (decision, now) = gate(&mut tx, ctx, m, profile, consents, None).await?;
    let g = gated(&decision, now);
    match deliveries::insert(&mut tx, &new, &g, now.as_millisecond()).await {
        Ok(()) => {}
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            drop(tx);
            return existing(db, m.brand, content.idempotency_key, content.request_hash)
                .await?
                .ok_or_else(|| anyhow::anyhow!("a conflicting delivery vanished"));
        }
        Err(e) => return Err(e.into()),
    }
    let at = now.as_millisecond();
    deliveries::event(&mut tx, new.delivery_id, at, g.status, decision_detail(&decision, "request")).await?;
    // As written: once committed, a worker may take it at once.
    let written = deliveries::get(&mut tx, new.delivery_id).await?.expect("just written");
    tx.commit().await?;
    if g.status == "queued" {
        ctx.wake.notify_one();
    }
    Ok(Enqueued::New(written))
}

/// What an idempotency key already stands for, if it was used.
pub async fn existing(
    db: &Db,
    brand: &str,
    key: &str,
    request_hash: &str,
) -> anyhow::Result<Option<Enqueued>> {
    Ok(deliveries::by_key(db, brand, key)
        .await?
        .map(|d| if d.request_hash == request_hash { Enqueued::Existing(d) } else { Enqueued::Conflict }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_weeks_are_the_players_own() {
        // Monday 2026-11-23 00:30 in Berlin is still Sunday in UTC.
        let now: Timestamp = "2026-11-22T23:30:00Z".parse().unwrap();
        let t = |ms: i64| Timestamp::from_millisecond(ms).unwrap().to_string();
        let w = local_windows("Europe/Berlin", now);
        assert_eq!((t(w.day.0), t(w.day.1)), ("2026-11-22T23:00:00Z".into(), "2026-11-23T23:00:00Z".into()));
        assert_eq!(
            (t(w.week.0), t(w.week.1)),
            ("2026-11-22T23:00:00Z".into(), "2026-11-29T23:00:00Z".into())
        );
        let w = local_windows("UTC", now);
        assert_eq!(t(w.day.0), "2026-11-22T00:00:00Z");
        assert_eq!(
            (t(w.week.0), t(w.week.1)),
            ("2026-11-16T00:00:00Z".into(), "2026-11-23T00:00:00Z".into())
        );
        // A day of 23 hours: spring forward in London.
        let w = local_windows("Europe/London", "2026-03-29T12:00:00Z".parse().unwrap());
        assert_eq!(w.day.1 - w.day.0, 23 * 3_600_000);
    }
}
