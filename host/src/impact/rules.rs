//! Impact reports of offer scorers and bonus rules.
//!
//! An offer scorer runs beside the scorer bound today over the brand's population in its
//! jurisdictions, with the brand's offer templates for each player's jurisdiction as candidates (the
//! context: intent `reengage` on e-mail, no budget): the offers that change (the top-ranked template or
//! its parameters), their cost before → after, failures, fuel and memory.
//!
//! A bonus rule and the rule bound today replay the bonus-relevant events of the last N days (default
//! 30) of the players who held a bonus then, each against its own simulation of the ledger from each
//! bonus's grant (so a rule that counts more completes earlier): the actions that change (count by
//! kind, players affected, a sample with both lists), wagering counted and bonuses completed before →
//! after, failures, and the candidate's actions that break the jurisdiction's bonus law (a grant above
//! GB's 10×) or the bonus's terms (a contribution above the terms' percentage), flagged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::Row;

use super::{Candidate, MEASURED, SAMPLE, Side, covers, percentile};
use crate::core::Core;
use crate::model as m;
use crate::offers::ledger::{self, Bonus, State};
use crate::offers::templates;
use crate::plugins::{CallOptions, Plugin, World};

/// The bound plugin of `world` for a player's jurisdiction, with how to call it.
fn bound(
    core: &Core,
    brand: &str,
    jurisdiction: &str,
    world: World,
) -> Option<(Arc<Plugin>, CallOptions, Value)> {
    let b = core.registry.snapshot().resolve(brand, jurisdiction, world, "")?;
    let plugin = b.plugin.as_ref().ok()?.clone();
    let opts = CallOptions { limits: b.limits, now: core.clock().now(), config: b.config.clone() };
    Some((plugin, opts, json!({"plugin_id": b.plugin_id, "name": b.name, "version": b.version})))
}

#[derive(Default)]
struct Usages {
    fuel: Vec<u64>,
    memory: Vec<u64>,
}

impl Usages {
    fn add(&mut self, u: &crate::plugins::Usage) {
        if self.fuel.len() < MEASURED {
            self.fuel.push(u.fuel);
            self.memory.push(u.peak_memory_bytes);
        }
    }

    fn json(mut self, limits: &crate::plugins::Limits) -> Value {
        self.fuel.sort_unstable();
        self.memory.sort_unstable();
        json!({
            "measured_decisions": self.fuel.len(),
            "fuel": {"p50": percentile(&self.fuel, 0.50), "p99": percentile(&self.fuel, 0.99),
                     "max": self.fuel.last().copied().unwrap_or(0), "limit": limits.fuel},
            "peak_memory_bytes": {"p50": percentile(&self.memory, 0.50), "p99": percentile(&self.memory, 0.99),
                                  "max": self.memory.last().copied().unwrap_or(0), "limit": limits.memory_bytes},
        })
    }
}

/// The top-ranked offer of an answer, with its cost under the template's cost model.
fn top(outcome: &Result<Vec<m::RankedOffer>, String>, defs: &[templates::Active]) -> Value {
    match outcome {
        Err(code) => json!({"error": code}),
        Ok(ranked) => match ranked.first() {
            None => json!({"offer": null}),
            Some(o) => {
                let cost =
                    defs.iter().find(|t| t.def.name == o.template_id).map(|t| t.def.cost_minor(&o.params));
                json!({"template": o.template_id, "params": crate::offers::service::params_json(&o.params),
                       "cost_minor": cost})
            }
        },
    }
}

