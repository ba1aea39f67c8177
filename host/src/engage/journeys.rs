//! Journeys: a state graph per brand, versioned like triggers. A player enters (from a trigger) on the
//! journey's active version and finishes that version, whatever versions come after. Nodes: `wait` (a
//! duration; until an event, with a timeout; until a local time of day in the player's zone), `check`
//! (a segment rule and/or conditions), `send` (through the one send service, so through the gate),
//! `branch` (the first case whose conditions hold), `exit`.
//!
//! A run stores the node it will take next and when (`due_at`); the scheduler takes due runs under a
//! lease and moves each step only from the step it read, in the transaction that writes the step's
//! send, so no step runs twice — across restarts and with two hosts on one database. The `engage`
//! consumer moves runs on events: a wait's event, an exit event, and an RG block or self-exclusion,
//! which ends every run of the player at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::conditions::{self, Condition, Facts};
use super::triggers::{OfferAction, RuleVerdict, SendAction, ask_rule, check_send};
use crate::auth::Principal;
use crate::core::Core;
use crate::defs::{self, DefError, Head, JOURNEYS, Traits, invalid};
use crate::model::{self as m, EventType};
use crate::store::{Backend, Db};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The first node.
    pub start: String,
    pub nodes: BTreeMap<String, Node>,
    #[serde(default)]
    pub entry: Entry,
    /// Events that end a player's run at once (a deposit, an unsubscribe, a complaint).
    #[serde(default)]
    pub exit_on: Vec<EventType>,
    #[serde(default, skip_serializing)]
    pub brand_id: Option<String>,
}

/// Who may enter: once ever (default), or again once `again_after_days` passed since the last entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    pub again_after_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// `minutes` alone: a duration. With `until_event`: until one of those events (→ `on_event`), or
    /// `minutes` (→ `next`). `until_local_time` ("09:00"): the next such time in the player's zone.
    Wait {
        #[serde(default)]
        minutes: Option<u32>,
        #[serde(default)]
        until_event: Vec<EventType>,
        #[serde(default)]
        on_event: Option<String>,
        #[serde(default)]
        until_local_time: Option<String>,
        next: String,
    },
    /// A segment rule's decision (its slot) and/or conditions: `then` when all hold, else `else`.
    Check {
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        conditions: Vec<Condition>,
        then: String,
        #[serde(rename = "else")]
        otherwise: String,
    },
    Send {
        message: SendAction,
        next: String,
    },
    /// An offer from the offer service, sent with `offer.send`'s template (as a trigger's `offer` action).
    Offer {
        offer: OfferAction,
        next: String,
    },
    /// The first case whose conditions hold, else `default`.
    Branch {
        cases: Vec<Case>,
        default: String,
    },
    Exit {
        #[serde(default)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub conditions: Vec<Condition>,
    pub next: String,
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Wait { .. } => "wait",
            Node::Check { .. } => "check",
            Node::Send { .. } => "send",
            Node::Offer { .. } => "offer",
            Node::Branch { .. } => "branch",
            Node::Exit { .. } => "exit",
        }
    }

    /// The nodes it may lead to, and whether it waits before going on.
    fn edges(&self) -> (Vec<&str>, bool) {
        match self {
            Node::Wait { on_event, next, .. } => {
                (std::iter::once(next.as_str()).chain(on_event.as_deref()).collect(), true)
            }
            Node::Check { then, otherwise, .. } => (vec![then, otherwise], false),
            Node::Send { next, .. } | Node::Offer { next, .. } => (vec![next], false),
            Node::Branch { cases, default } => {
                (cases.iter().map(|c| c.next.as_str()).chain([default.as_str()]).collect(), false)
            }
            Node::Exit { .. } => (vec![], false),
        }
    }
}

const MAX_NODES: usize = 50;
/// Steps one run may take in all (a loop through a wait ends here).
const MAX_RUN_STEPS: i64 = 500;

/// "HH:MM" as minutes of the day.
fn local_minute(s: &str) -> Option<u16> {
    crate::policy::gate::minute_of_day(s)
}

