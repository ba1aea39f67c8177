//! Dry runs, what compliance reads before activating: a trigger or journey version run for one player
//! through the same code as the real thing — conditions, the rule's decision, cooldown and dedup, the
//! send service and its gate, entering a journey — in a transaction that is rolled back, so nothing is
//! written and nothing sent. The gate answers as of now; the player's profile is as stored (the given
//! events are not applied to it).

use serde::Deserialize;
use serde_json::{Value, json};

use super::journeys::{self, JourneyDef, Next, Run};
use super::triggers::{self, Active, TriggerDef};
use crate::bus::LoggedEvent;
use crate::core::Core;
use crate::defs::{self, DefError, Head, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub player_id: String,
    /// The version to try (default: the latest).
    #[serde(default)]
    pub version: Option<i64>,
    /// Events as the platform would post them (at most 20); default: the player's latest 20 in the log.
    #[serde(default)]
    pub events: Option<Vec<Value>>,
}

const MAX_EVENTS: usize = 20;

async fn definition(
    core: &Core,
    kind: defs::Kind,
    head: &Head,
    req: &Request,
) -> Result<(i64, Value), DefError> {
    let version = req.version.unwrap_or(head.latest_version);
    let mut conn = core.db.pool.acquire().await?;
    let v = defs::version(&mut conn, kind, &head.id, version)
        .await?
        .ok_or_else(|| invalid("version", format!("no version {version}")))?;
    Ok((version, v.definition))
}

/// The request's events as the log would hand them over (negative positions: not in the log).
async fn events(core: &Core, head: &Head, req: &Request) -> Result<Vec<LoggedEvent>, DefError> {
    let Some(given) = &req.events else {
        let mut conn = core.db.pool.acquire().await?;
        return Ok(crate::bus::latest_of_player(&mut conn, (&head.brand_id, &req.player_id), 20).await?);
    };
    if given.len() > MAX_EVENTS {
        return Err(invalid("events", format!("at most {MAX_EVENTS} events")));
    }
    let mut out = Vec::new();
    for (i, v) in given.iter().enumerate() {
        let e = crate::events::validate(v, core.clock().now())
            .map_err(|e| invalid(format!("events[{i}].{}", e.field), e.message))?;
        if e.brand_id != head.brand_id || e.player_id != req.player_id {
            return Err(invalid(format!("events[{i}]"), "an event of another brand or player"));
        }
        out.push(LoggedEvent {
            seq: -1 - i as i64,
            tx: 0,
            brand_id: e.brand_id,
            event_id: e.event.event_id.clone(),
            player_id: e.player_id,
            event_type: e.event.event_type,
            occurred_at: e.event.occurred_at.as_millisecond(),
            received_at: crate::store::now_ms(),
            payload: e.event.payload,
        });
    }
    Ok(out)
}

async fn profile(core: &Core, brand: &str, player: &str) -> Result<crate::profiles::StoredProfile, DefError> {
    crate::profiles::load(&core.db, &core.contacts_key, brand, player)
        .await?
        .ok_or_else(|| invalid("player_id", format!("the brand has no player `{player}`")))
}

/// What a trigger version would do with each event.
pub async fn trigger(core: &Core, head: &Head, req: &Request) -> Result<Value, DefError> {
    let (version, def) = definition(core, defs::TRIGGERS, head, req).await?;
    let def: TriggerDef = serde_json::from_value(def).map_err(anyhow::Error::from)?;
    let active = Active { id: head.id.clone(), version, def };
    let stored = profile(core, &head.brand_id, &req.player_id).await?;
    let events = events(core, head, req).await?;
    let now = core.clock().now();
    let mut out = Vec::new();
    let mut tx = core.db.begin_write().await?;
    for e in &events {
        let fire = triggers::fire(core, &mut tx, &active, e, &stored).await?;
        let explained = match fire {
            Some(f) => json!({"would_fire": f.outcome == "fired", "outcome": f.outcome, "reason": f.reason,
                              "delivery": f.delivery_id.is_some().then(|| json!({"status": delivery_status(&f)})),
                              "journey_run": f.run_id.is_some()}),
            None => {
                let why = not_concerned(core, &active, e, &stored, now).await?;
                json!({"would_fire": false, "outcome": "not_matched", "reason": why})
            }
        };
        let mut v = json!({"event_id": e.event_id, "event_type": e.event_type});
        if let (Value::Object(a), Value::Object(b)) = (&mut v, explained) {
            a.extend(b);
        }
        out.push(v);
    }
    tx.rollback().await?;
    Ok(json!({"trigger_id": head.id, "version": version, "player_id": req.player_id, "events": out,
              "note": "nothing was written or sent; the gate answered as of now"}))
}

