// Hostile test plugin (JavaScript): allocates until something stops it. Never shipped.
function evaluate(_p, _event) {
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(16 << 20));
}
export const segmentation = { evaluate, evaluateBatch: (ps) => ps.map((p) => evaluate(p)) };
