//! The offer service: one path for every caller (HTTP, triggers, the CLI) from a request to a stored
//! offer or a stored refusal. The offer scorer bound for the player's brand and jurisdiction ranks the
//! brand's templates for the jurisdiction; the host then checks each ranked offer, never trusting the
//! plugin: the gate (RG, licence and pack, age for bonus offers, consent for the channel and each
//! product), the request's constraints, the template's bounds (refused, not clamped), the conflict
//! block, the pack's bonus law, and last the economy caps (a player's daily maximum, the brand's and
//! the template's daily budgets), reserved in the offer's transaction so that concurrent requests never
//! overspend and a refused offer spends nothing. The first ranked offer that passes is stored; an offer
//! worth more than the brand's high-value threshold waits for a compliance officer. Every check, with
//! its figures, is kept with the offer.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::ledger::{self, Bonus, BonusTerms, State};
use super::templates::{self, Active, MAX_MINOR};
use crate::auth::{Principal, Role};
use crate::core::Core;
use crate::decisions::{self, DecisionError, DecisionRequest};
use crate::model::{self as m, Channel, OfferChannel, OfferKind};
use crate::plugins::World;
use crate::policy::gate::{self, MessageClass, Priority, Reason, Sent};
use crate::profiles::ProfileError;

/// `POST /v1/offers/generate`, as the article words it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub player_id: String,
    #[serde(default)]
    pub brand_id: Option<String>,
    pub context: RequestContext,
    #[serde(default)]
    pub constraints: Constraints,
    #[serde(default)]
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// "reengage", "retain", "welcome", "consolation"…
    pub intent: String,
    pub channel: OfferChannel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default)]
    pub max_cost_minor: Option<i64>,
    /// No offer to a player with any RG marker (self-exclusion and cooling-off refuse in any case).
    #[serde(default = "yes")]
    pub rg_safe: bool,
}

