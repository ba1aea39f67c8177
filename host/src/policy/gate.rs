//! The gate's decision: allow (with its basis), defer until a time, or deny (with every reason). A pure
//! function of what the caller read for this send — the player's profile and consent history, the
//! jurisdiction's pack, the brand's licences, the counters of what was already sent, the clock — so the
//! same inputs always give the same answer and every answer can be explained afterwards.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, ZonedDateTime};
use serde::{Deserialize, Serialize};

use super::packs::Pack;
use crate::model::{Channel, ConsentRecord, Product, Profile, wire_name};

/// What a message is, for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum MessageClass {
    /// Marketing about a product; `bonus_offer` when it carries an offer.
    Marketing { product: Product, bonus_offer: bool },
    /// KYC status, failed payment, processed withdrawal…: needs no marketing consent, not capped.
    Transactional,
    /// Responsible-gambling information: always goes out, even to an excluded player.
    RgInformational,
}

/// What was already sent to the player, as the caller counted it (marketing only, in the player's own
/// calendar days and weeks from Monday).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sent {
    /// Every marketing message, whatever its priority (the pack's legal caps).
    pub marketing_today: u32,
    pub marketing_this_week: u32,
    /// Marketing of this message's priority class, on any channel (the policy's global caps).
    pub class_today: u32,
    pub class_this_week: u32,
    /// Marketing of this message's priority class on this channel.
    pub channel_today: u32,
    pub channel_this_week: u32,
    /// The last time this template went to this player.
    pub template_last_sent: Option<Timestamp>,
    /// The last time this campaign reached this player.
    pub campaign_last_sent: Option<Timestamp>,
}

/// A message's priority class (§6.3): each class has caps of its own, so an incident or VIP message is
/// not crowded out by the day's promotions. The pack's legal caps still count every marketing message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Normal,
    High,
}

/// The caps of one priority class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    pub channel_per_day: u32,
    pub channel_per_week: u32,
    /// All channels together.
    pub global_per_day: u32,
    pub global_per_week: u32,
}

/// A frequency policy (`frequency_policy_id` of a send): caps per priority class, on top of the
/// pack's, a dedup window and a campaign cooldown. Data, like the packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyPolicy {
    pub id: String,
    pub normal: Caps,
    pub high: Caps,
    /// The same template to the same player not again within this many minutes.
    pub dedup_window_minutes: u32,
    /// A campaign waits this many minutes before reaching the player again.
    pub campaign_cooldown_minutes: u32,
}

impl FrequencyPolicy {
    pub fn caps(&self, priority: Priority) -> &Caps {
        match priority {
            Priority::Normal => &self.normal,
            Priority::High => &self.high,
        }
    }

    pub fn dedup_window(&self) -> SignedDuration {
        SignedDuration::from_mins(i64::from(self.dedup_window_minutes))
    }

    pub fn campaign_cooldown(&self) -> SignedDuration {
        SignedDuration::from_mins(i64::from(self.campaign_cooldown_minutes))
    }
}

#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub channel: Channel,
    pub class: MessageClass,
    pub profile: &'a Profile,
    /// The player's exact age on their own date today; none when no birth date is known.
    pub age: Option<i32>,
    pub consents: &'a [ConsentRecord],
    pub pack: Option<&'a Pack>,
    /// Jurisdictions the brand holds a licence for.
    pub licensed: &'a [String],
    pub policy: &'a FrequencyPolicy,
    pub priority: Priority,
    pub sent: &'a Sent,
    pub now: Timestamp,
}

/// One reason a message may not go (now), with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub detail: String,
}

fn reason(code: &'static str, detail: impl Into<String>) -> Reason {
    Reason { code, detail: detail.into() }
}

/// A cap and how much of it this send uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapUse {
    pub cap: &'static str,
    /// Including this message.
    pub used: u32,
    pub limit: u32,
}

