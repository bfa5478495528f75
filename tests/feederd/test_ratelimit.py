"""The token bucket, on a task.Clock."""

from twisted.internet import task
from twisted.trial.unittest import TestCase

from nommer.feederd.ratelimit import MAX_IDLE_BUCKETS, RateLimiter, retry_after_header


class RateLimiterTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)

    def test_burst_then_steady_rate(self):
        """per_minute at once after a quiet minute, then one every 60/per_minute seconds."""
        limiter = RateLimiter(60, self.clock)
        self.assertEqual([limiter.take("k") for _ in range(60)], [None] * 60)
        self.assertAlmostEqual(limiter.take("k"), 1.0)
        self.clock.advance(0.5)
        self.assertAlmostEqual(limiter.take("k"), 0.5)
        self.clock.advance(0.5)
        self.assertIsNone(limiter.take("k"))
        self.assertIsNotNone(limiter.take("k"))
        self.assertIsNone(limiter.take("other"))
        self.clock.advance(3600)
        self.assertEqual([limiter.take("k") for _ in range(60)], [None] * 60)  # capped at per_minute

    def test_over_a_minute_at_most_per_minute_plus_burst(self):
        """Hammering for ten minutes gets per_minute per minute (plus the first burst), no more."""
        limiter = RateLimiter(120, self.clock)
        allowed = 0
        for _ in range(6000):
            allowed += limiter.take("k") is None
            self.clock.advance(0.1)
        self.assertLessEqual(allowed, 120 * 10 + 120)
        self.assertGreaterEqual(allowed, 120 * 10)

    def test_idle_buckets_forgotten(self):
        limiter = RateLimiter(10, self.clock)
        for i in range(MAX_IDLE_BUCKETS):
            limiter.take(f"k{i}")
        self.clock.advance(60)
        limiter.take("late")
        self.assertLessEqual(len(limiter._buckets), 1)

    def test_retry_after_header(self):
        self.assertEqual([retry_after_header(s) for s in (0.01, 1.0, 1.2, 20.0, 29.999)], ["1", "1", "2", "20", "30"])
        self.assertRaises(ValueError, RateLimiter, 0, self.clock)
