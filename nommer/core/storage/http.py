# -*- test-case-name: tests.core.test_storage_http -*-
"""``http://`` and ``https://`` storage: download only, streamed to disk.

The body is written to the local file chunk by chunk as it arrives (never held
whole in memory). ``settings.HTTP_DOWNLOAD_TIMEOUT_S`` is an *idle* timeout:
the download fails when no response, or no further body byte, arrives for
that long (a big file on a slow but live link is not cut off).

Size cap: a response whose Content-Length exceeds ``settings.MAX_SOURCE_BYTES``
is refused before its body is read, and a body that grows past it (no or a
false Content-Length) is cut off there; both end the job in ERROR.

Where it connects (SSRF): the client is ``nommer.core.netguard.guarded_agent``,
so the host name is resolved when connecting and only addresses that are
public, or inside ``ALLOWED_PRIVATE_NETWORKS``, are connected to -- on every
redirect as well. A refused address ends the job in ERROR with the reason
("source host example.internal resolves to 10.0.0.5, a private address; set
ALLOWED_PRIVATE_NETWORKS to allow it").

Credentials in the URL (``https://user:secret@host/file``) are sent as HTTP
basic auth, never in the request line, and never logged or put in an error
message (errors name the URL through ``redact_uri``). Redirects are followed
(Twisted drops the Authorization header on a cross-origin redirect); HTTPS
certificates are verified.

Errors: 404 and 410 are ``SourceNotFound``; 408, 425, 429 and 5xx, timeouts,
refused or lost connections and DNS failures are ``TransientJobError`` (the job
is retried); TLS failures, too many redirects, other 4xx, a refused address
and a source over MAX_SOURCE_BYTES are ``PermanentJobError``.

An http(s) URI as a destination is refused by ``check``.
"""

import os

from twisted.internet import defer, error as ierror
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web import error as weberror
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from nommer.core.errors import PermanentJobError, SourceNotFound, TransientJobError
from nommer.core.netguard import (AddressRefused, ResponseHeadTooLarge, allowed_networks,
                                  guarded_agent)
from nommer.core.storage.base import Storage
from nommer.core.uri import InvalidURI, as_media_uri, redact_uri, refused_host_reason

__all__ = ["HTTPStorage"]

try:
    from OpenSSL.SSL import Error as _TLSError
except ImportError:  # pragma: no cover - pyOpenSSL comes with Twisted[tls]
    _TLSError = ()

_NOT_FOUND = (404, 410)
_RETRYABLE_4XX = (408, 425, 429)
_USER_AGENT = "nommer-workerd"


