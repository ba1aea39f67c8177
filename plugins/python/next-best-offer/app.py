"""Offer scorer `next-best-offer` in Python: the same ranking as plugins/next-best-offer (Rust), wagering
capped at 35x (or the binding's `max_wager`)."""

from typing import List

from wit_world import exports
from wit_world.imports import config, types


def score(p: types.Profile, candidates: List[types.OfferTemplate], ctx: types.OfferContext, max_wager: int):
    f = p.features
    personal = p.consents.profiling
    churn = min(max(f.churn_score, 0.0), 1.0) if personal else 0.0
    losing = personal and f.net_loss_7d_minor > 0
    offers = []
    for t in candidates:
        fav = personal and any(pr in f.fav_providers for pr in t.providers)
        if t.kind == types.OfferKind.CASHBACK:
            s = 0.4 + 0.4 * churn + (0.2 if losing else 0.0)
            reason = f"cashback: churn {churn:.2f}, net loss 7d {max(f.net_loss_7d_minor, 0)}"
        elif t.kind == types.OfferKind.FREE_SPINS and t.max_spins > 0:
            s = 0.3 + 0.2 * churn + (0.3 if fav else 0.0)
            reason = f"free spins: favourite provider {'true' if fav else 'false'}, churn {churn:.2f}"
        elif t.kind == types.OfferKind.DEPOSIT_MATCH:
            s = 0.3 + 0.2 * (1.0 - churn) + (0.2 if personal and f.dep_count_30d > 0 else 0.0)
            reason = f"deposit match: {f.dep_count_30d} deposits in 30 days"
        else:
            continue
        cap = t.max_cap_minor
        if ctx.max_cost_minor is not None:
            cap = min(cap, ctx.max_cost_minor)
        if t.kind == types.OfferKind.CASHBACK and losing:
            # Cashback need not exceed what it gives back (positive values: // truncates like Rust).
            cap = max(min(cap, f.net_loss_7d_minor * t.max_percent // 100), 0)
        params = types.OfferParams(
            percent=t.max_percent,
            cap_minor=cap,
            wager_multiplier=min(t.max_wager_multiplier, max_wager),
            validity_hours=t.max_validity_hours,
            spins=t.max_spins,
        )
        offers.append(types.RankedOffer(template_id=t.template_id, score=s, params=params, reason=reason))
    offers.sort(key=lambda o: (-o.score, o.template_id))
    return offers


class OfferScoring(exports.OfferScoring):
    def score(self, p, candidates, ctx):
        configured = config.get("max_wager")
        return score(p, candidates, ctx, int(configured) if configured else 35)
