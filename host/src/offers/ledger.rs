//! The bonus ledger: each accepted offer is a bonus with its terms, and the ledger is the only place a
//! bonus's state and wagering change. States move forward only — issued → active → completed |
//! forfeited | expired, locked while a withdrawal is pending — and every move is kept with its event,
//! the plugin version that proposed it and its reason. A move that ends or starts a bonus goes back on
//! the bus as a host event (`bonus.activated`, `bonus.completed`, `bonus.forfeited`, `bonus.lapsed`)
//! and, when the platform's wallet must act, into the outbox of platform calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::templates::Breach;
use crate::model::{self as m, OfferKind, Product};

/// The terms a bonus was granted under, copied from its offer and template at acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BonusTerms {
    pub kind: OfferKind,
    pub products: Vec<Product>,
    pub percent: u32,
    pub cap_minor: i64,
    pub wager_multiplier: u32,
    pub spins: u32,
    pub max_bet_minor: Option<i64>,
    pub max_bet_breach: Breach,
    pub max_cashout_minor: Option<i64>,
    /// Percent of a stake that counts, by category; empty: the bonus rule's table.
    pub contributions: BTreeMap<String, u32>,
    pub forfeit_on_withdrawal: bool,
    pub bonus_validity_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Issued,
    Active,
    Locked,
    Completed,
    Forfeited,
    Expired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Issued => "issued",
            State::Active => "active",
            State::Locked => "locked",
            State::Completed => "completed",
            State::Forfeited => "forfeited",
            State::Expired => "expired",
        }
    }

    fn parse(s: &str) -> anyhow::Result<State> {
        Ok(serde_json::from_value(json!(s))?)
    }

    /// Not ended yet.
    pub fn live(self) -> bool {
        matches!(self, State::Issued | State::Active | State::Locked)
    }

    /// Forward only: an ended bonus never moves again.
    pub fn may_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Issued, Issued | Active | Forfeited | Expired)
                | (Active, Active | Locked | Completed | Forfeited | Expired)
                | (Locked, Active | Locked | Forfeited | Expired)
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Bonus {
    pub bonus_id: String,
    #[serde(skip)]
    pub brand_id: String,
    pub player_id: String,
    pub offer_id: String,
    pub template: String,
    pub template_version: i64,
    pub conflict_group: Option<String>,
    pub state: State,
    pub terms: BonusTerms,
    pub currency: String,
    pub granted_minor: i64,
    pub wagering_required_minor: i64,
    pub wagering_done_minor: i64,
    /// Minor units counted towards wagering so far, by game category.
    pub contributions: BTreeMap<String, i64>,
    pub granted_at: Option<i64>,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(skip)]
    pub rev: i64,
}

impl Bonus {
    pub fn remaining_minor(&self) -> i64 {
        (self.wagering_required_minor - self.wagering_done_minor).max(0)
    }

    /// As a bonus rule sees it (an active bonus).
    pub fn as_state(&self) -> anyhow::Result<m::BonusState> {
        let ts = |ms: i64| jiff::Timestamp::from_millisecond(ms);
        Ok(m::BonusState {
            bonus_id: self.bonus_id.clone(),
            template: self.template.clone(),
            status: m::BonusStatus::Active,
            granted: m::Money { amount_minor: self.granted_minor, currency: self.currency.clone() },
            wagering_required_minor: self.wagering_required_minor,
            wagering_done_minor: self.wagering_done_minor,
            max_bet_minor: self.terms.max_bet_minor,
            granted_at: ts(self.granted_at.unwrap_or(self.created_at))?,
            expires_at: ts(self.expires_at)?,
        })
    }
}

const COLUMNS: &str = "b.bonus_id, b.brand_id, b.player_id, b.offer_id, b.template_version, b.conflict_group,
    b.state, b.terms, b.currency, b.granted_minor, b.wagering_required_minor, b.wagering_done_minor,
    b.contributions, b.granted_at, b.expires_at, b.created_at, b.updated_at, b.rev, t.name AS template";

const FROM: &str = "bonuses b JOIN offer_templates t ON t.id = b.template_id";