async fn check(core: &Core, brand: &str, def: &JourneyDef) -> Result<Traits, DefError> {
    defs::check_name("name", &def.name)?;
    if def.description.chars().count() > 500 {
        return Err(invalid("description", "at most 500 characters"));
    }
    if def.nodes.is_empty() || def.nodes.len() > MAX_NODES {
        return Err(invalid("nodes", format!("1 to {MAX_NODES} nodes")));
    }
    if !def.nodes.contains_key(&def.start) {
        return Err(invalid("start", format!("no node `{}`", def.start)));
    }
    if def.entry.again_after_days.is_some_and(|d| d == 0 || d > 3650) {
        return Err(invalid("entry.again_after_days", "1 to 3650"));
    }
    if def.exit_on.len() > 20 {
        return Err(invalid("exit_on", "at most 20 event types"));
    }
    for (name, node) in &def.nodes {
        defs::check_name(&format!("nodes.{name}"), name)?;
        let field = format!("nodes.{name}");
        for to in node.edges().0 {
            if !def.nodes.contains_key(to) {
                return Err(invalid(&field, format!("leads to `{to}`, which is not a node")));
            }
        }
        match node {
            Node::Wait { minutes, until_event, on_event, until_local_time, .. } => {
                let ok = match (minutes, until_event.is_empty(), until_local_time) {
                    (Some(m), true, None) => (1..=525_600).contains(m) && on_event.is_none(),
                    (Some(m), false, None) => (1..=525_600).contains(m) && on_event.is_some(),
                    (None, true, Some(t)) => local_minute(t).is_some() && on_event.is_none(),
                    _ => false,
                };
                if !ok {
                    return Err(invalid(
                        &field,
                        "a wait is `minutes` (1–525600); or `until_event` with `on_event` and `minutes` as \
                         its timeout; or `until_local_time` (\"HH:MM\")",
                    ));
                }
            }
            Node::Check { rule, conditions, .. } => {
                if let Some(r) = rule {
                    defs::check_name(&format!("{field}.rule"), r)?;
                }
                if rule.is_none() && conditions.is_empty() {
                    return Err(invalid(&field, "a check needs a rule or conditions"));
                }
                conditions::check(conditions).map_err(|e| invalid(&field, e))?;
            }
            Node::Send { message, .. } => {
                check_send(core, brand, message, &format!("{field}.message")).await?;
            }
            Node::Offer { offer, .. } => {
                super::triggers::check_offer(core, brand, offer, &format!("{field}.offer")).await?;
            }
            Node::Branch { cases, .. } => {
                if cases.is_empty() || cases.len() > 20 {
                    return Err(invalid(&field, "1 to 20 cases"));
                }
                for c in cases {
                    conditions::check(&c.conditions).map_err(|e| invalid(&field, e))?;
                }
            }
            Node::Exit { reason } => {
                if reason.as_ref().is_some_and(|r| r.chars().count() > 200) {
                    return Err(invalid(&field, "a reason of at most 200 characters"));
                }
            }
        }
    }
    if let Some(start) = never_waits(def) {
        return Err(invalid("nodes", format!("a loop through `{start}` never waits")));
    }
    let threshold = core.delivery.settings.high_value_minor(brand);
    let sensitive = def.nodes.values().any(|n| match n {
        Node::Send { message, .. } => message.value_minor.is_some_and(|v| v > threshold),
        Node::Offer { offer, .. } => offer.value_minor().is_some_and(|v| v > threshold),
        _ => false,
    });
    Ok(Traits { marketing: true, sensitive })
}

/// A node on a loop that never waits (one step would never end), if there is one: a cycle of the
/// graph without its waits' edges (depth-first, each node once).
fn never_waits(def: &JourneyDef) -> Option<&str> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = def.nodes.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let onward = |n: &str| -> Vec<&str> {
        match def.nodes.get(n).map(Node::edges) {
            Some((next, false)) => next,
            _ => Vec::new(),
        }
    };
    for start in def.nodes.keys() {
        if marks[start.as_str()] != Mark::New {
            continue;
        }
        // (node, its next edge to look at)
        let mut path: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        marks.insert(start.as_str(), Mark::OnPath);
        while let Some((node, i)) = path.last().copied() {
            let next = onward(node);
            if i == next.len() {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            }
            path.last_mut().expect("non-empty").1 += 1;
            let to = next[i];
            match marks.get(to).copied() {
                Some(Mark::OnPath) => {
                    return Some(def.nodes.get_key_value(to).map_or(to, |(k, _)| k.as_str()));
                }
                Some(Mark::New) => {
                    marks.insert(to, Mark::OnPath);
                    path.push((to, 0));
                }
                _ => {}
            }
        }
    }
    None
}

pub async fn save(
    core: &Core,
    actor: &Principal,
    brand: &str,
    existing: Option<&Head>,
    def: &JourneyDef,
) -> Result<(Head, i64), DefError> {
    let traits = check(core, brand, def).await?;
    let definition = serde_json::to_value(def).map_err(anyhow::Error::from)?;
    defs::save(core, JOURNEYS, actor, brand, existing, (&def.name, &definition, traits)).await
}

