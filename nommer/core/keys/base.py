"""API keys: who may call feederd's API, and what for.

A key is a secret the caller sends as ``Authorization: Bearer <secret>``.
The secret is shown once, when the key is created (``nommer keys create``);
a key store keeps only its SHA-256 hash beside the public ``key_id``, the
key's name, scopes and times. The secret is 256 bits of randomness
(``secrets.token_urlsafe(32)``), so a plain SHA-256 of it cannot be
brute-forced and no slow KDF (bcrypt, scrypt) is needed: those protect
guessable passwords, and would make every API request pay for them.

Secret layout: ``nmk_<key_id>_<43 urlsafe chars>``, e.g.
``nmk_3f9c0a1b2c3d4e5f_Xk...``; ``key_id`` is 16 hex characters (public:
jobs record it as their owner, logs may show it). ``parse_secret`` takes
the key_id back out, so authentication is one lookup by key_id and one
constant-time comparison of the hashes.

Every backend passes ``tests/core/keys_contract.py``.
"""

import hashlib
import hmac
import re
import secrets

import attr
from nommer.core.deferreds import deferred
from nommer.core.errors import InvalidJobSpec, NommerError
from nommer.core.keys.cache import AuthCache

#: What a key may do. ``admin`` sees every job (not only its own) and /workers,
#: and has every other scope; ``metrics`` reads only the farm-wide /metrics (a
#: Prometheus scraper's key: it can neither submit nor see a job).
SCOPES = ("submit", "read", "cancel", "admin", "metrics")

#: Scopes of a key created without ``--scope``.
DEFAULT_SCOPES = ("submit", "read", "cancel")

SECRET_PREFIX = "nmk_"
_SECRET_RE = re.compile(r"nmk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")

#: Longest key name (characters); names are for people, e.g. "ci-uploader".
MAX_NAME_CHARS = 200


@attr.s(frozen=True, auto_attribs=True)
class ApiKey:
    """One API key as stored and shown: never its secret nor the secret's hash.

    - ``key_id``: public id, 16 hex characters; jobs record it as their owner.
    - ``name``: for people ("ci-uploader").
    - ``scopes``: frozenset, a non-empty subset of SCOPES.
    - ``created_at``, ``revoked_at``: epoch seconds; ``revoked_at`` None
      while the key is usable.
    """

    key_id: str
    name: str
    scopes: frozenset
    created_at: float
    revoked_at: float = None

    @property
    def active(self):
        """True while the key is not revoked."""
        return self.revoked_at is None

    def to_dict(self):
        """For listings (CLI, API): ``key_id``, ``name``, ``scopes`` (sorted
        list), ``created_at``, ``revoked_at`` (epoch s or None)."""
        return {"key_id": self.key_id, "name": self.name, "scopes": sorted(self.scopes),
                "created_at": self.created_at, "revoked_at": self.revoked_at}


class NoSuchKey(NommerError):
    """No API key has that key_id."""

    error_code = "NOSUCHKEY"
    http_status = 404

    def __init__(self, key_id):
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id


class InvalidKeySpec(InvalidJobSpec, ValueError):
    """A key's name or scopes are not acceptable (``BADINPUT``, 400; also a
    ValueError). ``field`` is ``"scopes"`` or ``"name"``."""


def validate_scopes(scopes):
    """The frozenset of ``scopes``: an iterable of names or one comma-separated
    string (``"submit,read"``), blanks and case ignored. Raises
    InvalidKeySpec naming the unknown scope(s) and the known ones, or when
    none is given."""
    if isinstance(scopes, str):
        scopes = scopes.split(",")
    try:
        names = [s.strip().lower() for s in scopes if s and s.strip()]
    except (TypeError, AttributeError):
        raise InvalidKeySpec("scopes", f"expected scope names, not {scopes!r}") from None
    unknown = sorted(set(n for n in names if n not in SCOPES))
    if unknown:
        raise InvalidKeySpec("scopes", f"unknown scope{'s' if len(unknown) > 1 else ''} "
                                       f"{', '.join(map(repr, unknown))}; the scopes are {', '.join(SCOPES)}")
    if not names:
        raise InvalidKeySpec("scopes", f"a key needs at least one scope of {', '.join(SCOPES)}")
    return frozenset(names)


