"""Segment `dormant-depositor` in Python: the same rule as plugins/dormant-depositor (Rust)."""

from typing import List, Optional

from wit_world import exports
from wit_world.imports import types


def out(reason: str) -> types.Membership:
    return types.Membership(member=False, score=None, reason=reason)


class Segmentation(exports.Segmentation):
    def evaluate(self, p: types.Profile, event: Optional[types.Event]) -> types.Membership:
        f = p.features
        if p.jurisdiction != "DE":
            return out(f"jurisdiction {p.jurisdiction} is not DE")
        if types.ChannelConsents.EMAIL not in p.consents.channels:
            return out("no e-mail consent")
        if f.dep_count_30d > 0:
            return out(f"{f.dep_count_30d} deposits in 30 days")
        if f.days_since_last_seen <= 7:
            return out(f"last seen {f.days_since_last_seen} days ago")
        return types.Membership(
            member=True, score=None, reason=f"no deposit in 30 days, last seen {f.days_since_last_seen} days ago"
        )

    def evaluate_batch(self, profiles: List[types.Profile]) -> List[types.Membership]:
        return [self.evaluate(p, None) for p in profiles]
