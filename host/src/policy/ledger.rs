//! What was already sent to a player, counted the way the gate needs it, under the player's send lock:
//! the gate's side in the database. The caller writes what the gate decided in the same transaction, so
//! a place under the caps is reserved by one sender at a time — 100 concurrent sends against a cap of 3
//! give exactly 3. The outbox asks it at the send, the workers again right before sending.
//!
//! The subject is a message today; an offer or a bonus grant will be a subject beside it (with its cost,
//! bonus type and wagering multiple), counted and decided here too — not by a second gate.

use jiff::{SignedDuration, Timestamp, ToSpan, tz::TimeZone};

use super::{Decision, FrequencyPolicy, MessageClass, Packs, Priority, Sent};
use crate::clock::Clock;
use crate::model::{Channel, ConsentRecord, Profile, wire_name};
use crate::store::deliveries::{self, Counted};

/// What the gate reads besides the subject and the player: the packs in force, the brand's licences,
/// the host's clock.
pub struct GateContext<'a> {
    pub packs: &'a Packs,
    pub licensed: &'a [String],
    pub clock: &'a Clock,
}

/// The player as the gate sees them: the profile as of now, the exact age, the consent history.
pub struct Player<'a> {
    pub profile: &'a Profile,
    pub age: Option<i32>,
    pub consents: &'a [ConsentRecord],
}

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
    ctx: &GateContext<'_>,
    m: &Message<'_>,
    player: &Player<'_>,
    exclude: Option<&str>,
) -> anyhow::Result<(Decision, Timestamp)> {
    let profile = player.profile;
    deliveries::lock_player(conn, m.brand, m.player).await?;
    let now = ctx.clock.now();
    let windows = local_windows(&profile.time_zone, now);
    let since = Timestamp::from_millisecond(windows.week.0)?
        .min(now - m.policy.dedup_window())
        .min(now - m.policy.campaign_cooldown())
        .min(now - SignedDuration::from_hours(24 * 8));
    // Everything counted from then on, including what is deferred to a later day.
    let counted = deliveries::counted_since(conn, m.brand, m.player, since.as_millisecond()).await?;
    // When would it go out? Now, or when the campaign's cooldown and then quiet hours let it: the caps
    // that count are those of that day and week, with what is already deferred there.
    let today = tally(&counted, m, windows, exclude);
    let r = super::Request {
        channel: m.channel,
        class: m.class,
        profile,
        age: player.age,
        consents: player.consents,
        pack: ctx.packs.for_jurisdiction(&profile.jurisdiction),
        licensed: ctx.licensed,
        policy: m.policy,
        priority: m.priority,
        sent: &today,
        now,
    };
    let after_cooldown = super::gate::cooldown(&r).map_or(now, |(t, _)| t);
    let at = super::gate::quiet_hours(&r, after_cooldown).map_or(after_cooldown, |(t, _)| t);
    let then = local_windows(&profile.time_zone, at);
    let decision = if then == windows {
        super::decide(&r)
    } else {
        super::decide(&super::Request { sent: &tally(&counted, m, then, exclude), ..r })
    };
    Ok((decision, now))
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
