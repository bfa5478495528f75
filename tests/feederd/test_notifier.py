"""Webhooks: order per job, retries with backoff on the clock, at-least-once
via the state-change queue, and one real HTTP delivery."""

import base64
import ipaddress
import os
import urllib.parse

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from nommer.core.job import Job, new_job_id
from nommer.core.states import JobState
from nommer.feederd.notifier import Notifier, WebhookTimeout, post_form
from tests.helpers import (Endless, FakeResolver, ensure, eventually, listen_endless_head,
                           serve_counting, temp_ledger)

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


class Recorder:
    """A scripted ``post``: answers statuses from ``script`` (then 200)."""

    def __init__(self, script=()):
        self.script = list(script)
        self.calls = []

    def __call__(self, url, fields, timeout_s):
        self.calls.append((url, dict(fields)))
        status = self.script.pop(0) if self.script else 200
        if isinstance(status, Exception):
            return defer.fail(status)
        return defer.succeed(status)


class NotifierTests(TestCase):

    def setUp(self):
        self.ledger, self.root = temp_ledger(self, WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_BACKOFF_S=2.0,
                                             QUEUE_WAIT_TIME_S=0.2)
        self.settings, self.queue = self.ledger.settings, self.ledger.queue

    def start(self, post, clock=reactor):
        notifier = Notifier(self.ledger, self.settings, clock, post=post)
        notifier.startService()
        self.addCleanup(notifier.stopService)
        return notifier

    async def job(self, notify_url="http://hooks.example/done"):
        return await self.ledger.submit(Job(
            job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
            nommer="x", job_options=[], notify_url=notify_url))

    async def walk(self, job_id, *states):
        for state in states:
            await self.ledger.set_state(job_id, state, "boom" if state == JobState.ERROR else None)

    async def state_queue_empty(self):
        d = await self.queue.depth(self.settings.STATE_CHANGE_QUEUE_NAME)
        return d["visible"] + d["in_flight"] == 0

    @ensure
    async def test_every_state_in_order_with_original_fields(self):
        """Each change is POSTed once, in order, with unique_id/job_state/job_state_details + job_id."""
        post = Recorder()
        self.start(post)
        job = await self.job()
        await self.walk(job.job_id, JobState.DOWNLOADING, JobState.ENCODING, JobState.UPLOADING, JobState.ERROR)
        await eventually(lambda: len(post.calls) == 4, what="4 webhooks")
        self.assertEqual([f["job_state"] for _, f in post.calls], ["DOWNLOADING", "ENCODING", "UPLOADING", "ERROR"])
        url, fields = post.calls[-1]
        self.assertEqual(url, "http://hooks.example/done")
        self.assertEqual(fields, {"unique_id": job.job_id, "job_id": job.job_id,
                                  "job_state": "ERROR", "job_state_details": "boom"})
        await eventually(self.state_queue_empty, what="messages deleted")

    @ensure
    async def test_retries_with_backoff_and_keeps_order(self):
        """A failing delivery is retried after 2 s, then 4 s; the next state waits its turn."""
        clock = task.Clock()
        post = Recorder([500, ConnectionRefusedError("refused"), 200])
        self.start(post, clock=clock)
        job = await self.job()
        await self.walk(job.job_id, JobState.DOWNLOADING, JobState.ENCODING)
        # The receive loop polls on the clock too: advance in small steps until the first post.
        for _ in range(500):
            if post.calls:
                break
            clock.advance(0.02)
            await task.deferLater(reactor, 0.002, lambda: None)
        self.assertEqual(len(post.calls), 1)
        clock.advance(1.9)
        self.assertEqual(len(post.calls), 1)
        clock.advance(0.1)
        self.assertEqual(len(post.calls), 2)
        clock.advance(4)
        await eventually(lambda: len(post.calls) >= 4, what="retry then next state")
        self.assertEqual([f["job_state"] for _, f in post.calls], ["DOWNLOADING"] * 3 + ["ENCODING"])

    @ensure
    async def test_gives_up_after_max_attempts(self):
        """After WEBHOOK_MAX_ATTEMPTS failures the notification is dropped and the message deleted."""
        clock = task.Clock()
        post = Recorder([503] * 10)
        self.start(post, clock=clock)
        job = await self.job()
        await self.walk(job.job_id, JobState.CANCELED)
        for _ in range(2000):
            clock.advance(0.05)
            await task.deferLater(reactor, 0.001, lambda: None)
            if len(post.calls) >= 3 and await self.state_queue_empty():
                break
        self.assertEqual(len(post.calls), 3)
        self.assertTrue(await self.state_queue_empty())
        self.flushLoggedErrors()

    @ensure
    async def test_no_notify_url_no_post(self):
        """A job without notify_url sends nothing, and its messages are consumed."""
        post = Recorder()
        self.start(post)
        job = await self.job(notify_url=None)
        await self.walk(job.job_id, JobState.CANCELED)
        await eventually(self.state_queue_empty, what="messages consumed")
        self.assertEqual(post.calls, [])

    @ensure
    async def test_undelivered_survives_a_restart(self):
        """Messages not yet delivered when the notifier stops are delivered by the next one."""
        job = await self.job()
        await self.walk(job.job_id, JobState.DOWNLOADING)
        post = Recorder()
        self.start(post)
        await eventually(lambda: post.calls, what="delivery after start")
        self.assertEqual(post.calls[0][1]["job_state"], "DOWNLOADING")


