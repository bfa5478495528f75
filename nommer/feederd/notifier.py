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
"""

import json

import tenacity
import treq
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from nommer.core.errors import NoSuchJob
from nommer.core.uri import redact_uri
from nommer.feederd.consumer import QueueConsumer

USER_AGENT = b"nommer feederd (media-nommer compatible)"


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


class Notifier(QueueConsumer):
    log = Logger()

    def __init__(self, ledger, settings, clock, post=post_form):
        lease_s = settings.WEBHOOK_MAX_ATTEMPTS * (settings.WEBHOOK_TIMEOUT_S + 60) + 600
        super().__init__(ledger.queue, settings.STATE_CHANGE_QUEUE_NAME, clock,
                         visibility_timeout_s=lease_s, wait_time_s=settings.QUEUE_WAIT_TIME_S)
        self.ledger = ledger
        self.settings = settings
        self._post = post
        self._tails = {}  # job_id -> Deferred of its last queued delivery

    def handle(self, message):
        try:
            change = json.loads(message.body)
            job_id = change["job_id"]
        except (ValueError, KeyError, TypeError):
            self.log.error("dropping malformed state-change message {body!r}", body=message.body)
            return None
        tail = self._tails.get(job_id) or defer.succeed(None)
        mine = defer.Deferred()
        tail.addBoth(lambda _: defer.Deferred.fromCoroutine(self._notify(change)).chainDeferred(mine))
        self._tails[job_id] = mine

        def forget(result):
            if self._tails.get(job_id) is mine:
                del self._tails[job_id]
            return result
        mine.addBoth(forget)
        return mine

    async def _notify(self, change):
        job_id, state = change["job_id"], change["job_state"]
        details = change.get("job_state_details") or ""
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
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.settings.WEBHOOK_MAX_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=self.settings.WEBHOOK_BACKOFF_S),
            sleep=lambda seconds: task.deferLater(self.clock, seconds),
            retry=tenacity.retry_if_exception_type(Exception),
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