class HTTPStorage(Storage):
    """Download http(s) URIs with treq.

    @param client: a treq ``HTTPClient``-like object (``get(url, auth=...,
        headers=..., unbuffered=True)`` returning a Deferred response); by
        default one on ``guarded_agent`` (see the module docstring).
    @param resolver: the ``IHostnameResolver`` of the default client; by
        default the reactor's ``nameResolver``.
    @param clock: the ``IReactorTime`` for the idle timeout; by default
        ``reactor``.
    """

    log = Logger()
    can_write = False
    cannot_write_message = ("{uri}: http(s) destinations are not supported; use file:// "
                            "(or s3:// with the AWS backends)")

    def __init__(self, settings, reactor, client=None, clock=None, resolver=None):
        super().__init__(settings, reactor)
        self._client = client
        self._clock = clock if clock is not None else reactor
        self._resolver = resolver

    def check(self, uri, for_write, field=None):
        """See ``Storage.check``: http or https with a host; never a destination."""
        super().check(uri, for_write, field)
        muri = as_media_uri(uri, field)
        if muri.scheme not in ("http", "https"):
            raise InvalidURI(f"{redact_uri(muri)}: HTTPStorage handles http:// and https:// "
                             "URIs only", field)
        if not muri.host:
            raise InvalidURI(f"{redact_uri(muri)}: an http(s) URI needs a host", field)
        # Badinput (SSRF): never fetch from a non-public IP literal (cloud
        # metadata at 169.254.169.254, loopback, private...), also on the
        # worker for jobs stored before spec.py refused them. Names and
        # redirects are checked when connecting (guarded_agent).
        reason = refused_host_reason(muri.host, allowed_networks(self.settings))
        if reason:
            raise InvalidURI(reason, field)

    def _get_client(self):
        if self._client is None:
            from treq.client import HTTPClient

            self._client = HTTPClient(guarded_agent(
                self.reactor, allowed_networks(self.settings), "source", resolver=self._resolver))
        return self._client

    async def download(self, uri, local_path):
        """GET ``uri`` into ``local_path``, streaming; return the byte count.

        @raise SourceNotFound: HTTP 404 or 410.
        @raise TransientJobError: timeout, connection error, 408/425/429/5xx.
        @raise PermanentJobError: other 4xx, TLS error, too many redirects,
            a URI that fails ``check``, an address the SSRF policy refuses
            (``nommer.core.netguard``), a source over MAX_SOURCE_BYTES.
        """
        muri = self._check_at_use(uri, for_write=False)
        shown = redact_uri(muri)
        timeout_s = float(self.settings.HTTP_DOWNLOAD_TIMEOUT_S)
        auth = None
        if muri.username is not None:
            auth = (muri.username, muri.password or "")
        idle = _IdleTimer(self._clock, timeout_s)

        d = self._get_client().get(muri.url_without_userinfo(), auth=auth, unbuffered=True,
                                   headers={"User-Agent": [_USER_AGENT]})
        idle.start(d.cancel)
        try:
            response = await d
        except Exception as e:
            if isinstance(e, defer.CancelledError) and not idle.fired:
                raise  # the caller canceled the download
            if idle.fired:
                raise TransientJobError(
                    f"GET {shown}: no response within {timeout_s:g} s") from None
            raise _request_error(e, muri) from None
        finally:
            idle.stop()

        status = f"HTTP {response.code} {_phrase(response)}".rstrip()
        if not 200 <= response.code < 300:
            response.deliverBody(_Discard())
            if response.code in _NOT_FOUND:
                raise SourceNotFound(f"{shown} does not exist ({status})")
            if response.code >= 500 or response.code in _RETRYABLE_4XX:
                raise TransientJobError(f"GET {shown} failed: {status}; will retry")
            raise PermanentJobError(f"GET {shown} was refused: {status}")

        max_bytes = self._max_source_bytes()
        length = response.length if isinstance(response.length, int) else None
        if length is not None and length > max_bytes:
            response.deliverBody(_Discard())
            raise PermanentJobError(
                f"GET {shown}: the source is {length} bytes, more than MAX_SOURCE_BYTES "
                f"({max_bytes})")

        try:
            fobj = self._open_local(local_path)
        except OSError as e:
            response.deliverBody(_Discard())
            raise TransientJobError(f"GET {shown}: cannot write {local_path}: "
                                    f"{e.strerror or e}") from None
        # Canceling the download (the job was canceled) drops the connection.
        finished = defer.Deferred(lambda _: body.abort())
        body = _BodyToFile(fobj, idle, finished, max_bytes)
        try:
            response.deliverBody(body)
            try:
                size = await finished
            finally:
                idle.stop()
                fobj.close()
        except Exception as e:
            _unlink_quietly(local_path)
            if isinstance(e, defer.CancelledError):
                raise
            if isinstance(e, OSError):
                raise TransientJobError(f"GET {shown}: cannot write {local_path}: "
                                        f"{e.strerror or e}") from None
            if isinstance(e, _TooBig):
                raise PermanentJobError(
                    f"GET {shown}: the source is larger than MAX_SOURCE_BYTES ({max_bytes}); "
                    f"the download was stopped after {body.size} bytes") from None
            if idle.fired:
                raise TransientJobError(
                    f"GET {shown}: no data for {timeout_s:g} s after {body.size} bytes"
                ) from None
            raise TransientJobError(
                f"GET {shown}: connection lost after {body.size} bytes "
                f"({_describe(e, muri)}); will retry") from None
        self.log.debug("Downloaded {uri} to {local_path} ({size} bytes, {status})",
                       uri=shown, local_path=local_path, size=size, status=status)
        return size

    def _open_local(self, local_path):
        """Open the download target (a hook for tests)."""
        return open(local_path, "wb")