/// The candidate scorer beside the bound one, over the brand's population.
pub async fn offer_report(core: &Core, plugin_id: &str, brand: &str) -> anyhow::Result<Value> {
    let Candidate { plugin: candidate, manifest, limits, runtime, now, opts: candidate_opts } =
        Candidate::load(core, plugin_id).await?;
    let in_scope = |j: &str| covers(&manifest, j);
    let defs = {
        let mut conn = core.db.pool.acquire().await?;
        templates::active(&mut conn, brand).await?
    };
    let (mut changed, mut failed) = (Side::default(), Side::default());
    let (mut population, mut without_templates, mut same) = (0u64, 0u64, 0u64);
    let (mut cost_before, mut cost_after) = (0i64, 0i64);
    let mut failures_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let mut usages = Usages::default();
    let mut current_versions: BTreeMap<String, Value> = BTreeMap::new();
    let mut pages = super::profiles_at(core, brand, now);
    while let Some(page) = pages.next().await? {
        super::heartbeat(core, plugin_id).await?;
        let mut work = Vec::new();
        for (player, p) in page {
            if !in_scope(&p.jurisdiction) {
                continue;
            }
            population += 1;
            let cands: Vec<templates::Active> =
                defs.iter().filter(|t| t.def.applies_in(&p.jurisdiction)).cloned().collect();
            if cands.is_empty() {
                without_templates += 1;
                continue;
            }
            let current = bound(core, brand, &p.jurisdiction, World::OfferScorer);
            if let Some((_, _, v)) = &current {
                current_versions
                    .entry(v["plugin_id"].as_str().unwrap_or_default().to_string())
                    .or_insert(v.clone());
            }
            work.push((player, p, cands, current));
        }
        let (rt, cand, opts) = (runtime.clone(), candidate.clone(), candidate_opts.clone());
        let results = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(player, p, cands, current)| {
                    let context = m::OfferContext {
                        intent: "reengage".into(),
                        channel: m::OfferChannel::Email,
                        max_cost_minor: None,
                    };
                    let candidates: Vec<m::OfferTemplate> = cands.iter().map(|t| t.def.candidate()).collect();
                    let before = match &current {
                        Some((plugin, o, _)) => rt
                            .offer_scorer(plugin, o, &p, &candidates, &context)
                            .outcome
                            .map_err(|e| e.code().to_string()),
                        None => Err("no_binding".to_string()),
                    };
                    let run = rt.offer_scorer(&cand, &opts, &p, &candidates, &context);
                    (player, p, cands, before, run.outcome.map_err(|e| e.code().to_string()), run.usage)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (player, p, cands, before, after_outcome, usage) in results {
            usages.add(&usage);
            let (b, a) = (top(&before, &cands), top(&after_outcome, &cands));
            cost_before += b["cost_minor"].as_i64().unwrap_or(0);
            cost_after += a["cost_minor"].as_i64().unwrap_or(0);
            let entry =
                || json!({"player_id": player, "jurisdiction": p.jurisdiction, "current": b, "candidate": a});
            if let Err(code) = &after_outcome {
                *failures_by_code.entry(code.clone()).or_default() += 1;
                failed.add(&p.jurisdiction, entry);
            } else if b != a {
                changed.add(&p.jurisdiction, entry);
            } else {
                same += 1;
            }
        }
    }
    Ok(json!({
        "kind": "offer_scorer",
        "candidate": {"plugin_id": plugin_id, "name": manifest.name, "version": manifest.version,
                      "jurisdictions": manifest.jurisdictions},
        "current": current_versions.into_values().collect::<Vec<_>>(),
        "brand_id": brand,
        "context": {"intent": "reengage", "channel": "email", "max_cost_minor": null},
        "templates": defs.iter().map(|t| json!({"template": t.def.name, "version": t.version})).collect::<Vec<_>>(),
        "decided_at": now.to_string(),
        "population": population,
        "without_templates": without_templates,
        "unchanged": same,
        "changed": changed.json(),
        "cost_minor": {"current": cost_before, "candidate": cost_after},
        "failures": {"candidate": {"players": failed.total, "by_code": failures_by_code,
                                   "by_jurisdiction": failed.by_jurisdiction, "sample": failed.sample}},
        "limits": usages.json(&limits),
    }))
}

/// One side's simulated ledger of a player's bonuses.
#[derive(Clone)]
struct Sim {
    bonuses: Vec<Bonus>,
}

impl Sim {
    /// The bonuses active at `at` on this side, as the rule sees them.
    fn active(&self, at: i64) -> Vec<m::BonusState> {
        self.bonuses
            .iter()
            .filter(|b| {
                b.state == State::Active && b.granted_at.is_some_and(|g| g <= at) && at < b.expires_at
            })
            .filter_map(|b| b.as_state().ok())
            .collect()
    }

    /// Applies what the host would take of the actions (progress on an active bonus, completion when met,
    /// forfeits); returns (wagering counted, bonuses completed).
    fn apply(&mut self, actions: &[m::BonusAction]) -> (i64, u64) {
        let (mut counted, mut completed) = (0i64, 0u64);
        for a in actions {
            match a {
                m::BonusAction::Progress { bonus_id, contribution_minor, .. } => {
                    if let Some(b) =
                        self.bonuses.iter_mut().find(|b| &b.bonus_id == bonus_id && b.state == State::Active)
                    {
                        b.wagering_done_minor = b.wagering_done_minor.saturating_add(*contribution_minor);
                        counted = counted.saturating_add(*contribution_minor);
                    }
                }
                m::BonusAction::Complete { bonus_id, .. } => {
                    if let Some(b) = self.bonuses.iter_mut().find(|b| {
                        &b.bonus_id == bonus_id
                            && b.state == State::Active
                            && b.wagering_done_minor >= b.wagering_required_minor
                    }) {
                        b.state = State::Completed;
                        completed += 1;
                    }
                }
                m::BonusAction::Forfeit { bonus_id, .. } => {
                    if let Some(b) =
                        self.bonuses.iter_mut().find(|b| &b.bonus_id == bonus_id && b.state.live())
                    {
                        b.state = State::Forfeited;
                    }
                }
                _ => {}
            }
        }
        (counted, completed)
    }
}

fn kind_of(a: &m::BonusAction) -> &'static str {
    match a {
        m::BonusAction::Grant { .. } => "grant",
        m::BonusAction::Progress { .. } => "progress",
        m::BonusAction::Complete { .. } => "complete",
        m::BonusAction::Forfeit { .. } => "forfeit",
        m::BonusAction::RejectBet { .. } => "reject_bet",
    }
}