fn yes() -> bool {
    true
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints { max_cost_minor: None, rg_safe: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error("offer not found")]
    NotFound,
    /// The offer is not in a state that allows this (409 with the code).
    #[error("{message}")]
    State { code: &'static str, message: String },
    #[error("{0}")]
    FourEyes(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for OfferError {
    fn from(e: sqlx::Error) -> Self {
        OfferError::Internal(e.into())
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> OfferError {
    OfferError::Invalid { field, message: message.into() }
}

fn state_error(code: &'static str, message: impl Into<String>) -> OfferError {
    OfferError::State { code, message: message.into() }
}

impl GenerateRequest {
    fn check(&self) -> Result<(), OfferError> {
        let p = &self.player_id;
        if p.is_empty() || p.len() > 128 || p.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("player_id", "1 to 128 characters, without spaces"));
        }
        if !crate::segments::is_name(&self.context.intent) {
            return Err(invalid("context.intent", "1–64 characters of a-z, 0-9, '-' and '_'"));
        }
        if let Some(c) = self.constraints.max_cost_minor
            && !(0..=MAX_MINOR).contains(&c)
        {
            return Err(invalid("constraints.max_cost_minor", format!("from 0 to {MAX_MINOR} minor units")));
        }
        if self.trace_id.as_ref().is_some_and(|t| t.len() > 128) {
            return Err(invalid("trace_id", "at most 128 characters"));
        }
        Ok(())
    }
}

/// The messaging channel whose consent an offer channel needs (on-site banners: in-app).
fn consent_channel(c: OfferChannel) -> Channel {
    match c {
        OfferChannel::Email => Channel::Email,
        OfferChannel::Sms => Channel::Sms,
        OfferChannel::Push => Channel::Push,
        OfferChannel::InApp | OfferChannel::OnSite => Channel::InApp,
    }
}

/// One host check of one ranked offer, with its figures.
#[derive(Debug, Clone, Serialize)]
struct Check {
    check: &'static str,
    passed: bool,
    reasons: Vec<Reason>,
    figures: Value,
}

fn pass(check: &'static str, figures: Value) -> Check {
    Check { check, passed: true, reasons: Vec::new(), figures }
}

fn fail(check: &'static str, reasons: Vec<Reason>, figures: Value) -> Check {
    Check { check, passed: false, reasons, figures }
}

fn reason(code: &'static str, detail: impl Into<String>) -> Reason {
    Reason { code, detail: detail.into() }
}

/// A ranked offer as the host judged it.
#[derive(Debug, Clone, Serialize)]
struct Judged {
    rank: usize,
    template: String,
    score: f64,
    params: m::OfferParams,
    reason: String,
    value_minor: i64,
    cost_minor: i64,
    checks: Vec<Check>,
    /// chosen, refused, or not_considered (after the chosen one).
    outcome: &'static str,
}

/// The parameters as the API shows them (`wagerx`, as in the article).
pub fn params_json(p: &m::OfferParams) -> Value {
    json!({"percent": p.percent, "cap_minor": p.cap_minor, "wagerx": p.wager_multiplier,
           "validity_hours": p.validity_hours, "spins": p.spins})
}

/// Most ranked offers the host judges (a scorer may rank at most this many; the rest are ignored).
const MAX_RANKED: usize = 50;

fn utc_day(now: Timestamp) -> String {
    now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date().to_string()
}

fn new_id(prefix: &str) -> anyhow::Result<String> {
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("{prefix}_{}", hex::encode(rnd)))
}

/// Generates an offer (or a refusal) for the request; both are stored and returned as the API shows
/// them.
pub async fn generate(
    core: &Core,
    actor: &Principal,
    brand: &str,
    req: &GenerateRequest,
) -> Result<Value, OfferError> {
    req.check()?;
    let stored = core.profiles.current(brand, &req.player_id).await?;
    // The scorer runs outside the write transaction (it is bounded by its own limits).
    let scored = score(core, brand, req, &stored).await?;
    let mut tx = core.db.begin_write().await?;
    let made = decide_in(core, &mut tx, (&actor.holder, brand), req, scored, None).await?;
    // A scorer's failure is recorded with its decision: kept, then answered.
    tx.commit().await?;
    Ok(made?)
}

/// What the scorer made of a request, before anything is written.
pub struct Scored {
    now: Timestamp,
    view: crate::profiles::ProfileView,
    consents: Vec<m::ConsentRecord>,
    candidates: Vec<Active>,
    evaluated: Option<decisions::Evaluated>,
}

/// Runs the scorer bound for the player over the brand's templates for their jurisdiction.
pub async fn score(
    core: &Core,
    brand: &str,
    req: &GenerateRequest,
    stored: &crate::profiles::StoredProfile,
) -> Result<Scored, OfferError> {
    let now = core.clock().now();
    let view = stored.at(brand, &req.player_id, now);
    let mut conn = core.db.pool.acquire().await?;
    let candidates: Vec<Active> = templates::active(&mut conn, brand)
        .await?
        .into_iter()
        .filter(|t| t.def.applies_in(&view.profile.jurisdiction))
        .collect();
    drop(conn);
    let evaluated = if candidates.is_empty() {
        None
    } else {
        let mut d = DecisionRequest::new(brand, &req.player_id, World::OfferScorer);
        d.trace_id = req.trace_id.clone();
        d.candidates = candidates.iter().map(|t| t.def.candidate()).collect();
        d.context = Some(m::OfferContext {
            intent: req.context.intent.clone(),
            channel: req.context.channel,
            max_cost_minor: req.constraints.max_cost_minor,
        });
        Some(decisions::evaluate(core, &d, view.profile.clone(), now).await?)
    };
    Ok(Scored { now, view, consents: stored.consent_history.clone(), candidates, evaluated })
}

/// What a message that carries an offer may show of it: `offer_id`, `offer_template`,
/// `offer_cap_minor`, `offer_percent`, `offer_wagerx`, `offer_spins`, `offer_expires_at`.
pub fn personalization(offer: &Value) -> Vec<(String, String)> {
    [
        ("offer_id", &offer["offer_id"]),
        ("offer_template", &offer["template"]),
        ("offer_cap_minor", &offer["params"]["cap_minor"]),
        ("offer_percent", &offer["params"]["percent"]),
        ("offer_wagerx", &offer["params"]["wagerx"]),
        ("offer_spins", &offer["params"]["spins"]),
        ("offer_expires_at", &offer["expires_at"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
    .collect()
}

/// A message that carries an offer, held with an offer that waits for approval and sent through the
/// send service once it is approved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSend {
    pub idempotency_key: String,
    pub request: crate::messaging::SendRequest,
}

/// Checks the ranked offers and writes the offer (or the refusal) in the caller's transaction; the
/// offer as [`shown`], or the scorer's failure (recorded: the caller commits, then answers it).
pub async fn decide_in(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    (requester, brand): (&str, &str),
    req: &GenerateRequest,
    scored: Scored,
    pending_send: Option<&PendingSend>,
) -> Result<Result<Value, DecisionError>, OfferError> {
    let Scored { now, view, consents, candidates, evaluated } = scored;
    let profile = view.profile.clone();
    let tx = conn;
    let mut failed = None;
    let (ranked, scorer) = match evaluated {
        None => (Vec::new(), Value::Null),
        Some(e) => {
            let recorded = e.record_in(tx).await?;
            let seq = recorded.seq;
            match recorded.into_result() {
                Ok(decided) => {
                    let ranked: Vec<m::RankedOffer> = serde_json::from_value(decided.decision.clone())
                        .map_err(|e| anyhow::anyhow!("the scorer's answer does not read: {e}"))?;
                    let scorer = json!({"plugin": decided.plugin, "decision_seq": decided.decision_seq,
                                        "fuel": decided.usage.fuel, "ranked": ranked.len()});
                    (ranked, scorer)
                }
                // A scorer that failed or answered outside the bounds (the runtime refuses the whole
                // answer): no offer, a refusal that says why, counted by the runtime's code.
                Err(DecisionError::Plugin { code, message }) => {
                    core.delivery.metrics.offer_refusal(code);
                    failed = Some(reason("scorer_failed", format!("{code}: {message}")));
                    (Vec::new(), json!({"decision_seq": seq, "error": code}))
                }
                Err(other) => return Ok(Err(other)),
            }
        }
    };
    let live = ledger::of_player(tx, brand, &req.player_id, true).await?;
    let packs = core.policies.packs.current();
    let pack = packs.for_jurisdiction(&profile.jurisdiction);
    let policy = core.policies.frequency("fp_default").ok_or_else(|| anyhow::anyhow!("no fp_default"))?;
    let (player_daily, brand_daily) = core.delivery.settings.offer_caps(brand);
    let day = utc_day(now);
    let sent = Sent::default();

    let mut judged: Vec<Judged> = Vec::new();
    let mut chosen: Option<(usize, &Active)> = None;
    for (rank, offer) in ranked.iter().take(MAX_RANKED).enumerate() {
        let template = candidates.iter().find(|t| t.def.name == offer.template_id);
        let mut j = Judged {
            rank: rank + 1,
            template: offer.template_id.clone(),
            score: offer.score,
            params: offer.params.clone(),
            reason: offer.reason.chars().take(500).collect(),
            value_minor: 0,
            cost_minor: 0,
            checks: Vec::new(),
            outcome: "refused",
        };
        if chosen.is_some() {
            j.outcome = "not_considered";
            judged.push(j);
            continue;
        }
        let Some(t) = template else {
            core.delivery.metrics.offer_refusal("unknown_template");
            j.checks.push(fail(
                "template",
                vec![reason("unknown_template", format!("`{}` is not a candidate", offer.template_id))],
                json!({}),
            ));
            judged.push(j);
            continue;
        };
        let def = &t.def;
        let p = &offer.params;
        j.value_minor = def.value_minor(p);
        j.cost_minor = def.cost_minor(p);
        // 1. The gate.
        let r = gate::Request {
            channel: consent_channel(req.context.channel),
            class: MessageClass::Marketing { product: def.products[0], bonus_offer: true },
            profile: &profile,
            age: view.age,
            consents: &consents,
            pack,
            licensed: core.policies.licences(brand),
            policy,
            priority: Priority::Normal,
            sent: &sent,
            now,
        };
        j.checks.push(match gate::offer(&r, &def.products, req.constraints.rg_safe) {
            Ok(basis) => pass("gate", json!(basis)),
            Err(reasons) => fail("gate", reasons, json!({"rg_safe": req.constraints.rg_safe})),
        });
        // 2. The request's constraints.
        let figures = json!({"cost_minor": j.cost_minor, "max_cost_minor": req.constraints.max_cost_minor});
        j.checks.push(match req.constraints.max_cost_minor {
            Some(max) if j.cost_minor > max => fail(
                "constraints",
                vec![reason("max_cost", format!("costs {} minor units, more than {max}", j.cost_minor))],
                figures,
            ),
            _ => pass("constraints", figures),
        });
        // 3. The template's bounds: refused, not clamped.
        let b = &def.bounds;
        let outside: Vec<Reason> = [
            ("percent", i64::from(p.percent), 0, i64::from(b.max_percent)),
            ("cap_minor", p.cap_minor, 0, b.max_cap_minor),
            ("wagerx", i64::from(p.wager_multiplier), 0, i64::from(b.max_wager_multiplier)),
            ("validity_hours", i64::from(p.validity_hours), 1, i64::from(b.max_validity_hours)),
            ("spins", i64::from(p.spins), 0, i64::from(b.max_spins)),
        ]
        .into_iter()
        .filter(|(_, v, lo, hi)| v < lo || v > hi)
        .map(|(name, v, lo, hi)| reason("out_of_bounds", format!("{name} {v} is outside {lo}..={hi}")))
        .collect();
        let figures = json!({"params": params_json(p), "bounds": b});
        if outside.is_empty() {
            j.checks.push(pass("bounds", figures));
        } else {
            core.delivery.metrics.offer_refusal("out_of_bounds");
            j.checks.push(fail("bounds", outside, figures));
        }
        // 4. No second live bonus of a conflicting group.
        let conflicting: Vec<&Bonus> = match &def.conflict_group {
            Some(g) => live.iter().filter(|x| x.conflict_group.as_ref() == Some(g)).collect(),
            None => Vec::new(),
        };
        let figures = json!({"conflict_group": def.conflict_group,
                             "live_bonuses": conflicting.iter().map(|x| &x.bonus_id).collect::<Vec<_>>()});
        j.checks.push(if conflicting.is_empty() {
            pass("conflict", figures)
        } else {
            let detail = format!(
                "the player holds bonus {} of group {}",
                conflicting[0].bonus_id,
                def.conflict_group.as_deref().unwrap_or_default()
            );
            fail("conflict", vec![reason("bonus_conflict", detail)], figures)
        });
        // 5. The pack's bonus law.
        let broken = pack.and_then(|pk| templates::bonus_law(pk, p.wager_multiplier, &def.products));
        let figures = json!({"pack": pack.map(|pk| &pk.version), "wagerx": p.wager_multiplier,
                             "products": def.products});
        j.checks.push(match broken {
            Some(br) => {
                fail("bonus_law", vec![reason("bonus_law", format!("{}: {}", br.rule, br.detail))], figures)
            }
            None => pass("bonus_law", figures),
        });
        if j.checks.iter().any(|c| !c.passed) {
            for c in j.checks.iter().filter(|c| !c.passed) {
                for r in &c.reasons {
                    if r.code != "out_of_bounds" && r.code != "unknown_template" {
                        core.delivery.metrics.offer_refusal(r.code);
                    }
                }
            }
            judged.push(j);
            continue;
        }
        // 6. The economy caps, reserved last: only an offer that passes everything spends.
        // Always in this order (brand, template, player), so that two writers never wait on each other.
        let mut caps = vec![("brand".to_string(), brand_daily, "budget_brand_day")];
        if let Some(budget) = def.budget_daily_minor {
            caps.push((format!("template:{}", t.id), budget, "budget_template_day"));
        }
        caps.push((format!("player:{}", req.player_id), player_daily, "budget_player_day"));
        match reserve(tx, brand, &day, j.cost_minor, &caps).await? {
            Ok(spent) => {
                j.checks
                    .push(pass("economy", json!({"day": day, "cost_minor": j.cost_minor, "caps": spent})));
                j.outcome = "chosen";
                chosen = Some((judged.len(), t));
            }
            Err((code, figures)) => {
                core.delivery.metrics.offer_refusal(code);
                let detail =
                    format!("the {} day's cap would be exceeded", code.trim_start_matches("budget_"));
                j.checks.push(fail("economy", vec![reason(code, detail)], figures));
            }
        }
        judged.push(j);
    }

    let offer_id = new_id("of")?;
    let (state, stored_row) = match chosen {
        Some((i, t)) => {
            let j = &judged[i];
            let needs_approval = j.value_minor > core.delivery.settings.high_value_minor(brand);
            let state = if needs_approval { "pending_approval" } else { "issued" };
            let expires = now + SignedDuration::from_hours(i64::from(j.params.validity_hours));
            (state, Some((t, j.clone(), expires)))
        }
        None => ("refused", None),
    };
    let mut reasons: Vec<Reason> = Vec::new();
    if state == "refused" {
        if let Some(f) = failed {
            reasons.push(f);
        } else if candidates.is_empty() {
            reasons.push(reason(
                "no_template",
                format!("no offer template of the brand applies in {}", profile.jurisdiction),
            ));
        } else if ranked.is_empty() {
            reasons.push(reason("no_offer", "the scorer ranked no candidate"));
        }
        for j in &judged {
            for c in j.checks.iter().filter(|c| !c.passed) {
                for r in &c.reasons {
                    if !reasons.contains(r) {
                        reasons.push(r.clone());
                    }
                }
            }
        }
    }
    let explanation = json!({"scorer": scorer, "ranking": judged, "reasons": reasons,
                             "constraints": {"max_cost_minor": req.constraints.max_cost_minor,
                                             "rg_safe": req.constraints.rg_safe},
                             "high_value_minor": core.delivery.settings.high_value_minor(brand)});
    let (template_id, template_name, template_version, kind, params, value_minor, cost_minor, expires_at) =
        match &stored_row {
            Some((t, j, expires)) => (
                t.id.clone(),
                Some(t.def.name.clone()),
                t.version,
                m::wire_name(t.def.kind),
                Some(j.params.clone()),
                j.value_minor,
                j.cost_minor,
                expires.as_millisecond(),
            ),
            None => (String::new(), None, 0, String::new(), None, 0, 0, now.as_millisecond()),
        };
    let pending_send = pending_send
        .filter(|_| state == "pending_approval")
        .map(serde_json::to_string)
        .transpose()
        .map_err(anyhow::Error::from)?;
    let offer = Stored {
        offer_id,
        brand_id: brand.to_string(),
        player_id: req.player_id.clone(),
        template_id,
        template_name,
        template_version,
        kind,
        params,
        value_minor,
        cost_minor,
        currency: profile.currency.clone(),
        state: state.to_string(),
        channel: m::wire_name(req.context.channel),
        intent: req.context.intent.clone(),
        created_by: requester.to_string(),
        created_at: now.as_millisecond(),
        expires_at,
        approved_by: None,
        approved_at: None,
        explanation,
        pending_send,
    };
    sqlx::query(
        "INSERT INTO offers (offer_id, brand_id, player_id, template_id, template_version, kind, params, value_minor,
             cost_minor, currency, state, channel, intent, explanation, decision_seq, created_by, created_at,
             expires_at, updated_at, pending_send)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $17, $19)",
    )
    .bind(&offer.offer_id)
    .bind(&offer.brand_id)
    .bind(&offer.player_id)
    .bind(&offer.template_id)
    .bind(offer.template_version)
    .bind(&offer.kind)
    .bind(serde_json::to_string(&offer.params).map_err(anyhow::Error::from)?)
    .bind(offer.value_minor)
    .bind(offer.cost_minor)
    .bind(&offer.currency)
    .bind(&offer.state)
    .bind(&offer.channel)
    .bind(&offer.intent)
    .bind(offer.explanation.to_string())
    .bind(scorer["decision_seq"].as_i64())
    .bind(&offer.created_by)
    .bind(offer.created_at)
    .bind(offer.expires_at)
    .bind(&offer.pending_send)
    .execute(&mut *tx)
    .await?;
    // A new offer has no bonus yet.
    Ok(Ok(offer.shown(now.as_millisecond(), None)))
}

/// Adds `cost` to each counter of the day unless that would pass its cap: all, or none (a counter
/// that refuses undoes the ones before it). Each is one conditional upsert, exact under concurrency.
async fn reserve(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    day: &str,
    cost: i64,
    caps: &[(String, i64, &'static str)],
) -> anyhow::Result<Result<Value, (&'static str, Value)>> {
    let mut spent = Vec::new();
    for (k, (scope, limit, code)) in caps.iter().enumerate() {
        let row = if cost > *limit {
            None
        } else {
            sqlx::query(
                "INSERT INTO offer_spend (brand_id, scope, day, spent_minor) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (brand_id, scope, day) DO UPDATE SET spent_minor = offer_spend.spent_minor + excluded.spent_minor
                 WHERE offer_spend.spent_minor + excluded.spent_minor <= $5
                 RETURNING spent_minor",
            )
            .bind(brand)
            .bind(scope)
            .bind(day)
            .bind(cost)
            .bind(*limit)
            .fetch_optional(&mut *conn)
            .await?
        };
        match row {
            Some(r) => spent.push(json!({"cap": code, "spent_minor": r.try_get::<i64, _>("spent_minor")?,
                                         "limit_minor": limit})),
            None => {
                for (scope, _, _) in &caps[..k] {
                    sqlx::query(
                        "UPDATE offer_spend SET spent_minor = spent_minor - $4
                         WHERE brand_id = $1 AND scope = $2 AND day = $3",
                    )
                    .bind(brand)
                    .bind(scope)
                    .bind(day)
                    .bind(cost)
                    .execute(&mut *conn)
                    .await?;
                }
                let before: i64 = sqlx::query(
                    "SELECT spent_minor FROM offer_spend WHERE brand_id = $1 AND scope = $2 AND day = $3",
                )
                .bind(brand)
                .bind(scope)
                .bind(day)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| r.try_get("spent_minor"))
                .transpose()?
                .unwrap_or(0);
                return Ok(Err((
                    code,
                    json!({"cap": code, "spent_minor": before, "limit_minor": limit,
                                            "cost_minor": cost}),
                )));
            }
        }
    }
    Ok(Ok(json!(spent)))
}

/// An offer as stored.
struct Stored {
    offer_id: String,
    brand_id: String,
    player_id: String,
    template_id: String,
    template_name: Option<String>,
    template_version: i64,
    kind: String,
    params: Option<m::OfferParams>,
    value_minor: i64,
    cost_minor: i64,
    currency: String,
    state: String,
    channel: String,
    intent: String,
    created_by: String,
    created_at: i64,
    expires_at: i64,
    approved_by: Option<String>,
    approved_at: Option<i64>,
    explanation: Value,
    /// A message held with it until its approval ([`PendingSend`], as JSON).
    pending_send: Option<String>,
}

async fn load(conn: &mut sqlx::AnyConnection, offer_id: &str) -> anyhow::Result<Option<Stored>> {
    let row = sqlx::query(
        "SELECT o.*, t.name AS template_name FROM offers o LEFT JOIN offer_templates t ON t.id = o.template_id
         WHERE o.offer_id = $1",
    )
    .bind(offer_id)
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Stored {
        offer_id: offer_id.to_string(),
        brand_id: r.try_get("brand_id")?,
        player_id: r.try_get("player_id")?,
        template_id: r.try_get("template_id")?,
        template_name: r.try_get("template_name")?,
        template_version: r.try_get("template_version")?,
        kind: r.try_get("kind")?,
        params: serde_json::from_str(&r.try_get::<String, _>("params")?)?,
        value_minor: r.try_get("value_minor")?,
        cost_minor: r.try_get("cost_minor")?,
        currency: r.try_get("currency")?,
        state: r.try_get("state")?,
        channel: r.try_get("channel")?,
        intent: r.try_get("intent")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        approved_by: r.try_get("approved_by")?,
        approved_at: r.try_get("approved_at")?,
        explanation: serde_json::from_str(&r.try_get::<String, _>("explanation")?)?,
        pending_send: r.try_get("pending_send")?,
    }))
}

impl Stored {
    /// The state as of now: an open offer past its time is expired, whether or not it was written yet.
    fn state_now(&self, now: i64) -> &str {
        match self.state.as_str() {
            "issued" | "pending_approval" if now >= self.expires_at => "expired",
            other => other,
        }
    }

    /// The offer as the API shows it: what it is, its state, and the basis of the decision.
    fn shown(&self, now: i64, bonus_id: Option<String>) -> Value {
        let mut v = json!({
            "offer_id": self.offer_id,
            "brand_id": self.brand_id,
            "player_id": self.player_id,
            "state": self.state_now(now),
            "template": self.template_name,
            "template_version": (self.template_version > 0).then_some(self.template_version),
            "kind": Some(&self.kind).filter(|k| !k.is_empty()),
            "params": self.params.as_ref().map(params_json),
            "value_minor": self.value_minor,
            "cost_minor": self.cost_minor,
            "currency": self.currency,
            "channel": self.channel,
            "intent": self.intent,
            "created_at": crate::store::rfc3339(self.created_at),
            "expires_at": (self.state != "refused").then(|| crate::store::rfc3339(self.expires_at)),
            "approval": {
                "required": self.state == "pending_approval" || self.approved_by.is_some(),
                "approved_by": self.approved_by,
                "approved_at": self.approved_at.map(crate::store::rfc3339),
            },
            "bonus_id": bonus_id,
            "basis": self.explanation,
        });
        if self.state == "refused" {
            v["reasons"] = v["basis"]["reasons"].clone();
        }
        v
    }
}

/// The offer as the API shows it: what it is, its state, and the basis of the decision.
pub async fn shown(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    offer_id: &str,
) -> anyhow::Result<Option<Value>> {
    let Some(s) = load(conn, offer_id).await? else { return Ok(None) };
    let bonus = ledger::of_offer(conn, offer_id).await?.map(|b| b.bonus_id);
    Ok(Some(s.shown(core.clock().now_ms(), bonus)))
}

/// The offer, if the actor may see its brand.
pub async fn visible(core: &Core, actor: &Principal, offer_id: &str) -> Result<Value, OfferError> {
    let mut conn = core.db.pool.acquire().await?;
    let v = shown(core, &mut conn, offer_id).await?.ok_or(OfferError::NotFound)?;
    if !actor.may_see_brand(v["brand_id"].as_str().unwrap_or_default()) {
        return Err(OfferError::NotFound);
    }
    Ok(v)
}

/// A compliance officer other than the requester releases an offer above the high-value threshold; a
/// message held with it (a trigger's) goes to the send service then, through the gate as of now.
pub async fn approve(core: &Core, actor: &Principal, offer_id: &str) -> Result<Value, OfferError> {
    let mut conn = core.db.pool.acquire().await?;
    let s = load(&mut conn, offer_id).await?.ok_or(OfferError::NotFound)?;
    drop(conn);
    if !actor.may_see_brand(&s.brand_id) {
        return Err(OfferError::NotFound);
    }
    let now = core.clock().now_ms();
    match s.state_now(now) {
        "pending_approval" => {}
        "expired" => return Err(state_error("offer_expired", "the offer expired before it was approved")),
        other => {
            return Err(state_error("offer_not_open", format!("the offer is {other}; nothing to approve")));
        }
    }
    if actor.role != Role::Compliance || actor.holder == s.created_by {
        return Err(OfferError::FourEyes(format!(
            "an offer worth {} minor units is released by a compliance officer other than its requester ({})",
            s.value_minor, s.created_by
        )));
    }
    let pending: Option<PendingSend> =
        s.pending_send.as_deref().map(serde_json::from_str).transpose().map_err(anyhow::Error::from)?;
    let stored = match &pending {
        Some(_) => Some(core.profiles.current(&s.brand_id, &s.player_id).await?),
        None => None,
    };
    let mut tx = core.db.begin_write().await?;
    let moved = sqlx::query(
        "UPDATE offers SET state = 'issued', approved_by = $2, approved_at = $3, updated_at = $3
         WHERE offer_id = $1 AND state = 'pending_approval'",
    )
    .bind(offer_id)
    .bind(&actor.holder)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Err(state_error("offer_not_open", "the offer was approved or declined meanwhile"));
    }
    let mut sent = None;
    if let (Some(mut p), Some(stored)) = (pending, stored) {
        let key = p.idempotency_key.clone();
        let offer = shown(core, &mut tx, offer_id).await?.ok_or(OfferError::NotFound)?;
        p.request.personalization.extend(personalization(&offer));
        match crate::messaging::send_in(core, &mut tx, (&s.brand_id, &key), p.request, &stored, None).await {
            Ok(d) => sent = Some(json!({"delivery_id": d.delivery_id, "status": d.status})),
            Err(crate::messaging::SendError::Internal(e)) => return Err(e.into()),
            Err(other) => sent = Some(json!({"error": other.to_string()})),
        }
    }
    crate::audit::record(
        &mut tx,
        actor,
        "offer.approve",
        offer_id,
        std::slice::from_ref(&s.brand_id),
        json!({"value_minor": s.value_minor, "player_id": s.player_id, "sent": sent}),
    )
    .await?;
    tx.commit().await?;
    if sent.is_some() {
        core.delivery.wake.notify_one();
    }
    let mut v = visible(core, actor, offer_id).await?;
    v["sent"] = json!(sent);
    Ok(v)
}

