//! Triggers: *on* event types → *if* conditions on the event and profile and/or the decision of a
//! segment rule (the `rule` slot's binding for the player's jurisdiction, with the event passed in) →
//! *then* send a template or enter a journey. Run by the `engage` consumer after the profile took the
//! event; at most one fire per (trigger, event), with a per-player cooldown, a dedup window and an
//! active time window. Every fire is stored with the decision, delivery or journey run behind it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::conditions::{self, Condition, Facts};
use crate::auth::Principal;
use crate::core::Core;
use crate::decisions::{DecisionError, DecisionRequest};
use crate::defs::{self, DefError, Head, TRIGGERS, Traits, invalid};
use crate::model::{self as m, Channel, EventType};
use crate::policy::Priority;
use crate::store::Db;

/// A trigger's definition, as saved (`POST /admin/triggers`, `examples/triggers/*.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Event types of the catalogue, and `segment.entered` / `segment.left`.
    pub on: Vec<EventType>,
    /// A segment rule (its binding slot) that must answer `member` for the event.
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub action: Action,
    /// At most one fire per player within this many minutes (0: no cooldown).
    #[serde(default)]
    pub cooldown_minutes: u32,
    /// Not two fires with the same `dedup_by` fact within this many minutes (0: none).
    #[serde(default)]
    pub dedup_minutes: u32,
    /// The fact that says "the same event" (default `event.reference`: the payment, bet or bonus).
    #[serde(default)]
    pub dedup_by: Option<String>,
    /// Fires only for events taken between these instants.
    #[serde(default)]
    pub active_from: Option<jiff::Timestamp>,
    #[serde(default)]
    pub active_until: Option<jiff::Timestamp>,
    /// Events older than this when they reach the trigger (a replay, a backlog) do not fire it.
    #[serde(default = "default_max_age")]
    pub max_event_age_minutes: u32,
    /// Needs a compliance officer other than the author to activate (also set by the host when the
    /// action is worth more than the brand's `high_value_minor`).
    #[serde(default)]
    pub sensitive: bool,
    /// Which brand, when the key may act for several.
    #[serde(default, skip_serializing)]
    pub brand_id: Option<String>,
}

