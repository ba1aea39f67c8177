//! Segment rule `big-loss`, for the consolation trigger on `bet.settled`: a non-trivial loss is a
//! settled bet that lost more than `loss_minor` (default 5000), or a day whose net loss passed
//! `day_net_loss_minor` (default 20000). Both come from the binding's configuration, so each brand sets
//! its own. The score is the loss that counted, in minor units.

use pitboss_sdk::prelude::*;

struct BigLoss;

fn setting(key: &str, default: i64) -> Result<i64, RuleError> {
    match config(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| RuleError::BadConfig(format!("{key} `{v}` is not a positive amount in minor units"))),
    }
}

impl SegmentRule for BigLoss {
    fn evaluate(p: Profile, event: Option<Event>) -> Result<Membership, RuleError> {
        let per_bet = setting("loss_minor", 5000)?;
        let per_day = setting("day_net_loss_minor", 20000)?;
        let bet_loss = match event.map(|e| (e.event_type, e.payload)) {
            Some((EventType::BetSettled, EventPayload::Bet(b))) => {
                b.win_minor.map(|win| b.stake.amount_minor.saturating_sub(win).max(0))
            }
            _ => None,
        };
        let day = p.features.net_loss_today_minor;
        Ok(match bet_loss {
            Some(loss) if loss > per_bet => {
                Membership::member(format!("lost {loss} on one bet, above {per_bet}")).with_score(loss as f64)
            }
            _ if day > per_day => {
                Membership::member(format!("net loss today {day}, above {per_day}")).with_score(day as f64)
            }
            Some(loss) => Membership::out(format!(
                "lost {loss} on the bet (not above {per_bet}), net loss today {day} (not above {per_day})"
            )),
            None => Membership::out(format!("net loss today {day}, not above {per_day}")),
        })
    }
}

pitboss_sdk::export_segment!(BigLoss);