/// What the candidate proposes that the law or the bonus's terms forbid.
fn breaches(
    a: &m::BonusAction,
    jurisdiction: &str,
    packs: &crate::policy::Packs,
    held: &[Bonus],
) -> Option<String> {
    match a {
        m::BonusAction::Grant { wager_multiplier, template, .. } => {
            let pack = packs.for_jurisdiction(jurisdiction)?;
            let max = pack.max_wagering_multiple.as_ref()?;
            (*wager_multiplier > max.value).then(|| {
                format!("a grant of {template} at {wager_multiplier}× wagering, above {}× in {jurisdiction} ({}: {})",
                        max.value, pack.version, max.source)
            })
        }
        m::BonusAction::Progress { bonus_id, contribution_percent, category, .. } => {
            let b = held.iter().find(|b| &b.bonus_id == bonus_id)?;
            let allowed = if b.terms.contributions.is_empty() {
                100
            } else {
                b.terms.contributions.get(category).copied().unwrap_or(0)
            };
            (*contribution_percent > allowed).then(|| {
                format!("{category} counted at {contribution_percent}%, above the terms' {allowed}%")
            })
        }
        _ => None,
    }
}

/// Bonus-relevant events of the brand since `since`, of players who held a bonus: by player, in order.
async fn replayed_events(core: &Core, brand: &str, since: i64) -> anyhow::Result<Vec<(String, m::Event)>> {
    let types: Vec<String> =
        crate::offers::engine::EVENT_TYPES.iter().map(|t| format!("'{}'", m::wire_name(*t))).collect();
    let sql = format!(
        "SELECT e.player_id, e.event_id, e.event_type, e.occurred_at, e.payload FROM events e
         WHERE e.brand_id = $1 AND e.occurred_at >= $2 AND e.event_type IN ({})
           AND e.player_id IN (SELECT b.player_id FROM bonuses b WHERE b.brand_id = $1 AND b.granted_at IS NOT NULL)
         ORDER BY e.player_id, e.seq",
        types.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(brand).bind(since).fetch_all(&core.db.pool).await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get("event_type")?;
            Ok((
                r.try_get("player_id")?,
                m::Event {
                    event_id: r.try_get("event_id")?,
                    event_type: serde_json::from_value(json!(kind))?,
                    occurred_at: jiff::Timestamp::from_millisecond(r.try_get("occurred_at")?)?,
                    payload: serde_json::from_str(&r.try_get::<String, _>("payload")?)?,
                },
            ))
        })
        .collect()
}