/// The player turned the offer down.
pub async fn decline(core: &Core, actor: &Principal, offer_id: &str) -> Result<Value, OfferError> {
    let now = core.clock().now_ms();
    let mut tx = core.db.begin_write().await?;
    let s = load(&mut tx, offer_id).await?.ok_or(OfferError::NotFound)?;
    if !actor.may_see_brand(&s.brand_id) {
        return Err(OfferError::NotFound);
    }
    match s.state_now(now) {
        "issued" | "pending_approval" => {
            let moved = sqlx::query(
                "UPDATE offers SET state = 'declined', updated_at = $2
                 WHERE offer_id = $1 AND state IN ('issued', 'pending_approval')",
            )
            .bind(offer_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if moved.rows_affected() == 0 {
                return Err(state_error("offer_not_open", "the offer was accepted or approved meanwhile"));
            }
        }
        "declined" => {}
        other => return Err(state_error("offer_not_open", format!("the offer is {other}"))),
    }
    tx.commit().await?;
    visible(core, actor, offer_id).await
}

/// Accepts an offer: the bonus enters the ledger, and the platform is told to grant it (for a deposit
/// match or a reload, once the deposit arrives). Idempotent: accepting again answers the same bonus.
pub async fn accept(core: &Core, actor: &Principal, offer_id: &str) -> Result<(bool, Value), OfferError> {
    let mut conn = core.db.pool.acquire().await?;
    let s = load(&mut conn, offer_id).await?.ok_or(OfferError::NotFound)?;
    if !actor.may_see_brand(&s.brand_id) {
        return Err(OfferError::NotFound);
    }
    if let Some(b) = ledger::of_offer(&mut conn, offer_id).await? {
        return Ok((false, ledger::shown(&mut conn, &b).await?));
    }
    drop(conn);
    let now = core.clock().now();
    let now_ms = now.as_millisecond();
    match s.state_now(now_ms) {
        "issued" => {}
        "pending_approval" => {
            return Err(state_error("offer_pending_approval", "the offer waits for a compliance approval"));
        }
        "expired" => return Err(state_error("offer_expired", "the offer expired")),
        other => return Err(state_error("offer_not_open", format!("the offer is {other}"))),
    }
    // The player's RG state now: a player excluded since the offer gets no bonus.
    let profile =
        core.profiles.current(&s.brand_id, &s.player_id).await?.at(&s.brand_id, &s.player_id, now).profile;
    if let Some(codes) = gate::rg_codes(&profile) {
        return Err(state_error("rg_blocked", format!("the player may not receive a bonus now: {codes}")));
    }
    let mut tx = core.db.begin_write().await?;
    let def = templates::version(&mut tx, &s.template_id, s.template_version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("offer {offer_id}: template version gone"))?;
    if let Some(g) = &def.conflict_group {
        let live = ledger::of_player(&mut tx, &s.brand_id, &s.player_id, true).await?;
        if let Some(other) = live.iter().find(|b| b.conflict_group.as_ref() == Some(g)) {
            return Err(state_error(
                "bonus_conflict",
                format!("the player holds bonus {} of group {g}", other.bonus_id),
            ));
        }
    }
    // Of concurrent acceptances, one moves the offer; the others find its bonus.
    let moved = sqlx::query(
        "UPDATE offers SET state = 'accepted', updated_at = $2 WHERE offer_id = $1 AND state = 'issued' AND expires_at > $2",
    )
    .bind(offer_id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        tx.rollback().await?;
        let mut conn = core.db.pool.acquire().await?;
        return match ledger::of_offer(&mut conn, offer_id).await? {
            Some(b) => Ok((false, ledger::shown(&mut conn, &b).await?)),
            None => Err(state_error("offer_not_open", "the offer is no longer open")),
        };
    }
    let p = s.params.clone().ok_or_else(|| anyhow::anyhow!("offer {offer_id} has no parameters"))?;
    let amount = match def.kind {
        OfferKind::Cashback | OfferKind::Mission => p.cap_minor,
        OfferKind::FreeSpins => def.value_minor(&p),
        // Known once the deposit arrives (the bonus engine grants it then).
        OfferKind::DepositMatch | OfferKind::Reload => 0,
    };
    let mut b = Bonus {
        bonus_id: new_id("bn")?,
        brand_id: s.brand_id.clone(),
        player_id: s.player_id.clone(),
        offer_id: offer_id.to_string(),
        template: def.name.clone(),
        template_version: s.template_version,
        conflict_group: def.conflict_group.clone(),
        state: State::Issued,
        terms: BonusTerms {
            kind: def.kind,
            products: def.products.clone(),
            percent: p.percent,
            cap_minor: p.cap_minor,
            wager_multiplier: p.wager_multiplier,
            spins: p.spins,
            max_bet_minor: def.terms.max_bet_minor,
            max_bet_breach: def.terms.max_bet_breach,
            max_cashout_minor: def.terms.max_cashout_minor,
            contributions: def.terms.contributions.clone(),
            forfeit_on_withdrawal: def.terms.forfeit_on_withdrawal,
            bonus_validity_days: def.terms.bonus_validity_days,
        },
        currency: s.currency.clone(),
        granted_minor: amount,
        wagering_required_minor: amount.saturating_mul(i64::from(p.wager_multiplier)),
        wagering_done_minor: 0,
        contributions: Default::default(),
        granted_at: None,
        expires_at: (now + SignedDuration::from_hours(24 * i64::from(def.terms.bonus_validity_days)))
            .as_millisecond(),
        created_at: now_ms,
        updated_at: now_ms,
        rev: 0,
    };
    // One live bonus per conflict group (a unique index): a concurrent acceptance of another offer of
    // the group loses here.
    match ledger::insert_in(&mut tx, &b, &s.template_id).await {
        Ok(true) => {}
        Ok(false) => return Err(state_error("offer_not_open", "the offer has a bonus already")),
        Err(e) if format!("{e:#}").to_lowercase().contains("unique") => {
            return Err(state_error("bonus_conflict", "the player holds a live bonus of the same group"));
        }
        Err(e) => return Err(e.into()),
    }
    if amount > 0 {
        super::calls::queue_in(&mut tx, &b, "grant", now_ms).await?;
    }
    tx.commit().await?;
    b.state = State::Issued;
    let mut conn = core.db.pool.acquire().await?;
    Ok((true, ledger::shown(&mut conn, &b).await?))
}

/// The offers made to a player, newest first.
pub async fn of_player(core: &Core, brand: &str, player: &str, limit: i64) -> anyhow::Result<Vec<Value>> {
    let mut conn = core.db.pool.acquire().await?;
    let ids: Vec<String> = sqlx::query(
        "SELECT offer_id FROM offers WHERE brand_id = $1 AND player_id = $2 ORDER BY created_at DESC, offer_id LIMIT $3",
    )
    .bind(brand)
    .bind(player)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("offer_id"))
    .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(v) = shown(core, &mut conn, &id).await? {
            out.push(v);
        }
    }
    Ok(out)
}