def validate_name(name):
    """The name, stripped. Raises InvalidKeySpec if empty, longer than
    MAX_NAME_CHARS or holding control characters or lone surrogates (it must
    fit every backend: at most 800 bytes of UTF-8, valid XML for SimpleDB)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidKeySpec("name", "a key needs a non-empty name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise InvalidKeySpec("name", f"longer than {MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c in "\u2028\u2029\ufffe\uffff" or 0xd800 <= ord(c) < 0xe000
           for c in name):
        raise InvalidKeySpec("name", "control characters and lone surrogates are not allowed")
    return name


def new_key_id():
    """16 random hex characters."""
    return secrets.token_hex(8)


def new_secret(key_id):
    """A fresh secret for ``key_id``: ``nmk_<key_id>_<43 urlsafe chars>`` (256 random bits)."""
    return f"{SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_secret(secret):
    """The key_id a well-formed secret names, or None (wrong type, shape, length)."""
    if not isinstance(secret, str):
        return None
    match = _SECRET_RE.fullmatch(secret)
    return match.group(1) if match else None


def hash_secret(secret):
    """The stored form of a secret: SHA-256, hex. Enough for 256 random bits
    (see the module docstring)."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def hashes_match(stored_hash, secret):
    """Constant-time comparison of ``hash_secret(secret)`` with ``stored_hash``."""
    return hmac.compare_digest(hash_secret(secret).encode("ascii"), str(stored_hash).encode("ascii"))


class KeyStore:
    """An API key store. Every method returns a Deferred (await it; ``close`` too).

    - ``create(name, scopes) -> Deferred[(ApiKey, secret)]``: a new active
      key; ``secret`` is the only copy there will ever be. ``scopes`` as
      ``validate_scopes`` takes them; InvalidKeySpec for a bad name or scope.
    - ``authenticate(secret) -> Deferred[ApiKey | None]``: the active key the
      secret belongs to; None for a malformed, unknown or revoked secret
      (never raises for any ``secret`` value; backend failures do propagate).
    - ``get(key_id) -> Deferred[ApiKey]``: raises NoSuchKey.
    - ``list() -> Deferred[list[ApiKey]]``: every key, revoked ones included,
      oldest first (ties by key_id).
    - ``revoke(key_id) -> Deferred[ApiKey]``: the key, now revoked (revoking
      twice keeps the first ``revoked_at``); raises NoSuchKey.
    - ``any_active() -> Deferred[bool]``: whether some key is not revoked.
    - ``close() -> Deferred[None]``.

    ``create``, ``authenticate`` and ``get`` are written here once; a backend
    sets ``self._clock`` (``seconds()`` stamps ``created_at``), may set
    ``self._cache`` (an ``AuthCache`` for ``authenticate`` answers; None:
    every call reads) and implements these primitives (coroutines, or
    methods returning a Deferred) besides ``list``, ``revoke``, ``any_active``
    and ``close``:

    - ``_insert(key, secret_hash) -> bool``: store a new key beside its
      secret's hash unless its key_id is taken; False on that collision
      (``create`` then draws another key_id).
    - ``_fetch(key_id) -> (ApiKey, secret_hash) | None``: a consistent read
      of one key; None when no key has that key_id.
    """

    _cache = None

    @deferred
    async def create(self, name, scopes=DEFAULT_SCOPES):
        name, scopes = validate_name(name), validate_scopes(scopes)
        while True:
            key = ApiKey(key_id=new_key_id(), name=name, scopes=scopes, created_at=float(self._clock.seconds()))
            secret = new_secret(key.key_id)
            if await self._insert(key, hash_secret(secret)):
                return key, secret
            # the same 64-bit key_id twice: draw again

    @deferred
    async def authenticate(self, secret):
        key_id = parse_secret(secret)
        if key_id is None:
            return None
        if self._cache is not None:
            cached = self._cache.get(hash_secret(secret))
            if cached is not AuthCache.MISSING:
                return cached
        found = await self._fetch(key_id)
        answer = None
        if found is not None:
            key, secret_hash = found
            if hashes_match(secret_hash, secret) and key.active:
                answer = key
        if self._cache is not None:
            self._cache.put(hash_secret(secret), answer)
        return answer

    @deferred
    async def get(self, key_id):
        found = await self._fetch(key_id)
        if found is None:
            raise NoSuchKey(key_id)
        return found[0]

    async def _insert(self, key, secret_hash):
        raise NotImplementedError

    async def _fetch(self, key_id):
        raise NotImplementedError

    def list(self):
        raise NotImplementedError

    def revoke(self, key_id):
        raise NotImplementedError

    def any_active(self):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
