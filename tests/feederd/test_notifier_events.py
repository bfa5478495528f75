"""The notifier and the event log: job events on the state-change queue go to
``on_event`` (and are never notified), every delivery outcome is a WEBHOOK
event and every failed attempt an ERROR one, and every notification is
signed with its key's secret (checked with ``nommer.client.webhooks.verify``,
also over real HTTP)."""

import ipaddress
import json
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from nommer.client.webhooks import SIGNATURE_HEADER, InvalidSignature, sign, verify
from nommer.core.events import EventKind, JobEvent, event_body
from nommer.core.job import Job, new_job_id
from nommer.core.states import JobState
from nommer.core.webhook_signing import ANONYMOUS, base_secret, key_secret
from nommer.feederd.notifier import Notifier, form_body, post_form
from tests.helpers import ensure, eventually, temp_ledger

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


class SignedRecorder:
    """A scripted ``post`` that takes the signature headers: answers statuses
    from ``script`` (then 200) and keeps (fields, headers) of each call."""

    def __init__(self, script=()):
        self.script = list(script)
        self.calls = []

    def __call__(self, url, fields, timeout_s, headers=None):
        self.calls.append((dict(fields), dict(headers or {})))
        status = self.script.pop(0) if self.script else 200
        return defer.succeed(status)


class NotifierEventTests(TestCase):

    def setUp(self):
        self.ledger, self.root = temp_ledger(self, WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_BACKOFF_S=2.0,
                                             QUEUE_WAIT_TIME_S=0.2)
        self.settings, self.queue, self.store = self.ledger.settings, self.ledger.queue, self.ledger.store
        self.seen = []

    def start(self, post, clock=reactor, on_event=None):
        notifier = Notifier(self.ledger, self.settings, clock, post=post,
                            on_event=self.seen.append if on_event is None else on_event)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        return notifier

    async def job(self, owner=None):
        return await self.ledger.submit(Job(
            job_id=new_job_id(), source_path="file:///a", dest_path="file:///b", nommer="x", job_options=[],
            notify_url="http://hooks.example/done", owner=owner))

    async def drained(self):
        d = await self.queue.depth(self.settings.STATE_CHANGE_QUEUE_NAME)
        return d["visible"] + d["in_flight"] == 0

    async def events(self, job_id, kind):
        return [e for e in await self.store.list_events(job_id) if e.kind is kind]

    @ensure
    async def test_events_go_to_on_event_and_state_changes_to_the_webhook(self):
        """Every job event on the queue reaches on_event (in order, with its seq) and is deleted;
        the state changes are POSTed as before, with the original fields only."""
        post = SignedRecorder()
        self.start(post)
        job = await self.job()
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING, attempts=1, worker_id="w")
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        await eventually(lambda: len(post.calls) == 2, what="two webhooks")
        await eventually(self.drained, what="every message deleted")
        self.assertEqual([f for f, _ in post.calls], [
            {"unique_id": job.job_id, "job_id": job.job_id, "job_state": "DOWNLOADING", "job_state_details": ""},
            {"unique_id": job.job_id, "job_id": job.job_id, "job_state": "CANCELED",
             "job_state_details": "canceled by request"}])
        seen = [(e.kind, e.state) for e in self.seen if e.kind is not EventKind.WEBHOOK]
        self.assertEqual(seen, [(EventKind.SUBMITTED, "PENDING"), (EventKind.ASSIGNED, "DOWNLOADING"),
                                (EventKind.STATE, "DOWNLOADING"), (EventKind.STATE, "CANCELED")])
        self.assertEqual([e.seq for e in self.seen[:4]], [1, 2, 3, 4])
        await eventually(lambda: len([e for e in self.seen if e.kind is EventKind.WEBHOOK]) == 2,
                         what="the webhook events announced too")

    @ensure
    async def test_delivered_webhooks_are_events(self):
        """A delivered notification is a WEBHOOK event with the state and the HTTP status."""
        self.start(SignedRecorder([204]))
        job = await self.job()
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        await eventually(lambda: self.events(job.job_id, EventKind.WEBHOOK), what="webhook event")
        [event] = await self.events(job.job_id, EventKind.WEBHOOK)
        self.assertEqual(event.state, "CANCELED")
        self.assertEqual(event.details, "CANCELED delivered to http://hooks.example/done: HTTP 204")

    @ensure
    async def test_failed_attempts_are_errors_and_giving_up_a_webhook_event(self):
        """Each failed attempt that is retried is an ERROR event (attempt n of N, the reason, the
        pause); giving up is a WEBHOOK event saying so. The job is not changed."""
        clock = task.Clock()
        self.start(SignedRecorder([503] * 10), clock=clock)
        job = await self.job()
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        for _ in range(3000):
            clock.advance(0.05)
            await task.deferLater(reactor, 0.001, lambda: None)
            if await self.events(job.job_id, EventKind.WEBHOOK):
                break
        errors = await self.events(job.job_id, EventKind.ERROR)
        self.assertEqual([e.details for e in errors], [
            "webhook for CANCELED to http://hooks.example/done failed (attempt 1 of 3): HTTP 503; retrying in 2 s",
            "webhook for CANCELED to http://hooks.example/done failed (attempt 2 of 3): HTTP 503; retrying in 4 s"])
        [gave_up] = await self.events(job.job_id, EventKind.WEBHOOK)
        self.assertEqual(gave_up.details, "CANCELED to http://hooks.example/done given up after 3 attempts: HTTP 503")
        self.assertLess(errors[-1].seq, gave_up.seq)
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.CANCELED)
        self.flushLoggedErrors()

    @ensure
    async def test_refused_address_is_a_webhook_event(self):
        """A notify_url whose address is refused is a WEBHOOK event 'not sent' with the reason."""
        self.start(SignedRecorder())
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                                           nommer="x", job_options=[], notify_url="http://169.254.169.254/x"))
        await self.ledger.set_state(job.job_id, JobState.CANCELED)
        await eventually(lambda: self.events(job.job_id, EventKind.WEBHOOK), what="webhook event")
        [event] = await self.events(job.job_id, EventKind.WEBHOOK)
        self.assertTrue(event.details.startswith("CANCELED not sent to http://169.254.169.254/x: "), event.details)
        self.flushLoggedErrors()

    @ensure
    async def test_every_notification_is_signed_with_its_key_s_secret(self):
        """The signature verifies with the submitting key's secret over the form body sent, not with
        another key's; an anonymous job's with the secret of 'anonymous'."""
        post = SignedRecorder()
        clock = task.Clock()
        clock.advance(time.time())
        self.start(post, clock=clock)
        owned, anonymous = await self.job(owner="3f9c0a1b2c3d4e5f"), await self.job()
        await self.ledger.set_state(owned.job_id, JobState.CANCELED)
        await self.ledger.set_state(anonymous.job_id, JobState.CANCELED)
        for _ in range(500):
            if len(post.calls) == 2:
                break
            clock.advance(0.02)
            await task.deferLater(reactor, 0.002, lambda: None)
        base = base_secret(self.settings)
        by_job = {fields["job_id"]: (fields, headers) for fields, headers in post.calls}
        fields, headers = by_job[owned.job_id]
        header = headers[SIGNATURE_HEADER]
        self.assertRegex(header, r"^t=\d+,v1=[0-9a-f]{64}$")
        self.assertEqual(verify(form_body(fields), header, key_secret(base, "3f9c0a1b2c3d4e5f")), int(clock.seconds()))
        with self.assertRaises(InvalidSignature):
            verify(form_body(fields), header, key_secret(base, ANONYMOUS))
        fields, headers = by_job[anonymous.job_id]
        verify(form_body(fields), headers[SIGNATURE_HEADER], key_secret(base, ANONYMOUS))

    @ensure
    async def test_on_event_failing_or_a_malformed_event_does_not_stop_anything(self):
        """An on_event that raises is logged and the message deleted; a malformed event message
        is dropped; the webhooks go on."""
        def broken(event):
            raise RuntimeError("hub down")
        post = SignedRecorder()
        self.start(post, on_event=broken)
        await self.queue.send(self.settings.STATE_CHANGE_QUEUE_NAME, json.dumps({"event": "nonsense"}))
        job = await self.job()
        await self.ledger.set_state(job.job_id, JobState.CANCELED)
        await eventually(lambda: len(post.calls) == 1, what="the webhook")
        await eventually(self.drained, what="every message deleted")
        self.assertGreaterEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    @ensure
    async def test_event_messages_are_not_notified(self):
        """An event message for a job with a notify_url is handed on, never POSTed."""
        post = SignedRecorder()
        self.start(post)
        job_id = new_job_id()
        await self.queue.send(self.settings.STATE_CHANGE_QUEUE_NAME,
                              event_body(JobEvent(job_id=job_id, at=1.0, kind=EventKind.PROGRESS, progress=50.0)))
        await eventually(lambda: self.seen, what="the event handed on")
        await eventually(self.drained, what="deleted")
        self.assertEqual(post.calls, [])
        self.assertEqual(self.seen, [JobEvent(job_id=job_id, at=1.0, kind=EventKind.PROGRESS, progress=50.0)])


