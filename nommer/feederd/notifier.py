"""Webhooks: POST every job state change to the job's ``notify_url``.

Reads the state-change queue (``JobLedger`` announces each change there), so
nothing is lost when feederd restarts: a message is deleted only once its
webhook was delivered or given up. Each job's notifications go out one after
the other, in the order of the changes; different jobs' go out at once.

The request is the original media-nommer pingback, a form POST with
``unique_id``, ``job_state`` and ``job_state_details``, plus ``job_id``. A
non-2xx answer, a timeout or a connection error is retried with exponential
backoff (WEBHOOK_BACKOFF_S doubling) up to WEBHOOK_MAX_ATTEMPTS, then given up
and logged. Receivers may see a notification twice (at-least-once).

Where it connects (SSRF): through ``nommer.core.netguard.guarded_agent``, so
the receiver's host name is resolved when connecting and only public
addresses, or those inside ALLOWED_PRIVATE_NETWORKS, are connected to (a
redirect is checked the same way). A refused address is logged and the
notification given up at once (no retry: the answer would be the same).
Credentials in a ``notify_url`` (``user:password@``, a secret query
parameter) are sealed in the job store (``nommer.core.secrets``) and unsealed
here right before the POST; the password goes as HTTP basic auth.

A receiver's answer costs at most WEBHOOK_TIMEOUT_S in all (connect, headers
and body) and WEBHOOK_MAX_RESPONSE_BYTES of its body: the rest is not read
and the connection is dropped.

Never backwards: a job's changes are ordered by ``(attempts, rank of the
state)`` (attempts as stored with the change; within an attempt DOWNLOADING <
ENCODING < UPLOADING < PENDING < a final state), which only grows along the
transition table. A change reaching the notifier after a later one of the
same job was delivered is stale (its writer was slow to announce it, e.g. a
worker that lost its lease while the queue was unreachable) and is dropped,
so a receiver never sees UPLOADING after FINISHED or after a new attempt's
DOWNLOADING. (Remembered for the last KEYS_REMEMBERED jobs, per process.)

Signed: every notification carries ``X-Nommer-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256 of "<t>.<body>">`` keyed with the webhook signing
secret of the API key that submitted the job (``nommer.core.webhook_signing``;
receivers check it with ``nommer.client.webhooks.verify``). The body is
the form, URL-encoded here once, so what is signed is what is sent.

Events: each outcome is recorded in the job's event log
(``JobLedger.record_event``): WEBHOOK when a notification was delivered
(with the HTTP status), given up after WEBHOOK_MAX_ATTEMPTS, or not sent
(address refused, credentials unreadable); ERROR for each failed attempt
that will be retried. The state-change queue also carries every job event
(``{"event": {...}}``, ``nommer.core.events.message``): those are passed to
``on_event`` (feederd's live stream) and deleted, never notified.
"""

import collections
import functools
import inspect
import json
import urllib.parse

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from nommer.conf import defaults
from nommer.core.errors import NoSuchJob
from nommer.core.events import EventKind, JobEvent, event_of
from nommer.core.netguard import AddressRefused, allowed_networks, guarded_agent
from nommer.core.retry import retry
from nommer.core.secrets import SealedCredentialsError, unseal_uri
from nommer.core.uri import InvalidURI, parse_uri, redact_uri, refused_host_reason
from nommer.core.webhook_signing import base_secret, owner_secret
from nommer.core.workqueue.consumer import QueueConsumer
from nommer.client.webhooks import SIGNATURE_HEADER, sign

USER_AGENT = b"nommer feederd (media-nommer compatible)"

#: How many jobs' last delivered change the notifier remembers.
KEYS_REMEMBERED = 10_000
_RANK = {"DOWNLOADING": 1, "ENCODING": 2, "UPLOADING": 3, "PENDING": 4}  # final states: 5


