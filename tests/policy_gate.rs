//! The gate's rules as a table: (profile × consents × policy pack × what was sent × clock) → decision.

use jiff::Timestamp;
use pitboss::model::{Channel, Product, Profile};
use pitboss::policy::{
    Caps, Decision, FrequencyPolicy, MessageClass, Packs, Priority, Request, Sent, decide,
};
use pitboss::store::consents::ConsentRecord;
use serde_json::json;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn profile(jurisdiction: &str, time_zone: &str, age: &str) -> Profile {
    serde_json::from_value(
        json!({"player_id": "p", "brand_id": "A", "jurisdiction": jurisdiction, "locale": "en",
        "time_zone": time_zone, "currency": "EUR", "age_band": age}),
    )
    .unwrap()
}

/// The youngest age of the profile's band (none for `unknown`).
fn age_of_band(p: &Profile) -> Option<i32> {
    let band = serde_json::to_value(p.age_band).unwrap();
    band.as_str().unwrap().split(['-', '+']).next().and_then(|a| a.parse().ok())
}

fn consent(version: i64, scope: &str, name: &str, granted: bool, at: &str) -> ConsentRecord {
    ConsentRecord {
        version,
        scope: scope.into(),
        name: name.into(),
        granted,
        source: "test".into(),
        recorded_at: t(at),
    }
}

fn base_consents() -> Vec<ConsentRecord> {
    vec![
        consent(1, "channel", "email", true, "2026-01-01T00:00:00Z"),
        consent(1, "product", "casino", true, "2026-01-01T00:00:00Z"),
    ]
}

struct Case {
    name: &'static str,
    profile: Profile,
    /// The exact age on the day; when not set, the youngest of the profile's band.
    age: Option<i32>,
    channel: Channel,
    class: MessageClass,
    consents: Vec<ConsentRecord>,
    licensed: Vec<&'static str>,
    priority: Priority,
    sent: Sent,
    now: &'static str,
    /// "allow", "deny:code,code", or "defer:RFC3339".
    expect: String,
}

fn case(name: &'static str, expect: &str) -> Case {
    Case {
        name,
        profile: profile("GB", "Europe/London", "26-34"),
        age: None,
        channel: Channel::Email,
        class: MessageClass::Marketing { product: Product::Casino, bonus_offer: false },
        consents: base_consents(),
        licensed: vec!["GB", "DE", "NL", "CA-ON"],
        priority: Priority::Normal,
        sent: Sent::default(),
        now: "2026-11-23T12:00:00Z",
        expect: expect.to_string(),
    }
}

fn outcome(d: &Decision) -> String {
    match d {
        Decision::Allow { .. } => "allow".into(),
        Decision::Deny { reasons } => {
            format!("deny:{}", reasons.iter().map(|r| r.code).collect::<Vec<_>>().join(","))
        }
        Decision::Defer { until, .. } => format!("defer:{until}"),
    }
}