fn bonus_of(r: &sqlx::any::AnyRow) -> anyhow::Result<Bonus> {
    Ok(Bonus {
        bonus_id: r.try_get("bonus_id")?,
        brand_id: r.try_get("brand_id")?,
        player_id: r.try_get("player_id")?,
        offer_id: r.try_get("offer_id")?,
        template: r.try_get("template")?,
        template_version: r.try_get("template_version")?,
        conflict_group: r.try_get("conflict_group")?,
        state: State::parse(&r.try_get::<String, _>("state")?)?,
        terms: serde_json::from_str(&r.try_get::<String, _>("terms")?)?,
        currency: r.try_get("currency")?,
        granted_minor: r.try_get("granted_minor")?,
        wagering_required_minor: r.try_get("wagering_required_minor")?,
        wagering_done_minor: r.try_get("wagering_done_minor")?,
        contributions: serde_json::from_str(&r.try_get::<String, _>("contributions")?)?,
        granted_at: r.try_get("granted_at")?,
        expires_at: r.try_get("expires_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        rev: r.try_get("rev")?,
    })
}

pub async fn get(conn: &mut sqlx::AnyConnection, bonus_id: &str) -> anyhow::Result<Option<Bonus>> {
    let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE b.bonus_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(bonus_id).fetch_optional(conn).await?;
    row.as_ref().map(bonus_of).transpose()
}

pub async fn of_offer(conn: &mut sqlx::AnyConnection, offer_id: &str) -> anyhow::Result<Option<Bonus>> {
    let sql = format!("SELECT {COLUMNS} FROM {FROM} WHERE b.offer_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(offer_id).fetch_optional(conn).await?;
    row.as_ref().map(bonus_of).transpose()
}

/// The player's bonuses, newest first; `live_only`: those not ended.
pub async fn of_player(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    player: &str,
    live_only: bool,
) -> anyhow::Result<Vec<Bonus>> {
    let live = if live_only { "AND b.state IN ('issued', 'active', 'locked')" } else { "" };
    let sql = format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE b.brand_id = $1 AND b.player_id = $2 {live}
         ORDER BY b.created_at DESC, b.bonus_id LIMIT 500"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(player).fetch_all(conn).await?;
    rows.iter().map(bonus_of).collect()
}

/// The live bonuses of many players of a brand (a bus consumer's batch), by player, in one query.
pub async fn live_of_players(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    players: &[String],
) -> anyhow::Result<std::collections::HashMap<String, Vec<Bonus>>> {
    let which = crate::store::Players::List(players);
    let sql = format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE b.brand_id = $1 AND b.state IN ('issued', 'active', 'locked') AND b.{}
         ORDER BY b.created_at, b.bonus_id",
        which.condition(crate::store::Backend::of(conn), 2)
    );
    let rows = which.bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand)).fetch_all(conn).await?;
    let mut out: std::collections::HashMap<String, Vec<Bonus>> = Default::default();
    for r in &rows {
        let b = bonus_of(r)?;
        out.entry(b.player_id.clone()).or_default().push(b);
    }
    Ok(out)
}

/// Writes a new bonus (state issued) with its first move; false if the offer already has one.
pub async fn insert_in(conn: &mut sqlx::AnyConnection, b: &Bonus, template_id: &str) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO bonuses (bonus_id, brand_id, player_id, offer_id, template_id, template_version, kind,
             conflict_group, state, terms, currency, granted_minor, wagering_required_minor, wagering_done_minor,
             contributions, granted_at, expires_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)
         ON CONFLICT (offer_id) DO NOTHING",
    )
    .bind(&b.bonus_id)
    .bind(&b.brand_id)
    .bind(&b.player_id)
    .bind(&b.offer_id)
    .bind(template_id)
    .bind(b.template_version)
    .bind(crate::model::wire_name(b.terms.kind))
    .bind(&b.conflict_group)
    .bind(b.state.name())
    .bind(serde_json::to_string(&b.terms)?)
    .bind(&b.currency)
    .bind(b.granted_minor)
    .bind(b.wagering_required_minor)
    .bind(b.wagering_done_minor)
    .bind(serde_json::to_string(&b.contributions)?)
    .bind(b.granted_at)
    .bind(b.expires_at)
    .bind(b.created_at)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let first = Move::new("issue", State::Issued, "offer accepted").amount(b.granted_minor);
    record_move(conn, b, None, &first, b.created_at).await?;
    Ok(true)
}