/// Pauses or resumes a journey (audited): paused, no step runs and no one enters; players stay where
/// they are.
pub async fn set_paused(
    db: &Db,
    actor: &Principal,
    id: &str,
    paused: bool,
    now: i64,
) -> Result<(), DefError> {
    let head = defs::visible(db, JOURNEYS, actor, id).await?;
    let mut tx = db.begin_write().await?;
    sqlx::query("UPDATE journeys SET paused = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(i64::from(paused))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let action = if paused { "journey.pause" } else { "journey.resume" };
    crate::audit::record(&mut tx, actor, action, id, &[head.brand_id], json!({})).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn is_paused(conn: &mut sqlx::AnyConnection, id: &str) -> anyhow::Result<bool> {
    let row = sqlx::query("SELECT paused FROM journeys WHERE id = $1").bind(id).fetch_optional(conn).await?;
    Ok(row.map(|r| r.try_get::<i64, _>("paused")).transpose()?.unwrap_or(0) != 0)
}

/// A player's place in a journey.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub journey_id: String,
    pub version: i64,
    pub brand_id: String,
    pub player_id: String,
    /// The node taken next, when `due_at` comes (or a waited-for event arrives).
    pub node: String,
    pub step: i64,
    pub state: String,
    pub due_at: Option<i64>,
    pub waiting_for: Option<Value>,
    pub entered_at: i64,
    pub entered_via: String,
    pub entered_seq: i64,
    pub entered_tx: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub exit_reason: Option<String>,
}

const RUN_COLUMNS: &str = "id, journey_id, version, brand_id, player_id, node, step, state, due_at, waiting_for, entered_at, entered_via, entered_seq, entered_tx, updated_at, ended_at, exit_reason";

fn run_of(r: &sqlx::any::AnyRow) -> anyhow::Result<Run> {
    Ok(Run {
        id: r.try_get("id")?,
        journey_id: r.try_get("journey_id")?,
        version: r.try_get("version")?,
        brand_id: r.try_get("brand_id")?,
        player_id: r.try_get("player_id")?,
        node: r.try_get("node")?,
        step: r.try_get("step")?,
        state: r.try_get("state")?,
        due_at: r.try_get("due_at")?,
        waiting_for: r
            .try_get::<Option<String>, _>("waiting_for")?
            .map(|s| serde_json::from_str(&s))
            .transpose()?,
        entered_at: r.try_get("entered_at")?,
        entered_via: r.try_get("entered_via")?,
        entered_seq: r.try_get("entered_seq")?,
        entered_tx: r.try_get("entered_tx")?,
        updated_at: r.try_get("updated_at")?,
        ended_at: r.try_get("ended_at")?,
        exit_reason: r.try_get("exit_reason")?,
    })
}

pub(super) async fn definition(
    conn: &mut sqlx::AnyConnection,
    journey: &str,
    version: i64,
) -> anyhow::Result<JourneyDef> {
    let v = defs::version(conn, JOURNEYS, journey, version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("journey {journey} has no version {version}"))?;
    Ok(serde_json::from_value(v.definition)?)
}

/// Enters a player in a journey in the caller's transaction: its active version, at its start, due at
/// once. The run's id, or why the player did not enter.
pub async fn enter(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    (brand, player): (&str, &str),
    name: &str,
    profile: &m::Profile,
    (via, at): (&str, crate::bus::Position),
) -> anyhow::Result<Result<String, String>> {
    let Some(head) = defs::by_name(conn, JOURNEYS, brand, name).await? else {
        return Ok(Err(format!("no journey `{name}`")));
    };
    let Some(version) = head.active_version else {
        return Ok(Err(format!("journey `{name}` is not active")));
    };
    if is_paused(conn, &head.id).await? {
        return Ok(Err(format!("journey `{name}` is paused")));
    }
    if let Some(codes) = crate::policy::gate::rg_codes(profile) {
        return Ok(Err(format!("RG blocks marketing ({codes})")));
    }
    let def = match definition(conn, &head.id, version).await {
        Ok(def) => def,
        Err(e) => return Ok(Err(format!("journey `{name}` version {version} does not read: {e:#}"))),
    };
    let now = core.clock().now_ms();
    let last = sqlx::query(
        "SELECT state, entered_at FROM journey_runs WHERE journey_id = $1 AND brand_id = $2 AND player_id = $3
         ORDER BY entered_at DESC LIMIT 1",
    )
    .bind(&head.id)
    .bind(brand)
    .bind(player)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = last {
        let (state, at): (String, i64) = (r.try_get("state")?, r.try_get("entered_at")?);
        let since = jiff::Timestamp::from_millisecond(at)?;
        if state == "active" {
            return Ok(Err(format!("already in journey `{name}` since {since}")));
        }
        match def.entry.again_after_days {
            None => {
                return Ok(Err(format!("entered journey `{name}` before ({since}); it is once per player")));
            }
            Some(days) if now - at < i64::from(days) * 86_400_000 => {
                return Ok(Err(format!("entered journey `{name}` at {since}; again after {days} days")));
            }
            Some(_) => {}
        }
    }
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| anyhow::anyhow!("{e}"))?;
    let id = format!("jr_{}", hex::encode(rnd));
    sqlx::query(
        "INSERT INTO journey_runs (id, journey_id, version, brand_id, player_id, node, step, state, due_at,
             entered_at, entered_via, entered_seq, entered_tx, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, 'active', $7, $7, $8, $9, $10, $7)",
    )
    .bind(&id)
    .bind(&head.id)
    .bind(version)
    .bind(brand)
    .bind(player)
    .bind(&def.start)
    .bind(now)
    .bind(via)
    .bind(at.seq)
    .bind(at.tx)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(id))
}

