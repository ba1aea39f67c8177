// Hostile test plugin (JavaScript): loops forever. Never shipped; the tests check that fuel stops it.
function evaluate(_p, _event) {
  let n = 0;
  for (;;) n++;
}
export const segmentation = { evaluate, evaluateBatch: (ps) => ps.map((p) => evaluate(p)) };
