# -*- test-case-name: tests.core.test_storage_http -*-
"""``http://`` and ``https://`` storage: GET sources, PUT and DELETE results.

Download: the body is written to the local file chunk by chunk as it arrives
(never held whole in memory). Upload: ``PUT`` with the local file streamed as
the body (with its ``Content-Length``) and the ``Content-Type`` of
``nommer.core.storage.base.content_type_for`` (the same as an S3 object's);
any 2xx answer means stored. Delete: ``DELETE``; 2xx is deleted, 404 and 410
are "there was none". Whether a PUT is atomic (a reader never sees half a
file) is up to the server: nommer sends each object whole in one request.

``settings.HTTP_DOWNLOAD_TIMEOUT_S`` is an *idle* timeout: a request fails
when no response, or no further body byte (received, or read to be sent),
moves for that long (a big file on a slow but live link is not cut off).

Size cap: a response whose Content-Length exceeds ``settings.MAX_SOURCE_BYTES``
is refused before its body is read, and a body that grows past it (no or a
false Content-Length) is cut off there; both end the job in ERROR.

Where it connects (SSRF): the client is ``nommer.core.netguard.guarded_agent``,
so the host name is resolved when connecting and only addresses that are
public, or inside ``ALLOWED_PRIVATE_NETWORKS``, are connected to -- on every
redirect as well. A refused address ends the job in ERROR with the reason
("source host example.internal resolves to 10.0.0.5, a private address; set
ALLOWED_PRIVATE_NETWORKS to allow it"). Literal addresses so refused fail
``check`` (BADINPUT at submit), as a source and as a destination.

Credentials in the URL (``https://user:secret@host/file``) are sent as HTTP
basic auth, never in the request line, and never logged or put in an error
message (errors name the URL through ``redact_uri``). A GET follows redirects
(Twisted drops the Authorization header on a cross-origin redirect); a PUT or
DELETE does not (a redirected PUT would have to send its body again, and a
301/302 turns it into a GET that stores nothing): a 3xx answer ends the job
in ERROR, naming the status. HTTPS certificates are verified.

Errors: on GET 404 and 410 are ``SourceNotFound``; 408, 425, 429 and 5xx,
timeouts, refused or lost connections and DNS failures are
``TransientJobError`` (the job is retried); TLS failures, too many redirects,
other 3xx and 4xx (a 404 on PUT too), a refused address and a source over
MAX_SOURCE_BYTES are ``PermanentJobError``.

A destination must name a file: a path ending in ``/`` is refused by ``check``
(a destination prefix is checked by ``check_destination_prefix``, and its
files are written at ``join_under(prefix, name)``).

Size (issue 10: about 400 lines at most, or a reason): kept whole. It is one
backend: GET, PUT and DELETE share the guarded client, the idle timer, the
credentials handling and the mapping of answers and connection errors to job
errors, and the Storage contract suite tests them as one.
"""

import os

from twisted.internet import defer, error as ierror
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web import error as weberror
from twisted.web.client import FileBodyProducer, RequestGenerationFailed, ResponseDone
from twisted.web.http import PotentialDataLoss

from nommer.core.errors import PermanentJobError, SourceNotFound, TransientJobError
from nommer.core.netguard import (AddressRefused, ResponseHeadTooLarge, allowed_networks,
                                  guarded_agent)
