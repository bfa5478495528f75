"""A short-lived memory of ``authenticate`` answers, for the AWS key stores.

Every API request authenticates; without a cache each would cost a
DynamoDB or SimpleDB read. Answers (the key, or None for an unknown or
revoked secret) are kept ``ttl_s`` seconds (CACHE_TTL_S, 5 s), keyed by the
secret's SHA-256, never the secret. A key revoked through this store is
forgotten at once; revoked through another process (``nommer keys revoke``
beside feederd) it stops authenticating here within ``ttl_s``. Time comes
from the injected ``clock``. At most ``max_entries`` answers are held; the
oldest go first.
"""

import collections

#: Seconds an answer is kept: the longest a revocation elsewhere takes to count.
CACHE_TTL_S = 5.0
MAX_ENTRIES = 4096

_MISSING = object()


class AuthCache:

    def __init__(self, clock, ttl_s=CACHE_TTL_S, max_entries=MAX_ENTRIES):
        self._clock = clock
        self.ttl_s = ttl_s
        self._max = max_entries
        self._entries = collections.OrderedDict()   # secret hash -> (expires_at, ApiKey | None)

    def get(self, secret_hash):
        """The remembered answer, or ``MISSING`` (``AuthCache.MISSING``)."""
        entry = self._entries.get(secret_hash)
        if entry is None:
            return _MISSING
        if self._clock.seconds() >= entry[0]:
            del self._entries[secret_hash]
            return _MISSING
        return entry[1]

    def put(self, secret_hash, answer):
        if self.ttl_s <= 0:
            return
        self._entries.pop(secret_hash, None)
        self._entries[secret_hash] = (self._clock.seconds() + self.ttl_s, answer)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget_key(self, key_id):
        """Drop every answer naming ``key_id`` (it was just revoked here)."""
        for h in [h for h, (_, key) in self._entries.items() if key is not None and key.key_id == key_id]:
            del self._entries[h]

    MISSING = _MISSING