class _IdleTimer:
    """Calls ``on_idle`` once ``seconds`` pass without a ``reset``."""

    fired = False

    def __init__(self, clock, seconds):
        self._clock = clock
        self._seconds = seconds
        self._call = None
        self._on_idle = None

    def start(self, on_idle):
        self.stop()
        self._on_idle = on_idle
        self._call = self._clock.callLater(self._seconds, self._fire)

    def reset(self):
        if self._call is not None and self._call.active():
            self._call.reset(self._seconds)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _fire(self):
        self._call = None
        self.fired = True
        self._on_idle()


class _TooBig(Exception):
    """The body passed the size cap."""


class _BodyToFile(Protocol):
    """Writes each body chunk to ``fobj`` as it arrives; fires ``finished``
    with the byte count. Idle for too long: drops the connection. A body
    passing ``max_bytes``: drops the connection, fails with ``_TooBig``."""

    def __init__(self, fobj, idle, finished, max_bytes=None):
        self.fobj = fobj
        self.idle = idle
        self.finished = finished
        self.max_bytes = max_bytes
        self.size = 0

    def connectionMade(self):
        self.idle.start(self.transport.stopProducing)

    def dataReceived(self, data):
        if self.finished is None:
            return
        self.idle.reset()
        if self.max_bytes is not None and self.size + len(data) > self.max_bytes:
            self.transport.stopProducing()
            self._fail(_TooBig())
            return
        try:
            self.fobj.write(data)
        except BaseException as e:
            self.transport.stopProducing()
            self._fail(e)
            return
        self.size += len(data)

    def connectionLost(self, reason):
        self.idle.stop()
        # PotentialDataLoss: no Content-Length and the server closed the
        # connection, which is how such a body ends.
        if reason.check(ResponseDone, PotentialDataLoss):
            if self.finished is not None:
                d, self.finished = self.finished, None
                d.callback(self.size)
        else:
            self._fail(reason)

    def abort(self):
        """Stop receiving (the download was canceled)."""
        self.finished = None
        if self.transport is not None:
            self.transport.stopProducing()

    def _fail(self, why):
        if self.finished is not None:
            d, self.finished = self.finished, None
            d.errback(why)


class _Discard(Protocol):
    """Drops an unwanted (error) body by closing the connection."""

    def connectionMade(self):
        self.transport.stopProducing()


def _phrase(response):
    phrase = response.phrase
    if isinstance(phrase, bytes):
        phrase = phrase.decode("latin-1")
    return "".join(c for c in phrase if c.isprintable())[:80]


def _reasons(e):
    """The underlying exceptions of a (possibly wrapping) web client error."""
    inner = getattr(e, "reasons", None)
    if inner:
        return [f.value for f in inner]
    return [e]


def _describe(e, muri):
    """A one-line description of ``e`` with no secret from ``muri`` in it."""
    parts = []
    for r in _reasons(e):
        text = str(r).strip()
        parts.append(f"{type(r).__name__}: {text}" if text else type(r).__name__)
    text = "; ".join(parts)
    for secret in (muri.password, muri.query):
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


def _request_error(e, muri):
    """The job error for a request that got no response."""
    shown = redact_uri(muri)
    reasons = _reasons(e)
    refused = [r for r in reasons if isinstance(r, (AddressRefused, ResponseHeadTooLarge))]
    if refused:
        return PermanentJobError(f"GET {shown}: {refused[0]}")
    if _TLSError and any(isinstance(r, _TLSError) for r in reasons):
        return PermanentJobError(f"GET {shown}: TLS error ({_describe(e, muri)})")
    if isinstance(e, (weberror.InfiniteRedirection, weberror.RedirectWithNoLocation)):
        return PermanentJobError(f"GET {shown}: bad redirect ({_describe(e, muri)})")
    if isinstance(e, weberror.SchemeNotSupported):
        return PermanentJobError(f"GET {shown}: redirected to an unsupported scheme")
    if isinstance(e, ierror.DNSLookupError):
        return TransientJobError(f"GET {shown}: cannot resolve {muri.host!r}; will retry")
    if isinstance(e, ierror.ConnectionRefusedError):
        return TransientJobError(f"GET {shown}: connection refused; will retry")
    return TransientJobError(f"GET {shown} failed ({_describe(e, muri)}); will retry")


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
