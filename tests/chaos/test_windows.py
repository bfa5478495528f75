"""The windows the chaos runs found, each reproduced in-process and on
purpose (real SQLite store and queue, a scripted nommer, fake webhooks), so
that a regression fails here every time rather than once in a while there."""

import json
import sqlite3
import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.notifier import Notifier
from nommer.workerd.worker import Worker
from tests.helpers import ensure, eventually, temp_settings
from tests.workerd import scripted_nommer

NOMMER = "tests.workerd.scripted_nommer.ScriptedNommer"


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


class FailingWrites:
    """A job store whose writes fail once with SQLite's "database is locked"
    when they would store ``state`` (the store unreachable at that moment)."""

    def __init__(self, store, state):
        self._store = store
        self.state = state
        self.failed = 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def modify(self, job_id, fn):
        def change(job):
            new = fn(job)
            if new.job_state == self.state and not self.failed:
                self.failed += 1
                raise sqlite3.OperationalError("database is locked")
            return new
        return self._store.modify(job_id, change)


class Backends(TestCase):
    """A temp data dir with the embedded store and queue, and a ledger."""

    settings_overrides = {}

    def setUp(self):
        self.settings, self.root = temp_settings(
            self, ALLOWED_NOMMERS=[NOMMER], JOB_LEASE_S=0.6, HEARTBEAT_INTERVAL_S=0.1, RETRY_BACKOFF_S=0.05,
            WORKER_MAX_IDLE_S=600.0, QUEUE_WAIT_TIME_S=0.3, PROGRESS_WRITE_INTERVAL_S=0.01,
            MAX_JOB_ATTEMPTS=5, WEBHOOK_MAX_ATTEMPTS=3, WEBHOOK_BACKOFF_S=2.0, **self.settings_overrides)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)

    def start_worker(self, ledger=None, worker_id="w1"):
        worker = Worker(ledger or self.ledger, self.settings, reactor, worker_id=worker_id,
                        on_exit=lambda reason: None, install_signals=False)
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        return worker

    async def submit(self, script="succeed", notify_url=None):
        job = Job(job_id=new_job_id(), source_path=f"file://{self.root}/in", dest_path=f"file://{self.root}/out",
                  nommer=NOMMER, job_options={"script": script}, notify_url=notify_url)
        return await self.ledger.submit(job)

    async def final(self, job_id):
        async def check():
            job = await self.store.get(job_id)
            return job if job.is_final else None
        return await eventually(check, what=f"job {job_id} final")

    async def announced(self):
        """State changes announced, in order (job events, ``{"event": ...}``, left out)."""
        bodies = []
        while messages := await self.queue.receive(self.settings.STATE_CHANGE_QUEUE_NAME, max_messages=10):
            bodies += [json.loads(m.body) for m in messages]
        return [b for b in bodies if "event" not in b]

    async def new_job_messages(self):
        d = await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)
        return d["visible"] + d["in_flight"] + d["delayed"]

    async def no_new_job_message(self):
        return await self.new_job_messages() == 0

    async def in_state(self, job_id, state):
        return (await self.store.get(job_id)).job_state == state