fn delivery_status(f: &triggers::Fire) -> Option<String> {
    f.reason.as_ref().map(|r| r.split(':').next().unwrap_or(r).trim_start_matches("delivery ").to_string())
}

/// Why a trigger passes an event by.
async fn not_concerned(
    core: &Core,
    t: &Active,
    e: &LoggedEvent,
    stored: &crate::profiles::StoredProfile,
    now: jiff::Timestamp,
) -> anyhow::Result<String> {
    let event = e.event();
    if !t.def.on.contains(&e.event_type) {
        return Ok("the trigger is not on this event type".into());
    }
    if !triggers::matches(&t.def, &event, now) {
        return Ok("outside the trigger's active window, or older than max_event_age_minutes".into());
    }
    let view = stored.at(&e.brand_id, &e.player_id, now);
    if let Err(why) = super::conditions::Facts::new(Some(&event), &view.profile).all(&t.def.conditions) {
        return Ok(format!("condition: {why}"));
    }
    if let Some(rule) = &t.def.rule
        && let triggers::RuleVerdict::Out(why) =
            triggers::ask_rule(core, rule, (&e.brand_id, &e.player_id), &view.profile, Some(&event), now)
                .await?
    {
        return Ok(why);
    }
    Ok("the trigger handled this event already (its fire is on record)".into())
}

/// The path a player would take through a journey version: each step, what it would send and what the
/// gate would answer. A wait takes its `on_event` branch when one of the given events is of a type it
/// waits for, else its timeout.
pub async fn journey(core: &Core, head: &Head, req: &Request) -> Result<Value, DefError> {
    let (version, def) = definition(core, defs::JOURNEYS, head, req).await?;
    let def: JourneyDef = serde_json::from_value(def).map_err(anyhow::Error::from)?;
    let stored = profile(core, &head.brand_id, &req.player_id).await?;
    let events = match &req.events {
        Some(_) => events(core, head, req).await?,
        None => Vec::new(),
    };
    let now = core.clock().now_ms();
    let mut run = Run {
        id: "dry-run".into(),
        journey_id: head.id.clone(),
        version,
        brand_id: head.brand_id.clone(),
        player_id: req.player_id.clone(),
        node: def.start.clone(),
        step: 0,
        state: "active".into(),
        due_at: Some(now),
        waiting_for: None,
        entered_at: now,
        entered_via: "dry-run".into(),
        entered_seq: 0,
        entered_tx: 0,
        updated_at: now,
        ended_at: None,
        exit_reason: None,
    };
    let mut steps = Vec::new();
    let mut tx = core.db.begin_write().await?;
    for _ in 0..def.nodes.len() * 2 {
        let (rec, next) = journeys::take(core, &mut tx, &run, &def, &stored).await?;
        steps.push(json!({"node": run.node, "kind": rec.kind, "status": rec.status, "reason": rec.reason,
                          "detail": rec.detail}));
        match next {
            Next::End { state, reason } => {
                steps.push(json!({"end": state, "reason": reason}));
                break;
            }
            Next::Node { node, waiting_for, .. } => {
                run.waiting_for = waiting_for;
                let arrived = events.iter().find_map(|e| journeys::waited_for(&run, &def, e.event_type));
                run.node = arrived.unwrap_or(node);
                run.waiting_for = None;
                run.step += 1;
            }
        }
    }
    tx.rollback().await?;
    Ok(json!({"journey_id": head.id, "version": version, "player_id": req.player_id, "steps": steps,
              "note": "nothing was written or sent; the gate answered as of now, and waits are taken as passed"}))
}