def change_order(change):
    """``(attempts, rank)`` ordering one job's state-change messages, or None
    for a message without ``attempts`` (sent by an older nommer)."""
    attempts = change.get("attempts")
    if not isinstance(attempts, int):
        return None
    return attempts, _RANK.get(change.get("job_state"), 5)


class WebhookFailed(Exception):
    """One delivery attempt failed (non-2xx status or transport error)."""


class WebhookTimeout(WebhookFailed):
    """The receiver did not answer within WEBHOOK_TIMEOUT_S."""


class _CappedBody(Protocol):
    """Reads a response body up to ``max_bytes``, then drops the connection;
    ``done`` fires (with the byte count read) at the end of the body, at the
    cap, or when ``abort()`` is called (the deadline)."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.size = 0
        self.done = defer.Deferred()

    def connectionMade(self):
        if self.max_bytes <= 0:
            self.abort()

    def dataReceived(self, data):
        self.size += len(data)
        if self.size >= self.max_bytes:
            self.abort()

    def connectionLost(self, reason):
        self._finish()

    def abort(self):
        if self.transport is not None:
            self.transport.stopProducing()
        self._finish()

    def _finish(self):
        if not self.done.called:
            self.done.callback(min(self.size, self.max_bytes))


def form_body(fields):
    """The request body of a notification: ``fields`` (dict of str) as
    ``application/x-www-form-urlencoded`` bytes, in the dict's order. The
    signature is computed over exactly these bytes."""
    return urllib.parse.urlencode(fields).encode("ascii")


async def post_form(url, fields, timeout_s, pool=None, *, networks=(), resolver=None,
                    max_response_bytes=defaults.WEBHOOK_MAX_RESPONSE_BYTES, clock=None, headers=None):
    """POST ``fields`` as a form (``form_body(fields)``) to ``url``; returns
    the HTTP status code. ``headers``: more request headers (dict str -> str),
    e.g. the signature.

    ``timeout_s`` bounds the whole exchange (connect, headers, body): past it
    a request still unanswered fails with ``WebhookTimeout``; a body still
    coming is dropped (the status stands). At most ``max_response_bytes`` of
    the body are read, then the connection is dropped. Credentials in ``url``
    (``user:password@``) go as HTTP basic auth.

    Connections go through ``nommer.core.netguard.guarded_agent``: only
    public addresses, or those inside ``networks`` (``ipaddress`` networks),
    are connected to, on every redirect; else ``AddressRefused``.
    ``resolver``: an ``IHostnameResolver`` (default: the reactor's).
    ``pool``: a ``twisted.web.client.HTTPConnectionPool`` (default: one
    connection per request, nothing kept open). ``clock``: the
    ``IReactorTime`` of the deadline (default: the reactor).

    @raise AddressRefused: the receiver's address is refused.
    @raise WebhookTimeout: no answer within ``timeout_s``.
    @raise Exception: transport errors (connection refused, DNS...).
    """
    clock = clock if clock is not None else reactor
    if pool is None:
        pool = HTTPConnectionPool(reactor, persistent=False)
    muri = parse_uri(url)
    auth = (muri.username, muri.password or "") if muri.username is not None else None
    client = HTTPClient(guarded_agent(reactor, networks, "webhook", pool=pool, resolver=resolver))
    sent_headers = {b"User-Agent": [USER_AGENT], b"Content-Type": [b"application/x-www-form-urlencoded"]}
    for name, value in (headers or {}).items():
        sent_headers[name.encode("ascii")] = [value.encode("ascii")]
    request = client.post(muri.url_without_userinfo(), data=form_body(fields), auth=auth, unbuffered=True,
                          headers=sent_headers)
    body = None
    timed_out = []

    def on_deadline():
        timed_out.append(True)
        if body is None:
            request.cancel()
        else:
            body.abort()
    deadline = clock.callLater(timeout_s, on_deadline)
    try:
        try:
            response = await request
        except Exception:
            if timed_out:
                raise WebhookTimeout(f"no answer within {timeout_s:g} s") from None
            raise
        body = _CappedBody(max_response_bytes)
        response.deliverBody(body)
        await body.done
    finally:
        if deadline.active():
            deadline.cancel()
    return response.code


def _takes_headers(post):
    """Whether ``post`` takes a ``headers`` keyword (a ``post`` written
    before webhooks were signed, such as a test double, gets none)."""
    try:
        parameters = inspect.signature(post).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "headers" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _refusal(exc):
    """The ``AddressRefused`` behind ``exc`` (raw or wrapped by the web
    client in ``reasons``), or None."""
    if isinstance(exc, AddressRefused):
        return exc
    for failure in getattr(exc, "reasons", None) or ():
        if isinstance(getattr(failure, "value", None), AddressRefused):
            return failure.value
    return None


def _follow(d):
    """A new Deferred that fires (with None) when ``d`` fires; cancelling it
    leaves ``d`` alone."""
    follower = defer.Deferred()

    def fire(result):
        if not follower.called:
            follower.callback(None)
        return result
    d.addBoth(fire)
    return follower


#: Visibility timeout of a state change being delivered, seconds; extended
#: every third of it while its webhook is retried (QueueConsumer), so a
#: feederd killed outright holds undelivered changes about this long.
STATE_CHANGE_LEASE_S = 60.0


class Notifier(QueueConsumer):
    """The webhook sender (see the module docstring).

    @param post: ``post(url, fields, timeout_s, headers=...)`` returning (a
        Deferred of) the HTTP status; default ``post_form`` with the
        settings' address policy (ALLOWED_PRIVATE_NETWORKS) and
        WEBHOOK_MAX_RESPONSE_BYTES. ``headers`` holds the signature; a
        ``post`` without that keyword is called without it.
    @param on_event: ``on_event(JobEvent)``, called with each job event the
        state-change queue carries (feederd's live stream), or None. An
        exception it raises is logged; the message is deleted either way.
    @param signing_secret: the base webhook signing secret; default
        ``nommer.core.webhook_signing.base_secret(settings)`` (read, or
        generated into DATA_DIR, now).
    """

    log = Logger()

    def __init__(self, ledger, settings, clock, post=None, on_event=None, signing_secret=None):
        super().__init__(ledger.queue, settings.STATE_CHANGE_QUEUE_NAME, clock,
                         visibility_timeout_s=STATE_CHANGE_LEASE_S, wait_time_s=settings.QUEUE_WAIT_TIME_S)
        self.ledger = ledger
        self.settings = settings
        #: ALLOWED_PRIVATE_NETWORKS, parsed once.
        self._networks = allowed_networks(settings)
        if post is None:
            post = functools.partial(
                post_form, networks=self._networks,
                max_response_bytes=getattr(settings, "WEBHOOK_MAX_RESPONSE_BYTES",
                                           defaults.WEBHOOK_MAX_RESPONSE_BYTES))
        self._post = post
        self._tails = {}  # job_id -> Deferred firing once its last queued delivery is settled
        self._post_takes_headers = _takes_headers(post)
        self.on_event = on_event
        self._signing_base = signing_secret if signing_secret is not None else base_secret(settings)
        self._last = collections.OrderedDict()  # job_id -> change_order of its last delivered change
        #: Notifications not delivered since start (given up after every
        #: attempt, or not sent: address refused, credentials unreadable):
        #: /metrics' nommer_webhook_failures_total.
        self.webhook_failures = 0

    def handle(self, message):
        try:
            event = event_of(json.loads(message.body))
        except (ValueError, TypeError):
            self.log.error("dropping malformed event message {body!r}", body=message.body)
            return None
        if event is not None:
            self._pass_event(event)
            return None
        try:
            change = json.loads(message.body)
            job_id = change["job_id"]
        except (ValueError, KeyError, TypeError):
            self.log.error("dropping malformed state-change message {body!r}", body=message.body)
            return None
        # One job's notifications go out one after the other: each waits until
        # the previous one is *settled* (delivered, given up, failed or
        # cancelled and really stopped). It used to wait on the previous
        # handler's Deferred, which a cancel (feederd stopping) fires at once
        # while that delivery's retries still ran: the next state overtook it
        # and a receiver saw ENCODING before DOWNLOADING, or UPLOADING after
        # FINISHED. ``_follow`` gives each waiter its own Deferred, so
        # cancelling a waiter never touches the one it waits for.
        previous = self._tails.get(job_id)
        settled = self._tails[job_id] = defer.Deferred()

        async def in_turn():
            if previous is not None:
                await _follow(previous)
            await self._notify(change)

        d = defer.Deferred.fromCoroutine(in_turn())

        def settle(result):
            if self._tails.get(job_id) is settled:
                del self._tails[job_id]
            settled.callback(None)
            return result
        d.addBoth(settle)
        return d

    def _pass_event(self, event):
        """Hand a job event from the queue to ``on_event``; never raises."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            self.log.failure("on_event failed on the {kind} event of job {job_id}", kind=event.kind.value,
                             job_id=event.job_id)

    async def _webhook_event(self, kind, job_id, state, attempts, details):
        """Record a WEBHOOK (or ERROR) event of a notification of ``state``
        (``JobLedger.record_event``: never raises)."""
        await self.ledger.record_event(JobEvent(job_id=job_id, at=self.clock.seconds(), kind=kind, state=state,
                                                attempt=attempts if isinstance(attempts, int) else None,
                                                details=details))

    async def _notify(self, change):
        job_id, state = change["job_id"], change["job_state"]
        details = change.get("job_state_details") or ""
        order, last = change_order(change), self._last.get(job_id)
        if order is not None and last is not None and order < last:
            self.log.info("dropping stale notification for job {job_id} ({state}, attempt {attempt}): "
                          "a later change was notified", job_id=job_id, state=state, attempt=order[0])
            return
        await self._deliver(job_id, state, details, change.get("attempts"))
        if order is not None:  # delivered or given up: either way later changes go after it
            self._last[job_id] = max(order, last) if last is not None else order
            self._last.move_to_end(job_id)
            while len(self._last) > KEYS_REMEMBERED:
                self._last.popitem(last=False)

    async def _deliver(self, job_id, state, details, attempts=None):
        if state == "ERROR":
            self.log.error("job {job_id} ended in ERROR: {details}", job_id=job_id, details=details)
        try:
            job = await self.ledger.store.get(job_id)
        except NoSuchJob:
            return
        if not job.notify_url:
            return
        fields = {"unique_id": job_id, "job_id": job_id, "job_state": state, "job_state_details": details}
        # The stored notify_url is redacted when it had credentials; the
        # original is sealed (nommer.core.secrets) and opened only here.
        try:
            url = unseal_uri(job.notify_url, (job.sealed_credentials or {}).get("notify_url"),
                             self.settings)
        except SealedCredentialsError as exc:
            self.log.error("not sending the webhook for job {job_id} ({state}) to {url}: {why}",
                           job_id=job_id, state=state, url=redact_uri(job.notify_url), why=exc.message)
            await self._webhook_event(EventKind.WEBHOOK, job_id, state, attempts, f"{state} not sent: {exc.message}")
            self.webhook_failures += 1
            return
        # Badinput (SSRF): submit refuses non-public IP literals; a job stored
        # before that rule is not notified either. Names are checked when
        # connecting (post_form's guarded agent).
        try:
            refused = refused_host_reason(parse_uri(url).host, self._networks)
        except InvalidURI as exc:
            refused = exc.reason
        if refused:
            self.log.error("not sending the webhook for job {job_id} ({state}) to {url}: {why}",
                           job_id=job_id, state=state, url=redact_uri(url), why=refused)
            await self._webhook_event(EventKind.WEBHOOK, job_id, state, attempts,
                                      f"{state} not sent to {redact_uri(url)}: {refused}")
            self.webhook_failures += 1
            return
        headers = {SIGNATURE_HEADER: sign(form_body(fields), owner_secret(self._signing_base, job.owner),
                                          int(self.clock.seconds()))}
        failures = []  # ERROR events being recorded for failed attempts, awaited below

        def on_retry(exc, n, pause_s):
            self.log.warn("webhook for job {job_id} ({state}) to {url} failed (attempt {n}): {why}; retrying",
                          job_id=job_id, state=state, url=redact_uri(url), n=n, why=exc)
            failures.append(defer.Deferred.fromCoroutine(self._webhook_event(
                EventKind.ERROR, job_id, state, attempts,
                f"webhook for {state} to {redact_uri(url)} failed (attempt {n} of "
                f"{self.settings.WEBHOOK_MAX_ATTEMPTS}): {exc}; retrying in {pause_s:g} s")))
        try:
            status = await retry(
                lambda: self._attempt(url, fields, headers), clock=self.clock,
                attempts=self.settings.WEBHOOK_MAX_ATTEMPTS, backoff_s=self.settings.WEBHOOK_BACKOFF_S,
                # No retry once feederd is stopping: the message is released for
                # the next one (see below).
                retry_while=lambda: self.running,
                # Not on CancelledError (never retried): a cancelled delivery
                # (feederd stopping) must stop, not be retried behind our back.
                # Nor on a refused address: the answer would be the same.
                retry_on=lambda exc: _refusal(exc) is None,
                on_retry=on_retry)
        except defer.CancelledError:
            raise
        except Exception as exc:
            for d in failures:
                await d  # the failed attempts' ERROR events first (record_event never fails)
            refusal = _refusal(exc)
            if refusal is not None:
                self.log.error("not sending the webhook for job {job_id} ({state}) to {url}: {why}",
                               job_id=job_id, state=state, url=redact_uri(url), why=str(refusal))
                await self._webhook_event(EventKind.WEBHOOK, job_id, state, attempts,
                                          f"{state} not sent to {redact_uri(url)}: {refusal}")
                self.webhook_failures += 1
                return
            if not self.running:
                # Stopped mid-delivery: a cancelled request fails with treq's
                # own error (ResponseNeverReceived), not CancelledError. Not
                # "given up": the message must not be deleted, so that the next
                # feederd delivers it.
                raise defer.CancelledError(f"feederd stopping: {exc!r}") from exc
            self.log.error("gave up on the webhook for job {job_id} ({state}) to {url} after {n} attempts: {why}",
                           job_id=job_id, state=state, url=redact_uri(url),
                           n=self.settings.WEBHOOK_MAX_ATTEMPTS, why=exc)
            await self._webhook_event(EventKind.WEBHOOK, job_id, state, attempts,
                                      f"{state} to {redact_uri(url)} given up after "
                                      f"{self.settings.WEBHOOK_MAX_ATTEMPTS} attempts: {exc}")
            self.webhook_failures += 1
            return
        self.log.info("webhook for job {job_id} ({state}) delivered", job_id=job_id, state=state)
        for d in failures:
            await d
        await self._webhook_event(EventKind.WEBHOOK, job_id, state, attempts,
                                  f"{state} delivered to {redact_uri(url)}: HTTP {status}")

    async def _attempt(self, url, fields, headers=None):
        if self._post_takes_headers:
            status = await self._post(url, fields, self.settings.WEBHOOK_TIMEOUT_S, headers=headers)
        else:
            status = await self._post(url, fields, self.settings.WEBHOOK_TIMEOUT_S)
        if not 200 <= status < 300:
            raise WebhookFailed(f"HTTP {status}")
        return status