/// What one step did, as `journey_steps` keeps it.
#[derive(Debug, Clone, Default)]
pub(super) struct StepRecord {
    pub kind: &'static str,
    pub delivery_id: Option<String>,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub detail: Value,
}

/// Where a run goes after a step.
pub(super) enum Next {
    Node { node: String, due_at: i64, waiting_for: Option<Value> },
    End { state: &'static str, reason: String },
}

/// A run that ends as exited: the step that says why, and the end.
fn exited(reason: String, detail: Value) -> (StepRecord, Next) {
    let rec = StepRecord { kind: "exit", reason: Some(reason.clone()), detail, ..Default::default() };
    (rec, Next::End { state: "exited", reason })
}

/// Moves a run from `step` (the one read) and writes the step; false if someone else moved it first.
async fn advance(
    conn: &mut sqlx::AnyConnection,
    run: &Run,
    node: &str,
    rec: &StepRecord,
    next: &Next,
    now: i64,
) -> anyhow::Result<bool> {
    let moved = match next {
        Next::Node { node, due_at, waiting_for } => {
            sqlx::query(
                "UPDATE journey_runs SET node = $3, step = step + 1, due_at = $4, waiting_for = $5, updated_at = $6
                 WHERE id = $1 AND step = $2 AND state = 'active'",
            )
            .bind(&run.id)
            .bind(run.step)
            .bind(node)
            .bind(due_at)
            .bind(waiting_for.as_ref().map(Value::to_string))
            .bind(now)
            .execute(&mut *conn)
            .await?
        }
        Next::End { state, reason } => {
            sqlx::query(
                "UPDATE journey_runs SET state = $3, step = step + 1, due_at = NULL, waiting_for = NULL,
                     updated_at = $5, ended_at = $5, exit_reason = $4
                 WHERE id = $1 AND step = $2 AND state = 'active'",
            )
            .bind(&run.id)
            .bind(run.step)
            .bind(*state)
            .bind(reason)
            .bind(now)
            .execute(&mut *conn)
            .await?
        }
    };
    if moved.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO journey_steps (run_id, step, node, kind, at, delivery_id, status, reason, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&run.id)
    .bind(run.step + 1)
    .bind(node)
    .bind(rec.kind)
    .bind(now)
    .bind(&rec.delivery_id)
    .bind(&rec.status)
    .bind(&rec.reason)
    .bind(rec.detail.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The next time of day `hhmm` in `zone` after `now`.
pub fn next_local(now: jiff::Timestamp, zone: &str, minute: u16) -> jiff::Timestamp {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let here = now.to_zoned_datetime(tz.clone());
    let time = jiff::civil::Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).unwrap_or_default();
    let mut day = here.date();
    for _ in 0..3 {
        if let Ok(at) = day.to_datetime(time).to_zoned_datetime(tz.clone())
            && at.timestamp() > now
        {
            return at.timestamp();
        }
        day = day.tomorrow().unwrap_or(day);
    }
    now
}

/// Runs the node a run is at, in the caller's transaction: what it did and where the run goes.
pub(super) async fn take(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    run: &Run,
    def: &JourneyDef,
    stored: &crate::profiles::StoredProfile,
) -> anyhow::Result<(StepRecord, Next)> {
    let now = core.clock().now();
    let at = now.as_millisecond();
    let view = stored.at(&run.brand_id, &run.player_id, now);
    if let Some(codes) = crate::policy::gate::rg_codes(&view.profile) {
        return Ok(exited(format!("rg: {codes}"), Value::Null));
    }
    if run.step >= MAX_RUN_STEPS {
        return Ok(exited(format!("step limit: {MAX_RUN_STEPS} steps taken"), Value::Null));
    }
    let Some(node) = def.nodes.get(&run.node) else {
        return Ok(exited(format!("no node `{}` in version {}", run.node, run.version), Value::Null));
    };
    let to = |node: &str, due_at: i64| Next::Node { node: node.to_string(), due_at, waiting_for: None };
    let facts = Facts::new(None, &view.profile);
    let mut rec = StepRecord { kind: node.kind(), ..Default::default() };
    let next = match node {
        Node::Wait { minutes, until_event, until_local_time, next, .. } => {
            let until = match (minutes, until_local_time) {
                (_, Some(t)) => next_local(now, &view.profile.time_zone, local_minute(t).unwrap_or(0)),
                (Some(m), None) => now + jiff::SignedDuration::from_mins(i64::from(*m)),
                (None, None) => now,
            };
            rec.detail = json!({"until": until, "time_zone": view.profile.time_zone});
            let waiting_for =
                (!until_event.is_empty()).then(|| json!({"node": run.node, "events": until_event}));
            rec.detail["waiting_for"] = json!(waiting_for);
            Next::Node { node: next.clone(), due_at: until.as_millisecond(), waiting_for }
        }
        Node::Check { rule, conditions, then, otherwise } => {
            let mut pass = facts.all(conditions).map_err(|why| rec.reason = Some(why)).is_ok();
            if pass && let Some(rule) = rule {
                let player = (run.brand_id.as_str(), run.player_id.as_str());
                match ask_rule(core, rule, player, &view.profile, None, now).await? {
                    RuleVerdict::Member(evaluated) => {
                        rec.detail["decision_seq"] = json!(evaluated.record_in(conn).await?.seq);
                    }
                    RuleVerdict::Out(why) => {
                        pass = false;
                        rec.reason = Some(why);
                    }
                    RuleVerdict::Failed(why, evaluated) => {
                        pass = false;
                        rec.detail["decision_seq"] = json!(evaluated.record_in(conn).await?.seq);
                        rec.reason = Some(why);
                    }
                }
            }
            rec.status = Some(if pass { "then" } else { "else" }.to_string());
            to(if pass { then } else { otherwise }, at)
        }
        Node::Send { message, next } => {
            let key = format!("jrn:{}:{}", run.id, run.step + 1);
            let journey = def.name.as_str();
            let req = message.request(&run.player_id, &facts, &format!("journey:{journey}:{}", run.node));
            match crate::messaging::send_in(core, conn, (&run.brand_id, &key), req, stored, None).await {
                Ok(d) => {
                    let fire = super::triggers::from_delivery(&d);
                    rec.delivery_id = Some(d.delivery_id.clone());
                    rec.status = Some(d.status.as_str().to_string());
                    rec.reason = fire.reason;
                }
                Err(crate::messaging::SendError::Internal(e)) => return Err(e),
                Err(other) => {
                    rec.status = Some("failed".into());
                    rec.reason = Some(other.to_string());
                }
            }
            to(next, at)
        }
        Node::Offer { offer, next } => {
            let by = super::triggers::OfferBy {
                brand: &run.brand_id,
                player: &run.player_id,
                key: &format!("jrn:{}:{}", run.id, run.step + 1),
                requester: &format!("journey:{}:{}", def.name, run.node),
                caused_at: None,
            };
            let fire = super::triggers::make_offer(core, conn, &by, offer, &facts, stored).await?;
            rec.delivery_id = fire.delivery_id;
            rec.status = Some(fire.outcome.to_string());
            rec.reason = fire.reason;
            to(next, at)
        }
        Node::Branch { cases, default } => {
            let taken = cases.iter().position(|c| facts.all(&c.conditions).is_ok());
            rec.detail = json!({"case": taken});
            to(taken.map_or(default, |i| &cases[i].next), at)
        }
        Node::Exit { reason } => {
            let reason = reason.clone().unwrap_or_else(|| format!("exit node `{}`", run.node));
            rec.reason = Some(reason.clone());
            Next::End { state: "completed", reason }
        }
    };
    Ok((rec, next))
}

/// Steps one run may take in one go (waits end a go; `check` prevents loops that never wait).
const MAX_STEPS: usize = 2 * MAX_NODES;
/// Runs taken in one transaction.
const TOGETHER: usize = 16;
/// A run whose step failed is tried again this much later.
const RETRY_MS: i64 = 60_000;

/// Takes the due steps of up to `TOGETHER` runs of journeys that are not paused, each run until it
/// waits or ends, in one transaction: their players' profiles read together in it, each run in a
/// savepoint of its own (one that fails is undone alone and tried again after `RETRY_MS`). Whether
/// more runs may be due. Of several hosts, each run goes to one: on PostgreSQL a host passes by the
/// runs another has locked (`SKIP LOCKED`), on SQLite hosts take the write lock in turn; either way a
/// step is written only if the run is still where it was read, so none is taken twice.
pub async fn run_due(core: &Core) -> anyhow::Result<bool> {
    const DUE: &str = "FROM journey_runs r JOIN journeys j ON j.id = r.journey_id
         WHERE r.state = 'active' AND r.due_at <= $1 AND j.paused = 0";
    let now = core.clock().now_ms();
    // Looked for first without the write lock: the scheduler is woken by every batch that fires.
    let any = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT r.id {DUE} LIMIT 1")))
        .bind(now)
        .fetch_optional(&core.db.pool)
        .await?;
    if any.is_none() {
        return Ok(false);
    }
    let mut tx = core.db.begin_write().await?;
    let skip_locked = if tx.backend() == Backend::Postgres { " FOR UPDATE OF r SKIP LOCKED" } else { "" };
    let sql = format!("SELECT r.id, r.brand_id, r.player_id {DUE} ORDER BY r.due_at LIMIT $2{skip_locked}");
    let due: Vec<(String, String, String)> = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(TOGETHER as i64)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("brand_id")?, r.try_get("player_id")?)))
        .collect::<anyhow::Result<_>>()?;
    let mut players: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, brand, player) in &due {
        players.entry(brand).or_default().push(player.clone());
    }
    let mut profiles = HashMap::new();
    let mut passed = crate::bus::Passed::default();
    for (brand, players) in players {
        let read =
            crate::profiles::load_many_in(&mut tx, &core.contacts_key, brand, &players, &mut passed).await?;
        profiles.extend(read.into_iter().map(|(player, stored)| ((brand, player), stored)));
    }
    let mut journeys = Journeys::default();
    let mut steps = Vec::new();
    for (id, brand, player) in &due {
        let went = match profiles.get(&(brand.as_str(), player.clone())) {
            Some(stored) => tx.in_savepoint(async |tx| go(core, tx, id, stored, &mut journeys).await).await?,
            None => Err(anyhow::anyhow!("the player has no profile")),
        };
        match went {
            Ok(taken) => steps.extend(taken),
            Err(e) => {
                tracing::error!(run = %id, error = %format!("{e:#}"), "a journey step failed; tried again later");
                sqlx::query("UPDATE journey_runs SET due_at = $2 WHERE id = $1 AND state = 'active'")
                    .bind(id)
                    .bind(now + RETRY_MS)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    for (kind, status) in &steps {
        core.delivery.metrics.journey_step(kind, status.as_deref().unwrap_or("-"));
    }
    if !steps.is_empty() {
        core.delivery.wake.notify_one();
    }
    Ok(due.len() == TOGETHER)
}

/// What a transaction of the scheduler read of journeys, read once: versions do not change, and a
/// pause takes effect from the scheduler's next transaction.
#[derive(Default)]
struct Journeys {
    versions: BTreeMap<(String, i64), Arc<JourneyDef>>,
    paused: HashMap<String, bool>,
}

impl Journeys {
    async fn paused(&mut self, conn: &mut sqlx::AnyConnection, journey: &str) -> anyhow::Result<bool> {
        if let Some(p) = self.paused.get(journey) {
            return Ok(*p);
        }
        let p = is_paused(conn, journey).await?;
        self.paused.insert(journey.to_string(), p);
        Ok(p)
    }

    async fn version(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        run: &Run,
    ) -> anyhow::Result<Arc<JourneyDef>> {
        let key = (run.journey_id.clone(), run.version);
        if !self.versions.contains_key(&key) {
            self.versions
                .insert(key.clone(), Arc::new(definition(conn, &run.journey_id, run.version).await?));
        }
        Ok(self.versions[&key].clone())
    }
}

/// Takes a run's due steps in the caller's transaction, until it waits or ends: each step's (kind,
/// status), counted once committed.
async fn go(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    id: &str,
    stored: &crate::profiles::StoredProfile,
    journeys: &mut Journeys,
) -> anyhow::Result<Vec<(&'static str, Option<String>)>> {
    let mut taken = Vec::new();
    for _ in 0..MAX_STEPS {
        let Some(run) = get_run(conn, id).await? else { break };
        let now = core.clock().now_ms();
        if run.state != "active"
            || run.due_at.is_none_or(|d| d > now)
            || journeys.paused(conn, &run.journey_id).await?
        {
            break;
        }
        let def = journeys.version(conn, &run).await?;
        let (rec, next) = take(core, conn, &run, &def, stored).await?;
        if !advance(conn, &run, &run.node, &rec, &next, now).await? {
            break;
        }
        taken.push((rec.kind, rec.status));
        if matches!(next, Next::End { .. }) {
            break;
        }
    }
    Ok(taken)
}

async fn get_run(conn: &mut sqlx::AnyConnection, id: &str) -> anyhow::Result<Option<Run>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM journey_runs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(conn).await?;
    row.as_ref().map(run_of).transpose()
}

/// Which of `players` are in a journey now.
pub async fn in_one_of(
    conn: &mut sqlx::AnyConnection,
    brand: &str,
    players: &[String],
) -> anyhow::Result<std::collections::HashSet<String>> {
    let which = crate::store::Players::List(players);
    let sql = format!(
        "SELECT DISTINCT player_id FROM journey_runs WHERE brand_id = $1 AND state = 'active' AND {}",
        which.condition(Backend::of(conn), 2)
    );
    let rows = which.bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand)).fetch_all(conn).await?;
    rows.iter().map(|r| Ok(r.try_get("player_id")?)).collect()
}

