"""Segment `churn-risk` in Python: the same rule as plugins/churn-risk (Rust) — churn score above a
threshold (0.7, or the binding's `threshold`) and last seen more than 14 days ago; the score is the churn
score."""

from typing import List, Optional

from wit_world import exports
from wit_world.imports import config, types
from componentize_py_types import Err


def threshold() -> float:
    v = config.get("threshold")
    if v is None:
        return 0.7
    try:
        return float(v)
    except ValueError:
        raise Err(types.RuleError_BadConfig(f"threshold `{v}` is not a number"))


def decide(p: types.Profile, t: float) -> types.Membership:
    f = p.features
    if f.churn_score <= t:
        reason = f"churn score {f.churn_score:.2f} not above {t}"
        member = False
    elif f.days_since_last_seen <= 14:
        reason = f"last seen {f.days_since_last_seen} days ago"
        member = False
    else:
        reason = f"churn score {f.churn_score:.2f} above {t}, last seen {f.days_since_last_seen} days ago"
        member = True
    return types.Membership(member=member, score=f.churn_score, reason=reason)


class Segmentation(exports.Segmentation):
    def evaluate(self, p: types.Profile, event: Optional[types.Event]) -> types.Membership:
        return decide(p, threshold())

    def evaluate_batch(self, profiles: List[types.Profile]) -> List[types.Membership]:
        t = threshold()
        return [decide(p, t) for p in profiles]