/// One move of a bonus: what changed, why, and on what basis.
#[derive(Debug, Clone, Default)]
pub struct Move {
    pub action: &'static str,
    pub to: Option<State>,
    pub amount_minor: Option<i64>,
    pub event_id: Option<String>,
    pub plugin_id: Option<String>,
    pub decision_seq: Option<i64>,
    pub reason: String,
    pub detail: Option<Value>,
}

impl Move {
    pub fn new(action: &'static str, to: State, reason: impl Into<String>) -> Move {
        Move { action, to: Some(to), reason: reason.into(), ..Move::default() }
    }

    pub fn amount(mut self, minor: i64) -> Move {
        self.amount_minor = Some(minor);
        self
    }

    pub fn event(mut self, event_id: &str) -> Move {
        self.event_id = Some(event_id.to_string());
        self
    }

    pub fn detail(mut self, detail: Value) -> Move {
        self.detail = Some(detail);
        self
    }
}

async fn record_move(
    conn: &mut sqlx::AnyConnection,
    b: &Bonus,
    from: Option<State>,
    mv: &Move,
    at: i64,
) -> anyhow::Result<()> {
    let to = mv.to.unwrap_or(b.state);
    sqlx::query(
        "INSERT INTO bonus_moves (bonus_id, seq, action, from_state, to_state, amount_minor, event_id, plugin_id,
             decision_seq, reason, detail, at)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM bonus_moves WHERE bonus_id = $1), $2, $3, $4, $5, $6,
             $7, $8, $9, $10, $11)",
    )
    .bind(&b.bonus_id)
    .bind(mv.action)
    .bind(from.map(State::name))
    .bind(to.name())
    .bind(mv.amount_minor)
    .bind(&mv.event_id)
    .bind(&mv.plugin_id)
    .bind(mv.decision_seq)
    .bind(&mv.reason)
    .bind(mv.detail.as_ref().map(Value::to_string))
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Keeps a note on the bonus (a refused action, with its reason) without moving it.
pub async fn note_in(conn: &mut sqlx::AnyConnection, b: &Bonus, mv: &Move, at: i64) -> anyhow::Result<()> {
    let note = Move { to: Some(b.state), ..mv.clone() };
    record_move(conn, b, Some(b.state), &note, at).await
}

/// Applies a move to `b` (already changed in memory by the caller: wagering, amounts) and writes the
/// bonus, the move, and — when the bonus starts or ends — its host event and the platform call.
/// Refuses a move backwards.
pub async fn apply_in(
    conn: &mut sqlx::AnyConnection,
    b: &mut Bonus,
    from: State,
    mv: &Move,
    at: i64,
) -> anyhow::Result<()> {
    let to = mv.to.unwrap_or(from);
    anyhow::ensure!(
        from.may_become(to),
        "bonus {} cannot move from {} to {}",
        b.bonus_id,
        from.name(),
        to.name()
    );
    let done = sqlx::query(
        "UPDATE bonuses SET state = $2, granted_minor = $3, wagering_required_minor = $4, wagering_done_minor = $5,
             contributions = $6, granted_at = $7, expires_at = $8, updated_at = $9, rev = rev + 1
         WHERE bonus_id = $1 AND rev = $10",
    )
    .bind(&b.bonus_id)
    .bind(to.name())
    .bind(b.granted_minor)
    .bind(b.wagering_required_minor)
    .bind(b.wagering_done_minor)
    .bind(serde_json::to_string(&b.contributions)?)
    .bind(b.granted_at)
    .bind(b.expires_at)
    .bind(at)
    .bind(b.rev)
    .execute(&mut *conn)
    .await?;
    // Another writer moved the bonus since it was read: the caller's transaction fails and is retried
    // on what is there now.
    anyhow::ensure!(done.rows_affected() == 1, "bonus {} moved meanwhile", b.bonus_id);
    (b.state, b.updated_at, b.rev) = (to, at, b.rev + 1);
    record_move(conn, b, Some(from), mv, at).await?;
    if to != from {
        let (event, call) = match to {
            State::Active if from == State::Issued => (Some(m::EventType::BonusActivated), None),
            State::Completed => (Some(m::EventType::BonusCompleted), Some("release")),
            State::Forfeited => (Some(m::EventType::BonusForfeited), Some("forfeit")),
            State::Expired => (Some(m::EventType::BonusLapsed), Some("forfeit")),
            _ => (None, None),
        };
        if let Some(event) = event {
            emit(conn, b, event, from, &mv.reason, at).await?;
        }
        if let Some(kind) = call.filter(|_| b.granted_at.is_some()) {
            super::calls::queue_in(conn, b, kind, at).await?;
        } else if call.is_some() {
            // Ended before the platform granted it: its grant is not posted (one in flight is undone
            // by a forfeit when its answer comes).
            super::calls::cancel_grant_in(conn, b, &mv.reason).await?;
        }
    }
    Ok(())
}

