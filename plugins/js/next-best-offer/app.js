// Offer scorer `next-best-offer` in JavaScript: the same ranking as plugins/next-best-offer (Rust),
// wagering capped at 35x (or the binding's `max_wager`). 64-bit integers (minor units) are BigInt.

import { get } from "pitboss:rules/config@0.1.0";

const min = (a, b) => (a < b ? a : b);
const max = (a, b) => (a > b ? a : b);

function rank(p, candidates, ctx, maxWager) {
  const f = p.features;
  const personal = p.consents.profiling;
  const churn = personal ? Math.min(Math.max(f.churnScore, 0), 1) : 0;
  const losing = personal && f.netLoss7dMinor > 0n;
  const offers = [];
  for (const t of candidates) {
    const fav = personal && t.providers.some((pr) => f.favProviders.includes(pr));
    let score, reason;
    if (t.kind === "cashback") {
      score = 0.4 + 0.4 * churn + (losing ? 0.2 : 0);
      reason = `cashback: churn ${churn.toFixed(2)}, net loss 7d ${max(f.netLoss7dMinor, 0n)}`;
    } else if (t.kind === "free-spins" && t.maxSpins > 0) {
      score = 0.3 + 0.2 * churn + (fav ? 0.3 : 0);
      reason = `free spins: favourite provider ${fav}, churn ${churn.toFixed(2)}`;
    } else if (t.kind === "deposit-match") {
      score = 0.3 + 0.2 * (1 - churn) + (personal && f.depCount30d > 0 ? 0.2 : 0);
      reason = `deposit match: ${f.depCount30d} deposits in 30 days`;
    } else {
      continue;
    }
    let cap = t.maxCapMinor;
    if (ctx.maxCostMinor !== undefined) cap = min(cap, ctx.maxCostMinor);
    if (t.kind === "cashback" && losing) {
      // Cashback need not exceed what it gives back (BigInt division truncates like Rust).
      cap = max(min(cap, (f.netLoss7dMinor * BigInt(t.maxPercent)) / 100n), 0n);
    }
    offers.push({
      templateId: t.templateId,
      score,
      params: {
        percent: t.maxPercent,
        capMinor: cap,
        wagerMultiplier: Math.min(t.maxWagerMultiplier, maxWager),
        validityHours: t.maxValidityHours,
        spins: t.maxSpins,
      },
      reason,
    });
  }
  offers.sort((a, b) => b.score - a.score || (a.templateId < b.templateId ? -1 : a.templateId > b.templateId ? 1 : 0));
  return offers;
}

export const offerScoring = {
  score(p, candidates, ctx) {
    const configured = get("max_wager");
    return rank(p, candidates, ctx, configured === undefined ? 35 : Number(configured));
  },
};
