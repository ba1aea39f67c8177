//! Incoming events: the §12 envelope and the payload of each type, validated into the host's model.
//! Personal fields (e-mail, phone, birth date) are split off here so that they can only go to the
//! encrypted contacts store: the event log and the profile never see them.

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{self as m, EventType};

/// Most events one `POST /v1/events` may carry.
pub const MAX_BATCH: usize = 500;

/// The largest amount an event may carry, in minor units (ten billion in a currency of cents): far
/// above any real payment or bet, far enough below the range of a 64-bit sum that aggregates of
/// millions of such events still add up exactly.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// The earliest year an event may have occurred in.
const MIN_YEAR: i16 = 2000;

/// A validation failure, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { code: "invalid_event", field: field.into(), message: message.into() }
    }
}

/// Personal data carried by `player.registered` / `player.updated`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Personal {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub birth_date: Option<Date>,
}

/// An event that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub brand_id: String,
    pub player_id: String,
    pub trace_id: Option<String>,
    pub event: m::Event,
    pub personal: Personal,
    /// sha256 of the whole envelope as sent (keys sorted): tells a replay from a reuse of the id.
    pub body_hash: String,
}

/// Checks an event as the platform sent it; `now` is the host's clock (an event may be up to a day
/// ahead of it, clocks differ).
pub fn validate(value: &Value, now: Timestamp) -> Result<ValidEvent, FieldError> {
    let obj = value.as_object().ok_or_else(|| FieldError::new("", "an event must be a JSON object"))?;
    let env = Fields { map: obj, prefix: "", now };
    env.only(&["event_id", "event_type", "player_id", "brand_id", "occurred_at", "trace_id", "payload"])?;
    let event_id = env.id("event_id")?;
    let type_str = env.string("event_type")?;
    let event_type: EventType =
        serde_json::from_value(Value::String(type_str.clone())).map_err(|_| FieldError {
            code: "unknown_event_type",
            field: "event_type".into(),
            message: format!("unknown event type `{type_str}`"),
        })?;
    if event_type.emitted_by_host() {
        return Err(FieldError::new(
            "event_type",
            format!("`{type_str}` is emitted by the host; the platform cannot post it"),
        ));
    }
    let player_id = env.id("player_id")?;
    let brand_id = env.id("brand_id")?;
    let occurred_at = env.timestamp_until("occurred_at", now + jiff::SignedDuration::from_hours(24))?;
    let trace_id = env.opt_string("trace_id")?;
    let empty = Map::new();
    let payload_map = match obj.get("payload") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(FieldError::new("payload", "must be an object")),
    };
    let p = Fields { map: payload_map, prefix: "payload.", now };
    let (payload, personal) = payload_of(event_type, &p)?;
    let body_hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
    Ok(ValidEvent {
        brand_id,
        player_id,
        trace_id,
        event: m::Event { event_id, event_type, occurred_at, payload },
        personal,
        body_hash,
    })
}