/// How far the platform's clock may be behind the host's: an event that occurred earlier than this
/// before a run began (or its wait) is older than the run.
const SKEW_MS: i64 = 5 * 60_000;

/// Moves a player's runs on one of their events, in the consumer's transaction: every run ends at once
/// when RG blocks marketing; a run ends on its journey's exit events; a wait for the event goes on to
/// its `on_event` node (held while the journey is paused). Events that occurred before the run began,
/// or before its wait, do not count. Whether a run moved.
pub async fn on_event(
    core: &Core,
    conn: &mut sqlx::AnyConnection,
    e: &crate::bus::LoggedEvent,
    profile: &m::Profile,
) -> anyhow::Result<bool> {
    // Locked on PostgreSQL: a scheduler step on the same run waits for this event's move, or the other
    // way round; neither is lost.
    let lock = if Backend::of(conn) == Backend::Postgres { " FOR UPDATE" } else { "" };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM journey_runs WHERE brand_id = $1 AND player_id = $2 AND state = 'active'
         AND (entered_tx, entered_seq) < ($3, $4) ORDER BY id{lock}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&e.brand_id)
        .bind(&e.player_id)
        .bind(e.tx)
        .bind(e.seq)
        .fetch_all(&mut *conn)
        .await?;
    let now = core.clock().now_ms();
    let rg = crate::policy::gate::rg_codes(profile);
    let event = json!({"event_id": e.event_id, "event_type": e.event_type, "seq": e.seq});
    let mut moved = false;
    for r in rows {
        let run = run_of(&r)?;
        let def = match definition(conn, &run.journey_id, run.version).await {
            Ok(def) => Some(def),
            Err(e) => {
                // Checked when saved: one that no longer reads holds its runs (RG still ends them), and
                // stops nothing else.
                tracing::error!(run = %run.id, error = %format!("{e:#}"), "a journey definition that does not read");
                None
            }
        };
        let (rec, next) = if let Some(codes) = &rg {
            exited(format!("rg: {codes}"), event.clone())
        } else if e.occurred_at + SKEW_MS < run.entered_at {
            // It happened before the player entered (a late event, a replay): it does not move the run.
            continue;
        } else if let Some(def) = &def
            && def.exit_on.contains(&e.event_type)
        {
            exited(format!("event: {}", m::wire_name(e.event_type)), event.clone())
        } else if let Some(def) = &def
            && let Some(target) = waited_for(&run, def, e.event_type)
            && e.occurred_at + SKEW_MS >= run.updated_at
        {
            // Paused too: the run moves to the event's branch, which the scheduler holds until resumed.
            let reason = format!("{} arrived", m::wire_name(e.event_type));
            (
                StepRecord {
                    kind: "event",
                    reason: Some(reason),
                    detail: event.clone(),
                    ..Default::default()
                },
                Next::Node { node: target, due_at: now, waiting_for: None },
            )
        } else {
            continue;
        };
        moved |= advance(conn, &run, &run.node, &rec, &next, now).await?;
    }
    Ok(moved)
}