class RawHook(resource.Resource):
    """Keeps each POST's raw body and signature header; answers 200."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_POST(self, request):
        self.requests.append((request.content.read(), request.getHeader(SIGNATURE_HEADER),
                              request.getHeader("content-type")))
        return b"ok"


class SignedPostTests(TestCase):

    @ensure
    async def test_signature_verifies_on_the_bytes_received(self):
        """Over real HTTP, the receiver verifies the header against the raw body it got (form,
        urlencoded, non-ASCII escaped); a body changed by one byte, or the timestamp moved past the
        tolerance, is refused."""
        hook = RawHook()
        port = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        fields = {"unique_id": "abc", "job_id": "abc", "job_state": "ERROR", "job_state_details": "é & = + %"}
        secret = "whsec_" + "ab" * 32
        header = sign(form_body(fields), secret)
        status = await post_form(f"http://127.0.0.1:{port.getHost().port}/x", fields, 5, networks=LOOPBACK,
                                 headers={SIGNATURE_HEADER: header})
        self.assertEqual(status, 200)
        [(body, got_header, ctype)] = hook.requests
        self.assertEqual(ctype, "application/x-www-form-urlencoded")
        self.assertEqual(got_header, header)
        timestamp = verify(body, got_header, secret)
        self.assertLessEqual(abs(timestamp - time.time()), 5)
        with self.assertRaises(InvalidSignature):
            verify(body.replace(b"ERROR", b"FINISHED"), got_header, secret)
        with self.assertRaises(InvalidSignature):
            verify(body, got_header, secret, now=timestamp + 301)