class WorkerWindows(Backends):

    @ensure
    async def test_store_failing_on_a_state_write_is_transient(self):
        """The store failing on the ENCODING write sends the job back to the queue; it ends FINISHED, not ERROR."""
        flaky = FailingWrites(self.store, JobState.ENCODING)
        self.start_worker(JobLedger(flaky, self.queue, self.settings))
        job = await self.submit("succeed")
        done = await self.final(job.job_id)
        self.assertEqual(flaky.failed, 1)
        self.assertEqual((done.job_state, done.attempts), (JobState.FINISHED, 2), done.job_state_details)

    @ensure
    async def test_store_failing_on_the_finished_write_is_not_an_error(self):
        """The store failing on the FINISHED write leaves the message; the job runs again and ends FINISHED."""
        flaky = FailingWrites(self.store, JobState.FINISHED)
        self.start_worker(JobLedger(flaky, self.queue, self.settings))
        job = await self.submit("succeed")
        done = await self.final(job.job_id)
        self.assertEqual(flaky.failed, 1)
        self.assertEqual((done.job_state, done.attempts), (JobState.FINISHED, 2), done.job_state_details)
        await eventually(self.no_new_job_message, what="message deleted")
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)  # "storing FINISHED failed"

    @ensure
    async def test_finished_never_announced_is_announced_by_the_next_worker(self):
        """A worker died after storing FINISHED, before announcing it: the next one to get the message announces it."""
        job = await self.submit("succeed")
        [_] = await self.queue.receive(self.settings.NEW_JOB_QUEUE_NAME, visibility_timeout_s=0.3)  # the dead worker
        for state in (JobState.DOWNLOADING, JobState.ENCODING, JobState.UPLOADING, JobState.FINISHED):
            await self.store.modify(job.job_id, lambda j, s=state: j.evolve(job_state=s, worker_id="dead",
                                                                             attempts=1))
        self.start_worker()
        await eventually(self.no_new_job_message, what="message consumed")
        self.assertEqual([c["job_state"] for c in await self.announced()], ["FINISHED"])

    @ensure
    async def test_a_worker_that_lost_its_job_leaves_it_alone(self):
        """Once another worker took the job, the first one's writes are refused and it leaves the message alone."""
        worker = self.start_worker()
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        # What a second worker does when it takes the job (its lease on the
        # message aside): a new attempt, DOWNLOADING, under its name.
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING, None, attempts=2, worker_id="w2")
        await eventually(lambda: job.job_id in scripted_nommer.CANCELED, what="first worker stops")
        gate = scripted_nommer.RELEASE[job.job_id]
        if not gate.called:
            gate.callback(None)
        await eventually(lambda: not worker._contexts, what="first worker done with it")
        stored = await self.store.get(job.job_id)
        self.assertEqual((stored.job_state, stored.worker_id, stored.attempts), (JobState.DOWNLOADING, "w2", 2))
        self.assertEqual(await self.new_job_messages(), 1, "the message was deleted under the new owner")


class Hooks:
    """A scripted webhook ``post``: each call answers the next of ``script``
    (a status, or None for a request that never answers), then 200."""

    def __init__(self, script=()):
        self.script = list(script)
        self.calls = []

    def __call__(self, url, fields, timeout_s):
        self.calls.append(fields["job_state"])
        status = self.script.pop(0) if self.script else 200
        return defer.Deferred() if status is None else defer.succeed(status)


class NotifierWindows(Backends):

    def notifier(self, post, clock=reactor):
        notifier = Notifier(self.ledger, self.settings, clock, post=post)
        notifier.startService()
        self.addCleanup(lambda: notifier.running and notifier.stopService())
        return notifier

    @ensure
    async def test_stopping_does_not_let_a_later_state_overtake(self):
        """Stopping while a job's first notification waits for a retry: its next state is not sent meanwhile."""
        clock = task.Clock()
        post = Hooks([500])
        notifier = self.notifier(post, clock)
        job = await self.submit(notify_url="http://hooks.example/x")
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING)
        await self.ledger.set_state(job.job_id, JobState.ENCODING)
        for _ in range(500):  # the receive loop polls on the fake clock
            if post.calls:
                break
            clock.advance(0.02)
            await sleep(0.002)
        self.assertEqual(post.calls, ["DOWNLOADING"])
        await notifier.stopService()
        clock.advance(60)
        await sleep(0.05)
        self.assertEqual(post.calls, ["DOWNLOADING"])

    @ensure
    async def test_messages_held_at_stop_are_released(self):
        """A notification in flight when the notifier stops is visible again at once, not after its long lease."""
        notifier = self.notifier(Hooks([None]))
        job = await self.submit(notify_url="http://hooks.example/x")
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING)
        name = self.settings.STATE_CHANGE_QUEUE_NAME
        async def in_flight():
            return (await self.queue.depth(name))["in_flight"] == 1
        await eventually(in_flight, what="notification in flight")
        await notifier.stopService()
        self.assertEqual((await self.queue.depth(name))["visible"], 1)

    @ensure
    async def test_a_stale_change_is_not_sent_after_a_later_one(self):
        """A change announced late (a lease-lost worker's UPLOADING after the next attempt's DOWNLOADING) is dropped."""
        post = Hooks()
        self.notifier(post)
        job = await self.submit(notify_url="http://hooks.example/x")
        name = self.settings.STATE_CHANGE_QUEUE_NAME
        for state, attempts in (("DOWNLOADING", 1), ("DOWNLOADING", 2), ("UPLOADING", 1), ("ENCODING", 2)):
            await self.queue.send(name, json.dumps({"job_id": job.job_id, "job_state": state,
                                                    "job_state_details": None, "attempts": attempts}))
        await eventually(lambda: len(post.calls) >= 3, what="notifications")
        await sleep(0.3)
        self.assertEqual(post.calls, ["DOWNLOADING", "DOWNLOADING", "ENCODING"])


