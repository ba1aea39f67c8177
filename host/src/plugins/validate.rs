//! The host checks what plugins answer: a plugin proposes, the host's bounds decide. An offer scorer
//! cannot raise an offer above its template's economy bounds or the context's budget, nor invent a
//! template; a bonus rule cannot act on a bonus the player does not hold.

use std::collections::HashSet;

use super::PluginError;
use crate::model as m;

fn invalid(msg: String) -> PluginError {
    PluginError::InvalidOutput(msg)
}

pub(crate) fn ranked_offers(
    offers: &[m::RankedOffer],
    candidates: &[m::OfferTemplate],
    context: &m::OfferContext,
) -> Result<(), PluginError> {
    let mut seen = HashSet::new();
    for o in offers {
        let t = candidates
            .iter()
            .find(|t| t.template_id == o.template_id)
            .ok_or_else(|| invalid(format!("offer `{}` is not one of the candidates", o.template_id)))?;
        if !seen.insert(&o.template_id) {
            return Err(invalid(format!("offer `{}` ranked twice", o.template_id)));
        }
        if !o.score.is_finite() {
            return Err(invalid(format!("offer `{}` has a non-finite score", o.template_id)));
        }
        let p = &o.params;
        let over = |what: &str, got: i64, max: i64| -> Result<(), PluginError> {
            if got > max {
                Err(invalid(format!("offer `{}`: {what} {got} above the bound {max}", o.template_id)))
            } else {
                Ok(())
            }
        };
        over("percent", p.percent.into(), t.max_percent.into())?;
        over("cap_minor", p.cap_minor, t.max_cap_minor)?;
        over("wager_multiplier", p.wager_multiplier.into(), t.max_wager_multiplier.into())?;
        over("validity_hours", p.validity_hours.into(), t.max_validity_hours.into())?;
        over("spins", p.spins.into(), t.max_spins.into())?;
        if let Some(budget) = context.max_cost_minor {
            over("cap_minor (context max_cost_minor)", p.cap_minor, budget)?;
        }
        if p.cap_minor < 0 {
            return Err(invalid(format!("offer `{}`: negative cap_minor", o.template_id)));
        }
    }
    Ok(())
}

pub(crate) fn bonus_actions(actions: &[m::BonusAction], held: &[m::BonusState]) -> Result<(), PluginError> {
    let holds = |id: &str| held.iter().any(|b| b.bonus_id == id);
    for a in actions {
        match a {
            m::BonusAction::Grant { amount, .. } if amount.amount_minor <= 0 => {
                return Err(invalid(format!("grant of {} minor units", amount.amount_minor)));
            }
            m::BonusAction::Grant { .. } => {}
            m::BonusAction::Progress { bonus_id, contribution_minor, contribution_percent, .. } => {
                if !holds(bonus_id) {
                    return Err(invalid(format!("progress on unknown bonus `{bonus_id}`")));
                }
                if *contribution_minor < 0 || *contribution_percent > 100 {
                    return Err(invalid(format!(
                        "progress on `{bonus_id}`: contribution {contribution_minor} at {contribution_percent}%"
                    )));
                }
            }
            m::BonusAction::Complete { bonus_id, .. }
            | m::BonusAction::Forfeit { bonus_id, .. }
            | m::BonusAction::RejectBet { bonus_id, .. } => {
                if !holds(bonus_id) {
                    return Err(invalid(format!("action on unknown bonus `{bonus_id}`")));
                }
            }
        }
    }
    Ok(())
}
