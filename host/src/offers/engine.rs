//! The bonus engine: a bus consumer that moves the ledger on the events that concern a player's live
//! bonuses, in each player's order, once per event (the events applied are remembered, so a replay of
//! the log changes nothing), in the transaction that moves its offset.
//!
//! The host's own terms come first: a bonus past its deadline expires; a withdrawal request forfeits
//! the bonuses whose terms say so and locks the others until the withdrawal ends; a deposit fixes the
//! amount of a deposit match or reload and asks the platform to grant it. Then the bonus rule bound for
//! the player's jurisdiction decides on the event with the active bonuses, and the host validates each
//! action before applying it: only bonuses the player holds, progress only from a settled bet of that
//! category and never above the stake at the terms' contribution, completion only when wagering is met,
//! a rejected bet only above the terms' max bet (forfeit or flag, per the terms). A refused action is
//! kept on the bonus with its reason and counted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use sqlx::Row;
use tokio::sync::Notify;

use super::ledger::{self, Bonus, Move, State};
use crate::bus::{Handler, LoggedEvent};
use crate::core::Core;
use crate::decisions::{DecisionError, DecisionRequest};
use crate::model::{BonusAction, EventPayload, EventType, OfferKind};
use crate::plugins::World;
use crate::profiles::StoredProfile;

/// The consumer's name (its offset's key).
pub const CONSUMER: &str = "bonuses";

/// Most actions of one decision the host applies.
const MAX_ACTIONS: usize = 100;

pub struct Engine {
    pub core: Arc<Core>,
    /// Wakes the platform-call worker after a commit that queued a call.
    pub wake: Arc<Notify>,
    moved: AtomicBool,
    counted: std::sync::Mutex<Vec<(&'static str, &'static str)>>,
}

impl Engine {
    pub fn new(core: Arc<Core>, wake: Arc<Notify>) -> Engine {
        Engine { core, wake, moved: AtomicBool::new(false), counted: Default::default() }
    }
}

/// The events the engine looks at (the platform's; the host's own `bonus.*` go to triggers). Impact
/// reports of bonus rules replay the same.
pub const EVENT_TYPES: [EventType; 11] = [
    EventType::BetPlaced,
    EventType::BetSettled,
    EventType::PaymentCaptured,
    EventType::WithdrawalRequested,
    EventType::WithdrawalProcessed,
    EventType::WithdrawalFailed,
    EventType::BonusIssued,
    EventType::BonusConsumed,
    EventType::BonusExpired,
    EventType::SessionStarted,
    EventType::SessionEnded,
];

fn concerns(t: EventType) -> bool {
    EVENT_TYPES.contains(&t)
}

