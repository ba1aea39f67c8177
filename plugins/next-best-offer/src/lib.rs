//! Offer scorer `next-best-offer`, default variant: wagering up to 35×.

mod scoring;

use pitboss_sdk::prelude::*;

struct NextBestOffer;

impl OfferScorer for NextBestOffer {
    fn score(
        p: Profile,
        candidates: Vec<OfferTemplate>,
        ctx: OfferContext,
    ) -> Result<Vec<RankedOffer>, RuleError> {
        Ok(scoring::score(p, candidates, ctx, 35))
    }
}

pitboss_sdk::export_offer_scorer!(NextBestOffer);