class LocalQueueWindows(Backends):

    @ensure
    async def test_a_cancelled_receive_does_not_strand_messages(self):
        """A receive cancelled while its look runs in the DB thread leaves the messages visible, not leased."""
        q = self.settings.NEW_JOB_QUEUE_NAME
        await self.queue.send(q, "job-1")
        self.queue._any_visible = lambda queue: defer.succeed(True)  # go straight to the leasing look
        d = defer.Deferred.fromCoroutine(self.queue.receive(q, visibility_timeout_s=60))
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        got = []
        for _ in range(100):
            got = await self.queue.receive(q, visibility_timeout_s=60)
            if got:
                break
            await sleep(0.01)
        self.assertEqual([m.body for m in got], ["job-1"])

    @ensure
    async def test_idle_receive_does_not_wait_for_a_locked_file(self):
        """With the queue file locked by another process, an empty long poll still returns on time."""
        lock = sqlite3.connect(self.queue._db.path, timeout=5, isolation_level=None)
        self.addCleanup(lock.close)
        await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)  # the file and its tables exist
        lock.execute("BEGIN EXCLUSIVE")
        self.addCleanup(lambda: lock.in_transaction and lock.execute("ROLLBACK"))
        began = time.monotonic()
        got = await self.queue.receive(self.settings.NEW_JOB_QUEUE_NAME, wait_time_s=0.3)
        self.assertEqual(got, [])
        self.assertLess(time.monotonic() - began, 3.0)

    @ensure
    async def test_a_lease_granted_after_waiting_for_the_lock_starts_then(self):
        """A lease extension that waited for the file lock runs from when it is written, not from when asked."""
        q = self.settings.NEW_JOB_QUEUE_NAME
        await self.queue.send(q, "job-1")
        [m] = await self.queue.receive(q, visibility_timeout_s=60)
        lock = sqlite3.connect(self.queue._db.path, timeout=5, isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN EXCLUSIVE")
        extended = self.queue.change_visibility(q, m.receipt_handle, 1.0)
        await sleep(1.5)  # the extension waits for the lock longer than the lease it asks for
        lock.execute("ROLLBACK")
        await extended
        self.assertEqual(await self.queue.receive(q, visibility_timeout_s=60), [])  # still leased


class FailingSend:
    """A work queue whose ``send`` to ``queue_name`` fails (unreachable)."""

    def __init__(self, queue, queue_name):
        self._queue = queue
        self.queue_name = queue_name

    def __getattr__(self, name):
        return getattr(self._queue, name)

    def send(self, queue, body, delay_s=0):
        if queue == self.queue_name:
            return defer.fail(ConnectionError("queue unreachable"))
        return self._queue.send(queue, body, delay_s)


class LedgerWindows(Backends):

    @ensure
    async def test_a_job_that_cannot_be_queued_is_not_left_pending(self):
        """Submit with the queue unreachable fails, and the job it stored ends in ERROR saying why, not PENDING."""
        ledger = JobLedger(self.store, FailingSend(self.queue, self.settings.NEW_JOB_QUEUE_NAME), self.settings)
        job = Job(job_id=new_job_id(), source_path=f"file://{self.root}/in", dest_path=f"file://{self.root}/out",
                  nommer=NOMMER, job_options={"script": "succeed"})
        with self.assertRaises(ConnectionError):
            await ledger.submit(job)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.ERROR)
        self.assertIn("could not be queued", stored.job_state_details)
        self.assertEqual(await self.store.count_by_state(), {"ERROR": 1})


class AnnounceWindows(Backends):

    @ensure
    async def test_a_lost_downloading_announcement_is_made_by_the_next_attempt(self):
        """DOWNLOADING stored but never announced (the queue failed): the next attempt announces its DOWNLOADING."""
        job = await self.submit("succeed")
        [_] = await self.queue.receive(self.settings.NEW_JOB_QUEUE_NAME, visibility_timeout_s=0.3)
        await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING, attempts=1,
                                                               worker_id="gone"))
        self.start_worker()
        await self.final(job.job_id)
        states = [c["job_state"] for c in await self.announced()]
        self.assertEqual(states, ["DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED"])