impl Handler for Engine {
    async fn handle(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[LoggedEvent],
        passed: &mut crate::bus::Passed,
    ) -> anyhow::Result<()> {
        self.counted.lock().expect("counted").clear();
        let concerned: Vec<&LoggedEvent> = events
            .iter()
            .filter(|e| concerns(e.event_type) && !crate::store::erasure::is_pseudonym(&e.player_id))
            .collect();
        // The batch's players' live bonuses and profiles, brand by brand, in a few queries.
        let mut wanted: HashMap<&str, Vec<String>> = HashMap::new();
        for e in &concerned {
            wanted.entry(&e.brand_id).or_default().push(e.player_id.clone());
        }
        let mut live: HashMap<(String, String), Vec<Bonus>> = HashMap::new();
        let mut profiles: HashMap<(String, String), std::sync::Arc<StoredProfile>> = HashMap::new();
        for (brand, mut players) in wanted {
            players.sort();
            players.dedup();
            let found = ledger::live_of_players(conn, brand, &players).await?;
            if found.is_empty() {
                continue;
            }
            let holders: Vec<String> = found.keys().cloned().collect();
            let read =
                crate::profiles::load_many_in(conn, &self.core.contacts_key, brand, &holders, passed).await?;
            profiles.extend(read.into_iter().map(|(p, stored)| ((brand.to_string(), p), stored)));
            live.extend(found.into_iter().map(|(p, v)| ((brand.to_string(), p), v)));
        }
        // Only the events of players who hold a live bonus, and each once ever (a replay of the log
        // finds them applied).
        let held: Vec<&LoggedEvent> = concerned
            .into_iter()
            .filter(|e| {
                live.get(&(e.brand_id.clone(), e.player_id.clone()))
                    .is_some_and(|v| v.iter().any(|b| b.state.live()))
            })
            .collect();
        let fresh = first_seen(conn, &held).await?;
        for e in held.into_iter().filter(|e| fresh.contains(&(e.brand_id.clone(), e.event_id.clone()))) {
            let key = (e.brand_id.clone(), e.player_id.clone());
            let Some(bonuses) = live.get_mut(&key).filter(|v| v.iter().any(|b| b.state.live())) else {
                continue;
            };
            self.apply(conn, e, bonuses, profiles.get(&key).map(|p| &**p)).await?;
            self.moved.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn committed(&self, _events: &[LoggedEvent]) {
        for (action, outcome) in self.counted.lock().expect("counted").drain(..) {
            self.core.delivery.metrics.bonus_action(action, outcome);
        }
        if self.moved.swap(false, Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

/// Remembers `events` as applied; answers those not applied before, as (brand, event id).
async fn first_seen(
    conn: &mut sqlx::AnyConnection,
    events: &[&LoggedEvent],
) -> anyhow::Result<HashSet<(String, String)>> {
    let mut fresh = HashSet::new();
    let rows = crate::store::rows_per_statement(crate::store::Backend::of(conn), 2);
    for chunk in events.chunks(rows) {
        let sql = format!(
            "INSERT INTO bonus_events (brand_id, event_id) VALUES {} ON CONFLICT (brand_id, event_id) DO NOTHING
             RETURNING brand_id, event_id",
            crate::store::values_list(chunk.len(), 2)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(&e.brand_id).bind(&e.event_id);
        }
        for r in q.fetch_all(&mut *conn).await? {
            fresh.insert((r.try_get("brand_id")?, r.try_get("event_id")?));
        }
    }
    Ok(fresh)
}

fn action_name(a: &BonusAction) -> &'static str {
    match a {
        BonusAction::Grant { .. } => "grant",
        BonusAction::Progress { .. } => "progress",
        BonusAction::Complete { .. } => "complete",
        BonusAction::Forfeit { .. } => "forfeit",
        BonusAction::RejectBet { .. } => "reject_bet",
    }
}

fn action_bonus(a: &BonusAction) -> Option<&str> {
    match a {
        BonusAction::Grant { .. } => None,
        BonusAction::Progress { bonus_id, .. }
        | BonusAction::Complete { bonus_id, .. }
        | BonusAction::Forfeit { bonus_id, .. }
        | BonusAction::RejectBet { bonus_id, .. } => Some(bonus_id),
    }
}

impl Engine {
    /// Applies one event to the player's bonuses (changed in place: the batch's next event sees them).
    async fn apply(
        &self,
        conn: &mut sqlx::AnyConnection,
        e: &LoggedEvent,
        bonuses: &mut [Bonus],
        stored: Option<&StoredProfile>,
    ) -> anyhow::Result<()> {
        let core = &self.core;
        let now = core.clock().now();
        let at = now.as_millisecond();
        let event = e.event();
        // The host's terms.
        for b in bonuses.iter_mut().filter(|b| b.state.live()) {
            let from = b.state;
            let mv = if b.expires_at <= e.occurred_at {
                Some(Move::new("expire", State::Expired, "the wagering deadline passed"))
            } else {
                match (e.event_type, from) {
                    (EventType::WithdrawalRequested, State::Active | State::Locked | State::Issued)
                        if b.terms.forfeit_on_withdrawal =>
                    {
                        Some(Move::new(
                            "forfeit",
                            State::Forfeited,
                            "a withdrawal was requested (the terms forfeit it)",
                        ))
                    }
                    (EventType::WithdrawalRequested, State::Active) => {
                        Some(Move::new("lock", State::Locked, "a withdrawal is pending"))
                    }
                    (EventType::WithdrawalProcessed | EventType::WithdrawalFailed, State::Locked) => {
                        Some(Move::new("unlock", State::Active, "the withdrawal ended"))
                    }
                    (EventType::PaymentCaptured, State::Issued)
                        if matches!(b.terms.kind, OfferKind::DepositMatch | OfferKind::Reload)
                            && b.granted_minor == 0 =>
                    {
                        let EventPayload::Money(mv) = &e.payload else { continue };
                        // A deposit of the bonus's currency, made once the offer was accepted.
                        if mv.amount.currency != b.currency || e.occurred_at < b.created_at {
                            continue;
                        }
                        // No bonus money to a player RG blocks now: the bonus is forfeited instead.
                        if let Some(codes) = stored.and_then(|s| {
                            crate::policy::gate::rg_codes(&s.at(&e.brand_id, &e.player_id, now).profile)
                        }) {
                            let mv = Move::new(
                                "forfeit",
                                State::Forfeited,
                                format!("responsible gambling: {codes}"),
                            );
                            ledger::apply_in(conn, b, from, &mv.event(&e.event_id), at).await?;
                            continue;
                        }
                        let amount =
                            (mv.amount.amount_minor.max(0).saturating_mul(i64::from(b.terms.percent)) / 100)
                                .min(b.terms.cap_minor);
                        if amount <= 0 {
                            continue;
                        }
                        b.granted_minor = amount;
                        b.wagering_required_minor =
                            amount.saturating_mul(i64::from(b.terms.wager_multiplier));
                        let reason = format!(
                            "{}% of the deposit {} (cap {})",
                            b.terms.percent, mv.amount.amount_minor, b.terms.cap_minor
                        );
                        Some(Move::new("deposit", State::Issued, reason).amount(amount))
                    }
                    _ => None,
                }
            };
            if let Some(mv) = mv {
                let deposit = mv.action == "deposit";
                ledger::apply_in(conn, b, from, &mv.event(&e.event_id), at).await?;
                if deposit {
                    super::calls::queue_in(conn, b, "grant", at).await?;
                }
            }
        }
        // The bonus rule, on the active bonuses.
        let active: Vec<crate::model::BonusState> = bonuses
            .iter()
            .filter(|b| b.state == State::Active)
            .map(Bonus::as_state)
            .collect::<Result<_, _>>()?;
        if active.is_empty() {
            return Ok(());
        }
        let Some(stored) = stored else { return Ok(()) };
        let profile = stored.at(&e.brand_id, &e.player_id, now).profile;
        let mut req = DecisionRequest::new(&e.brand_id, &e.player_id, World::BonusRule);
        req.event = Some(event.clone());
        req.bonuses = active;
        let evaluated = match crate::decisions::evaluate(core, &req, profile, now).await {
            Ok(ev) => ev,
            // No bonus rule for the jurisdiction: the host's terms alone apply.
            Err(DecisionError::NoBinding { .. }) => return Ok(()),
            Err(DecisionError::Internal(err)) => return Err(err),
            Err(other) => {
                tracing::warn!(error = %other, event_id = %e.event_id, "bonus rule not asked");
                return Ok(());
            }
        };
        let plugin_id = evaluated.binding.plugin_id.clone();
        let recorded = evaluated.record_in(conn).await?;
        let seq = recorded.seq;
        let Ok(decided) = recorded.into_result() else {
            // The failure is recorded with the decision; the ledger stays as it is.
            return Ok(());
        };
        let actions: Vec<BonusAction> = serde_json::from_value(decided.decision)?;
        let bet = match &e.payload {
            EventPayload::Bet(b) => Some(b),
            _ => None,
        };
        for action in actions.into_iter().take(MAX_ACTIONS) {
            let name = action_name(&action);
            let target = action_bonus(&action).and_then(|id| bonuses.iter().position(|b| b.bonus_id == id));
            let verdict: Result<Move, String> = match (&action, target.map(|i| &bonuses[i])) {
                (BonusAction::Grant { .. }, _) => {
                    Err("bonuses are granted from accepted offers, not by a bonus rule".into())
                }
                (_, None) => Err("not a bonus of the player".into()),
                (_, Some(b)) if !b.state.live() => Err(format!("the bonus is {}", b.state.name())),
                (
                    BonusAction::Progress { contribution_minor, contribution_percent, category, .. },
                    Some(b),
                ) => match bet.filter(|_| e.event_type == EventType::BetSettled) {
                    None => Err("progress comes from a settled bet".into()),
                    Some(_) if b.state != State::Active => Err(format!("the bonus is {}", b.state.name())),
                    Some(bet) if *category != bet.category => {
                        Err(format!("category {category} is not the bet's ({})", bet.category))
                    }
                    Some(bet) => {
                        let allowed = if b.terms.contributions.is_empty() {
                            100
                        } else {
                            b.terms.contributions.get(category).copied().unwrap_or(0)
                        };
                        let most =
                            bet.stake.amount_minor.max(0).saturating_mul(i64::from(*contribution_percent))
                                / 100;
                        if *contribution_percent > allowed {
                            Err(format!(
                                "{contribution_percent}% is above the terms' {allowed}% for {category}"
                            ))
                        } else if *contribution_minor < 0 || *contribution_minor > most {
                            Err(format!(
                                "{contribution_minor} is not within 0..={most} ({contribution_percent}% of the stake {})",
                                bet.stake.amount_minor
                            ))
                        } else {
                            Ok(Move::new(
                                "progress",
                                State::Active,
                                format!("{category} at {contribution_percent}%"),
                            )
                            .amount(*contribution_minor)
                            .detail(json!({"category": category, "percent": contribution_percent,
                                                   "stake_minor": bet.stake.amount_minor})))
                        }
                    }
                },
                (BonusAction::Complete { reason, .. }, Some(b)) => {
                    if b.state != State::Active {
                        Err(format!("the bonus is {}", b.state.name()))
                    } else if b.wagering_done_minor < b.wagering_required_minor {
                        Err(format!(
                            "wagering not met: {} of {}",
                            b.wagering_done_minor, b.wagering_required_minor
                        ))
                    } else {
                        let release = b.terms.max_cashout_minor;
                        Ok(Move::new(
                            "complete",
                            State::Completed,
                            reason.chars().take(500).collect::<String>(),
                        )
                        .detail(json!({"max_cashout_minor": release})))
                    }
                }
                (BonusAction::Forfeit { reason, .. }, Some(_)) => {
                    Ok(Move::new("forfeit", State::Forfeited, reason.chars().take(500).collect::<String>()))
                }
                (BonusAction::RejectBet { bet_id, reason, .. }, Some(b)) => {
                    match (
                        bet.filter(|bt| e.event_type == EventType::BetPlaced && bt.in_bonus),
                        b.terms.max_bet_minor,
                    ) {
                        (Some(bt), Some(max)) if bt.bet_id == *bet_id && bt.stake.amount_minor > max => {
                            let detail = json!({"bet_id": bet_id, "stake_minor": bt.stake.amount_minor, "max_bet_minor": max});
                            let why = reason.chars().take(500).collect::<String>();
                            Ok(match b.terms.max_bet_breach {
                                super::templates::Breach::Forfeit => {
                                    Move::new("max_bet_breach", State::Forfeited, why)
                                }
                                super::templates::Breach::Flag => Move::new("max_bet_flag", b.state, why),
                            }
                            .detail(detail))
                        }
                        _ => Err(format!("bet {bet_id} is not a bonus bet of this event above the max bet")),
                    }
                }
            };
            let mut mv = match verdict {
                Ok(mv) => mv,
                Err(why) => {
                    self.counted.lock().expect("counted").push((name, "refused"));
                    tracing::warn!(event_id = %e.event_id, action = name, %why, "bonus action refused");
                    let Some(i) = target else { continue };
                    let state = bonuses[i].state;
                    Move {
                        action: "refused",
                        to: Some(state),
                        reason: why,
                        detail: Some(json!(action)),
                        ..Move::default()
                    }
                }
            };
            if mv.action != "refused" {
                self.counted.lock().expect("counted").push((name, "applied"));
            }
            mv.plugin_id = Some(plugin_id.clone());
            mv.decision_seq = Some(seq);
            mv.event_id = Some(e.event_id.clone());
            let Some(i) = target else { continue };
            let b = &mut bonuses[i];
            if mv.action == "progress" {
                let (amount, category) = (
                    mv.amount_minor.unwrap_or(0),
                    mv.detail.as_ref().and_then(|d| d["category"].as_str()).unwrap_or("").to_string(),
                );
                b.wagering_done_minor = b.wagering_done_minor.saturating_add(amount);
                *b.contributions.entry(category).or_default() += amount;
            }
            if mv.action == "refused" {
                // A note on the bonus, whatever its state: it moves nothing.
                ledger::note_in(conn, b, &mv, at).await?;
                continue;
            }
            let from = b.state;
            ledger::apply_in(conn, b, from, &mv, at).await?;
        }
        Ok(())
    }
}