/// On what basis a message was allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Basis {
    pub class: MessageClass,
    /// The consent version in force (marketing), with when it was recorded.
    pub consent_version: Option<i64>,
    pub consent_recorded_at: Option<Timestamp>,
    pub caps: Vec<CapUse>,
    pub pack_version: Option<String>,
    pub frequency_policy: String,
    pub priority: Priority,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allow { basis: Basis },
    Defer { until: Timestamp, reasons: Vec<Reason> },
    Deny { reasons: Vec<Reason> },
}

/// "HH:MM" → minutes after midnight.
pub fn minute_of_day(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// The consents in force at `now`: the latest record of each item recorded at or before it.
fn consent_at<'a>(
    history: &'a [ConsentRecord],
    scope: &str,
    name: &str,
    now: Timestamp,
) -> Option<&'a ConsentRecord> {
    history
        .iter()
        .filter(|r| r.scope == scope && r.name == name && r.recorded_at <= now)
        .max_by_key(|r| r.version)
}

pub fn decide(r: &Request) -> Decision {
    let p = r.profile;
    let marketing = matches!(r.class, MessageClass::Marketing { .. });
    if !marketing {
        // Transactional and RG-informational messages pass the marketing rules; they are neither
        // consent-bound nor capped.
        return Decision::Allow {
            basis: Basis {
                class: r.class,
                consent_version: None,
                consent_recorded_at: None,
                caps: Vec::new(),
                pack_version: r.pack.map(|p| p.version.clone()),
                frequency_policy: r.policy.id.clone(),
                priority: r.priority,
            },
        };
    }
    let MessageClass::Marketing { product, bonus_offer } = r.class else { unreachable!() };
    let mut deny = Vec::new();

    // Responsible gambling.
    let rg = &p.rg;
    if rg.self_excluded {
        deny.push(reason("self_excluded", "the player is self-excluded"));
    }
    if rg.cooling_off {
        deny.push(reason("cooling_off", "the player is cooling off"));
    }
    if rg.harm_flag {
        deny.push(reason("harm_flag", "a harm marker is set on the player"));
    }
    if rg.limit_hit_today {
        deny.push(reason("limit_hit_today", "the player hit a limit today"));
    }

    // Jurisdiction.
    if !r.licensed.contains(&p.jurisdiction) {
        deny.push(reason("not_licensed", format!("the brand holds no licence for {}", p.jurisdiction)));
    }
    let pack = r.pack;
    match pack {
        None => deny.push(reason("no_policy_pack", format!("no policy pack for {}", p.jurisdiction))),
        Some(pack) => {
            if pack.banned_channels.contains(&r.channel) {
                deny.push(reason(
                    "channel_banned",
                    format!("{} marketing is banned in {}", wire_name(r.channel), p.jurisdiction),
                ));
            }
            // The law is a number of years on the day, not a band: an unknown age never passes.
            let min = if bonus_offer { pack.min_age_bonus_offers } else { pack.min_age_marketing };
            let what = if bonus_offer { "bonus offers" } else { "marketing" };
            match r.age {
                None => deny.push(reason(
                    "under_age",
                    format!("the player's age is unknown; {what} needs {min} in {}", p.jurisdiction),
                )),
                Some(age) if age < i32::from(min) => deny.push(reason(
                    "under_age",
                    format!("age {age} is under {min} for {what} in {} ({})", p.jurisdiction, pack.version),
                )),
                Some(_) => {}
            }
        }
    }

    // Consent in force at send time, for this channel and this product.
    let channel_consent = consent_at(r.consents, "channel", &wire_name(r.channel), r.now);
    let product_consent = consent_at(r.consents, "product", &wire_name(product), r.now);
    if !channel_consent.is_some_and(|c| c.granted) {
        deny.push(reason("no_consent", format!("no {} marketing consent in force", wire_name(r.channel))));
    }
    if !product_consent.is_some_and(|c| c.granted) {
        deny.push(reason("no_consent", format!("no consent to marketing about {}", wire_name(product))));
    }

    // Caps (this message included).
    let s = r.sent;
    let limits = r.policy.caps(r.priority);
    let mut caps = vec![
        CapUse { cap: "channel_per_day", used: s.channel_today + 1, limit: limits.channel_per_day },
        CapUse { cap: "channel_per_week", used: s.channel_this_week + 1, limit: limits.channel_per_week },
        CapUse { cap: "global_per_day", used: s.class_today + 1, limit: limits.global_per_day },
        CapUse { cap: "global_per_week", used: s.class_this_week + 1, limit: limits.global_per_week },
    ];
    if let Some(pack) = pack {
        caps.push(CapUse {
            cap: "marketing_per_day",
            used: s.marketing_today + 1,
            limit: pack.max_marketing_per_day,
        });
        caps.push(CapUse {
            cap: "marketing_per_week",
            used: s.marketing_this_week + 1,
            limit: pack.max_marketing_per_week,
        });
    }
    for c in caps.iter().filter(|c| c.used > c.limit) {
        deny.push(reason("cap_reached", format!("{}: {} of {} already sent", c.cap, c.used - 1, c.limit)));
    }

    // Dedup.
    // A zero window turns dedup off (and so a cooldown of zero): "within no time" matches nothing.
    if let Some(last) = s.template_last_sent
        && r.policy.dedup_window_minutes > 0
        && r.now < last + r.policy.dedup_window()
    {
        deny.push(reason("duplicate", format!("the same template went out at {last}")));
    }
    if !deny.is_empty() {
        return Decision::Deny { reasons: deny };
    }

    // What only waits: the campaign's cooldown, then quiet hours in the player's own time zone.
    let mut defer: Vec<(Timestamp, Reason)> = Vec::new();
    if let Some(last) = s.campaign_last_sent
        && r.policy.campaign_cooldown_minutes > 0
        && r.now < last + r.policy.campaign_cooldown()
    {
        defer.push((
            last + r.policy.campaign_cooldown(),
            reason("campaign_cooldown", format!("the campaign reached the player at {last}")),
        ));
    }
    let mut at = defer.iter().map(|(t, _)| *t).max().unwrap_or(r.now);
    if let Some(pack) = pack
        && let Some(until) = quiet_until(pack, &p.time_zone, at)
    {
        defer.push((
            until,
            reason("quiet_hours", format!("quiet hours in {} ({})", p.time_zone, pack.version)),
        ));
        at = until;
    }
    if !defer.is_empty() {
        return Decision::Defer { until: at, reasons: defer.into_iter().map(|(_, r)| r).collect() };
    }
    Decision::Allow {
        basis: Basis {
            class: r.class,
            consent_version: channel_consent.map(|c| c.version).max(product_consent.map(|c| c.version)),
            consent_recorded_at: channel_consent
                .map(|c| c.recorded_at)
                .max(product_consent.map(|c| c.recorded_at)),
            caps,
            pack_version: pack.map(|p| p.version.clone()),
            frequency_policy: r.policy.id.clone(),
            priority: r.priority,
        },
    }
}

/// If `at` falls in the pack's quiet hours in the player's zone, the first allowed instant after them.
fn quiet_until(pack: &Pack, time_zone: &str, at: Timestamp) -> Option<Timestamp> {
    let (from, to) = pack.quiet_hours.as_ref()?;
    let (from, to) = (minute_of_day(from)?, minute_of_day(to)?);
    let tz = TimeZone::get(time_zone).unwrap_or(TimeZone::UTC);
    let local: ZonedDateTime = at.to_zoned_datetime(tz.clone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let quiet = if from <= to { minute >= from && minute < to } else { minute >= from || minute < to };
    if !quiet {
        return None;
    }
    // The end of quiet hours, today or tomorrow (local), resolved through DST by the zone's rules:
    // a wall time that does not exist that night moves forward, never back.
    let end = Time::new((to / 60) as i8, (to % 60) as i8, 0, 0).ok()?;
    let mut day = local.date();
    if minute >= to {
        day = day.checked_add(1.day()).ok()?;
    }
    let end_local = day.to_datetime(end).to_zoned_datetime(tz).ok()?;
    Some(end_local.timestamp())
}
