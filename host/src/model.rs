//! The host's vocabulary: the player profile, events, bonuses and offers as the API, the store and the
//! plugin runtime see them (JSON with snake_case names and RFC 3339 times). The runtime adapts these to
//! the WIT types of each package version it supports (`plugins::convert`); nothing here depends on a WIT
//! version, so the wire contract of plugins can evolve without touching the API.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The name a unit enum value has in the API (`bet.placed`, `email`, `26-34`).
pub fn wire_name<T: Serialize>(value: T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Money as integer minor units of an ISO-4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgeBand {
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "18-20")]
    Age18To20,
    #[serde(rename = "21-23")]
    Age21To23,
    #[serde(rename = "24-25")]
    Age24To25,
    #[serde(rename = "26-34")]
    Age26To34,
    #[serde(rename = "35-54")]
    Age35To54,
    #[serde(rename = "55+")]
    Age55Plus,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    #[default]
    None,
    Pending,
    Verified,
    Rejected,
}

/// Responsible-gambling state of a player.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RgStatus {
    pub self_excluded: bool,
    pub self_excluded_until: Option<Timestamp>,
    pub cooling_off: bool,
    pub harm_flag: bool,
    pub limit_hit_today: bool,
    pub deposit_limit_daily_minor: Option<i64>,
    pub loss_limit_daily_minor: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
    InApp,
    Phone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    Casino,
    Sports,
    Poker,
    Bingo,
}

/// Active marketing opt-ins, as of the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consents {
    pub channels: Vec<Channel>,
    pub products: Vec<Product>,
    pub profiling: bool,
}

/// Behavioural features computed from the player's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    pub tenure_days: u32,
    pub dep_count_30d: u32,
    pub dep_sum_30d_minor: i64,
    pub net_loss_today_minor: i64,
    pub net_loss_7d_minor: i64,
    pub net_loss_30d_minor: i64,
    pub bets_7d: u32,
    pub sessions_7d: u32,
    pub avg_stake_minor: i64,
    pub days_since_last_deposit: Option<u32>,
    pub days_since_last_seen: u32,
    pub churn_score: f64,
    pub fav_providers: Vec<String>,
    pub fav_categories: Vec<String>,
}

/// The pseudonymous player profile (no name, contact or birth date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub player_id: String,
    pub brand_id: String,
    pub jurisdiction: String,
    pub locale: String,
    pub time_zone: String,
    pub currency: String,
    #[serde(default)]
    pub age_band: AgeBand,
    #[serde(default)]
    pub kyc: KycStatus,
    #[serde(default)]
    pub rg: RgStatus,
    #[serde(default)]
    pub consents: Consents,
    #[serde(default)]
    pub features: Features,
}

/// The event catalogue; the JSON names are those of the HTTP API (`bet.placed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "player.registered")]
    PlayerRegistered,
    #[serde(rename = "player.updated")]
    PlayerUpdated,
    #[serde(rename = "session.started")]
    SessionStarted,
    #[serde(rename = "session.ended")]
    SessionEnded,
    #[serde(rename = "bet.placed")]
    BetPlaced,
    #[serde(rename = "bet.settled")]
    BetSettled,
    #[serde(rename = "wallet.debit")]
    WalletDebit,
    #[serde(rename = "wallet.credit")]
    WalletCredit,
    #[serde(rename = "payment.intent")]
    PaymentIntent,
    #[serde(rename = "payment.authorized")]
    PaymentAuthorized,
    #[serde(rename = "payment.captured")]
    PaymentCaptured,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.refunded")]
    PaymentRefunded,
    #[serde(rename = "withdrawal.requested")]
    WithdrawalRequested,
    #[serde(rename = "withdrawal.processed")]
    WithdrawalProcessed,
    #[serde(rename = "withdrawal.failed")]
    WithdrawalFailed,
    #[serde(rename = "bonus.issued")]
    BonusIssued,
    #[serde(rename = "bonus.consumed")]
    BonusConsumed,
    #[serde(rename = "bonus.expired")]
    BonusExpired,
    #[serde(rename = "kyc.status_changed")]
    KycStatusChanged,
    #[serde(rename = "rg.limit_set")]
    RgLimitSet,
    #[serde(rename = "rg.limit_hit")]
    RgLimitHit,
    #[serde(rename = "rg.reality_check")]
    RgRealityCheck,
    #[serde(rename = "self_exclusion.started")]
    SelfExclusionStarted,
    #[serde(rename = "self_exclusion.ended")]
    SelfExclusionEnded,
    #[serde(rename = "crm.delivered")]
    CrmDelivered,
    #[serde(rename = "crm.opened")]
    CrmOpened,
    #[serde(rename = "crm.clicked")]
    CrmClicked,
    #[serde(rename = "crm.unsubscribed")]
    CrmUnsubscribed,
    #[serde(rename = "crm.complained")]
    CrmComplained,
    // Emitted by the host, never accepted from the platform (docs/events.md, "Emitted by the host"):
    #[serde(rename = "segment.entered")]
    SegmentEntered,
    #[serde(rename = "segment.left")]
    SegmentLeft,
    #[serde(rename = "bonus.activated")]
    BonusActivated,
    #[serde(rename = "bonus.completed")]
    BonusCompleted,
    #[serde(rename = "bonus.forfeited")]
    BonusForfeited,
    #[serde(rename = "bonus.lapsed")]
    BonusLapsed,
}

