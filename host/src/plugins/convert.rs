//! Adapts the host's model (`crate::model`) to the WIT types of pitboss:rules@0.1.0 and back, and
//! measures values as laid out for a call (`WireSize`), which is what the input and output limits count.

use wasmtime::component::{ComponentType, Lower};

use crate::model as m;

use super::bindings::wit as w;
use super::error::RuleError;

fn ms(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

fn ts(ms: i64) -> Result<jiff::Timestamp, String> {
    jiff::Timestamp::from_millisecond(ms).map_err(|e| format!("timestamp {ms} out of range: {e}"))
}

fn money(x: &m::Money) -> w::Money {
    w::Money { amount_minor: x.amount_minor, currency: x.currency.clone() }
}

fn money_back(x: w::Money) -> m::Money {
    m::Money { amount_minor: x.amount_minor, currency: x.currency }
}

/// A `features` record of type `$ty` from `$f`'s numbers and the two lists given (the host's model,
/// `FeaturesRef` and the generated `Features` have the same fields).
macro_rules! features {
    ($ty:path, $f:expr, $providers:expr, $categories:expr) => {{
        let f = $f;
        $ty {
            tenure_days: f.tenure_days,
            dep_count_30d: f.dep_count_30d,
            dep_sum_30d_minor: f.dep_sum_30d_minor,
            net_loss_today_minor: f.net_loss_today_minor,
            net_loss_7d_minor: f.net_loss_7d_minor,
            net_loss_30d_minor: f.net_loss_30d_minor,
            bets_7d: f.bets_7d,
            sessions_7d: f.sessions_7d,
            avg_stake_minor: f.avg_stake_minor,
            days_since_last_deposit: f.days_since_last_deposit,
            days_since_last_seen: f.days_since_last_seen,
            churn_score: f.churn_score,
            fav_providers: $providers,
            fav_categories: $categories,
        }
    }};
}

/// A profile as it is lowered into a plugin, its strings and lists lent by the host's model rather than
/// copied: a sweep hands the batch form a million profiles, and copying every one's strings (then
/// freeing them) cost the host more than the plugin's own work. It mirrors the WIT record `profile`;
/// the runtime checks it against the plugin's types when it looks the export up.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct ProfileRef<'a> {
    #[component(name = "player-id")]
    player_id: &'a str,
    #[component(name = "brand-id")]
    brand_id: &'a str,
    jurisdiction: &'a str,
    locale: &'a str,
    #[component(name = "time-zone")]
    time_zone: &'a str,
    currency: &'a str,
    #[component(name = "age-band")]
    age_band: w::AgeBand,
    kyc: w::KycStatus,
    rg: w::RgStatus,
    consents: w::Consents,
    features: FeaturesRef<'a>,
}

/// The WIT record `features`, its lists lent (see `ProfileRef`).
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct FeaturesRef<'a> {
    #[component(name = "tenure-days")]
    tenure_days: u32,
    #[component(name = "dep-count-30d")]
    dep_count_30d: u32,
    #[component(name = "dep-sum-30d-minor")]
    dep_sum_30d_minor: i64,
    #[component(name = "net-loss-today-minor")]
    net_loss_today_minor: i64,
    #[component(name = "net-loss-7d-minor")]
    net_loss_7d_minor: i64,
    #[component(name = "net-loss-30d-minor")]
    net_loss_30d_minor: i64,
    #[component(name = "bets-7d")]
    bets_7d: u32,
    #[component(name = "sessions-7d")]
    sessions_7d: u32,
    #[component(name = "avg-stake-minor")]
    avg_stake_minor: i64,
    #[component(name = "days-since-last-deposit")]
    days_since_last_deposit: Option<u32>,
    #[component(name = "days-since-last-seen")]
    days_since_last_seen: u32,
    #[component(name = "churn-score")]
    churn_score: f64,
    #[component(name = "fav-providers")]
    fav_providers: &'a [String],
    #[component(name = "fav-categories")]
    fav_categories: &'a [String],
}

