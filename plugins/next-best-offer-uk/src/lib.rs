//! Offer scorer `next-best-offer`, UK variant: never more than 10× wagering (the UK rule since January
//! 2026). Same ranking as the default variant.

#[path = "../../next-best-offer/src/scoring.rs"]
mod scoring;

use pitboss_sdk::prelude::*;

struct NextBestOfferUk;

impl OfferScorer for NextBestOfferUk {
    fn score(
        p: Profile,
        candidates: Vec<OfferTemplate>,
        ctx: OfferContext,
    ) -> Result<Vec<RankedOffer>, RuleError> {
        Ok(scoring::score(p, candidates, ctx, 10))
    }
}

pitboss_sdk::export_offer_scorer!(NextBestOfferUk);