impl EventType {
    /// The types only the host writes to the log (the platform's are refused).
    pub const HOST_EMITTED: [EventType; 6] = [
        EventType::SegmentEntered,
        EventType::SegmentLeft,
        EventType::BonusActivated,
        EventType::BonusCompleted,
        EventType::BonusForfeited,
        EventType::BonusLapsed,
    ];

    /// Whether only the host writes events of this type to the log.
    pub fn emitted_by_host(self) -> bool {
        Self::HOST_EMITTED.contains(&self)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: String,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetInfo {
    pub bet_id: String,
    pub stake: Money,
    #[serde(default)]
    pub win_minor: Option<i64>,
    #[serde(default)]
    pub game_id: String,
    #[serde(default)]
    pub provider: String,
    pub category: String,
    #[serde(default)]
    pub in_bonus: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyMovement {
    pub reference: String,
    pub amount: Money,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub reason_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Deposit,
    Loss,
    Wager,
    Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitPeriod {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RgLimit {
    pub kind: LimitKind,
    pub period: LimitPeriod,
    #[serde(default)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    pub minutes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionScope {
    Brand,
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExclusionRegister {
    #[serde(rename = "own")]
    Own,
    #[serde(rename = "GAMSTOP")]
    Gamstop,
    #[serde(rename = "OASIS")]
    Oasis,
    #[serde(rename = "CRUKS")]
    Cruks,
    #[serde(rename = "ON")]
    Ontario,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfExclusion {
    pub scope: ExclusionScope,
    pub register: ExclusionRegister,
    #[serde(default)]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmInfo {
    pub delivery_id: String,
    pub channel: String,
}

/// The non-personal part of `player.registered` / `player.updated` (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerInfo {
    pub jurisdiction: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub currency: Option<String>,
}

/// What an event carries beyond its envelope, already validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventPayload {
    #[default]
    None,
    Player(PlayerInfo),
    Session(SessionInfo),
    Bet(BetInfo),
    Money(MoneyMovement),
    Kyc(KycStatus),
    RgLimit(RgLimit),
    RealityCheckMinutes(u32),
    SelfExclusion(SelfExclusion),
    Crm(CrmInfo),
    Segment(SegmentChange),
    Bonus(BonusChange),
}

/// `segment.entered` / `segment.left`: a player's membership changed, and what decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentChange {
    pub segment_id: String,
    pub segment: String,
    /// The plugin version that decided (empty when the host took the player out on its own, e.g. RG).
    pub plugin_id: String,
    /// `event:<seq>`, `sweep:<id>` or `host:<rule>`.
    pub via: String,
    pub reason: Option<String>,
    pub score: Option<f64>,
}

/// `bonus.activated` / `bonus.completed` / `bonus.forfeited` / `bonus.lapsed`: the ledger moved a bonus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BonusChange {
    pub bonus_id: String,
    /// The offer template's name.
    pub template: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub granted: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub event_type: EventType,
    pub occurred_at: Timestamp,
    #[serde(default)]
    pub payload: EventPayload,
}

/// A segment decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub member: bool,
    pub score: Option<f64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BonusStatus {
    Active,
    Completed,
    Forfeited,
    Expired,
}

/// A bonus a player holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BonusState {
    pub bonus_id: String,
    pub template: String,
    pub status: BonusStatus,
    pub granted: Money,
    pub wagering_required_minor: i64,
    pub wagering_done_minor: i64,
    #[serde(default)]
    pub max_bet_minor: Option<i64>,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What a bonus rule decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum BonusAction {
    Grant {
        template: String,
        amount: Money,
        wager_multiplier: u32,
        max_bet_minor: Option<i64>,
        expires_at: Timestamp,
        reason: String,
    },
    Progress {
        bonus_id: String,
        contribution_minor: i64,
        contribution_percent: u32,
        category: String,
    },
    Complete {
        bonus_id: String,
        reason: String,
    },
    Forfeit {
        bonus_id: String,
        reason: String,
    },
    RejectBet {
        bonus_id: String,
        bet_id: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferKind {
    Cashback,
    FreeSpins,
    DepositMatch,
    Reload,
    Mission,
}

/// A candidate offer with the economy's bounds on its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferTemplate {
    pub template_id: String,
    pub kind: OfferKind,
    #[serde(default)]
    pub max_percent: u32,
    #[serde(default)]
    pub max_cap_minor: i64,
    #[serde(default)]
    pub max_wager_multiplier: u32,
    #[serde(default)]
    pub max_validity_hours: u32,
    #[serde(default)]
    pub max_spins: u32,
    #[serde(default)]
    pub providers: Vec<String>,
}

/// Channels an offer can be made through (the messaging channels plus on-site banners).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferChannel {
    Email,
    Sms,
    Push,
    InApp,
    OnSite,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferContext {
    pub intent: String,
    pub channel: OfferChannel,
    #[serde(default)]
    pub max_cost_minor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferParams {
    pub percent: u32,
    pub cap_minor: i64,
    pub wager_multiplier: u32,
    pub validity_hours: u32,
    pub spins: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedOffer {
    pub template_id: String,
    pub score: f64,
    pub params: OfferParams,
    pub reason: String,
}

/// One change of one consent item (a channel, a product, profiling) in a player's history: versioned,
/// never overwritten; what the gate reads to say under which consent a message went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub version: i64,
    pub scope: String,
    pub name: String,
    pub granted: bool,
    pub source: String,
    pub recorded_at: jiff::Timestamp,
}