impl ProfileRef<'_> {
    /// The profile as the generated bindings take it (its strings copied).
    pub fn owned(&self) -> w::Profile {
        let f = &self.features;
        w::Profile {
            player_id: self.player_id.to_owned(),
            brand_id: self.brand_id.to_owned(),
            jurisdiction: self.jurisdiction.to_owned(),
            locale: self.locale.to_owned(),
            time_zone: self.time_zone.to_owned(),
            currency: self.currency.to_owned(),
            age_band: self.age_band,
            kyc: self.kyc,
            rg: self.rg,
            consents: self.consents,
            features: features!(w::Features, f, f.fav_providers.to_vec(), f.fav_categories.to_vec()),
        }
    }
}

pub fn profile_ref(p: &m::Profile) -> ProfileRef<'_> {
    let f = &p.features;
    ProfileRef {
        player_id: &p.player_id,
        brand_id: &p.brand_id,
        jurisdiction: &p.jurisdiction,
        locale: &p.locale,
        time_zone: &p.time_zone,
        currency: &p.currency,
        age_band: match p.age_band {
            m::AgeBand::Unknown => w::AgeBand::Unknown,
            m::AgeBand::Age18To20 => w::AgeBand::Age18to20,
            m::AgeBand::Age21To23 => w::AgeBand::Age21to23,
            m::AgeBand::Age24To25 => w::AgeBand::Age24to25,
            m::AgeBand::Age26To34 => w::AgeBand::Age26to34,
            m::AgeBand::Age35To54 => w::AgeBand::Age35to54,
            m::AgeBand::Age55Plus => w::AgeBand::Age55plus,
        },
        kyc: kyc(p.kyc),
        rg: w::RgStatus {
            self_excluded: p.rg.self_excluded,
            self_excluded_until: p.rg.self_excluded_until.map(ms),
            cooling_off: p.rg.cooling_off,
            harm_flag: p.rg.harm_flag,
            limit_hit_today: p.rg.limit_hit_today,
            deposit_limit_daily_minor: p.rg.deposit_limit_daily_minor,
            loss_limit_daily_minor: p.rg.loss_limit_daily_minor,
        },
        consents: w::Consents {
            channels: p.consents.channels.iter().fold(w::ChannelConsents::empty(), |acc, c| {
                acc | match c {
                    m::Channel::Email => w::ChannelConsents::EMAIL,
                    m::Channel::Sms => w::ChannelConsents::SMS,
                    m::Channel::Push => w::ChannelConsents::PUSH,
                    m::Channel::InApp => w::ChannelConsents::IN_APP,
                    m::Channel::Phone => w::ChannelConsents::PHONE,
                }
            }),
            products: p.consents.products.iter().fold(w::ProductConsents::empty(), |acc, c| {
                acc | match c {
                    m::Product::Casino => w::ProductConsents::CASINO,
                    m::Product::Sports => w::ProductConsents::SPORTS,
                    m::Product::Poker => w::ProductConsents::POKER,
                    m::Product::Bingo => w::ProductConsents::BINGO,
                }
            }),
            profiling: p.consents.profiling,
        },
        features: features!(FeaturesRef, f, &f.fav_providers, &f.fav_categories),
    }
}

fn kyc(k: m::KycStatus) -> w::KycStatus {
    match k {
        m::KycStatus::None => w::KycStatus::None,
        m::KycStatus::Pending => w::KycStatus::Pending,
        m::KycStatus::Verified => w::KycStatus::Verified,
        m::KycStatus::Rejected => w::KycStatus::Rejected,
    }
}

