// Segment `dormant-depositor` in JavaScript: the same rule as plugins/dormant-depositor (Rust).

const out = (reason) => ({ member: false, score: undefined, reason });

function evaluate(p, _event) {
  const f = p.features;
  if (p.jurisdiction !== "DE") return out(`jurisdiction ${p.jurisdiction} is not DE`);
  if (!p.consents.channels.email) return out("no e-mail consent");
  if (f.depCount30d > 0) return out(`${f.depCount30d} deposits in 30 days`);
  if (f.daysSinceLastSeen <= 7) return out(`last seen ${f.daysSinceLastSeen} days ago`);
  return { member: true, score: undefined, reason: `no deposit in 30 days, last seen ${f.daysSinceLastSeen} days ago` };
}

export const segmentation = {
  evaluate,
  evaluateBatch: (profiles) => profiles.map((p) => evaluate(p, undefined)),
};
