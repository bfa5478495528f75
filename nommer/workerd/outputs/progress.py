"""One monotonic percentage over every step of a job's outputs."""

#: Share of the job's percentage that uploading takes (the rest is encoding).
UPLOAD_SHARE = 0.05


class WeightedProgress:
    """Turns (step k's fraction done) and (bytes uploaded) into one
    percentage 0..100 that never goes down.

    :param weights: each step's weight (``Step.weight``, any positive
        scale; a weight <= 0 counts as a tiny one).
    :param report: called with each new, larger percentage (float).
    """

    def __init__(self, weights, report):
        floor = 1e-6
        weights = [max(float(w), floor) for w in weights] or [floor]
        total = sum(weights)
        self._starts, at = [], 0.0
        for w in weights:
            self._starts.append(at / total)
            at += w
        self._shares = [w / total for w in weights]
        self._report = report
        self.percent = 0.0

    def _set(self, percent):
        percent = round(min(max(percent, 0.0), 100.0), 2)
        if percent > self.percent:
            self.percent = percent
            self._report(percent)

    def step(self, k, fraction):
        """Step ``k`` (0-based) is ``fraction`` (0..1) done."""
        encoded = self._starts[k] + self._shares[k] * min(max(fraction, 0.0), 1.0)
        self._set(encoded * (1.0 - UPLOAD_SHARE) * 100.0)

    def uploaded(self, done_bytes, total_bytes):
        """``done_bytes`` of the ``total_bytes`` to upload are stored."""
        fraction = 1.0 if not total_bytes else min(done_bytes / total_bytes, 1.0)
        self._set(((1.0 - UPLOAD_SHARE) + UPLOAD_SHARE * fraction) * 100.0)
