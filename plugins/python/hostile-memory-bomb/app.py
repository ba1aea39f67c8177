"""Hostile test plugin (Python): allocates until something stops it. Never shipped."""

from wit_world import exports


class Segmentation(exports.Segmentation):
    def evaluate(self, p, event):
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))

    def evaluate_batch(self, profiles):
        return [self.evaluate(p, None) for p in profiles]