fn payload_of(t: EventType, p: &Fields) -> Result<(m::EventPayload, Personal), FieldError> {
    use EventType as T;
    let none = Personal::default();
    Ok(match t {
        T::PlayerRegistered | T::PlayerUpdated => {
            let required = t == T::PlayerRegistered;
            let text =
                |name: &str, check: fn(&str) -> bool, what: &str| -> Result<Option<String>, FieldError> {
                    let v = if required { Some(p.string(name)?) } else { p.opt_string(name)? };
                    match v {
                        Some(v) if !check(&v) => Err(p.err(name, format!("`{v}` is not {what}"))),
                        v => Ok(v),
                    }
                };
            let info = m::PlayerInfo {
                jurisdiction: text(
                    "jurisdiction",
                    is_jurisdiction,
                    "a jurisdiction code (GB, DE, NL, CA-ON, MT…)",
                )?,
                locale: text("locale", is_bcp47, "a BCP-47 locale")?,
                time_zone: text("time_zone", is_time_zone, "an IANA time zone")?,
                currency: match p.opt_string("currency")? {
                    Some(c) if is_currency(&c) => Some(c),
                    Some(c) => return Err(p.err("currency", format!("`{c}` is not an ISO-4217 currency"))),
                    None if required => return Err(p.err("currency", "is required")),
                    None => None,
                },
            };
            let personal = Personal {
                email: match p.opt_string("email")? {
                    Some(e) if e.contains('@') && !e.contains(char::is_whitespace) => Some(e),
                    Some(_) => return Err(p.err("email", "is not an e-mail address")),
                    None => None,
                },
                phone: match p.opt_string("phone")? {
                    Some(ph) if is_phone(&ph) => Some(ph),
                    Some(_) => {
                        return Err(p.err("phone", "is not a phone number (E.164, e.g. +4915112345678)"));
                    }
                    None => None,
                },
                birth_date: match p.opt_string("birth_date")? {
                    Some(d) => {
                        let date = d
                            .parse::<Date>()
                            .map_err(|_| p.err("birth_date", "must be a date YYYY-MM-DD"))?;
                        // Today somewhere on Earth: a day ahead of UTC at most.
                        let today = (p.now + jiff::SignedDuration::from_hours(24))
                            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                            .date();
                        if date < jiff::civil::date(1900, 1, 1) || date > today {
                            return Err(
                                p.err("birth_date", format!("must be between 1900-01-01 and {today}"))
                            );
                        }
                        Some(date)
                    }
                    None => None,
                },
            };
            (m::EventPayload::Player(info), personal)
        }
        T::SessionStarted | T::SessionEnded => (
            m::EventPayload::Session(m::SessionInfo {
                session_id: p.id("session_id")?,
                device: p.opt_string("device")?.unwrap_or_default(),
                country: p.opt_string("country")?.unwrap_or_default(),
            }),
            none,
        ),
        T::BetPlaced | T::BetSettled => (
            m::EventPayload::Bet(m::BetInfo {
                bet_id: p.id("bet_id")?,
                stake: m::Money { amount_minor: p.minor("stake_minor")?, currency: p.currency()? },
                win_minor: if t == T::BetSettled {
                    Some(p.minor("win_minor")?)
                } else {
                    p.opt_minor("win_minor")?
                },
                game_id: p.opt_string("game_id")?.unwrap_or_default(),
                provider: p.opt_string("provider")?.unwrap_or_default(),
                category: p.string("category")?,
                in_bonus: p.opt_bool("in_bonus")?.unwrap_or(false),
            }),
            none,
        ),
        T::WalletDebit | T::WalletCredit => (
            m::EventPayload::Money(m::MoneyMovement {
                reference: p.opt_string("reference")?.unwrap_or_default(),
                amount: m::Money { amount_minor: p.minor("amount_minor")?, currency: p.currency()? },
                detail: p.opt_string("reason")?,
                reason_code: None,
            }),
            none,
        ),
        T::PaymentIntent
        | T::PaymentAuthorized
        | T::PaymentCaptured
        | T::PaymentFailed
        | T::PaymentRefunded
        | T::WithdrawalRequested
        | T::WithdrawalProcessed
        | T::WithdrawalFailed => {
            let payment = matches!(
                t,
                T::PaymentIntent
                    | T::PaymentAuthorized
                    | T::PaymentCaptured
                    | T::PaymentFailed
                    | T::PaymentRefunded
            );
            let failed = matches!(t, T::PaymentFailed | T::WithdrawalFailed);
            let method = p.opt_string("method")?;
            let psp = p.opt_string("psp")?;
            (
                m::EventPayload::Money(m::MoneyMovement {
                    reference: p.id(if payment { "payment_id" } else { "withdrawal_id" })?,
                    amount: m::Money { amount_minor: p.minor("amount_minor")?, currency: p.currency()? },
                    detail: match (method, psp) {
                        (Some(m), Some(psp)) => Some(format!("{m}/{psp}")),
                        (m, psp) => m.or(psp),
                    },
                    reason_code: if failed {
                        Some(p.string("reason_code")?)
                    } else {
                        p.opt_string("reason_code")?
                    },
                }),
                none,
            )
        }
        T::BonusIssued | T::BonusConsumed | T::BonusExpired => (
            m::EventPayload::Money(m::MoneyMovement {
                reference: p.id("bonus_id")?,
                amount: m::Money { amount_minor: p.minor("amount_minor")?, currency: p.currency()? },
                detail: Some(p.string("template")?),
                reason_code: None,
            }),
            none,
        ),
        T::KycStatusChanged => {
            (m::EventPayload::Kyc(p.parse_enum("status", "none, pending, verified, rejected")?), none)
        }
        T::RgLimitSet | T::RgLimitHit => {
            let kind: m::LimitKind = p.parse_enum("kind", "deposit, loss, wager, time")?;
            let period: m::LimitPeriod = p.parse_enum("period", "day, week, month")?;
            let (amount_minor, minutes) = if kind == m::LimitKind::Time {
                let minutes = p.minor("minutes")?;
                (
                    None,
                    Some(
                        u32::try_from(minutes)
                            .map_err(|_| p.err("minutes", "must be a positive number of minutes"))?,
                    ),
                )
            } else {
                (Some(p.minor("amount_minor")?), None)
            };
            if amount_minor.is_some() {
                p.currency()?;
            }
            (m::EventPayload::RgLimit(m::RgLimit { kind, period, amount_minor, minutes }), none)
        }
        T::RgRealityCheck => {
            let minutes = p.minor("session_minutes")?;
            let minutes = u32::try_from(minutes).map_err(|_| p.err("session_minutes", "out of range"))?;
            (m::EventPayload::RealityCheckMinutes(minutes), none)
        }
        T::SelfExclusionStarted | T::SelfExclusionEnded => (
            m::EventPayload::SelfExclusion(m::SelfExclusion {
                scope: p.parse_enum("scope", "brand, operator")?,
                register: p.parse_enum("register", "own, GAMSTOP, OASIS, CRUKS, ON")?,
                until: match p.get("until") {
                    Some(_) => Some(p.timestamp_until("until", far_future())?),
                    None => None,
                },
            }),
            none,
        ),
        T::CrmDelivered | T::CrmOpened | T::CrmClicked | T::CrmUnsubscribed | T::CrmComplained => (
            m::EventPayload::Crm(m::CrmInfo {
                delivery_id: p.id("delivery_id")?,
                channel: p
                    .parse_enum::<m::Channel>("channel", "email, sms, push, in_app, phone")
                    .map(m::wire_name)?,
            }),
            none,
        ),
        T::SegmentEntered
        | T::SegmentLeft
        | T::BonusActivated
        | T::BonusCompleted
        | T::BonusForfeited
        | T::BonusLapsed => {
            return Err(FieldError::new("event_type", "emitted by the host; the platform cannot post it"));
        }
    })
}