/// The event as plugins see it; `None` for the events the host emits itself (`segment.*`), which the WIT
/// catalogue of this package version does not have.
pub fn event(e: &m::Event) -> Option<w::Event> {
    use m::EventType as T;
    use w::EventType as W;
    let event_type = match e.event_type {
        T::PlayerRegistered => W::PlayerRegistered,
        T::PlayerUpdated => W::PlayerUpdated,
        T::SessionStarted => W::SessionStarted,
        T::SessionEnded => W::SessionEnded,
        T::BetPlaced => W::BetPlaced,
        T::BetSettled => W::BetSettled,
        T::WalletDebit => W::WalletDebit,
        T::WalletCredit => W::WalletCredit,
        T::PaymentIntent => W::PaymentIntent,
        T::PaymentAuthorized => W::PaymentAuthorized,
        T::PaymentCaptured => W::PaymentCaptured,
        T::PaymentFailed => W::PaymentFailed,
        T::PaymentRefunded => W::PaymentRefunded,
        T::WithdrawalRequested => W::WithdrawalRequested,
        T::WithdrawalProcessed => W::WithdrawalProcessed,
        T::WithdrawalFailed => W::WithdrawalFailed,
        T::BonusIssued => W::BonusIssued,
        T::BonusConsumed => W::BonusConsumed,
        T::BonusExpired => W::BonusExpired,
        T::KycStatusChanged => W::KycStatusChanged,
        T::RgLimitSet => W::RgLimitSet,
        T::RgLimitHit => W::RgLimitHit,
        T::RgRealityCheck => W::RgRealityCheck,
        T::SelfExclusionStarted => W::SelfExclusionStarted,
        T::SelfExclusionEnded => W::SelfExclusionEnded,
        T::CrmDelivered => W::CrmDelivered,
        T::CrmOpened => W::CrmOpened,
        T::CrmClicked => W::CrmClicked,
        T::CrmUnsubscribed => W::CrmUnsubscribed,
        T::CrmComplained => W::CrmComplained,
        T::SegmentEntered | T::SegmentLeft => return None,
        T::BonusActivated | T::BonusCompleted | T::BonusForfeited | T::BonusLapsed => return None,
    };
    let payload = match &e.payload {
        // Plugins see the player's state in the profile.
        m::EventPayload::None | m::EventPayload::Player(_) => w::EventPayload::None,
        m::EventPayload::Session(s) => w::EventPayload::Session(w::SessionInfo {
            session_id: s.session_id.clone(),
            device: s.device.clone(),
            country: s.country.clone(),
        }),
        m::EventPayload::Bet(b) => w::EventPayload::Bet(w::BetInfo {
            bet_id: b.bet_id.clone(),
            stake: money(&b.stake),
            win_minor: b.win_minor,
            game_id: b.game_id.clone(),
            provider: b.provider.clone(),
            category: b.category.clone(),
            in_bonus: b.in_bonus,
        }),
        m::EventPayload::Money(x) => w::EventPayload::Money(w::MoneyMovement {
            reference: x.reference.clone(),
            amount: money(&x.amount),
            detail: x.detail.clone(),
            reason_code: x.reason_code.clone(),
        }),
        m::EventPayload::Kyc(k) => w::EventPayload::Kyc(kyc(*k)),
        m::EventPayload::RgLimit(l) => w::EventPayload::RgLimit(w::RgLimit {
            kind: match l.kind {
                m::LimitKind::Deposit => w::LimitKind::Deposit,
                m::LimitKind::Loss => w::LimitKind::Loss,
                m::LimitKind::Wager => w::LimitKind::Wager,
                m::LimitKind::Time => w::LimitKind::Time,
            },
            period: match l.period {
                m::LimitPeriod::Day => w::LimitPeriod::Day,
                m::LimitPeriod::Week => w::LimitPeriod::Week,
                m::LimitPeriod::Month => w::LimitPeriod::Month,
            },
            amount_minor: l.amount_minor,
            minutes: l.minutes,
        }),
        m::EventPayload::RealityCheckMinutes(n) => w::EventPayload::RealityCheckMinutes(*n),
        m::EventPayload::SelfExclusion(x) => w::EventPayload::SelfExclusion(w::SelfExclusion {
            scope: match x.scope {
                m::ExclusionScope::Brand => w::ExclusionScope::Brand,
                m::ExclusionScope::Operator => w::ExclusionScope::Operator,
            },
            register: match x.register {
                m::ExclusionRegister::Own => w::ExclusionRegister::Own,
                m::ExclusionRegister::Gamstop => w::ExclusionRegister::Gamstop,
                m::ExclusionRegister::Oasis => w::ExclusionRegister::Oasis,
                m::ExclusionRegister::Cruks => w::ExclusionRegister::Cruks,
                m::ExclusionRegister::Ontario => w::ExclusionRegister::Ontario,
            },
            until: x.until.map(ms),
        }),
        m::EventPayload::Crm(c) => w::EventPayload::Crm(w::CrmInfo {
            delivery_id: c.delivery_id.clone(),
            channel: c.channel.clone(),
        }),
        m::EventPayload::Segment(_) | m::EventPayload::Bonus(_) => return None,
    };
    Some(w::Event { event_id: e.event_id.clone(), event_type, occurred_at: ms(e.occurred_at), payload })
}

