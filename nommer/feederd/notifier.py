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

Never backwards: a job's changes are ordered by ``(attempts, rank of the
state)`` (attempts as stored with the change; within an attempt DOWNLOADING <
ENCODING < UPLOADING < PENDING < a final state), which only grows along the
transition table. A change reaching the notifier after a later one of the
same job was delivered is stale (its writer was slow to announce it, e.g. a
worker that lost its lease while the queue was unreachable) and is dropped,
so a receiver never sees UPLOADING after FINISHED or after a new attempt's
DOWNLOADING. (Remembered for the last KEYS_REMEMBERED jobs, per process.)
"""

import collections

import json

import tenacity
import treq
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from nommer.core.errors import NoSuchJob
from nommer.core.uri import InvalidURI, parse_uri, redact_uri, refused_host_reason
from nommer.feederd.consumer import QueueConsumer

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


async def post_form(url, fields, timeout_s, pool=None):
    """POST ``fields`` as a form to ``url``; returns the HTTP status code.
    Raises on transport errors and after ``timeout_s`` seconds. ``pool`` is
    a ``twisted.web.client.HTTPConnectionPool`` (default: one connection per
    request, nothing kept open)."""
    if pool is None:
        pool = HTTPConnectionPool(reactor, persistent=False)
    response = await treq.post(url, data=fields, timeout=timeout_s, pool=pool,
                               headers={b"User-Agent": [USER_AGENT]})
    await response.content()
    return response.code


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
    log = Logger()

    def __init__(self, ledger, settings, clock, post=post_form):
        super().__init__(ledger.queue, settings.STATE_CHANGE_QUEUE_NAME, clock,
                         visibility_timeout_s=STATE_CHANGE_LEASE_S, wait_time_s=settings.QUEUE_WAIT_TIME_S)
        self.ledger = ledger
        self.settings = settings
        self._post = post
        self._tails = {}  # job_id -> Deferred firing once its last queued delivery is settled
        self._last = collections.OrderedDict()  # job_id -> change_order of its last delivered change

    def handle(self, message):
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

    async def _notify(self, change):
        job_id, state = change["job_id"], change["job_state"]
        details = change.get("job_state_details") or ""
        order, last = change_order(change), self._last.get(job_id)
        if order is not None and last is not None and order < last:
            self.log.info("dropping stale notification for job {job_id} ({state}, attempt {attempt}): "
                          "a later change was notified", job_id=job_id, state=state, attempt=order[0])
            return
        await self._deliver(job_id, state, details)
        if order is not None:  # delivered or given up: either way later changes go after it
            self._last[job_id] = max(order, last) if last is not None else order
            self._last.move_to_end(job_id)
            while len(self._last) > KEYS_REMEMBERED:
                self._last.popitem(last=False)

    async def _deliver(self, job_id, state, details):
        if state == "ERROR":
            self.log.error("job {job_id} ended in ERROR: {details}", job_id=job_id, details=details)
        try:
            job = await self.ledger.store.get(job_id)
        except NoSuchJob:
            return
        if not job.notify_url:
            return
        fields = {"unique_id": job_id, "job_id": job_id, "job_state": state, "job_state_details": details}
        url = job.notify_url
        # Badinput (SSRF): submit refuses link-local notify_urls; a job stored
        # before that rule is not notified either.
        try:
            refused = refused_host_reason(parse_uri(url).host)
        except InvalidURI as exc:
            refused = exc.reason
        if refused:
            self.log.error("not sending the webhook for job {job_id} ({state}) to {url}: {why}",
                           job_id=job_id, state=state, url=redact_uri(url), why=refused)
            return
        retrying = tenacity.AsyncRetrying(
            # No retry once feederd is stopping: the message is released for
            # the next one (see below).
            stop=tenacity.stop_any(tenacity.stop_after_attempt(self.settings.WEBHOOK_MAX_ATTEMPTS),
                                   lambda retry_state: not self.running),
            wait=tenacity.wait_exponential(multiplier=self.settings.WEBHOOK_BACKOFF_S),
            sleep=lambda seconds: task.deferLater(self.clock, seconds),
            # Not on CancelledError (an Exception too): a cancelled delivery
            # (feederd stopping) must stop, not be retried behind our back.
            retry=(tenacity.retry_if_exception_type(Exception)
                   & tenacity.retry_if_not_exception_type(defer.CancelledError)),
            before_sleep=lambda rs: self.log.warn(
                "webhook for job {job_id} ({state}) to {url} failed (attempt {n}): {why}; retrying",
                job_id=job_id, state=state, url=redact_uri(url), n=rs.attempt_number,
                why=rs.outcome.exception()),
            reraise=True)
        try:
            await retrying(self._attempt, url, fields)
        except defer.CancelledError:
            raise
        except Exception as exc:
            if not self.running:
                # Stopped mid-delivery: a cancelled request fails with treq's
                # own error (ResponseNeverReceived), not CancelledError. Not
                # "given up": the message must not be deleted, so that the next
                # feederd delivers it.
                raise defer.CancelledError(f"feederd stopping: {exc!r}") from exc
            self.log.error("gave up on the webhook for job {job_id} ({state}) to {url} after {n} attempts: {why}",
                           job_id=job_id, state=state, url=redact_uri(url),
                           n=self.settings.WEBHOOK_MAX_ATTEMPTS, why=exc)
            return
        self.log.info("webhook for job {job_id} ({state}) delivered", job_id=job_id, state=state)

    async def _attempt(self, url, fields):
        status = await self._post(url, fields, self.settings.WEBHOOK_TIMEOUT_S)
        if not 200 <= status < 300:
            raise WebhookFailed(f"HTTP {status}")
        return status