/// Reads typed fields of one JSON object, with errors that name the field.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'static str,
    /// The host's clock, for the bounds of times and dates.
    now: Timestamp,
}

impl Fields<'_> {
    fn err(&self, name: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(format!("{}{name}", self.prefix), message)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// Refuses fields the envelope does not have (a typo must not pass silently).
    fn only(&self, allowed: &[&str]) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(k, "unknown field")),
            None => Ok(()),
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() > 1024 => Err(self.err(name, "longer than 1024 bytes")),
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(self.err(name, "must not contain control characters"))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(name, "must be a string")),
        }
    }

    fn string(&self, name: &str) -> Result<String, FieldError> {
        match self.opt_string(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(self.err(name, "must not be empty")),
            None => Err(self.err(name, "is required")),
        }
    }

    /// An identifier: a non-empty string of at most 128 printable characters.
    fn id(&self, name: &str) -> Result<String, FieldError> {
        let s = self.string(name)?;
        if s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(self.err(name, "must be at most 128 characters, without spaces"));
        }
        Ok(s)
    }

    fn opt_minor(&self, name: &str) -> Result<Option<i64>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (0..=MAX_AMOUNT_MINOR).contains(&v) => Ok(Some(v)),
                Some(_) => Err(self.err(name, format!("must be between 0 and {MAX_AMOUNT_MINOR}"))),
                None => Err(self.err(name, "must be an integer number of minor units (no decimals)")),
            },
            Some(_) => Err(self.err(name, "must be an integer number of minor units")),
        }
    }

    fn minor(&self, name: &str) -> Result<i64, FieldError> {
        self.opt_minor(name)?.ok_or_else(|| self.err(name, "is required"))
    }

    fn currency(&self) -> Result<String, FieldError> {
        let c = self.string("currency")?;
        if is_currency(&c) {
            Ok(c)
        } else {
            Err(self.err("currency", format!("`{c}` is not an ISO-4217 currency")))
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.err(name, "must be true or false")),
        }
    }

    /// An RFC 3339 time with an offset, strictly: seconds up to 59, an offset within ±23:59, from the
    /// year 2000 on, and not later than `latest`.
    fn timestamp_until(&self, name: &str, latest: Timestamp) -> Result<Timestamp, FieldError> {
        let s = self.string(name)?;
        let bad = || self.err(name, "must be an RFC 3339 time with an offset (e.g. 2026-11-23T12:00:00Z)");
        let t = strict_rfc3339(&s).ok_or_else(bad)?;
        if t.to_zoned_datetime(jiff::tz::TimeZone::UTC).year() < MIN_YEAR {
            return Err(self.err(name, format!("must not be before the year {MIN_YEAR}")));
        }
        if t > latest {
            return Err(self.err(name, format!("must not be later than {latest}")));
        }
        Ok(t)
    }

    fn parse_enum<T: serde::de::DeserializeOwned>(&self, name: &str, allowed: &str) -> Result<T, FieldError> {
        let s = self.string(name)?;
        serde_json::from_value(Value::String(s.clone()))
            .map_err(|_| self.err(name, format!("`{s}` is not one of: {allowed}")))
    }
}

