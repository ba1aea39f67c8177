"""Hostile test plugin (Python): loops forever. Never shipped; the tests check that fuel stops it."""

from wit_world import exports


class Segmentation(exports.Segmentation):
    def evaluate(self, p, event):
        n = 0
        while True:
            n += 1

    def evaluate_batch(self, profiles):
        return [self.evaluate(p, None) for p in profiles]
