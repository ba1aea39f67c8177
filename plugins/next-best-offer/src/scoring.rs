//! Shared by the `next-best-offer` variants: ranks cashback, free spins and deposit match by churn score,
//! favourite providers and recent net loss. Parameters stay within each template's bounds and the
//! context's budget; the wagering multiplier never exceeds `max_wager` (the variant's own cap).
//! Without a profiling consent, offers are ranked by kind only: nothing personal is used.

use pitboss_sdk::prelude::*;

pub fn score(
    p: Profile,
    candidates: Vec<OfferTemplate>,
    ctx: OfferContext,
    max_wager: u32,
) -> Vec<RankedOffer> {
    let f = &p.features;
    let personal = p.consents.profiling;
    let churn = if personal { f.churn_score.clamp(0.0, 1.0) } else { 0.0 };
    let losing = personal && f.net_loss_7d_minor > 0;
    let mut offers: Vec<RankedOffer> = candidates
        .into_iter()
        .filter_map(|t| {
            let fav = personal && t.providers.iter().any(|pr| f.fav_providers.contains(pr));
            let (score, reason) = match t.kind {
                OfferKind::Cashback => (
                    0.4 + 0.4 * churn + if losing { 0.2 } else { 0.0 },
                    format!("cashback: churn {churn:.2}, net loss 7d {}", f.net_loss_7d_minor.max(0)),
                ),
                OfferKind::FreeSpins if t.max_spins > 0 => (
                    0.3 + 0.2 * churn + if fav { 0.3 } else { 0.0 },
                    format!("free spins: favourite provider {fav}, churn {churn:.2}"),
                ),
                OfferKind::DepositMatch => (
                    0.3 + 0.2 * (1.0 - churn) + if personal && f.dep_count_30d > 0 { 0.2 } else { 0.0 },
                    format!("deposit match: {} deposits in 30 days", f.dep_count_30d),
                ),
                _ => return None,
            };
            let mut cap = t.max_cap_minor;
            if let Some(budget) = ctx.max_cost_minor {
                cap = cap.min(budget);
            }
            if t.kind == OfferKind::Cashback && losing {
                // Cashback need not exceed what it gives back.
                cap = cap.min(f.net_loss_7d_minor * i64::from(t.max_percent) / 100).max(0);
            }
            Some(RankedOffer {
                score,
                params: OfferParams {
                    percent: t.max_percent,
                    cap_minor: cap,
                    wager_multiplier: t.max_wager_multiplier.min(max_wager),
                    validity_hours: t.max_validity_hours,
                    spins: t.max_spins,
                },
                reason,
                template_id: t.template_id,
            })
        })
        .collect();
    offers.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.template_id.cmp(&b.template_id)));
    offers
}