/// The node a run goes to when `event` arrives, if it waits for it: in a wait begun, or at a wait not
/// begun yet (the event came before the scheduler reached it).
pub(super) fn waited_for(run: &Run, def: &JourneyDef, event: EventType) -> Option<String> {
    let wait = match &run.waiting_for {
        Some(w) => w["node"].as_str()?,
        None => run.node.as_str(),
    };
    match def.nodes.get(wait)? {
        Node::Wait { on_event, until_event, .. } if until_event.contains(&event) => on_event.clone(),
        _ => None,
    }
}

/// A player's runs, newest first, each with where they are and what comes next.
pub async fn of_player(db: &Db, brand: &str, player: &str) -> anyhow::Result<Vec<Value>> {
    let mut conn = db.pool.acquire().await?;
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM journey_runs WHERE brand_id = $1 AND player_id = $2 ORDER BY entered_at DESC LIMIT 100"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(player).fetch_all(&mut *conn).await?;
    let mut out = Vec::new();
    for r in rows {
        let run = run_of(&r)?;
        let head = defs::get(&mut conn, JOURNEYS, &run.journey_id).await?;
        let def = definition(&mut conn, &run.journey_id, run.version).await.ok();
        let next = (run.state == "active").then(|| {
            let node = def.as_ref().and_then(|d| d.nodes.get(&run.node));
            json!({
                "node": run.node,
                "kind": node.map(Node::kind),
                "due_at": run.due_at.and_then(|d| jiff::Timestamp::from_millisecond(d).ok()),
                "or_on_events": run.waiting_for.as_ref().map(|w| w["events"].clone()),
            })
        });
        let steps = sqlx::query(
            "SELECT step, node, kind, at, delivery_id, status, reason FROM journey_steps WHERE run_id = $1
             ORDER BY step DESC LIMIT 50",
        )
        .bind(&run.id)
        .fetch_all(&mut *conn)
        .await?;
        let steps: Vec<Value> = steps
            .iter()
            .map(|s| -> anyhow::Result<Value> {
                Ok(json!({
                    "step": s.try_get::<i64, _>("step")?, "node": s.try_get::<String, _>("node")?,
                    "kind": s.try_get::<String, _>("kind")?,
                    "at": jiff::Timestamp::from_millisecond(s.try_get("at")?)?,
                    "delivery_id": s.try_get::<Option<String>, _>("delivery_id")?,
                    "status": s.try_get::<Option<String>, _>("status")?,
                    "reason": s.try_get::<Option<String>, _>("reason")?,
                }))
            })
            .collect::<Result<_, _>>()?;
        out.push(json!({
            "run_id": run.id,
            "journey_id": run.journey_id,
            "journey": head.as_ref().map(|h| h.name.clone()),
            "version": run.version,
            "latest_version": head.as_ref().map(|h| h.latest_version),
            "note": "a player finishes the version they entered; newer versions take new entrants",
            "state": run.state,
            "since": jiff::Timestamp::from_millisecond(run.updated_at)?,
            "entered_at": jiff::Timestamp::from_millisecond(run.entered_at)?,
            "entered_via": run.entered_via,
            "next": next,
            "ended_at": run.ended_at.and_then(|d| jiff::Timestamp::from_millisecond(d).ok()),
            "exit_reason": run.exit_reason,
            "steps": steps,
        }));
    }
    Ok(out)
}

