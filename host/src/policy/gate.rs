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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The gate: every rule, each a function of the request alone (`rg`, `jurisdiction`, `age`, `consent`,
/// `caps`, `dedup` refuse; `cooldown`, `quiet_hours` defer), composed. A subject that is not marketing
/// (transactional, RG information) passes the marketing rules untouched.
pub fn decide(r: &Request) -> Decision {
    let MessageClass::Marketing { product, bonus_offer } = r.class else {
        return Decision::Allow { basis: basis(r, None, Vec::new()) };
    };
    let mut deny = Vec::new();
    deny.extend(rg(r.profile));
    deny.extend(jurisdiction(r));
    deny.extend(age(r, bonus_offer));
    let (consent_refusals, consent_basis) = consent(r, product);
    deny.extend(consent_refusals);
    let (cap_refusals, caps_used) = caps(r);
    deny.extend(cap_refusals);
    deny.extend(dedup(r));
    if !deny.is_empty() {
        return Decision::Deny { reasons: deny };
    }
    // What only waits: the campaign's cooldown, then quiet hours in the player's own time zone from then.
    let mut defer: Vec<(Timestamp, Reason)> = cooldown(r).into_iter().collect();
    let at = defer.iter().map(|(t, _)| *t).max().unwrap_or(r.now);
    defer.extend(quiet_hours(r, at));
    if let Some(until) = defer.iter().map(|(t, _)| *t).max() {
        return Decision::Defer { until, reasons: defer.into_iter().map(|(_, r)| r).collect() };
    }
    Decision::Allow { basis: basis(r, Some(consent_basis), caps_used) }
}

fn basis(r: &Request, consent: Option<(Option<i64>, Option<Timestamp>)>, caps: Vec<CapUse>) -> Basis {
    let (consent_version, consent_recorded_at) = consent.unwrap_or((None, None));
    Basis {
        class: r.class,
        consent_version,
        consent_recorded_at,
        caps,
        pack_version: r.pack.map(|p| p.version.clone()),
        frequency_policy: r.policy.id.clone(),
        priority: r.priority,
    }
}

/// An offer as a subject of the gate: responsible gambling (every marker with `rg_safe`; self-exclusion
/// and cooling-off always), the brand's licence and the pack, the age for bonus offers, marketing
/// consent for the channel and each product of the offer. Caps, dedup and quiet hours belong to the
/// message that carries the offer, which crosses the gate again when it is sent.
pub fn offer(r: &Request, products: &[Product], rg_safe: bool) -> Result<Basis, Vec<Reason>> {
    let mut deny: Vec<Reason> = rg(r.profile)
        .into_iter()
        .filter(|x| rg_safe || matches!(x.code, "self_excluded" | "cooling_off"))
        .collect();
    deny.extend(jurisdiction(r));
    deny.extend(age(r, true));
    let mut consented = (None, None);
    for product in products {
        let (refusals, (version, at)) = consent(r, *product);
        for x in refusals {
            if !deny.contains(&x) {
                deny.push(x);
            }
        }
        consented = (consented.0.max(version), consented.1.max(at));
    }
    if deny.is_empty() { Ok(basis(r, Some(consented), Vec::new())) } else { Err(deny) }
}

/// Responsible gambling: self-exclusion, cooling-off, a harm marker, a limit hit today.
pub fn rg(p: &Profile) -> Vec<Reason> {
    let rg = &p.rg;
    [
        (rg.self_excluded, "self_excluded", "the player is self-excluded"),
        (rg.cooling_off, "cooling_off", "the player is cooling off"),
        (rg.harm_flag, "harm_flag", "a harm marker is set on the player"),
        (rg.limit_hit_today, "limit_hit_today", "the player hit a limit today"),
    ]
    .into_iter()
    .filter(|(hit, _, _)| *hit)
    .map(|(_, code, detail)| reason(code, detail))
    .collect()
}

/// The codes of the RG reasons that block marketing for the player ("self_excluded, limit_hit_today"),
/// if any: what segments and journeys write when they take a player out.
pub fn rg_codes(p: &Profile) -> Option<String> {
    let reasons = rg(p);
    (!reasons.is_empty()).then(|| reasons.iter().map(|r| r.code).collect::<Vec<_>>().join(", "))
}

/// The brand's licence for the player's jurisdiction, its pack, and the channels the pack bans.
pub fn jurisdiction(r: &Request) -> Vec<Reason> {
    let j = &r.profile.jurisdiction;
    let mut out = Vec::new();
    if !r.licensed.contains(j) {
        out.push(reason("not_licensed", format!("the brand holds no licence for {j}")));
    }
    match r.pack {
        None => out.push(reason("no_policy_pack", format!("no policy pack for {j}"))),
        Some(pack) if pack.banned_channels.contains(&r.channel) => {
            out.push(reason("channel_banned", format!("{} marketing is banned in {j}", wire_name(r.channel))))
        }
        Some(_) => {}
    }
    out
}

/// The law is a number of years on the day, not a band: an unknown age never passes.
pub fn age(r: &Request, bonus_offer: bool) -> Option<Reason> {
    let pack = r.pack?;
    let min = if bonus_offer { pack.min_age_bonus_offers } else { pack.min_age_marketing };
    let what = if bonus_offer { "bonus offers" } else { "marketing" };
    let j = &r.profile.jurisdiction;
    match r.age {
        None => Some(reason("under_age", format!("the player's age is unknown; {what} needs {min} in {j}"))),
        Some(age) if age < i32::from(min) => Some(reason(
            "under_age",
            format!("age {age} is under {min} for {what} in {j} ({})", pack.version),
        )),
        Some(_) => None,
    }
}

/// Consent in force at send time, for this channel and this product; the version and date it went out
/// under when both are granted.
pub fn consent(r: &Request, product: Product) -> (Vec<Reason>, (Option<i64>, Option<Timestamp>)) {
    let channel = consent_at(r.consents, "channel", &wire_name(r.channel), r.now);
    let product_consent = consent_at(r.consents, "product", &wire_name(product), r.now);
    let mut out = Vec::new();
    if !channel.is_some_and(|c| c.granted) {
        out.push(reason("no_consent", format!("no {} marketing consent in force", wire_name(r.channel))));
    }
    if !product_consent.is_some_and(|c| c.granted) {
        out.push(reason("no_consent", format!("no consent to marketing about {}", wire_name(product))));
    }
    let version = channel.map(|c| c.version).max(product_consent.map(|c| c.version));
    let recorded = channel.map(|c| c.recorded_at).max(product_consent.map(|c| c.recorded_at));
    (out, (version, recorded))
}

/// The policy's caps of the priority class and the pack's legal caps, this message included.
pub fn caps(r: &Request) -> (Vec<Reason>, Vec<CapUse>) {
    let s = r.sent;
    let limits = r.policy.caps(r.priority);
    let mut caps = vec![
        CapUse { cap: "channel_per_day", used: s.channel_today + 1, limit: limits.channel_per_day },
        CapUse { cap: "channel_per_week", used: s.channel_this_week + 1, limit: limits.channel_per_week },
        CapUse { cap: "global_per_day", used: s.class_today + 1, limit: limits.global_per_day },
        CapUse { cap: "global_per_week", used: s.class_this_week + 1, limit: limits.global_per_week },
    ];
    if let Some(pack) = r.pack {
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
    let refusals = caps
        .iter()
        .filter(|c| c.used > c.limit)
        .map(|c| reason("cap_reached", format!("{}: {} of {} already sent", c.cap, c.used - 1, c.limit)))
        .collect();
    (refusals, caps)
}

/// The same template not again within the policy's window (a zero window is off: "within no time"
/// matches nothing).
pub fn dedup(r: &Request) -> Option<Reason> {
    let last = r.sent.template_last_sent?;
    (r.policy.dedup_window_minutes > 0 && r.now < last + r.policy.dedup_window())
        .then(|| reason("duplicate", format!("the same template went out at {last}")))
}

/// A campaign waits its cooldown before reaching the player again (zero: off).
pub fn cooldown(r: &Request) -> Option<(Timestamp, Reason)> {
    let last = r.sent.campaign_last_sent?;
    (r.policy.campaign_cooldown_minutes > 0 && r.now < last + r.policy.campaign_cooldown()).then(|| {
        (
            last + r.policy.campaign_cooldown(),
            reason("campaign_cooldown", format!("the campaign reached the player at {last}")),
        )
    })
}

/// If `at` falls in the pack's quiet hours in the player's own zone, when they end.
pub fn quiet_hours(r: &Request, at: Timestamp) -> Option<(Timestamp, Reason)> {
    let pack = r.pack?;
    let until = quiet_until(pack, &r.profile.time_zone, at)?;
    Some((until, reason("quiet_hours", format!("quiet hours in {} ({})", r.profile.time_zone, pack.version))))
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

#[cfg(test)]
mod tests {
    //! Each rule alone; `tests/policy_gate.rs` is the decision table of them composed.
    use super::*;

    fn profile() -> Profile {
        serde_json::from_value(serde_json::json!({"player_id": "p", "brand_id": "A", "jurisdiction": "GB",
            "locale": "en", "time_zone": "Europe/London", "currency": "GBP", "age_band": "26-34"}))
        .unwrap()
    }

    fn with<T>(f: impl FnOnce(&Request) -> T, edit: impl FnOnce(&mut Request)) -> T {
        with_sent(&Sent::default(), f, edit)
    }

    fn with_sent<T>(sent: &Sent, f: impl FnOnce(&Request) -> T, edit: impl FnOnce(&mut Request)) -> T {
        let packs = super::super::Packs::defaults();
        let policy = super::super::packs::default_frequency_policies().remove(0);
        let p = profile();
        let consents = vec![
            ConsentRecord {
                version: 1,
                scope: "channel".into(),
                name: "email".into(),
                granted: true,
                source: "t".into(),
                recorded_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            },
            ConsentRecord {
                version: 1,
                scope: "product".into(),
                name: "casino".into(),
                granted: true,
                source: "t".into(),
                recorded_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            },
        ];
        let licensed = vec!["GB".to_string()];
        let mut r = Request {
            channel: Channel::Email,
            class: MessageClass::Marketing { product: Product::Casino, bonus_offer: false },
            profile: &p,
            age: Some(30),
            consents: &consents,
            pack: packs.for_jurisdiction("GB"),
            licensed: &licensed,
            policy: &policy,
            priority: Priority::Normal,
            sent,
            now: "2026-11-23T12:00:00Z".parse().unwrap(),
        };
        edit(&mut r);
        f(&r)
    }

    #[test]
    fn each_rule_alone() {
        let mut excluded = profile();
        excluded.rg.self_excluded = true;
        assert_eq!(rg(&excluded)[0].code, "self_excluded");
        assert!(rg(&profile()).is_empty());
        assert!(with(jurisdiction, |_| {}).is_empty());
        assert_eq!(with(jurisdiction, |r| r.licensed = &[])[0].code, "not_licensed");
        assert!(with(|r| age(r, false), |_| {}).is_none());
        assert_eq!(with(|r| age(r, false), |r| r.age = None).unwrap().code, "under_age");
        assert_eq!(with(|r| age(r, false), |r| r.age = Some(17)).unwrap().code, "under_age");
        assert_eq!(with(|r| consent(r, Product::Casino), |_| {}).1.0, Some(1));
        assert_eq!(with(|r| consent(r, Product::Sports), |_| {}).0.len(), 1);
        assert!(with(|r| caps(r).0, |_| {}).is_empty());
        let full = Sent { marketing_today: 2, ..Sent::default() };
        assert_eq!(with_sent(&full, |r| caps(r).0, |_| {})[0].code, "cap_reached");
        let recent =
            Sent { template_last_sent: Some("2026-11-23T11:00:00Z".parse().unwrap()), ..Sent::default() };
        assert_eq!(with_sent(&recent, dedup, |_| {}).unwrap().code, "duplicate");
        assert!(with(cooldown, |_| {}).is_none());
        let night: Timestamp = "2026-11-23T23:00:00Z".parse().unwrap();
        assert_eq!(with(|r| quiet_hours(r, night), |_| {}).unwrap().0.to_string(), "2026-11-24T09:00:00Z");
        assert!(with(|r| quiet_hours(r, r.now), |_| {}).is_none());
    }
}