/// The latest end an exclusion may name (an indefinite one names none).
fn far_future() -> Timestamp {
    "2999-12-31T23:59:59Z".parse().expect("a valid time")
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` and nothing looser: jiff on its own takes a leap second
/// `:60` (as :59) and offsets up to ±25:59, which no real clock writes.
fn strict_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if digits(17..19)? > 59 {
        return None;
    }
    let mut rest = 19;
    if b.get(rest) == Some(&b'.') {
        rest += 1;
        let start = rest;
        while b.get(rest).is_some_and(u8::is_ascii_digit) {
            rest += 1;
        }
        if rest == start || rest - start > 9 {
            return None;
        }
    }
    match &s[rest..] {
        "Z" | "z" => {}
        offset => {
            let ob = offset.as_bytes();
            if offset.len() != 6 || !matches!(ob[0], b'+' | b'-') || ob[3] != b':' {
                return None;
            }
            if digits(rest + 1..rest + 3)? > 23 || digits(rest + 4..rest + 6)? > 59 {
                return None;
            }
        }
    }
    s.parse::<Timestamp>().ok()
}

pub fn is_jurisdiction(s: &str) -> bool {
    // ISO 3166-1 alpha-2, optionally with a subdivision (CA-ON, US-NJ).
    let (country, sub) = s.split_once('-').map_or((s, None), |(c, r)| (c, Some(r)));
    country.len() == 2
        && country.chars().all(|c| c.is_ascii_uppercase())
        && sub.is_none_or(|r| {
            (1..=3).contains(&r.len()) && r.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

pub(crate) fn is_bcp47(s: &str) -> bool {
    let mut parts = s.split('-');
    let lang = parts.next().unwrap_or("");
    (2..=3).contains(&lang.len())
        && lang.chars().all(|c| c.is_ascii_lowercase())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn is_time_zone(s: &str) -> bool {
    s == "UTC" || jiff::tz::TimeZone::get(s).is_ok()
}

fn is_phone(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

/// ISO 4217 active codes.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP \
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ \
GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD \
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR \
RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH \
UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && CURRENCIES.split_ascii_whitespace().any(|c| c == s)
}

#[cfg(test)]
mod catalogue_doc;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Checks as of the wall clock.
    fn validate(value: &Value) -> Result<ValidEvent, FieldError> {
        super::validate(value, Timestamp::now())
    }

    fn bet() -> Value {
        json!({"event_id": "e1", "event_type": "bet.settled", "player_id": "p_1", "brand_id": "A",
               "occurred_at": "2026-11-23T12:00:00Z", "trace_id": "tr_1",
               "payload": {"bet_id": "b1", "stake_minor": 500, "win_minor": 0, "currency": "EUR",
                           "game_id": "g", "provider": "studio_x", "category": "slots"}})
    }

    fn field_of(mut v: Value, edit: impl FnOnce(&mut Value)) -> (String, &'static str) {
        edit(&mut v);
        let e = validate(&v).unwrap_err();
        (e.field, e.code)
    }

    #[test]
    fn a_valid_bet_becomes_the_model() {
        let v = validate(&bet()).unwrap();
        let m::EventPayload::Bet(b) = v.event.payload else { panic!() };
        assert_eq!(b.stake, m::Money { amount_minor: 500, currency: "EUR".into() });
        assert_eq!(b.win_minor, Some(0));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(bet(), |v| v["payload"]["stake_minor"] = json!(5.5)).0, "payload.stake_minor");
        assert_eq!(field_of(bet(), |v| v["payload"]["stake_minor"] = json!("5")).0, "payload.stake_minor");
        assert_eq!(field_of(bet(), |v| v["payload"]["currency"] = json!("EURO")).0, "payload.currency");
        assert_eq!(field_of(bet(), |v| v["payload"]["currency"] = json!("XYZ")).0, "payload.currency");
        assert_eq!(
            field_of(bet(), |v| v["payload"].as_object_mut().unwrap().remove("win_minor").map(drop).unwrap())
                .0,
            "payload.win_minor"
        );
        assert_eq!(field_of(bet(), |v| v["occurred_at"] = json!("yesterday")).0, "occurred_at");
        assert_eq!(field_of(bet(), |v| v["occurred_at"] = json!("2026-11-23T12:00:00")).0, "occurred_at");
        for bad in [
            "0000-01-01T00:00:00Z",
            "2026-11-23T12:00:00+25:00",
            "2026-11-23T12:00:60Z",
            "2999-01-01T00:00:00Z",
        ] {
            assert_eq!(field_of(bet(), |v| v["occurred_at"] = json!(bad)).0, "occurred_at", "{bad}");
        }
        assert!(
            validate(&{
                let mut v = bet();
                v["occurred_at"] = json!("2026-11-23T12:00:00.123+05:30");
                v
            })
            .is_ok()
        );
        for bad in [json!(-1), json!(i64::MAX), json!(MAX_AMOUNT_MINOR + 1)] {
            assert_eq!(
                field_of(bet(), |v| v["payload"]["stake_minor"] = bad.clone()).0,
                "payload.stake_minor"
            );
        }
        assert_eq!(field_of(bet(), |v| v["payload"]["game_id"] = json!("g\u{0}1")).0, "payload.game_id");
        assert_eq!(field_of(bet(), |v| v["player_id"] = json!("")).0, "player_id");
        assert_eq!(field_of(bet(), |v| v["surprise"] = json!(1)).0, "surprise");
        assert_eq!(
            field_of(bet(), |v| v["event_type"] = json!("bet.cancelled")),
            ("event_type".into(), "unknown_event_type")
        );
    }

    #[test]
    fn personal_fields_are_split_off() {
        let v = validate(&json!({"event_id": "e2", "event_type": "player.registered", "player_id": "p_1",
            "brand_id": "A", "occurred_at": "2026-11-23T12:00:00+01:00",
            "payload": {"jurisdiction": "CA-ON", "locale": "en-CA", "time_zone": "America/Toronto", "currency": "CAD",
                        "email": "alex@example.com", "phone": "+14165550100", "birth_date": "1990-05-17"}}))
        .unwrap();
        assert_eq!(v.personal.email.as_deref(), Some("alex@example.com"));
        let stored = serde_json::to_string(&v.event).unwrap();
        assert!(
            !stored.contains("alex@") && !stored.contains("1990") && !stored.contains("+1416"),
            "{stored}"
        );
    }

    #[test]
    fn birth_dates_and_addresses_are_real() {
        let registered = |edit: &dyn Fn(&mut Value)| {
            let mut v = json!({"event_id": "e3", "event_type": "player.registered", "player_id": "p_1",
                "brand_id": "A", "occurred_at": "2026-11-23T12:00:00Z",
                "payload": {"jurisdiction": "GB", "locale": "en-GB", "time_zone": "Europe/London",
                            "currency": "GBP", "email": "a@example.com", "birth_date": "1990-05-17"}});
            edit(&mut v);
            validate(&v).map(drop).map_err(|e| e.field)
        };
        assert_eq!(registered(&|_| {}), Ok(()));
        for bad in ["1800-01-01", "2100-01-01"] {
            assert_eq!(
                registered(&|v| v["payload"]["birth_date"] = json!(bad)),
                Err("payload.birth_date".into())
            );
        }
        assert_eq!(
            registered(&|v| v["payload"]["email"] = json!("a\u{0}@example.com")),
            Err("payload.email".into())
        );
    }

    #[test]
    fn codes_are_checked() {
        assert!(
            is_jurisdiction("CA-ON")
                && is_jurisdiction("GB")
                && !is_jurisdiction("gb")
                && !is_jurisdiction("GBR")
        );
        assert!(is_bcp47("de-AT") && is_bcp47("en") && !is_bcp47("German"));
        assert!(is_time_zone("Europe/Berlin") && !is_time_zone("Mars/Olympus"));
        assert!(is_currency("EUR") && !is_currency("eur"));
    }
}
