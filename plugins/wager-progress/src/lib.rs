//! Bonus rule `wager-progress`: wagering requirements of active bonuses.
//!
//! - a bonus past its expiry is forfeited, whatever the event;
//! - `bet.placed` with bonus money above a bonus's max bet is rejected;
//! - `bet.settled` counts the stake towards each active bonus at its game category's contribution
//!   (slots 100%, crash 50%, live and table 10%, anything else 0%; the binding can set
//!   `contribution.<category>`), and completes the bonus when its requirement is met.

use pitboss_sdk::prelude::*;

struct WagerProgress;

fn contribution(category: &str) -> Result<u32, RuleError> {
    if let Some(v) = config(&format!("contribution.{category}")) {
        return match v.parse::<u32>() {
            Ok(p) if p <= 100 => Ok(p),
            _ => Err(RuleError::BadConfig(format!("contribution.{category} = `{v}` is not a percentage"))),
        };
    }
    Ok(match category {
        "slots" => 100,
        "crash" => 50,
        "live" | "table" => 10,
        _ => 0,
    })
}

impl BonusRule for WagerProgress {
    fn evaluate(event: Event, _p: Profile, bonuses: Vec<BonusState>) -> Result<Vec<BonusAction>, RuleError> {
        let now = event.occurred_at;
        let mut actions = Vec::new();
        let (active, expired): (Vec<_>, Vec<_>) =
            bonuses.into_iter().filter(|b| b.status == BonusStatus::Active).partition(|b| b.expires_at > now);
        for b in expired {
            actions.push(BonusAction::Forfeit(Closing { bonus_id: b.bonus_id, reason: "expired".into() }));
        }
        let EventPayload::Bet(bet) = event.payload else { return Ok(actions) };
        match event.event_type {
            EventType::BetPlaced if bet.in_bonus => {
                for b in &active {
                    if let Some(max) = b.max_bet_minor.filter(|max| bet.stake.amount_minor > *max) {
                        actions.push(BonusAction::RejectBet(BetRejection {
                            bonus_id: b.bonus_id.clone(),
                            bet_id: bet.bet_id.clone(),
                            reason: format!("stake {} above max bet {max}", bet.stake.amount_minor),
                        }));
                    }
                }
            }
            EventType::BetSettled => {
                let percent = contribution(&bet.category)?;
                let counted = bet.stake.amount_minor.max(0) * i64::from(percent) / 100;
                for b in active {
                    if counted > 0 {
                        actions.push(BonusAction::Progress(Progress {
                            bonus_id: b.bonus_id.clone(),
                            contribution_minor: counted,
                            contribution_percent: percent,
                            category: bet.category.clone(),
                        }));
                    }
                    if b.wagering_done_minor + counted >= b.wagering_required_minor {
                        actions.push(BonusAction::Complete(Closing {
                            bonus_id: b.bonus_id,
                            reason: "wagering requirement met".into(),
                        }));
                    }
                }
            }
            _ => {}
        }
        Ok(actions)
    }
}

pitboss_sdk::export_bonus_rule!(WagerProgress);
