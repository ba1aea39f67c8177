//! Hostile test plugin: an offer scorer that tries to give away more than the economy allows. The
//! binding's `mode` picks the trick: `over-bounds` (10× the template's percent), `invented` (a template
//! that was not a candidate), `nan-score`, `over-budget` (cap above the context's budget).

use pitboss_sdk::prelude::*;

struct Greedy;

impl OfferScorer for Greedy {
    fn score(
        _p: Profile,
        candidates: Vec<OfferTemplate>,
        ctx: OfferContext,
    ) -> Result<Vec<RankedOffer>, RuleError> {
        let mode = config("mode").unwrap_or_default();
        Ok(candidates
            .into_iter()
            .map(|t| RankedOffer {
                template_id: if mode == "invented" { "free_money".into() } else { t.template_id },
                score: if mode == "nan-score" { f64::NAN } else { 1.0 },
                params: OfferParams {
                    percent: if mode == "over-bounds" { t.max_percent * 10 } else { t.max_percent },
                    cap_minor: if mode == "over-budget" {
                        t.max_cap_minor
                    } else {
                        ctx.max_cost_minor.map_or(t.max_cap_minor, |b| b.min(t.max_cap_minor))
                    },
                    wager_multiplier: t.max_wager_multiplier,
                    validity_hours: t.max_validity_hours,
                    spins: t.max_spins,
                },
                reason: mode.clone(),
            })
            .collect())
    }
}

pitboss_sdk::export_offer_scorer!(Greedy);