pub fn bonus_state(b: &m::BonusState) -> w::BonusState {
    w::BonusState {
        bonus_id: b.bonus_id.clone(),
        template: b.template.clone(),
        status: match b.status {
            m::BonusStatus::Active => w::BonusStatus::Active,
            m::BonusStatus::Completed => w::BonusStatus::Completed,
            m::BonusStatus::Forfeited => w::BonusStatus::Forfeited,
            m::BonusStatus::Expired => w::BonusStatus::Expired,
        },
        granted: money(&b.granted),
        wagering_required_minor: b.wagering_required_minor,
        wagering_done_minor: b.wagering_done_minor,
        max_bet_minor: b.max_bet_minor,
        granted_at: ms(b.granted_at),
        expires_at: ms(b.expires_at),
    }
}

pub fn offer_template(t: &m::OfferTemplate) -> w::OfferTemplate {
    w::OfferTemplate {
        template_id: t.template_id.clone(),
        kind: match t.kind {
            m::OfferKind::Cashback => w::OfferKind::Cashback,
            m::OfferKind::FreeSpins => w::OfferKind::FreeSpins,
            m::OfferKind::DepositMatch => w::OfferKind::DepositMatch,
            m::OfferKind::Reload => w::OfferKind::Reload,
            m::OfferKind::Mission => w::OfferKind::Mission,
        },
        max_percent: t.max_percent,
        max_cap_minor: t.max_cap_minor,
        max_wager_multiplier: t.max_wager_multiplier,
        max_validity_hours: t.max_validity_hours,
        max_spins: t.max_spins,
        providers: t.providers.clone(),
    }
}

pub fn offer_context(c: &m::OfferContext) -> w::OfferContext {
    w::OfferContext {
        intent: c.intent.clone(),
        channel: match c.channel {
            m::OfferChannel::Email => w::OfferChannel::Email,
            m::OfferChannel::Sms => w::OfferChannel::Sms,
            m::OfferChannel::Push => w::OfferChannel::Push,
            m::OfferChannel::InApp => w::OfferChannel::InApp,
            m::OfferChannel::OnSite => w::OfferChannel::OnSite,
        },
        max_cost_minor: c.max_cost_minor,
    }
}

// ---- answers ----

pub fn rule_error(e: w::RuleError) -> RuleError {
    match e {
        w::RuleError::InvalidInput(m) => RuleError::InvalidInput(m),
        w::RuleError::BadConfig(m) => RuleError::BadConfig(m),
        w::RuleError::Failed(m) => RuleError::Failed(m),
    }
}

pub fn membership(x: w::Membership) -> m::Membership {
    m::Membership { member: x.member, score: x.score, reason: x.reason }
}

pub fn bonus_action(a: w::BonusAction) -> Result<m::BonusAction, String> {
    Ok(match a {
        w::BonusAction::Grant(g) => m::BonusAction::Grant {
            template: g.template,
            amount: money_back(g.amount),
            wager_multiplier: g.wager_multiplier,
            max_bet_minor: g.max_bet_minor,
            expires_at: ts(g.expires_at)?,
            reason: g.reason,
        },
        w::BonusAction::Progress(p) => m::BonusAction::Progress {
            bonus_id: p.bonus_id,
            contribution_minor: p.contribution_minor,
            contribution_percent: p.contribution_percent,
            category: p.category,
        },
        w::BonusAction::Complete(c) => m::BonusAction::Complete { bonus_id: c.bonus_id, reason: c.reason },
        w::BonusAction::Forfeit(c) => m::BonusAction::Forfeit { bonus_id: c.bonus_id, reason: c.reason },
        w::BonusAction::RejectBet(r) => {
            m::BonusAction::RejectBet { bonus_id: r.bonus_id, bet_id: r.bet_id, reason: r.reason }
        }
    })
}

pub fn ranked_offer(o: w::RankedOffer) -> m::RankedOffer {
    let p = o.params;
    m::RankedOffer {
        template_id: o.template_id,
        score: o.score,
        params: m::OfferParams {
            percent: p.percent,
            cap_minor: p.cap_minor,
            wager_multiplier: p.wager_multiplier,
            validity_hours: p.validity_hours,
            spins: p.spins,
        },
        reason: o.reason,
    }
}