#[test]
fn the_gate_decides_as_its_table_says() {
    let packs = Packs::defaults();
    let policy = FrequencyPolicy {
        id: "fp_default".into(),
        normal: Caps { channel_per_day: 2, channel_per_week: 5, global_per_day: 3, global_per_week: 8 },
        high: Caps { channel_per_day: 3, channel_per_week: 6, global_per_day: 4, global_per_week: 9 },
        dedup_window_minutes: 24 * 60,
        campaign_cooldown_minutes: 72 * 60,
    };
    let with = |mut c: Case, f: &dyn Fn(&mut Case)| {
        f(&mut c);
        c
    };
    let cases = vec![
        case("consented GB player at noon", "allow"),
        with(case("self-excluded: no marketing", "deny:self_excluded"), &|c| {
            c.profile.rg.self_excluded = true
        }),
        with(case("self-excluded: RG information still goes", "allow"), &|c| {
            c.profile.rg.self_excluded = true;
            c.class = MessageClass::RgInformational;
        }),
        with(case("self-excluded: transactional still goes, without consent", "allow"), &|c| {
            c.profile.rg.self_excluded = true;
            c.consents.clear();
            c.class = MessageClass::Transactional;
        }),
        with(case("cooling off", "deny:cooling_off"), &|c| c.profile.rg.cooling_off = true),
        with(case("harm flag", "deny:harm_flag"), &|c| c.profile.rg.harm_flag = true),
        with(case("limit hit today", "deny:limit_hit_today"), &|c| c.profile.rg.limit_hit_today = true),
        with(case("e-mail consent withdrawn in a later version", "deny:no_consent"), &|c| {
            c.consents.push(consent(2, "channel", "email", false, "2026-06-01T00:00:00Z"))
        }),
        with(case("consent recorded after the send is not in force", "deny:no_consent,no_consent"), &|c| {
            c.consents = vec![
                consent(1, "channel", "email", true, "2026-12-01T00:00:00Z"),
                consent(1, "product", "casino", true, "2026-12-01T00:00:00Z"),
            ]
        }),
        with(case("per product: sports not consented", "deny:no_consent"), &|c| {
            c.class = MessageClass::Marketing { product: Product::Sports, bonus_offer: false }
        }),
        with(case("per channel: push not consented", "deny:no_consent"), &|c| c.channel = Channel::Push),
        with(case("NL: no bonus offers under 24", "deny:under_age"), &|c| {
            c.profile = profile("NL", "Europe/Amsterdam", "21-23");
            c.class = MessageClass::Marketing { product: Product::Casino, bonus_offer: true };
        }),
        with(case("NL: 24-25 may get a bonus offer", "allow"), &|c| {
            c.profile = profile("NL", "Europe/Amsterdam", "24-25");
            c.class = MessageClass::Marketing { product: Product::Casino, bonus_offer: true };
        }),
        with(case("NL: SMS marketing banned", "deny:channel_banned,no_consent"), &|c| {
            c.profile = profile("NL", "Europe/Amsterdam", "26-34");
            c.channel = Channel::Sms;
        }),
        with(case("unknown age never passes a minimum", "deny:under_age"), &|c| {
            c.profile = profile("GB", "Europe/London", "unknown")
        }),
        with(case("CA-ON: marketing needs 19, an 18-year-old gets none", "deny:under_age"), &|c| {
            c.profile = profile("CA-ON", "America/Toronto", "18-20");
            c.age = Some(18);
            c.now = "2026-11-23T18:00:00Z";
        }),
        with(case("CA-ON: 19 on the day may get marketing", "allow"), &|c| {
            c.profile = profile("CA-ON", "America/Toronto", "18-20");
            c.age = Some(19);
            c.now = "2026-11-23T18:00:00Z";
        }),
        with(case("NL: 23 is under 24 for a bonus offer", "deny:under_age"), &|c| {
            c.profile = profile("NL", "Europe/Amsterdam", "21-23");
            c.age = Some(23);
            c.class = MessageClass::Marketing { product: Product::Casino, bonus_offer: true };
        }),
        with(case("brand not licensed in MT", "deny:not_licensed"), &|c| {
            c.profile = profile("MT", "Europe/Malta", "26-34")
        }),
        with(case("no pack for the jurisdiction", "deny:not_licensed,no_policy_pack"), &|c| {
            c.profile = profile("XX", "UTC", "26-34")
        }),
        with(case("channel cap reached", "deny:cap_reached"), &|c| c.sent.channel_today = 2),
        with(case("GB marketing cap reached (2 a day)", "deny:cap_reached"), &|c| c.sent.marketing_today = 2),
        with(case("weekly channel cap reached", "deny:cap_reached"), &|c| c.sent.channel_this_week = 5),
        with(case("global cap of the class reached (all channels)", "deny:cap_reached"), &|c| {
            c.profile = profile("MT", "Europe/Malta", "26-34");
            c.licensed.push("MT");
            c.sent.class_today = 3;
        }),
        with(case("high priority has caps of its own", "allow"), &|c| {
            c.priority = Priority::High;
            c.sent.channel_today = 2;
        }),
        with(case("high priority still under the pack's legal cap", "deny:cap_reached"), &|c| {
            c.priority = Priority::High;
            c.sent.marketing_today = 2;
        }),
        with(case("the same template 10 hours ago", "deny:duplicate"), &|c| {
            c.sent.template_last_sent = Some(t("2026-11-23T02:00:00Z"))
        }),
        with(case("a template sent a moment later by another sender", "deny:duplicate"), &|c| {
            c.sent.template_last_sent = Some(t("2026-11-23T12:00:01Z"))
        }),
        with(case("the same template 30 hours ago", "allow"), &|c| {
            c.sent.template_last_sent = Some(t("2026-11-22T06:00:00Z"))
        }),
        with(case("campaign cooldown: waits until 72 h after", "defer:2026-11-25T12:00:00Z"), &|c| {
            c.sent.campaign_last_sent = Some(t("2026-11-22T12:00:00Z"))
        }),
        with(case("cooldown ending in quiet hours waits for morning", "defer:2026-11-26T09:00:00Z"), &|c| {
            c.sent.campaign_last_sent = Some(t("2026-11-22T23:00:00Z"))
        }),
        with(case("London 22:30: quiet until 09:00", "defer:2026-11-24T09:00:00Z"), &|c| {
            c.now = "2026-11-23T22:30:00Z"
        }),
        with(case("London 08:59: quiet for one more minute", "defer:2026-11-23T09:00:00Z"), &|c| {
            c.now = "2026-11-23T08:59:00Z"
        }),
        with(
            case("Toronto 07:00 local at noon UTC: quiet until 08:00 local", "defer:2026-11-23T13:00:00Z"),
            &|c| c.profile = profile("CA-ON", "America/Toronto", "26-34"),
        ),
        with(
            case("Berlin 23:00 local: quiet until 08:00 local (07:00 UTC)", "defer:2026-11-24T07:00:00Z"),
            &|c| {
                c.profile = profile("DE", "Europe/Berlin", "26-34");
                c.now = "2026-11-23T22:00:00Z";
            },
        ),
        with(case("DST spring forward: 09:00 BST is 08:00 UTC", "defer:2026-03-29T08:00:00Z"), &|c| {
            c.now = "2026-03-28T23:00:00Z"
        }),
        with(case("DST fall back: 09:00 GMT is 09:00 UTC", "defer:2026-10-25T09:00:00Z"), &|c| {
            c.now = "2026-10-24T23:30:00Z"
        }),
        with(case("quiet hours never drop a message: transactional at night goes", "allow"), &|c| {
            c.now = "2026-11-23T23:00:00Z";
            c.class = MessageClass::Transactional;
        }),
    ];
    let mut failures = Vec::new();
    // A window of zero turns dedup and cooldown off, even for a message counted a moment later.
    let off = FrequencyPolicy { dedup_window_minutes: 0, campaign_cooldown_minutes: 0, ..policy.clone() };
    let zero = with(case("zero windows", "allow"), &|c| {
        c.sent.template_last_sent = Some(t("2026-11-23T12:00:01Z"));
        c.sent.campaign_last_sent = Some(t("2026-11-23T12:00:01Z"));
    });
    for (c, policy) in cases.iter().map(|c| (c, &policy)).chain([(&zero, &off)]) {
        let d = decide(&Request {
            channel: c.channel,
            class: c.class,
            profile: &c.profile,
            age: c.age.or_else(|| age_of_band(&c.profile)),
            consents: &c.consents,
            pack: packs.for_jurisdiction(&c.profile.jurisdiction),
            licensed: &c.licensed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            policy,
            priority: c.priority,
            sent: &c.sent,
            now: t(c.now),
        });
        if outcome(&d) != c.expect {
            failures.push(format!("{}: expected {}, got {} ({d:?})", c.name, c.expect, outcome(&d)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_allowed_message_carries_its_basis() {
    let packs = Packs::defaults();
    let policy = FrequencyPolicy {
        id: "fp_default".into(),
        normal: Caps { channel_per_day: 3, channel_per_week: 10, global_per_day: 3, global_per_week: 10 },
        high: Caps { channel_per_day: 3, channel_per_week: 10, global_per_day: 3, global_per_week: 10 },
        dedup_window_minutes: 24 * 60,
        campaign_cooldown_minutes: 0,
    };
    let mut consents = base_consents();
    consents.push(consent(3, "channel", "email", true, "2026-05-01T00:00:00Z"));
    let p = profile("GB", "Europe/London", "26-34");
    let sent = Sent { marketing_today: 1, channel_today: 1, ..Sent::default() };
    let d = decide(&Request {
        channel: Channel::Email,
        class: MessageClass::Marketing { product: Product::Casino, bonus_offer: false },
        profile: &p,
        age: Some(30),
        consents: &consents,
        pack: packs.for_jurisdiction("GB"),
        licensed: &["GB".to_string()],
        policy: &policy,
        priority: Priority::Normal,
        sent: &sent,
        now: t("2026-11-23T12:00:00Z"),
    });
    let Decision::Allow { basis } = d else { panic!("{d:?}") };
    assert_eq!(basis.consent_version, Some(3), "sent under e-mail consent v3");
    assert_eq!(basis.consent_recorded_at, Some(t("2026-05-01T00:00:00Z")));
    assert_eq!(basis.pack_version.as_deref(), Some("GB-2026.2"));
    let day = basis.caps.iter().find(|c| c.cap == "marketing_per_day").unwrap();
    assert_eq!((day.used, day.limit), (2, 2), "cap 2/2 today");
    assert_eq!(basis.frequency_policy, "fp_default");
}