from nommer.core.storage.base import Storage, content_type_for
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
    """Download, upload and delete http(s) URIs with treq.

    @param client: a treq ``HTTPClient``-like object (``get(url, auth=...,
        headers=..., unbuffered=True)`` and ``request(method, url, ...)``
        returning a Deferred response); by default one on
        ``guarded_agent`` per direction (see the module docstring).
    @param resolver: the ``IHostnameResolver`` of the default client; by
        default the reactor's ``nameResolver``.
    @param clock: the ``IReactorTime`` for the idle timeout; by default
        ``reactor``.
    """

    log = Logger()

    def __init__(self, settings, reactor, client=None, clock=None, resolver=None):
        super().__init__(settings, reactor)
        self._client = client
        self._clients = {}
        self._clock = clock if clock is not None else reactor
        self._resolver = resolver

    def check(self, uri, for_write, field=None):
        """See ``Storage.check``: http or https with a host that is not a
        refused address literal; a destination names a file (its path does
        not end with ``/``)."""
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
        if for_write and muri.path.endswith("/"):
            raise InvalidURI(f"{redact_uri(muri)} does not name a file", field)

    def _get_client(self, what="source"):
        """The HTTP client; ``what`` ("source", "destination") is how an SSRF
        refusal names the host."""
        if self._client is not None:
            return self._client
        if what not in self._clients:
            from treq.client import HTTPClient

            self._clients[what] = HTTPClient(guarded_agent(
                self.reactor, allowed_networks(self.settings), what, resolver=self._resolver))
        return self._clients[what]

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

    async def upload(self, local_path, uri):
        """PUT ``local_path`` at ``uri``, streamed; return the byte count.

        @raise PermanentJobError: ``local_path`` missing; a 3xx (not
            followed) or a 4xx answer other than 408/425/429; TLS error; a
            URI that fails ``check``; an address the SSRF policy refuses.
        @raise TransientJobError: timeout, connection error, 408/425/429/5xx,
            an error reading ``local_path`` midway.
        """
        muri = self._check_at_use(uri, for_write=True)
        shown = redact_uri(muri)
        try:
            fobj = open(local_path, "rb")
            size = os.fstat(fobj.fileno()).st_size
        except OSError as e:
            raise PermanentJobError(
                f"cannot read the file to store at {shown}: {e.strerror or e}") from None
        content_type = content_type_for(local_path, muri.path)
        idle = _IdleTimer(self._clock, float(self.settings.HTTP_DOWNLOAD_TIMEOUT_S))
        body = FileBodyProducer(_UploadFile(fobj, idle))
        try:
            response = await self._send("PUT", muri, idle, body=body,
                                        headers={"Content-Type": [content_type]})
        except RequestGenerationFailed as e:
            raise TransientJobError(f"PUT {shown}: cannot read {local_path}: "
                                    f"{_describe(e, muri)}; will retry") from None
        finally:
            fobj.close()
        response.deliverBody(_Discard())
        if not 200 <= response.code < 300:
            raise _write_refused("PUT", shown, response)
        self.log.debug("Uploaded {local_path} to {uri} ({size} bytes, {content_type}, {status})",
                       uri=shown, local_path=local_path, size=size, content_type=content_type,
                       status=_status(response))
        return size

    async def delete(self, uri):
        """DELETE ``uri``: ``True`` on a 2xx answer, ``False`` on 404 or 410.

        @raise PermanentJobError: a 3xx (not followed) or another 4xx
            answer; TLS error; a URI that fails ``check``; an address the
            SSRF policy refuses.
        @raise TransientJobError: timeout, connection error, 408/425/429/5xx.
        """
        muri = self._check_at_use(uri, for_write=True)
        shown = redact_uri(muri)
        idle = _IdleTimer(self._clock, float(self.settings.HTTP_DOWNLOAD_TIMEOUT_S))
        response = await self._send("DELETE", muri, idle)
        response.deliverBody(_Discard())
        if response.code in _NOT_FOUND:
            deleted = False
        elif 200 <= response.code < 300:
            deleted = True
        else:
            raise _write_refused("DELETE", shown, response)
        self.log.debug("Deleted {uri}: {status}", uri=shown, status=_status(response))
        return deleted

    async def _send(self, method, muri, idle, body=None, headers=None):
        """Send a PUT or DELETE (no redirect followed) through the
        destination client; the response, once its head came. ``idle``
        cancels the request when it fires (it is stopped here)."""
        shown = redact_uri(muri)
        timeout_s = float(self.settings.HTTP_DOWNLOAD_TIMEOUT_S)
        auth = None
        if muri.username is not None:
            auth = (muri.username, muri.password or "")
        request_headers = {"User-Agent": [_USER_AGENT]}
        request_headers.update(headers or {})
        d = self._get_client("destination").request(
            method, muri.url_without_userinfo(), auth=auth, headers=request_headers, data=body,
            unbuffered=True, allow_redirects=False)
        idle.start(d.cancel)
        try:
            return await d
        except Exception as e:
            if isinstance(e, defer.CancelledError) and not idle.fired:
                raise  # the caller canceled the request
            if idle.fired:
                raise TransientJobError(
                    f"{method} {shown}: nothing moved for {timeout_s:g} s; will retry") from None
            if isinstance(e, RequestGenerationFailed):
                raise
            raise _request_error(e, muri, method) from None
        finally:
            idle.stop()


class _UploadFile:
    """The local file of a PUT as ``FileBodyProducer`` reads it (``read``,
    ``seek``, ``tell``, ``close``): each chunk read is about to be sent, so
    it restarts the idle timer."""

    def __init__(self, fobj, idle):
        self._fobj = fobj
        self._idle = idle

    def read(self, n_bytes):
        if self._fobj.closed:  # the upload ended (an early answer): nothing more to send
            return b""
        data = self._fobj.read(n_bytes)
        self._idle.reset()
        return data

    def seek(self, offset, whence=os.SEEK_SET):
        return self._fobj.seek(offset, whence)

    def tell(self):
        return self._fobj.tell()

    def close(self):
        self._fobj.close()


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


def _status(response):
    return f"HTTP {response.code} {_phrase(response)}".rstrip()


def _write_refused(method, shown, response):
    """The job error of a PUT or DELETE answered with ``response`` (not 2xx)."""
    status = _status(response)
    if 300 <= response.code < 400:
        return PermanentJobError(
            f"{method} {shown} was redirected ({status}); nommer does not follow redirects "
            "when writing: give the final URL")
    if response.code >= 500 or response.code in _RETRYABLE_4XX:
        return TransientJobError(f"{method} {shown} failed: {status}; will retry")
    return PermanentJobError(f"{method} {shown} was refused: {status}")


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


def _request_error(e, muri, method="GET"):
    """The job error for a request that got no response."""
    shown = f"{method} {redact_uri(muri)}"
    reasons = _reasons(e)
    refused = [r for r in reasons if isinstance(r, (AddressRefused, ResponseHeadTooLarge))]
    if refused:
        return PermanentJobError(f"{shown}: {refused[0]}")
    if _TLSError and any(isinstance(r, _TLSError) for r in reasons):
        return PermanentJobError(f"{shown}: TLS error ({_describe(e, muri)})")
    if isinstance(e, (weberror.InfiniteRedirection, weberror.RedirectWithNoLocation)):
        return PermanentJobError(f"{shown}: bad redirect ({_describe(e, muri)})")
    if isinstance(e, weberror.SchemeNotSupported):
        return PermanentJobError(f"{shown}: redirected to an unsupported scheme")
    if isinstance(e, ierror.DNSLookupError):
        return TransientJobError(f"{shown}: cannot resolve {muri.host!r}; will retry")
    if isinstance(e, ierror.ConnectionRefusedError):
        return TransientJobError(f"{shown}: connection refused; will retry")
    return TransientJobError(f"{shown} failed ({_describe(e, muri)}); will retry")


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