/// Bytes a value occupies when passed to or returned from a plugin: its fixed fields plus the contents
/// of its strings and lists. An estimate of the canonical ABI layout, cheap enough for every call.
pub trait WireSize {
    fn wire_size(&self) -> u64;
}

/// Pointer + length of a string or list.
const SLICE: u64 = 8;

impl WireSize for str {
    fn wire_size(&self) -> u64 {
        SLICE + self.len() as u64
    }
}

impl WireSize for String {
    fn wire_size(&self) -> u64 {
        self.as_str().wire_size()
    }
}

impl<T: WireSize> WireSize for [T] {
    fn wire_size(&self) -> u64 {
        SLICE + self.iter().map(WireSize::wire_size).sum::<u64>()
    }
}

impl<T: WireSize> WireSize for Vec<T> {
    fn wire_size(&self) -> u64 {
        self.as_slice().wire_size()
    }
}

impl<T: WireSize> WireSize for Option<T> {
    fn wire_size(&self) -> u64 {
        8 + self.as_ref().map_or(0, WireSize::wire_size)
    }
}

impl WireSize for ProfileRef<'_> {
    fn wire_size(&self) -> u64 {
        const FIXED: u64 = 160;
        let texts =
            [self.player_id, self.brand_id, self.jurisdiction, self.locale, self.time_zone, self.currency];
        let lists = [self.features.fav_providers, self.features.fav_categories];
        FIXED
            + texts.iter().map(|t| t.wire_size()).sum::<u64>()
            + lists.iter().map(|l| l.wire_size()).sum::<u64>()
    }
}

impl WireSize for w::Event {
    fn wire_size(&self) -> u64 {
        const FIXED: u64 = 48;
        let payload = match &self.payload {
            w::EventPayload::None
            | w::EventPayload::Kyc(_)
            | w::EventPayload::RgLimit(_)
            | w::EventPayload::RealityCheckMinutes(_)
            | w::EventPayload::SelfExclusion(_) => 0,
            w::EventPayload::Session(s) => {
                s.session_id.wire_size() + s.device.wire_size() + s.country.wire_size()
            }
            w::EventPayload::Bet(b) => {
                b.bet_id.wire_size()
                    + b.stake.currency.wire_size()
                    + b.game_id.wire_size()
                    + b.provider.wire_size()
                    + b.category.wire_size()
            }
            w::EventPayload::Money(x) => {
                x.reference.wire_size()
                    + x.amount.currency.wire_size()
                    + x.detail.wire_size()
                    + x.reason_code.wire_size()
            }
            w::EventPayload::Crm(c) => c.delivery_id.wire_size() + c.channel.wire_size(),
        };
        FIXED + self.event_id.wire_size() + payload
    }
}

impl WireSize for w::BonusState {
    fn wire_size(&self) -> u64 {
        64 + self.bonus_id.wire_size() + self.template.wire_size() + self.granted.currency.wire_size()
    }
}

impl WireSize for w::OfferTemplate {
    fn wire_size(&self) -> u64 {
        32 + self.template_id.wire_size() + self.providers.wire_size()
    }
}

impl WireSize for w::OfferContext {
    fn wire_size(&self) -> u64 {
        16 + self.intent.wire_size()
    }
}

impl WireSize for m::Membership {
    fn wire_size(&self) -> u64 {
        24 + self.reason.as_ref().map_or(0, |r| r.len() as u64)
    }
}

impl WireSize for m::BonusAction {
    fn wire_size(&self) -> u64 {
        48 + match self {
            m::BonusAction::Grant { template, amount, reason, .. } => {
                template.wire_size() + amount.currency.wire_size() + reason.wire_size()
            }
            m::BonusAction::Progress { bonus_id, category, .. } => {
                bonus_id.wire_size() + category.wire_size()
            }
            m::BonusAction::Complete { bonus_id, reason } | m::BonusAction::Forfeit { bonus_id, reason } => {
                bonus_id.wire_size() + reason.wire_size()
            }
            m::BonusAction::RejectBet { bonus_id, bet_id, reason } => {
                bonus_id.wire_size() + bet_id.wire_size() + reason.wire_size()
            }
        }
    }
}

impl WireSize for m::RankedOffer {
    fn wire_size(&self) -> u64 {
        40 + self.template_id.wire_size() + self.reason.wire_size()
    }
}