/// A journey's figures: entered by version, players at each node, ended by reason, sends by status and
/// suppressed by reason.
pub async fn stats(db: &Db, id: &str) -> anyhow::Result<Value> {
    let pool = &db.pool;
    let q = |sql: &'static str| sqlx::query(sql).bind(id.to_string());
    let mut entered = serde_json::Map::new();
    for r in q("SELECT version, COUNT(*) AS n FROM journey_runs WHERE journey_id = $1 GROUP BY version ORDER BY version")
        .fetch_all(pool)
        .await?
    {
        entered.insert(r.try_get::<i64, _>("version")?.to_string(), json!(r.try_get::<i64, _>("n")?));
    }
    let mut at_node = serde_json::Map::new();
    for r in q("SELECT node, COUNT(*) AS n FROM journey_runs WHERE journey_id = $1 AND state = 'active' GROUP BY node ORDER BY node")
        .fetch_all(pool)
        .await?
    {
        at_node.insert(r.try_get("node")?, json!(r.try_get::<i64, _>("n")?));
    }
    let mut ended = serde_json::Map::new();
    for r in q("SELECT state, exit_reason, COUNT(*) AS n FROM journey_runs WHERE journey_id = $1 AND state <> 'active'
                GROUP BY state, exit_reason ORDER BY state, exit_reason")
        .fetch_all(pool)
        .await?
    {
        let key = format!("{}: {}", r.try_get::<String, _>("state")?, r.try_get::<Option<String>, _>("exit_reason")?.unwrap_or_default());
        ended.insert(key, json!(r.try_get::<i64, _>("n")?));
    }
    let mut sends = serde_json::Map::new();
    let mut suppressed: BTreeMap<String, i64> = BTreeMap::new();
    for r in q(
        "SELECT s.status, s.reason, COUNT(*) AS n FROM journey_steps s JOIN journey_runs r ON r.id = s.run_id
                WHERE r.journey_id = $1 AND s.kind = 'send' GROUP BY s.status, s.reason",
    )
    .fetch_all(pool)
    .await?
    {
        let status: Option<String> = r.try_get("status")?;
        let n: i64 = r.try_get("n")?;
        let status = status.unwrap_or_default();
        let total = sends.get(&status).and_then(Value::as_i64).unwrap_or(0) + n;
        sends.insert(status.clone(), json!(total));
        if status == "suppressed"
            && let Some(reason) = r.try_get::<Option<String>, _>("reason")?
        {
            let codes = reason.split_once(": ").map_or(reason.as_str(), |(_, c)| c).to_string();
            for code in codes.split(", ") {
                *suppressed.entry(code.to_string()).or_default() += n;
            }
        }
    }
    Ok(json!({"entered": entered, "at_node": at_node, "ended": ended, "sends": sends,
              "sends_suppressed_by_reason": suppressed}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_wait_until_a_local_time_follows_the_players_zone() {
        let now = at("2026-12-03T10:30:00Z");
        // 09:00 in London has passed today (10:30 local): tomorrow's.
        assert_eq!(next_local(now, "Europe/London", 9 * 60), at("2026-12-04T09:00:00Z"));
        // 09:00 in Tokyo (19:30 local now): tomorrow 09:00 JST is 00:00 UTC.
        assert_eq!(next_local(now, "Asia/Tokyo", 9 * 60), at("2026-12-04T00:00:00Z"));
        // 09:00 in New York (05:30 local now): today, 14:00 UTC.
        assert_eq!(next_local(now, "America/New_York", 9 * 60), at("2026-12-03T14:00:00Z"));
        // Across a DST change: 09:00 in Berlin on the day clocks go forward (29 March 2026) is 07:00 UTC.
        assert_eq!(
            next_local(at("2026-03-28T20:00:00Z"), "Europe/Berlin", 9 * 60),
            at("2026-03-29T07:00:00Z")
        );
        // An unknown zone falls back to UTC.
        assert_eq!(next_local(now, "Mars/Olympus", 9 * 60), at("2026-12-04T09:00:00Z"));
    }

    fn def(nodes: Value) -> JourneyDef {
        serde_json::from_value(json!({"name": "j", "start": "a", "nodes": nodes})).unwrap()
    }

    #[test]
    fn a_loop_that_never_waits_is_found() {
        let looping = def(json!({"a": {"type": "branch", "cases": [], "default": "b"},
                                  "b": {"type": "branch", "cases": [], "default": "a"}}));
        let waiting = def(json!({"a": {"type": "wait", "minutes": 5, "next": "b"},
                                  "b": {"type": "branch", "cases": [], "default": "a"}}));
        assert!(never_waits(&looping).is_some());
        assert!(never_waits(&waiting).is_none());
    }
}