class Hook(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_POST(self, request):
        self.requests.append((request.getHeader(b"content-type"), request.content.read()))
        return b"ok"


class PostFormTests(TestCase):

    @ensure
    async def test_real_form_post(self):
        """post_form sends an urlencoded form over real HTTP and returns the status."""
        hook = Hook()
        port = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        status = await post_form(f"http://127.0.0.1:{port.getHost().port}/x",
                                 {"unique_id": "abc", "job_state": "FINISHED", "job_state_details": ""}, 5,
                                 networks=LOOPBACK)
        self.assertEqual(status, 200)
        [(ctype, body)] = hook.requests
        self.assertEqual(ctype, b"application/x-www-form-urlencoded")
        self.assertEqual(urllib.parse.parse_qs(body.decode(), keep_blank_values=True),
                         {"unique_id": ["abc"], "job_state": ["FINISHED"], "job_state_details": [""]})


class EndlessHeadTests(TestCase):
    timeout = 30

    @ensure
    async def test_webhook_answer_with_endless_head_is_cut_short(self):
        """A receiver sending header lines without end does not grow feederd's memory for
        WEBHOOK_TIMEOUT_S: the POST fails once MAX_RESPONSE_HEAD_BYTES came."""
        port, sent = listen_endless_head(self)
        with self.assertRaises(Exception) as cm:
            await post_form(f"http://127.0.0.1:{port}/hook", {"a": "b"}, 20.0,
                            networks=[ipaddress.ip_network("127.0.0.0/8")])
        self.assertIn("response head", str(cm.exception))
        self.assertLess(sent[0], 16 * 1024 * 1024)


class Silent(resource.Resource):
    """Holds every request; with ``first`` it sends the headers and that much body first."""

    isLeaf = True

    def __init__(self, first=None):
        super().__init__()
        self.first = first
        self.requests = []
        self.gone = []

    def render_POST(self, request):
        gone = request.notifyFinish()
        gone.addErrback(lambda _: None)
        self.gone.append(gone)
        if self.first is not None:
            request.write(self.first)
        self.requests.append(request)
        return server.NOT_DONE_YET


class AuthReceiver(resource.Resource):
    """Answers every POST "ok"; ``seen`` lists the (URI, Authorization header) of each."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_POST(self, request):
        self.seen.append((request.uri, request.getHeader(b"authorization")))
        return b"ok"


class SeeOther(resource.Resource):
    isLeaf = True

    def __init__(self, to):
        super().__init__()
        self.to = to

    def render_POST(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", self.to)
        return b""


class WebhookGuardTests(TestCase):
    """post_form: where it may connect, how long and how much it reads."""

    timeout = 20

    def serve(self, res, interface="127.0.0.1"):
        return serve_counting(self, server.Site(res), interface)

    @ensure
    async def test_loopback_refused_by_default(self):
        """localhost (real lookup) and a name resolving to 127.0.0.1 are refused; the receiver sees no
        connection; allowed, the same POST is delivered."""
        port, counter = self.serve(Hook())
        from nommer.core.netguard import AddressRefused
        with self.assertRaises(AddressRefused) as cm:
            await post_form(f"http://localhost:{port}/x", {"a": "1"}, 5)
        self.assertIn("webhook host localhost resolves to", str(cm.exception))
        self.assertIn("set ALLOWED_PRIVATE_NETWORKS to allow it", str(cm.exception))
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        with self.assertRaises(AddressRefused):
            await post_form(f"http://evil.example:{port}/x", {"a": "1"}, 5, resolver=resolver)
        self.assertEqual(counter.connections, 0)
        self.assertEqual(await post_form(f"http://evil.example:{port}/x", {"a": "1"}, 5, resolver=resolver,
                                         networks=LOOPBACK), 200)

    @ensure
    async def test_redirect_to_private_address_refused(self):
        """A 303 from an allowed receiver to a refused address is not followed: refused, no connection there."""
        from nommer.core.netguard import AddressRefused
        target_port, target = self.serve(Hook(), "127.0.0.1")
        port, first = self.serve(SeeOther(f"http://127.0.0.1:{target_port}/x".encode()), "127.0.0.2")
        with self.assertRaises(AddressRefused):
            await post_form(f"http://127.0.0.2:{port}/x", {"a": "1"}, 5,
                            networks=[ipaddress.ip_network("127.0.0.2/32")])
        self.assertEqual((first.connections, target.connections), (1, 0))

    @ensure
    async def test_response_body_capped(self):
        """An endless answer is read up to WEBHOOK_MAX_RESPONSE_BYTES, then the connection is dropped;
        the status stands (the deadline clock never moves, so the cap ended it)."""
        endless = Endless()
        port, _ = self.serve(endless)
        clock = task.Clock()
        status = await post_form(f"http://127.0.0.1:{port}/x", {"a": "1"}, 5, networks=LOOPBACK,
                                 max_response_bytes=100_000, clock=clock)
        self.assertEqual(status, 200)
        await endless.gone
        self.assertLess(endless.sent, 32 * 1024 * 1024)

    @ensure
    async def test_timeout_covers_waiting_for_the_answer(self):
        """A receiver that never answers: WebhookTimeout at WEBHOOK_TIMEOUT_S, connection dropped."""
        silent = Silent()
        port, _ = self.serve(silent)
        clock = task.Clock()
        d = defer.Deferred.fromCoroutine(post_form(f"http://127.0.0.1:{port}/x", {"a": "1"}, 7,
                                                   networks=LOOPBACK, clock=clock))
        await eventually(lambda: silent.requests, what="the request at the receiver")
        clock.advance(6.9)
        self.assertFalse(d.called)
        clock.advance(0.2)
        with self.assertRaises(WebhookTimeout) as cm:
            await d
        self.assertIn("no answer within 7 s", str(cm.exception))
        await silent.gone[0]

    @ensure
    async def test_timeout_covers_the_body(self):
        """Headers and a trickle of body, then nothing: at the deadline the body is dropped and the
        status stands."""
        silent = Silent(first=b"ok...")
        port, _ = self.serve(silent)
        clock = task.Clock()
        d = defer.Deferred.fromCoroutine(post_form(f"http://127.0.0.1:{port}/x", {"a": "1"}, 7,
                                                   networks=LOOPBACK, clock=clock))
        await eventually(lambda: silent.requests, what="the request at the receiver")
        await task.deferLater(reactor, 0.05, lambda: None)  # the headers reach the client
        self.assertFalse(d.called)
        clock.advance(7.1)
        self.assertEqual(await d, 200)
        await silent.gone[0]

    @ensure
    async def test_credentials_go_as_basic_auth(self):
        """user:password@ in the URL is sent as an Authorization header, not in the request line."""
        receiver = AuthReceiver()
        port, _ = self.serve(receiver)
        status = await post_form(f"http://hook%40user:p%3Ass@127.0.0.1:{port}/x?token=T1", {"a": "1"}, 5,
                                 networks=LOOPBACK)
        self.assertEqual(status, 200)
        [(uri, auth)] = receiver.seen
        self.assertEqual(uri, b"/x?token=T1")
        self.assertEqual(auth, b"Basic " + base64.b64encode(b"hook@user:p:ss"))


class NotifierGuardTests(TestCase):
    """The notifier with its default post: refused addresses are given up at once and logged; a
    sealed notify_url is unsealed right before the POST and never stored or logged."""

    timeout = 20

    def build(self, **overrides):
        self.ledger, self.root = temp_ledger(self, QUEUE_WAIT_TIME_S=0.2, WEBHOOK_BACKOFF_S=0.01, **overrides)
        self.settings, self.queue = self.ledger.settings, self.ledger.queue
        self.events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        notifier = Notifier(self.ledger, self.settings, reactor)
        notifier.startService()
        self.addCleanup(notifier.stopService)

    def serve(self, res):
        site = server.Site(res)
        site.log = lambda request: None  # the receiver's access log is not nommer's
        return serve_counting(self, site)

    async def drained(self):
        d = await self.queue.depth(self.settings.STATE_CHANGE_QUEUE_NAME)
        return d["visible"] + d["in_flight"] == 0

    def logged(self):
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) or "" for e in self.events)

    @ensure
    async def test_webhook_to_loopback_refused_unless_allowed(self):
        """ALLOWED_PRIVATE_NETWORKS empty: a notify_url on localhost is not POSTed (no connection), the
        change is dropped after one try and the reason logged."""
        self.build(ALLOWED_PRIVATE_NETWORKS=[])
        hook = Hook()
        port, counter = self.serve(hook)
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                                           nommer="x", job_options=[], notify_url=f"http://localhost:{port}/h"))
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled")
        await eventually(self.drained, what="the change handled")
        self.assertEqual(counter.connections, 0)
        text = self.logged()
        self.assertIn(f"not sending the webhook for job {job.job_id} (CANCELED) to http://localhost:{port}/h: "
                      "webhook host localhost resolves to", text)
        self.assertIn("set ALLOWED_PRIVATE_NETWORKS to allow it", text)
        self.assertNotIn("retrying", text)

    @ensure
    async def test_webhook_to_loopback_delivered_when_allowed(self):
        self.build()  # temp_settings allow 127.0.0.0/8
        hook = Hook()
        port, counter = self.serve(hook)
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                                           nommer="x", job_options=[], notify_url=f"http://localhost:{port}/h"))
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled")
        await eventually(lambda: hook.requests, what="the webhook")
        self.assertEqual(counter.connections, 1)

    @ensure
    async def test_sealed_notify_url(self):
        """A notify_url with user:password@ and ?token= is stored redacted (the raw SQLite files hold
        neither secret), POSTed with both, and no log event holds them."""
        from cryptography.fernet import Fernet
        from nommer.core.spec import validate_submission
        from tests.helpers import doc_two_pass
        self.build(JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        receiver = AuthReceiver()
        port, _ = self.serve(receiver)
        url = f"http://hookuser:Hook-Pa55word@127.0.0.1:{port}/hook?token=Tok3nSecret&x=1"
        spec = validate_submission({
            "source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/out.mp4",
            "notify_url": url, "job_options": {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                                               "options": doc_two_pass()}}, self.settings)
        self.assertEqual(spec["notify_url"], f"http://hookuser:***@127.0.0.1:{port}/hook?token=***&x=1")
        self.assertEqual(set(spec["sealed_credentials"]), {"notify_url"})
        job = await self.ledger.submit(Job(job_id=new_job_id(), **spec))
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled")
        await eventually(lambda: receiver.seen, what="the webhook")
        [(uri, auth)] = receiver.seen
        self.assertEqual(uri, b"/hook?token=Tok3nSecret&x=1")
        self.assertEqual(auth, b"Basic " + base64.b64encode(b"hookuser:Hook-Pa55word"))
        await eventually(self.drained, what="the change handled")
        stored = b""
        for parent, _, names in os.walk(self.settings.DATA_DIR):
            for name in names:
                with open(os.path.join(parent, name), "rb") as f:
                    stored += f.read()
        self.assertIn(job.job_id.encode(), stored)
        self.assertIn(b"hookuser:***@", stored)
        for secret in ("Hook-Pa55word", "Tok3nSecret"):
            self.assertNotIn(secret.encode(), stored)
            self.assertNotIn(secret, self.logged())
            self.assertNotIn(secret, repr(self.events))
