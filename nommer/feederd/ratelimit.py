"""Requests per minute per API caller: a token bucket per caller.

Each caller (an API key's ``key_id``; every anonymous request counts as one
caller) has a bucket of ``per_minute`` tokens, refilled continuously at
``per_minute / 60`` tokens per second. A request takes one token; with none
left it is refused, and ``Retry-After`` says when the next token comes (whole
seconds, rounded up). A burst of ``per_minute`` requests is allowed after a
quiet minute, and no more than about ``per_minute`` in any minute after that.

Why not the ``limits`` package (the well-kept choice elsewhere): its
in-memory storage reads ``time.time()`` itself and expires entries from a
``threading.Timer`` thread of its own. feederd's rules are that time comes
from the injected clock (tests drive a ``task.Clock``) and that nothing
runs outside the reactor and its bounded pools; a bucket is a few lines of
arithmetic on ``clock.seconds()``, so this is one.

Memory: one bucket (two floats) per caller that was seen, and only
authenticated callers (a bounded set of keys, plus "anonymous") get one;
buckets that have filled up again are dropped once there are more than
``MAX_IDLE_BUCKETS``.
"""

import math

#: Full buckets (callers idle for a minute) are forgotten past this many buckets.
MAX_IDLE_BUCKETS = 1024


class RateLimited(Exception):
    """A caller used up its requests; ``retry_after_s`` until the next one
    (the API: 429 ``RATELIMITED`` with ``Retry-After``)."""

    def __init__(self, message, retry_after_s):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class RateLimiter:
    """``take(caller)`` -> None (allowed) or the seconds to wait (float > 0).

    ``per_minute``: requests a caller may make per minute (>= 1).
    ``clock``: provides ``seconds()`` (the reactor, or a ``task.Clock``)."""

    def __init__(self, per_minute, clock):
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, not {per_minute}")
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.clock = clock
        self._buckets = {}  # caller -> (tokens, at)

    def _tokens(self, caller, now):
        tokens, at = self._buckets.get(caller, (self.capacity, now))
        return min(self.capacity, tokens + max(0.0, now - at) * self.rate_per_s)

    def take(self, caller):
        """Spend one of ``caller``'s tokens. None if there was one, else how
        long (seconds) until there is."""
        now = self.clock.seconds()
        tokens = self._tokens(caller, now)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_IDLE_BUCKETS:
                self._forget_full(now)
            return None
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def _forget_full(self, now):
        for caller in [c for c in self._buckets if self._tokens(c, now) >= self.capacity]:
            del self._buckets[caller]


def retry_after_header(seconds):
    """``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds - 1e-9)))