/// Writes a `bonus.*` host event to the log, for triggers and journeys.
async fn emit(
    conn: &mut sqlx::AnyConnection,
    b: &Bonus,
    event_type: m::EventType,
    from: State,
    reason: &str,
    at: i64,
) -> anyhow::Result<()> {
    let payload = serde_json::to_string(&m::EventPayload::Bonus(m::BonusChange {
        bonus_id: b.bonus_id.clone(),
        template: b.template.clone(),
        from: from.name().to_string(),
        to: b.state.name().to_string(),
        reason: reason.to_string(),
        granted: m::Money { amount_minor: b.granted_minor, currency: b.currency.clone() },
    }))?;
    let name = m::wire_name(event_type);
    sqlx::query(
        "INSERT INTO events (brand_id, event_id, player_id, event_type, occurred_at, received_at, trace_id, payload, body_hash)
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8) ON CONFLICT (brand_id, event_id) DO NOTHING",
    )
    .bind(&b.brand_id)
    .bind(format!("{name}:{}", b.bonus_id))
    .bind(&b.player_id)
    .bind(&name)
    .bind(at)
    .bind(crate::store::now_ms())
    .bind(&payload)
    .bind(hex::encode(Sha256::digest(payload.as_bytes())))
    .execute(conn)
    .await?;
    Ok(())
}

/// A bonus's history, oldest first.
pub async fn moves(conn: &mut sqlx::AnyConnection, bonus_id: &str) -> anyhow::Result<Vec<Value>> {
    let rows = sqlx::query(
        "SELECT seq, action, from_state, to_state, amount_minor, event_id, plugin_id, decision_seq, reason, detail, at
         FROM bonus_moves WHERE bonus_id = $1 ORDER BY seq",
    )
    .bind(bonus_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let detail: Option<String> = r.try_get("detail")?;
            Ok(json!({
                "seq": r.try_get::<i64, _>("seq")?,
                "action": r.try_get::<String, _>("action")?,
                "from": r.try_get::<Option<String>, _>("from_state")?,
                "to": r.try_get::<String, _>("to_state")?,
                "amount_minor": r.try_get::<Option<i64>, _>("amount_minor")?,
                "event_id": r.try_get::<Option<String>, _>("event_id")?,
                "plugin_id": r.try_get::<Option<String>, _>("plugin_id")?,
                "decision_seq": r.try_get::<Option<i64>, _>("decision_seq")?,
                "reason": r.try_get::<String, _>("reason")?,
                "detail": detail.map(|d| serde_json::from_str::<Value>(&d)).transpose()?,
                "at": crate::store::rfc3339(r.try_get("at")?),
            }))
        })
        .collect()
}

/// The bonus as the player sees it: the terms in plain fields, wagering required, done and remaining,
/// what each game category contributed, the deadline, the state and the history.
pub async fn shown(conn: &mut sqlx::AnyConnection, b: &Bonus) -> anyhow::Result<Value> {
    let mut v = json!(b);
    v["wagering_remaining_minor"] = json!(b.remaining_minor());
    v["expires_at"] = json!(crate::store::rfc3339(b.expires_at));
    v["granted_at"] = json!(b.granted_at.map(crate::store::rfc3339));
    v["created_at"] = json!(crate::store::rfc3339(b.created_at));
    v["updated_at"] = json!(crate::store::rfc3339(b.updated_at));
    v["history"] = json!(moves(conn, &b.bonus_id).await?);
    Ok(v)
}