fn default_max_age() -> u32 {
    1440
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Sends a template through the one send service (and so the gate).
    Send(SendAction),
    /// Enters the player in a journey of the brand.
    Journey { journey: String },
    /// Asks the offer service for an offer (the one path: the scorer, every host check, the budgets)
    /// and sends it with `send`'s template, the offer's fields added to its personalization
    /// (`offer_id`, `offer_template`, `offer_cap_minor`, `offer_percent`, `offer_wagerx`, `offer_spins`,
    /// `offer_expires_at`). An offer that waits for a compliance approval is sent once approved.
    Offer(OfferAction),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferAction {
    /// "consolation", "reengage"… (what the scorer is told).
    pub intent: String,
    /// Most the offer may cost the operator, in minor units: above the brand's `high_value_minor` the
    /// trigger is sensitive.
    #[serde(default)]
    pub max_cost_minor: Option<i64>,
    pub send: SendAction,
}

impl OfferAction {
    /// What the offer may be worth, against the brand's `high_value_minor` (four eyes above it): its
    /// `max_cost_minor`, else its message's `value_minor`.
    pub fn value_minor(&self) -> Option<i64> {
        self.max_cost_minor.or(self.send.value_minor)
    }

    fn channel(&self) -> Option<crate::model::OfferChannel> {
        use crate::model::OfferChannel as O;
        Some(match self.send.channel {
            Channel::Email => O::Email,
            Channel::Sms => O::Sms,
            Channel::Push => O::Push,
            Channel::InApp => O::InApp,
            Channel::Phone => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendAction {
    pub template_id: String,
    pub channel: Channel,
    #[serde(default)]
    pub priority: Priority,
    /// Values for the template; a value `$<fact>` takes the fact (`$event.amount_minor`).
    #[serde(default)]
    pub personalization: BTreeMap<String, String>,
    #[serde(default)]
    pub frequency_policy_id: Option<String>,
    /// What the contact is worth to the player in minor units (a cashback's cap): above the brand's
    /// `high_value_minor` the trigger is sensitive.
    #[serde(default)]
    pub value_minor: Option<i64>,
}

impl SendAction {
    /// The send request for a player, with facts filled in.
    pub fn request(&self, player: &str, facts: &Facts, campaign: &str) -> crate::messaging::SendRequest {
        crate::messaging::SendRequest {
            channel: self.channel,
            player_id: player.to_string(),
            template_id: self.template_id.clone(),
            personalization: conditions::personalize(&self.personalization, facts),
            frequency_policy_id: self.frequency_policy_id.clone().unwrap_or_else(|| "fp_default".into()),
            priority: self.priority,
            campaign_id: Some(campaign.chars().take(64).collect()),
            brand_id: None,
        }
    }
}

/// Checks an offer action (a trigger's, a journey node's): the intent, the budget, the channel and its
/// message.
pub async fn check_offer(core: &Core, brand: &str, o: &OfferAction, field: &str) -> Result<(), DefError> {
    if !crate::segments::is_name(&o.intent) {
        return Err(invalid(format!("{field}.intent"), "1–64 characters of a-z, 0-9, '-' and '_'"));
    }
    if o.max_cost_minor.is_some_and(|v| !(0..=crate::offers::templates::MAX_MINOR).contains(&v)) {
        return Err(invalid(format!("{field}.max_cost_minor"), "0 to 10^9 minor units"));
    }
    if o.channel().is_none() {
        return Err(invalid(format!("{field}.send.channel"), "offers are not made by phone"));
    }
    check_send(core, brand, &o.send, &format!("{field}.send")).await?;
    Ok(())
}

/// Checks a send's template and values; whether it is marketing (its template's topic).
pub async fn check_send(core: &Core, brand: &str, s: &SendAction, field: &str) -> Result<bool, DefError> {
    let (db, policies) = (&core.db, &core.delivery.policies);
    conditions::check_personalization(&s.personalization).map_err(|e| invalid(field, e))?;
    crate::delivery::templates::check_personalization(&s.personalization)
        .map_err(|e| invalid(format!("{field}.personalization"), e.to_string()))?;
    if let Some(id) = &s.frequency_policy_id
        && policies.frequency(id).is_none()
    {
        return Err(invalid(format!("{field}.frequency_policy_id"), format!("no frequency policy `{id}`")));
    }
    if s.channel == Channel::Phone {
        return Err(invalid(format!("{field}.channel"), "the host sends email, sms, push and in_app"));
    }
    if s.value_minor.is_some_and(|v| !(0..=1_000_000_000_000).contains(&v)) {
        return Err(invalid(format!("{field}.value_minor"), "0 to 10^12 minor units"));
    }
    let templates = crate::delivery::templates::list(db, brand).await?;
    let Some(t) = templates.iter().find(|t| t.template_id == s.template_id) else {
        return Err(invalid(
            format!("{field}.template_id"),
            format!("the brand has no template `{}`", s.template_id),
        ));
    };
    Ok(!matches!(
        t.topic,
        crate::delivery::templates::Topic::Transactional | crate::delivery::templates::Topic::RgInformational
    ))
}

/// Checks a definition; what the host makes of it (marketing, sensitive).
async fn check(core: &Core, brand: &str, def: &TriggerDef) -> Result<Traits, DefError> {
    defs::check_name("name", &def.name)?;
    if def.description.chars().count() > 500 {
        return Err(invalid("description", "at most 500 characters"));
    }
    if def.on.is_empty() || def.on.len() > 20 {
        return Err(invalid("on", "1 to 20 event types"));
    }
    if let Some(rule) = &def.rule {
        defs::check_name("rule", rule)?;
    }
    conditions::check(&def.conditions).map_err(|e| invalid("conditions", e))?;
    if let Some(f) = &def.dedup_by
        && conditions::kind_of(f).is_none()
    {
        return Err(invalid("dedup_by", format!("unknown fact `{f}`")));
    }
    for (field, n, max) in [
        ("cooldown_minutes", def.cooldown_minutes, 525_600),
        ("dedup_minutes", def.dedup_minutes, 10_080),
        ("max_event_age_minutes", def.max_event_age_minutes, 10_080),
    ] {
        if n > max {
            return Err(invalid(field, format!("at most {max}")));
        }
    }
    if let (Some(a), Some(b)) = (def.active_from, def.active_until)
        && a >= b
    {
        return Err(invalid("active_until", "must be after active_from"));
    }
    let threshold = core.delivery.settings.high_value_minor(brand);
    let (marketing, value) = match &def.action {
        Action::Send(s) => (check_send(core, brand, s, "action").await?, s.value_minor),
        Action::Journey { journey } => {
            let mut conn = core.db.pool.acquire().await?;
            if defs::by_name(&mut conn, defs::JOURNEYS, brand, journey).await?.is_none() {
                return Err(invalid("action.journey", format!("the brand has no journey `{journey}`")));
            }
            (true, None)
        }
        Action::Offer(o) => {
            check_offer(core, brand, o, "action").await?;
            // An offer is marketing, whatever its template's topic.
            (true, o.value_minor())
        }
    };
    Ok(Traits { marketing, sensitive: def.sensitive || value.is_some_and(|v| v > threshold) })
}

/// Saves a trigger: a new one, or (`existing`) its next version. The name stays.
pub async fn save(
    core: &Core,
    actor: &Principal,
    brand: &str,
    existing: Option<&Head>,
    def: &TriggerDef,
) -> Result<(Head, i64), DefError> {
    let traits = check(core, brand, def).await?;
    let definition = serde_json::to_value(def).map_err(anyhow::Error::from)?;
    defs::save(core, TRIGGERS, actor, brand, existing, (&def.name, &definition, traits)).await
}

/// An active trigger as the consumer runs it.
pub type Active = defs::Active<TriggerDef>;

/// The active triggers of a brand.
pub async fn active(conn: &mut sqlx::AnyConnection, brand: &str) -> anyhow::Result<Vec<Active>> {
    defs::active(conn, TRIGGERS, brand).await
}

/// What a trigger made of an event it matched, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Fire {
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub decision_seq: Option<i64>,
    pub delivery_id: Option<String>,
    pub run_id: Option<String>,
}

impl Fire {
    fn outcome(outcome: &'static str, reason: impl Into<String>) -> Fire {
        Fire { outcome, reason: Some(reason.into()), decision_seq: None, delivery_id: None, run_id: None }
    }
}

/// Whether the trigger looks at this event at all: its type, its window, its age.
pub fn matches(t: &TriggerDef, e: &m::Event, now: jiff::Timestamp) -> bool {
    let age_ms = now.as_millisecond() - e.occurred_at.as_millisecond();
    t.on.contains(&e.event_type)
        && t.active_from.is_none_or(|a| now >= a)
        && t.active_until.is_none_or(|u| now < u)
        && age_ms <= i64::from(t.max_event_age_minutes) * 60_000
}

/// The limits on a fire: cooldown per player, dedup window. Read in the consumer's transaction.
async fn limited(
    conn: &mut sqlx::AnyConnection,
    t: &Active,
    (brand, player): (&str, &str),
    dedup_value: Option<&str>,
    now: i64,
) -> anyhow::Result<Option<Fire>> {
    if t.def.cooldown_minutes > 0 {
        let since = now - i64::from(t.def.cooldown_minutes) * 60_000;
        let row = sqlx::query(
            "SELECT MAX(at) AS last FROM trigger_fires WHERE brand_id = $1 AND player_id = $2
             AND trigger_id = $3 AND outcome = 'fired' AND at >= $4",
        )
        .bind(brand)
        .bind(player)
        .bind(&t.id)
        .bind(since)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(last) = row.try_get::<Option<i64>, _>("last")? {
            let until = jiff::Timestamp::from_millisecond(last + i64::from(t.def.cooldown_minutes) * 60_000)?;
            return Ok(Some(Fire::outcome(
                "cooldown",
                format!("fired for this player; cooling down until {until}"),
            )));
        }
    }
    if t.def.dedup_minutes > 0
        && let Some(v) = dedup_value
    {
        let since = now - i64::from(t.def.dedup_minutes) * 60_000;
        let row = sqlx::query(
            "SELECT event_id FROM trigger_fires WHERE brand_id = $1 AND player_id = $2 AND trigger_id = $3
             AND outcome = 'fired' AND dedup_value = $4 AND at >= $5 LIMIT 1",
        )
        .bind(brand)
        .bind(player)
        .bind(&t.id)
        .bind(v)
        .bind(since)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(r) = row {
            let first: String = r.try_get("event_id")?;
            return Ok(Some(Fire::outcome(
                "deduplicated",
                format!("already fired for {v} within {} minutes (event {first})", t.def.dedup_minutes),
            )));
        }
    }
    Ok(None)
}

/// The rule's verdict on the event: member or not, with the decision behind it (recorded when it fires
/// or fails).
pub enum RuleVerdict {
    Member(crate::decisions::Evaluated),
    Out(String),
    Failed(String, crate::decisions::Evaluated),
}

pub async fn ask_rule(
    core: &Core,
    rule: &str,
    player: (&str, &str),
    profile: &m::Profile,
    event: Option<&m::Event>,
    now: jiff::Timestamp,
) -> anyhow::Result<RuleVerdict> {
    let req = rule_request(rule, player, event);
    let evaluated = crate::decisions::evaluate(core, &req, profile.clone(), now).await;
    verdict_of(rule, &profile.jurisdiction, evaluated)
}

/// The decision request of a rule's slot for a player and the event.
fn rule_request(rule: &str, (brand, player): (&str, &str), event: Option<&m::Event>) -> DecisionRequest {
    let mut req = DecisionRequest::new(brand, player, crate::plugins::World::Segment);
    req.segment = Some(rule.to_string());
    req.event = event.cloned();
    req
}

/// What the rule's decision says of the player (of `jurisdiction`).
fn verdict_of(
    rule: &str,
    jurisdiction: &str,
    evaluated: Result<crate::decisions::Evaluated, DecisionError>,
) -> anyhow::Result<RuleVerdict> {
    let evaluated = match evaluated {
        Ok(e) => e,
        Err(DecisionError::NoBinding { .. }) => {
            return Ok(RuleVerdict::Out(format!(
                "no rule `{rule}` is bound for jurisdiction {jurisdiction} or the brand default"
            )));
        }
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    match &evaluated.outcome {
        Ok(out) => {
            let ms: m::Membership = serde_json::from_value(out.clone())?;
            if ms.member {
                Ok(RuleVerdict::Member(evaluated))
            } else {
                Ok(RuleVerdict::Out(format!(
                    "rule `{rule}`: {}",
                    ms.reason.unwrap_or_else(|| "not a member".into())
                )))
            }
        }
        Err(e) => {
            let why = format!("rule `{rule}` failed: {e}");
            Ok(RuleVerdict::Failed(why, evaluated))
        }
    }
}

/// What a trigger makes of an event before anything is read or written: it matches, its conditions
/// hold, and (if it has one) its rule's verdict. A plugin call at most, so a consumer asks for the
/// events of a batch together.
pub struct Considered {
    facts: Facts,
    verdict: Option<RuleVerdict>,
}

/// A trigger, an event it may take and the player's profile.
pub type Consider<'a> = (&'a Active, &'a crate::bus::LoggedEvent, &'a crate::profiles::StoredProfile);

/// What each trigger makes of each event, in the order given; None when the event does not concern the
/// trigger: its type, window or age, or a condition. The rules of the whole list are asked together.
pub async fn consider_many(core: &Core, items: &[Consider<'_>]) -> Vec<anyhow::Result<Option<Considered>>> {
    let now = core.clock().now();
    let mut out: Vec<anyhow::Result<Option<Considered>>> = Vec::with_capacity(items.len());
    let (mut calls, mut called) = (Vec::new(), Vec::new());
    for (i, (t, e, stored)) in items.iter().enumerate() {
        let event = e.event();
        if !matches(&t.def, &event, now) {
            out.push(Ok(None));
            continue;
        }
        // The conditions first: they cost no plugin call, and most events fail them.
        let view = stored.at(&e.brand_id, &e.player_id, now);
        let facts = Facts::new(Some(&event), &view.profile);
        if facts.all(&t.def.conditions).is_err() {
            out.push(Ok(None));
            continue;
        }
        if let Some(rule) = &t.def.rule {
            let req = rule_request(rule, (&e.brand_id, &e.player_id), Some(&event));
            called.push((i, rule, view.profile.jurisdiction.clone()));
            calls.push((req, view.profile));
        }
        out.push(Ok(Some(Considered { facts, verdict: None })));
    }
    let evaluated = crate::decisions::evaluate_many(core, calls, now).await;
    for ((i, rule, jurisdiction), evaluated) in called.into_iter().zip(evaluated) {
        match verdict_of(rule, &jurisdiction, evaluated) {
            Ok(verdict) => {
                if let Ok(Some(c)) = &mut out[i] {
                    c.verdict = Some(verdict);
                }
            }
            Err(e) => out[i] = Err(e),
        }
    }
    out
}

/// Runs one trigger on one event in the consumer's transaction: conditions, rule, limits, then the
/// action. None when the event does not concern it (no row written); otherwise the fire as stored.
pub async fn fire(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    t: &Active,
    e: &crate::bus::LoggedEvent,
    stored: &crate::profiles::StoredProfile,
) -> anyhow::Result<Option<Fire>> {
    if !taken(conn, &[(t, e)]).await?.is_empty() {
        return Ok(None);
    }
    match consider_many(core, &[(t, e, stored)]).await.pop().expect("one asked")? {
        Some(c) => fire_considered(core, conn, t, e, stored, c).await,
        None => Ok(None),
    }
}

/// Which of these (trigger, event) pairs the trigger took already, as (trigger id, event id): a
/// replay or a second host finds their rows. One query for a consumer's batch.
pub async fn taken(
    conn: &mut sqlx::AnyConnection,
    pairs: &[(&Active, &crate::bus::LoggedEvent)],
) -> anyhow::Result<HashSet<(String, String)>> {
    if pairs.is_empty() {
        return Ok(HashSet::new());
    }
    let triggers: BTreeSet<&str> = pairs.iter().map(|(t, _)| t.id.as_str()).collect();
    let events: BTreeSet<&str> = pairs.iter().map(|(_, e)| e.event_id.as_str()).collect();
    let backend = crate::store::Backend::of(conn);
    let sql = format!(
        "SELECT trigger_id, event_id FROM trigger_fires WHERE {} AND {}",
        crate::store::one_of(backend, "trigger_id", 1),
        crate::store::one_of(backend, "event_id", 2)
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(crate::store::json_list(triggers))
        .bind(crate::store::json_list(events));
    let rows = query.fetch_all(conn).await?;
    let wanted: HashSet<(&str, &str)> =
        pairs.iter().map(|(t, e)| (t.id.as_str(), e.event_id.as_str())).collect();
    let mut out = HashSet::new();
    for r in rows {
        let pair: (String, String) = (r.try_get("trigger_id")?, r.try_get("event_id")?);
        if wanted.contains(&(pair.0.as_str(), pair.1.as_str())) {
            out.insert(pair);
        }
    }
    Ok(out)
}

/// `fire` once the trigger considered the event, and the caller found that it did not take the event
/// already (`taken`).
pub async fn fire_considered(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    t: &Active,
    e: &crate::bus::LoggedEvent,
    stored: &crate::profiles::StoredProfile,
    Considered { facts, verdict }: Considered,
) -> anyhow::Result<Option<Fire>> {
    if matches!(verdict, Some(RuleVerdict::Out(_))) {
        return Ok(None);
    }
    let now = core.clock().now();
    let player = (e.brand_id.as_str(), e.player_id.as_str());
    let decision_seq = match verdict {
        None | Some(RuleVerdict::Out(_)) => None,
        Some(RuleVerdict::Member(evaluated)) => Some(evaluated.record_in(conn).await?.seq),
        Some(RuleVerdict::Failed(why, evaluated)) => {
            let mut f = Fire::outcome("failed", why);
            f.decision_seq = Some(evaluated.record_in(conn).await?.seq);
            store(conn, t, e, &f, None, now.as_millisecond()).await?;
            return Ok(Some(f));
        }
    };
    let dedup_value = facts.text(t.def.dedup_by.as_deref().unwrap_or("event.reference"));
    let at = now.as_millisecond();
    let mut f = match limited(conn, t, player, dedup_value.as_deref(), at).await? {
        Some(f) => f,
        None => act(core, conn, t, e, stored, &facts).await?,
    };
    f.decision_seq = decision_seq;
    store(conn, t, e, &f, dedup_value.as_deref(), at).await?;
    Ok(Some(f))
}

/// The idempotency key of a trigger's send: one per (trigger version, event).
pub fn send_key(t: &Active, event_id: &str) -> String {
    format!("trg:{}:{}:{event_id}", t.id, t.version)
}

async fn act(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    t: &Active,
    e: &crate::bus::LoggedEvent,
    stored: &crate::profiles::StoredProfile,
    facts: &Facts,
) -> anyhow::Result<Fire> {
    match &t.def.action {
        Action::Send(s) => {
            let req = s.request(&e.player_id, facts, &format!("trigger:{}", t.def.name));
            let key = send_key(t, &e.event_id);
            let sent =
                crate::messaging::send_in(core, conn, (&e.brand_id, &key), req, stored, Some(e.received_at))
                    .await;
            match sent {
                Ok(d) => Ok(from_delivery(&d)),
                Err(crate::messaging::SendError::Internal(err)) => Err(err),
                Err(other) => Ok(Fire::outcome("failed", other.to_string())),
            }
        }
        Action::Journey { journey } => {
            let via = format!("trigger:{}:{}:{}", t.def.name, t.version, e.event_id);
            let view = stored.at(&e.brand_id, &e.player_id, core.clock().now());
            match super::journeys::enter(
                core,
                conn,
                (&e.brand_id, &e.player_id),
                journey,
                &view.profile,
                (&via, e.position()),
            )
            .await?
            {
                Ok(run_id) => Ok(Fire {
                    outcome: "fired",
                    reason: Some(format!("entered journey `{journey}`")),
                    decision_seq: None,
                    delivery_id: None,
                    run_id: Some(run_id),
                }),
                Err(why) => Ok(Fire::outcome("not_entered", why)),
            }
        }
        Action::Offer(o) => {
            let by = OfferBy {
                brand: &e.brand_id,
                player: &e.player_id,
                key: &send_key(t, &e.event_id),
                requester: &format!("trigger:{}", t.def.name),
                caused_at: Some(e.received_at),
            };
            make_offer(core, conn, &by, o, facts, stored).await
        }
    }
}

/// Who makes an offer, for whom, and the idempotency key of its message.
pub struct OfferBy<'a> {
    pub brand: &'a str,
    pub player: &'a str,
    pub key: &'a str,
    /// `trigger:NAME`, `journey:NAME`: the offer's requester and its message's campaign.
    pub requester: &'a str,
    pub caused_at: Option<i64>,
}

/// An offer from the offer service, then its message through the send service, in the caller's
/// transaction (a trigger's action, a journey's `offer` node).
pub async fn make_offer(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    by: &OfferBy<'_>,
    o: &OfferAction,
    facts: &Facts,
    stored: &crate::profiles::StoredProfile,
) -> anyhow::Result<Fire> {
    use crate::offers::service::{
        self, Constraints, GenerateRequest, OfferError, PendingSend, RequestContext,
    };
    let Some(channel) = o.channel() else {
        return Ok(Fire::outcome("failed", "offers are not made by phone"));
    };
    let req = GenerateRequest {
        player_id: by.player.to_string(),
        brand_id: None,
        context: RequestContext { intent: o.intent.clone(), channel },
        constraints: Constraints { max_cost_minor: o.max_cost_minor, rg_safe: true },
        trace_id: None,
    };
    let failed = |e: OfferError| match e {
        OfferError::Internal(err) => Err(err),
        other => Ok(Fire::outcome("failed", other.to_string())),
    };
    let scored = match service::score(core, by.brand, &req, stored).await {
        Ok(s) => s,
        Err(err) => return failed(err),
    };
    let mut send = o.send.request(by.player, facts, by.requester);
    let pending = PendingSend { idempotency_key: by.key.to_string(), request: send.clone() };
    let offer =
        match service::decide_in(core, conn, (by.requester, by.brand), &req, scored, Some(&pending)).await {
            Ok(Ok(offer)) => offer,
            Ok(Err(decision)) => return Ok(Fire::outcome("failed", decision.to_string())),
            Err(err) => return failed(err),
        };
    let mut fire = match offer["state"].as_str() {
        Some("issued") => {
            send.personalization.extend(service::personalization(&offer));
            let sent =
                crate::messaging::send_in(core, conn, (by.brand, by.key), send, stored, by.caused_at).await;
            match sent {
                Ok(d) => from_delivery(&d),
                Err(crate::messaging::SendError::Internal(err)) => return Err(err),
                Err(other) => Fire::outcome("failed", other.to_string()),
            }
        }
        Some("pending_approval") => Fire::outcome(
            "offer_pending",
            "the offer waits for a compliance approval; it is sent once approved",
        ),
        _ => {
            let codes: Vec<&str> = offer["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["code"].as_str())
                .collect();
            Fire::outcome("no_offer", codes.join(", "))
        }
    };
    fire.reason = Some(format!(
        "offer {}: {}",
        offer["offer_id"].as_str().unwrap_or_default(),
        fire.reason.unwrap_or_default()
    ));
    Ok(fire)
}

/// A fire from the delivery the send wrote: fired (queued or deferred) or suppressed with the gate's
/// reasons.
pub fn from_delivery(d: &crate::store::deliveries::Delivery) -> Fire {
    let reasons: Vec<String> = d
        .reasons
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["code"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let suppressed = d.status == crate::store::deliveries::Status::Suppressed;
    Fire {
        outcome: if suppressed { "suppressed" } else { "fired" },
        reason: Some(if reasons.is_empty() {
            format!("delivery {}", d.status.as_str())
        } else {
            format!("{}: {}", d.status.as_str(), reasons.join(", "))
        }),
        decision_seq: None,
        delivery_id: Some(d.delivery_id.clone()),
        run_id: None,
    }
}

async fn store(
    conn: &mut sqlx::AnyConnection,
    t: &Active,
    e: &crate::bus::LoggedEvent,
    f: &Fire,
    dedup_value: Option<&str>,
    at: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO trigger_fires (trigger_id, version, brand_id, player_id, event_id, event_seq, event_type,
             event_at, outcome, reason, dedup_value, decision_seq, delivery_id, run_id, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&t.id)
    .bind(t.version)
    .bind(&e.brand_id)
    .bind(&e.player_id)
    .bind(&e.event_id)
    .bind(e.seq)
    .bind(m::wire_name(e.event_type))
    .bind(e.occurred_at)
    .bind(f.outcome)
    .bind(&f.reason)
    .bind(dedup_value)
    .bind(f.decision_seq)
    .bind(&f.delivery_id)
    .bind(&f.run_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A trigger's figures: fires by version, outcome and reason.
pub async fn stats(db: &Db, id: &str) -> anyhow::Result<Value> {
    let rows = sqlx::query(
        "SELECT version, outcome, reason, COUNT(*) AS n FROM trigger_fires WHERE trigger_id = $1
         GROUP BY version, outcome, reason ORDER BY version, outcome, reason",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut suppressed: BTreeMap<String, i64> = BTreeMap::new();
    let mut rows_out = Vec::new();
    for r in rows {
        let (version, outcome, reason, n): (i64, String, Option<String>, i64) =
            (r.try_get("version")?, r.try_get("outcome")?, r.try_get("reason")?, r.try_get("n")?);
        *totals.entry(outcome.clone()).or_default() += n;
        if outcome == "suppressed"
            && let Some(codes) = reason.as_deref().and_then(|r| r.split_once(": ")).map(|(_, c)| c)
        {
            for code in codes.split(", ") {
                *suppressed.entry(code.to_string()).or_default() += n;
            }
        }
        rows_out.push(json!({"version": version, "outcome": outcome, "reason": reason, "count": n}));
    }
    Ok(json!({
        "fired": totals.get("fired").copied().unwrap_or(0),
        "suppressed": totals.get("suppressed").copied().unwrap_or(0),
        "deduplicated": totals.get("deduplicated").copied().unwrap_or(0),
        "cooldown": totals.get("cooldown").copied().unwrap_or(0),
        "not_entered": totals.get("not_entered").copied().unwrap_or(0),
        "failed": totals.get("failed").copied().unwrap_or(0),
        "suppressed_by_reason": suppressed,
        "by_version": rows_out,
    }))
}

/// A player's fires of a trigger (or of all the brand's), newest first.
pub async fn fires_of_player(db: &Db, brand: &str, player: &str, limit: i64) -> anyhow::Result<Vec<Value>> {
    let rows = sqlx::query(
        "SELECT f.trigger_id, t.name, f.version, f.event_id, f.event_seq, f.event_type, f.outcome, f.reason,
                f.decision_seq, f.delivery_id, f.run_id, f.at
         FROM trigger_fires f JOIN triggers t ON t.id = f.trigger_id
         WHERE f.brand_id = $1 AND f.player_id = $2 ORDER BY f.at DESC, f.event_seq DESC LIMIT $3",
    )
    .bind(brand)
    .bind(player)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "trigger_id": r.try_get::<String, _>("trigger_id")?,
                "trigger": r.try_get::<String, _>("name")?,
                "version": r.try_get::<i64, _>("version")?,
                "event_id": r.try_get::<String, _>("event_id")?,
                "event_seq": r.try_get::<i64, _>("event_seq")?,
                "event_type": r.try_get::<String, _>("event_type")?,
                "outcome": r.try_get::<String, _>("outcome")?,
                "reason": r.try_get::<Option<String>, _>("reason")?,
                "decision_seq": r.try_get::<Option<i64>, _>("decision_seq")?,
                "delivery_id": r.try_get::<Option<String>, _>("delivery_id")?,
                "run_id": r.try_get::<Option<String>, _>("run_id")?,
                "at": jiff::Timestamp::from_millisecond(r.try_get("at")?)?,
            }))
        })
        .collect()
}