/// The candidate bonus rule beside the bound one, replaying the last `days` of bonus-relevant events.
pub async fn bonus_report(core: &Core, plugin_id: &str, brand: &str, days: u32) -> anyhow::Result<Value> {
    let Candidate { plugin: candidate, manifest, limits, runtime, now, opts: candidate_opts } =
        Candidate::load(core, plugin_id).await?;
    let in_scope = |j: &str| covers(&manifest, j);
    let since = now.as_millisecond() - i64::from(days) * 86_400_000;
    let events = replayed_events(core, brand, since).await?;
    let packs = core.policies.packs.current();

    let mut by_player: BTreeMap<String, Vec<m::Event>> = BTreeMap::new();
    for (player, e) in events {
        by_player.entry(player).or_default().push(e);
    }
    let (mut replayed, mut changed_events) = (0u64, 0u64);
    let mut changed_players: BTreeSet<String> = BTreeSet::new();
    let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let (mut counted, mut completed) = ((0i64, 0i64), (0u64, 0u64));
    let mut changed_sample = Vec::new();
    let mut failed = Side::default();
    let mut failures_by_code: BTreeMap<String, u64> = BTreeMap::new();
    let mut flagged = Side::default();
    let mut usages = Usages::default();
    let mut current_versions: BTreeMap<String, Value> = BTreeMap::new();
    for (player, events) in by_player {
        super::heartbeat(core, plugin_id).await?;
        let mut conn = core.db.pool.acquire().await?;
        let Some(stored) = crate::profiles::load_in(&mut conn, &core.contacts_key, brand, &player).await?
        else {
            continue;
        };
        let profile = stored.at(brand, &player, now).profile;
        if !in_scope(&profile.jurisdiction) {
            continue;
        }
        // Each bonus as it was granted: active from its grant, nothing wagered.
        let held: Vec<Bonus> = ledger::of_player(&mut conn, brand, &player, false)
            .await?
            .into_iter()
            .filter(|b| b.granted_at.is_some())
            .map(|mut b| {
                (b.state, b.wagering_done_minor, b.contributions) = (State::Active, 0, Default::default());
                b
            })
            .collect();
        drop(conn);
        let current = bound(core, brand, &profile.jurisdiction, World::BonusRule);
        if let Some((_, _, v)) = &current {
            current_versions
                .entry(v["plugin_id"].as_str().unwrap_or_default().to_string())
                .or_insert(v.clone());
        }
        let (rt, cand, opts) = (runtime.clone(), candidate.clone(), candidate_opts.clone());
        let (held2, p) = (held.clone(), profile.clone());
        type Out = (
            m::Event,
            Result<Vec<m::BonusAction>, String>,
            Result<Vec<m::BonusAction>, String>,
            crate::plugins::Usage,
        );
        let outs: Vec<Out> = tokio::task::spawn_blocking(move || {
            let (mut before_sim, mut after_sim) = (Sim { bonuses: held2.clone() }, Sim { bonuses: held2 });
            let mut outs = Vec::new();
            for e in events {
                let at = e.occurred_at.as_millisecond();
                let (b_active, a_active) = (before_sim.active(at), after_sim.active(at));
                if b_active.is_empty() && a_active.is_empty() {
                    continue;
                }
                let before = match &current {
                    Some((plugin, o, _)) if !b_active.is_empty() => {
                        rt.bonus_rule(plugin, o, &e, &p, &b_active).outcome.map_err(|x| x.code().to_string())
                    }
                    Some(_) => Ok(Vec::new()),
                    None => Err("no_binding".to_string()),
                };
                let run = if a_active.is_empty() {
                    None
                } else {
                    Some(rt.bonus_rule(&cand, &opts, &e, &p, &a_active))
                };
                let usage = run.as_ref().map(|r| r.usage).unwrap_or_default();
                let after = run.map_or(Ok(Vec::new()), |r| r.outcome.map_err(|x| x.code().to_string()));
                if let Ok(a) = &before {
                    before_sim.apply(a);
                }
                if let Ok(a) = &after {
                    after_sim.apply(a);
                }
                outs.push((e, before, after, usage));
            }
            outs
        })
        .await?;
        for (e, before, after, usage) in outs {
            replayed += 1;
            usages.add(&usage);
            let entry = || {
                json!({"player_id": player, "jurisdiction": profile.jurisdiction, "event_id": e.event_id,
                                  "event_type": e.event_type, "current": actions_json(&before), "candidate": actions_json(&after)})
            };
            match &after {
                Err(code) => {
                    *failures_by_code.entry(code.clone()).or_default() += 1;
                    failed.add(&profile.jurisdiction, entry);
                    continue;
                }
                Ok(actions) => {
                    for a in actions {
                        by_kind.entry(kind_of(a)).or_default().1 += 1;
                        if let Some(why) = breaches(a, &profile.jurisdiction, &packs, &held) {
                            flagged.add(&profile.jurisdiction, || {
                                json!({"player_id": player, "event_id": e.event_id,
                                                                          "action": a, "why": why})
                            });
                        }
                    }
                }
            }
            for a in before.as_ref().map(Vec::as_slice).unwrap_or_default() {
                by_kind.entry(kind_of(a)).or_default().0 += 1;
            }
            let sum = |r: &Result<Vec<m::BonusAction>, String>| -> (i64, u64) {
                r.as_ref().map_or((0, 0), |v| {
                    v.iter().fold((0, 0), |(c, d), a| match a {
                        m::BonusAction::Progress { contribution_minor, .. } => {
                            (c.saturating_add(*contribution_minor), d)
                        }
                        m::BonusAction::Complete { .. } => (c, d + 1),
                        _ => (c, d),
                    })
                })
            };
            let (bs, as_) = (sum(&before), sum(&after));
            counted = (counted.0.saturating_add(bs.0), counted.1.saturating_add(as_.0));
            completed = (completed.0 + bs.1, completed.1 + as_.1);
            if actions_json(&before) != actions_json(&after) {
                changed_events += 1;
                changed_players.insert(player.clone());
                if changed_sample.len() < SAMPLE {
                    changed_sample.push(entry());
                }
            }
        }
    }
    Ok(json!({
        "kind": "bonus_rule",
        "candidate": {"plugin_id": plugin_id, "name": manifest.name, "version": manifest.version,
                      "jurisdictions": manifest.jurisdictions},
        "current": current_versions.into_values().collect::<Vec<_>>(),
        "brand_id": brand,
        "window_days": days,
        "decided_at": now.to_string(),
        "note": "each side replays the events against its own simulation of the ledger from each bonus's grant; profiles are as of now",
        "events_replayed": replayed,
        "changed": {"events": changed_events, "players": changed_players.len(), "sample": changed_sample},
        "actions": by_kind.iter().map(|(k, (b, a))| (k.to_string(), json!({"current": b, "candidate": a}))).collect::<serde_json::Map<_, _>>(),
        "wagering_counted_minor": {"current": counted.0, "candidate": counted.1},
        "bonuses_completed": {"current": completed.0, "candidate": completed.1},
        "flagged": {"actions": flagged.total, "by_jurisdiction": flagged.by_jurisdiction, "sample": flagged.sample},
        "failures": {"candidate": {"events": failed.total, "by_code": failures_by_code, "sample": failed.sample}},
        "limits": usages.json(&limits),
    }))
}

fn actions_json(r: &Result<Vec<m::BonusAction>, String>) -> Value {
    match r {
        Ok(v) => json!(v),
        Err(code) => json!({"error": code}),
    }
}
