"""Webhooks: order per job, retries with backoff on the clock, at-least-once
via the state-change queue, and one real HTTP delivery."""

import urllib.parse

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.notifier import Notifier, post_form
from tests.helpers import ensure, eventually, temp_settings


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
        self.settings, self.root = temp_settings(self, WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_BACKOFF_S=2.0,
                                                 QUEUE_WAIT_TIME_S=0.2)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)

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
                                 {"unique_id": "abc", "job_state": "FINISHED", "job_state_details": ""}, 5)
        self.assertEqual(status, 200)
        [(ctype, body)] = hook.requests
        self.assertEqual(ctype, b"application/x-www-form-urlencoded")
        self.assertEqual(urllib.parse.parse_qs(body.decode(), keep_blank_values=True),
                         {"unique_id": ["abc"], "job_state": ["FINISHED"], "job_state_details": [""]})
