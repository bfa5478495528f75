"""The event log as the ledger writes it: one place per kind (SUBMITTED, STATE,
ASSIGNED, RETRY, PROGRESS milestones), the worker's LEASE_LOST, every event
announced on the state-change queue, and a failing event write that never
fails the job. Real SQLite store and local queue."""

import json
import types

from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from nommer.core.events import EventKind, JobEvent, event_of, is_event_body
from nommer.core.job import Job, new_job_id
from nommer.core.ledger import MAX_EVENT_DETAILS_CHARS, progress_milestones, submitted_details
from nommer.core.states import JobState
from nommer.workerd.context import LEASE_LOST, JobContext
from tests.helpers import ensure, temp_ledger


def kinds(events):
    return [(e.kind.value, e.state) for e in events]


class FailingAppends:
    """A job store whose ``append_event`` fails (the rest is the real store)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def append_event(self, event):
        return defer.fail(OSError("disk full"))


class GatedAppends(FailingAppends):
    """A job store whose ``append_event`` waits for ``gate`` to fire first."""

    def __init__(self, store):
        super().__init__(store)
        self.gate = defer.Deferred()

    def append_event(self, event):
        d = defer.Deferred()
        self.gate.addCallback(lambda _: self._store.append_event(event).chainDeferred(d))
        return d


class LedgerEventTests(TestCase):

    def setUp(self):
        self.ledger, self.root = temp_ledger(self)
        self.store, self.queue, self.settings = self.ledger.store, self.ledger.queue, self.ledger.settings
        self.warnings = []

        def observe(event):
            if event.get("log_level") is not None and event["log_level"].name == "warn":
                self.warnings.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def submit(self, **kw):
        fields = dict(job_id=new_job_id(), source_path=f"file://{self.root}/in.mp4",
                      dest_path=f"file://{self.root}/out.mp4", nommer="nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                      job_options=[{"outfile_options": []}])
        fields.update(kw)
        return await self.ledger.submit(Job(**fields))

    async def announced(self):
        """Every message on the state-change queue, parsed, in order."""
        bodies = []
        while messages := await self.queue.receive(self.settings.STATE_CHANGE_QUEUE_NAME, max_messages=10):
            bodies += [json.loads(m.body) for m in messages]
        return bodies

    async def log(self, job_id, ledger=None):
        """The job's stored events, once the ledger recorded those it was given."""
        await (ledger or self.ledger).events_settled(job_id)
        return await self.store.list_events(job_id)

    async def take(self, job_id, worker_id="w-1"):
        job = await self.store.get(job_id)
        return await self.ledger.set_state(job_id, JobState.DOWNLOADING, None, attempts=job.attempts + 1,
                                           worker_id=worker_id, progress=None)

    @ensure
    async def test_a_job_s_life_in_its_log(self):
        """Submit, take, encode with progress, upload, finish: SUBMITTED, ASSIGNED (worker, attempt),
        each state, one PROGRESS per 10 % crossed (none twice, 100 with FINISHED), in order, numbered
        1..n, times and workers from the stored job."""
        job = await self.submit()
        await self.take(job.job_id)
        await self.ledger.set_state(job.job_id, JobState.ENCODING, worker_id="w-1")
        for percent in (4.0, 12.5, 13.0, 38.0, 38.5, 99.0):
            await self.ledger.update(job.job_id, progress=percent)
        await self.ledger.update(job.job_id, heartbeat_at=5.0)  # no progress written: no milestone
        await self.ledger.set_state(job.job_id, JobState.UPLOADING)
        await self.ledger.set_state(job.job_id, JobState.FINISHED, progress=100.0)
        events = await self.log(job.job_id)
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(
            [(e.kind.value, e.state, e.progress) for e in events],
            [("submitted", "PENDING", None), ("assigned", "DOWNLOADING", None), ("state", "DOWNLOADING", None),
             ("state", "ENCODING", None)]
            + [("progress", "ENCODING", p) for p in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)]
            + [("state", "UPLOADING", None), ("progress", "FINISHED", 100.0), ("state", "FINISHED", None)])
        submitted, assigned = events[0], events[1]
        self.assertEqual(submitted.details, "nommer nommer.workerd.nommers.ffmpeg.FFmpegNommer")
        self.assertEqual(submitted.at, job.created_at)
        self.assertEqual((assigned.worker_id, assigned.attempt, assigned.details), ("w-1", 1, "attempt 1 on worker w-1"))
        stored = await self.store.get(job.job_id)
        self.assertEqual(events[-1].at, stored.finished_at)
        self.assertTrue(all(e.worker_id == "w-1" for e in events[1:]))

    @ensure
    async def test_every_event_is_announced_beside_the_state_changes(self):
        """The state-change queue carries each event as {"event": {...}} with its seq, after the
        state change it records; state-change bodies are unchanged."""
        job = await self.submit()
        await self.take(job.job_id)
        await self.ledger.events_settled()
        bodies = await self.announced()
        events = [event_of(b) for b in bodies if "event" in b]
        changes = [b for b in bodies if "event" not in b]
        self.assertEqual([(e.seq, e.kind) for e in events],
                         [(1, EventKind.SUBMITTED), (2, EventKind.ASSIGNED), (3, EventKind.STATE)])
        self.assertEqual(events, await self.store.list_events(job.job_id))
        self.assertEqual([set(c) for c in changes], [{"job_id", "job_state", "job_state_details", "at", "attempts"}])
        self.assertEqual(changes[0]["job_state"], "DOWNLOADING")
        self.assertLess(bodies.index(changes[0]), bodies.index({"event": events[1].to_dict()}))
        self.assertTrue(is_event_body(json.dumps(bodies[0])))
        self.assertFalse(is_event_body(json.dumps(changes[0])))

    @ensure
    async def test_release_to_pending_is_a_retry_with_its_delay(self):
        """A running job released to PENDING records STATE PENDING then RETRY saying the reason and
        when it is queued again; a new attempt while DOWNLOADING is ASSIGNED + STATE again."""
        job = await self.submit()
        await self.take(job.job_id)
        await self.ledger.set_state(job.job_id, JobState.PENDING, "attempt 1 failed, retrying in 5 s: timeout",
                                    retry_in_s=5.0)
        await self.take(job.job_id, worker_id="w-2")
        await self.take(job.job_id, worker_id="w-3")  # lease expired: taken again while DOWNLOADING
        await self.ledger.set_state(job.job_id, JobState.PENDING, "released by worker w-3 shutting down",
                                    retry_in_s=0)
        events = (await self.log(job.job_id))[3:]
        self.assertEqual([(e.kind.value, e.state, e.worker_id, e.attempt) for e in events], [
            ("state", "PENDING", "w-1", 1), ("retry", "PENDING", "w-1", 1),
            ("assigned", "DOWNLOADING", "w-2", 2), ("state", "DOWNLOADING", "w-2", 2),
            ("assigned", "DOWNLOADING", "w-3", 3), ("state", "DOWNLOADING", "w-3", 3),
            ("state", "PENDING", "w-3", 3), ("retry", "PENDING", "w-3", 3)])
        self.assertEqual(events[1].details, "queued again in 5 s: attempt 1 failed, retrying in 5 s: timeout")
        self.assertEqual(events[-1].details, "queued again at once: released by worker w-3 shutting down")

    @ensure
    async def test_cancel_and_error_are_state_events_with_details(self):
        """A cancel (any writer) is a STATE event with its details; a PENDING job canceled is no retry."""
        job = await self.submit()
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        events = await self.log(job.job_id)
        self.assertEqual(kinds(events), [("submitted", "PENDING"), ("state", "CANCELED")])
        self.assertEqual(events[-1].details, "canceled by request")

    @ensure
    async def test_a_failing_event_store_never_fails_the_job(self):
        """With append_event failing, every state write still succeeds and is announced, the events
        are announced without seq, and each failure is a warning naming the job."""
        ledger = type(self.ledger)(FailingAppends(self.store), self.queue, self.settings)
        job = await ledger.submit(Job(job_id=new_job_id(), source_path="file:///in", dest_path="file:///out",
                                      nommer="x", job_options=[]))
        stored = await ledger.set_state(job.job_id, JobState.DOWNLOADING, attempts=1, worker_id="w")
        self.assertEqual(stored.job_state, JobState.DOWNLOADING)
        self.assertEqual(await self.log(job.job_id, ledger), [])
        bodies = await self.announced()
        events = [event_of(b) for b in bodies if "event" in b]
        self.assertEqual([(e.kind, e.seq) for e in events],
                         [(EventKind.SUBMITTED, None), (EventKind.ASSIGNED, None), (EventKind.STATE, None)])
        self.assertEqual([b["job_state"] for b in bodies if "event" not in b], ["DOWNLOADING"])
        failed = [w for w in self.warnings if "storing its" in w["log_format"]]
        self.assertEqual(len(failed), 3)
        self.assertEqual({w["job_id"] for w in failed}, {job.job_id})

    @ensure
    async def test_state_writes_do_not_wait_for_their_events(self):
        """With the event store stalled, set_state and update return once the job is stored and
        announced; the events are recorded later, in the order they were given, and
        events_settled waits for them."""
        store = GatedAppends(self.store)
        ledger = type(self.ledger)(store, self.queue, self.settings)
        job = await self.submit()  # SUBMITTED recorded by the unstalled ledger (a submit waits for it)
        await ledger.set_state(job.job_id, JobState.DOWNLOADING, attempts=1, worker_id="w")
        await ledger.set_state(job.job_id, JobState.ENCODING)
        await ledger.update(job.job_id, progress=25.0)
        await ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.CANCELED)
        self.assertEqual(len(await self.store.list_events(job.job_id)), 1)  # only SUBMITTED so far
        settled = defer.Deferred.fromCoroutine(ledger.events_settled(job.job_id))
        self.assertNoResult(settled)
        store.gate.callback(None)
        await settled
        self.assertEqual(kinds((await self.store.list_events(job.job_id))[1:]), [
            ("assigned", "DOWNLOADING"), ("state", "DOWNLOADING"), ("state", "ENCODING"),
            ("progress", "ENCODING"), ("progress", "ENCODING"), ("state", "CANCELED")])

    @ensure
    async def test_record_event_survives_a_failing_queue(self):
        """record_event with the queue failing stores the event, warns, and returns it."""
        class NoQueue:
            def send(self, *args, **kwargs):
                return defer.fail(ConnectionError("queue unreachable"))
        ledger = type(self.ledger)(self.store, NoQueue(), self.settings)
        job_id = new_job_id()
        stored = await ledger.record_event(JobEvent(job_id=job_id, at=1.0, kind=EventKind.ERROR, details="x"))
        self.assertEqual(stored.seq, 1)
        self.assertTrue(any("announcing its" in w["log_format"] for w in self.warnings))

    @ensure
    async def test_long_details_are_cut(self):
        """An event's details longer than MAX_EVENT_DETAILS_CHARS are cut to that, ending in an ellipsis."""
        stored = await self.ledger.record_event(JobEvent(job_id=new_job_id(), at=1.0, kind=EventKind.ERROR,
                                                         details="é" * 10_000))
        self.assertEqual(len(stored.details), MAX_EVENT_DETAILS_CHARS)
        self.assertTrue(stored.details.endswith("\u2026"))

    @ensure
    async def test_lease_lost_is_recorded_by_the_worker(self):
        """A JobContext stopped for a lost lease records LEASE_LOST with its worker and attempt, once."""
        job = await self.submit()
        job = await self.take(job.job_id, worker_id="w-9")
        worker = types.SimpleNamespace(reactor=reactor, settings=self.settings, ledger=self.ledger, worker_id="w-9")
        ctx = JobContext(worker, job, self.mktemp())
        ctx.stop(LEASE_LOST)
        ctx.stop(LEASE_LOST)
        await ctx.wait_event_written()
        lost = [e for e in await self.log(job.job_id) if e.kind is EventKind.LEASE_LOST]
        self.assertEqual(len(lost), 1)
        self.assertEqual((lost[0].worker_id, lost[0].attempt), ("w-9", 1))
        self.assertIn("lost the lease of attempt 1", lost[0].details)

    def test_progress_milestones(self):
        """Milestones are the multiples of 10 crossed upwards, None counting as 0, capped at 100."""
        self.assertEqual(progress_milestones(None, 9.9), [])
        self.assertEqual(progress_milestones(None, 10.0), [10.0])
        self.assertEqual(progress_milestones(19.0, 41.0), [20.0, 30.0, 40.0])
        self.assertEqual(progress_milestones(95.0, 100.0), [100.0])
        self.assertEqual(progress_milestones(100.0, 100.0), [])
        self.assertEqual(progress_milestones(60.0, None), [])
        self.assertEqual(progress_milestones(0, 250.0)[-1], 100.0)

    def test_submitted_details(self):
        """SUBMITTED says the preset, else the outputs' types, else the nommer."""
        job = Job(job_id="j", source_path="s", dest_path="d", nommer="n.X", job_options={"preset": "cmaf-h264"})
        self.assertEqual(submitted_details(job), "preset cmaf-h264")
        job = job.evolve(job_options={"outputs": [{"type": "hls"}, {"type": "poster"}]})
        self.assertEqual(submitted_details(job), "outputs: hls, poster")
        self.assertEqual(submitted_details(job.evolve(job_options=[{}])), "nommer n.X")
