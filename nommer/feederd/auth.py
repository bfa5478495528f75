"""Who is calling the API: API keys, scopes, and the anonymous rule.

A caller sends ``Authorization: Bearer <secret>`` (a key made with
``nommer keys create NAME --scope ...``). The key's scopes say what it may
do: ``submit`` (POST /job/submit), ``read`` (GET /job/<id>, GET /jobs),
``cancel`` (POST /job/<id>/cancel); ``admin`` may do all of that, sees every
caller's jobs (a key without it sees only the jobs it submitted) and
``GET /workers``. /health and /openapi.json need no key.

Anonymous callers (no ``Authorization`` header) are served only while the
API listens on loopback AND no active key exists: ``make run`` and the 2011
client work on one machine with nothing set up. Such a caller has every
scope (it is the machine's owner) and its jobs have no owner; a key that is
not ``admin`` never sees them. The moment a key is created, anonymous
requests get 401 (``any_active()`` is asked for every anonymous request; a
True answer is remembered ``ACTIVE_CACHE_S`` seconds, a False one never, so
the first key counts at once). Off loopback, feederd does not start at all
without an active key (``KeyRequirement``).

A reverse proxy on the same machine would make remote callers look local.
Most add ``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP``; a request
carrying one of them is never anonymous (it needs a key). A proxy that adds
none of them must not be put in front of a feederd without keys.

The errors here carry no HTTP status: the API maps them (``Unauthorized``
-> 401 ``UNAUTHORIZED`` with ``WWW-Authenticate: Bearer``, ``Forbidden`` ->
403 ``FORBIDDEN``).
"""

import re

import attr
from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.keys import SCOPES
from nommer.feederd.crosssite import is_loopback_interface

#: How long "some key is active" is remembered before asking the key store again, seconds.
ACTIVE_CACHE_S = 5.0

_BEARER_RE = re.compile(rb"^Bearer[ \t]+([!-~]+)[ \t]*$", re.IGNORECASE)

#: Headers a proxy adds: a request with one came through a proxy, so it may be remote.
PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")

#: What a refused start says to do.
CREATE_KEY_HINT = "Create one first: nommer keys create NAME --scope admin"


class Unauthorized(Exception):
    """No usable credentials: no key where one is required, a malformed
    ``Authorization`` header, or an unknown or revoked key. ``invalid_token``
    says a key was sent (and is not good)."""

    def __init__(self, message, invalid_token=False):
        super().__init__(message)
        self.message = message
        self.invalid_token = invalid_token


class Forbidden(Exception):
    """A known caller asked for something its scopes do not allow (or a
    cross-site request, see ``crosssite``)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


@attr.s(frozen=True, auto_attribs=True)
class Caller:
    """An authenticated caller. ``key_id`` None: the anonymous caller."""

    key_id: str
    name: str
    scopes: frozenset

    @property
    def anonymous(self):
        return self.key_id is None

    @property
    def owner(self):
        """What its jobs record as their ``owner``."""
        return self.key_id

    @property
    def sees_all(self):
        """True for ``admin`` (and the anonymous caller): every job, not only its own."""
        return "admin" in self.scopes

    @property
    def rate_key(self):
        """Its bucket in the rate limiter: the key, or one for all anonymous requests."""
        return self.key_id if self.key_id is not None else "anonymous"

    def may(self, scope):
        return scope in self.scopes or "admin" in self.scopes

    def can_see(self, job):
        """Whether the job is this caller's to see (and cancel)."""
        return self.sees_all or (job.owner is not None and job.owner == self.key_id)


#: The anonymous caller (loopback, no active key).
ANONYMOUS = Caller(key_id=None, name="anonymous", scopes=frozenset(SCOPES))


class Authenticator:
    """``await caller(request)``: the ``Caller`` of a request, or Unauthorized.

    ``keys``: a ``KeyStore`` (None: no key store, as if it held no key).
    ``loopback``: whether the API listens on loopback only (anonymous callers
    are possible). ``clock``: ``seconds()`` for the any_active cache."""

    def __init__(self, keys, loopback, clock):
        self.keys = keys
        self.loopback = loopback
        self.clock = clock
        self._active_until = None

    async def caller(self, request):
        headers = request.requestHeaders.getRawHeaders(b"authorization")
        if headers is None:
            proxied = any(request.requestHeaders.hasHeader(h) for h in PROXY_HEADERS)
            if self.loopback and not proxied and not await self._any_active():
                return ANONYMOUS
            why = " (a request through a proxy is never anonymous)" if proxied else ""
            raise Unauthorized("an API key is required: send Authorization: Bearer KEY "
                               f"(make one with: nommer keys create NAME --scope ...){why}")
        match = _BEARER_RE.match(headers[0]) if len(headers) == 1 else None
        if match is None:
            raise Unauthorized("the Authorization header must be one 'Bearer KEY'", invalid_token=True)
        key = None
        if self.keys is not None:
            key = await self.keys.authenticate(match.group(1).decode("ascii"))
        if key is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)", invalid_token=True)
        return Caller(key_id=key.key_id, name=key.name, scopes=frozenset(key.scopes))

    async def _any_active(self):
        if self.keys is None:
            return False
        now = self.clock.seconds()
        if self._active_until is not None and now < self._active_until:
            return True
        active = bool(await self.keys.any_active())
        self._active_until = now + ACTIVE_CACHE_S if active else None
        return active


class KeyRequirement(Service):
    """At start, off loopback: refuse to run without an active API key.

    On a non-loopback ``API_INTERFACE`` (see ``is_loopback_interface``) with
    no active key in ``keys``, or when the key store cannot be asked,
    ``on_refuse(message)`` is called (feederd's logs the message and exits
    non-zero). ``checked`` is the Deferred of the check (None on loopback)."""

    log = Logger()

    def __init__(self, keys, settings, on_refuse):
        self.keys = keys
        self.settings = settings
        self.on_refuse = on_refuse
        self.checked = None

    def startService(self):
        super().startService()
        if not is_loopback_interface(self.settings.API_INTERFACE):
            self.checked = defer.Deferred.fromCoroutine(self._check())

    async def _check(self):
        where = self.settings.API_INTERFACE or "every interface"
        try:
            active = await self.keys.any_active()
        except Exception:
            self.log.failure("cannot read the API keys")
            self.on_refuse(f"the API would listen on {where}, not loopback, and the API keys cannot be read "
                           f"(see the error above); feederd needs an active API key there")
            return
        if not active:
            self.on_refuse(f"the API would listen on {where}, not loopback, and no API key exists: "
                           f"every request would be refused. {CREATE_KEY_HINT} "
                           f"(same --config), or listen on 127.0.0.1")
