"""RegistryHeartbeat: a worker's record written on a task.Clock to the real SQLite registry."""

import socket

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.ledger import JobLedger
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.base import DRAINING, EXITED, INTERRUPTED, RUNNING
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.workerd import heartbeat
from nommer.workerd.heartbeat import RegistryHeartbeat
from nommer.workerd.worker import Worker
from tests.helpers import ensure, eventually, temp_settings

T0 = 1_700_000_000.0
EC2 = {"instance_id": "i-0abc", "instance_type": "c7i.large", "availability_zone": "eu-west-1a", "market": "spot"}


class Recording:
    """The registry, with each write recorded once stored; the first ``fail`` writes
    fail, and while ``hold`` is set writes wait for it."""

    def __init__(self, inner, fail=0):
        self.inner, self.fail, self.hold = inner, fail, None
        self.written, self.attempts = [], 0

    def heartbeat(self, record):
        self.attempts += 1
        if self.fail:
            self.fail -= 1
            return defer.fail(RuntimeError("registry down"))

        async def write():
            if self.hold is not None:
                await self.hold
            await self.inner.heartbeat(record)
            self.written.append(record)
        return defer.Deferred.fromCoroutine(write())


class FakeWorker:
    def __init__(self):
        self.worker_id = "fake-w0"
        self.state, self.jobs = RUNNING, []

    def status(self):
        return {"state": self.state, "jobs": list(self.jobs), "capacity": 2, "jobs_done": 7, "started_at": T0 - 5}


class RegistryHeartbeatTests(TestCase):

    def setUp(self):
        self.settings, _ = temp_settings(self, HEARTBEAT_INTERVAL_S=10.0)
        self.registry = make_registry(self.settings, reactor)
        self.addCleanup(self.registry.close)
        self.recording = Recording(self.registry)
        self.clock = task.Clock()
        self.clock.advance(T0)

    def start(self, worker=None, identity=None):
        hb = RegistryHeartbeat(self.recording, worker or FakeWorker(), self.settings, self.clock, identity=identity)
        hb.startService()
        self.addCleanup(lambda: hb.running and hb.stopService())
        return hb

    async def writes(self, n):
        await eventually(lambda: len(self.recording.written) >= n, what=f"{n} heartbeats")
        return self.recording.written[n - 1]

    @ensure
    async def test_real_worker_record_written_at_start(self):
        """Starting writes at once: a real Worker's status, host, version, clock time; identity None locally."""
        store, queue = make_store(self.settings, reactor), make_queue(self.settings, reactor)
        self.addCleanup(store.close)
        self.addCleanup(queue.close)
        worker = Worker(JobLedger(store, queue, self.settings), self.settings, self.clock, worker_id="host-1-w0",
                        install_signals=False)
        self.start(worker)
        await self.writes(1)
        got = await self.registry.get("host-1-w0")
        self.assertEqual(got.to_dict(), {
            "worker_id": "host-1-w0", "state": RUNNING, "jobs": [], "capacity": 1, "jobs_done": 0,
            "host": socket.gethostname(), "version": heartbeat.nommer_version(), "instance_id": None,
            "instance_type": None, "availability_zone": None, "market": None, "started_at": T0,
            "last_seen": T0, "jobs_finished": 0, "encode_seconds_total": 0.0, "media_seconds_total": 0.0,
            "last_encode_speed": None, "recent_encodes": []})
        self.assertNotEqual(got.version, "")

    @ensure
    async def test_beats_every_interval_with_current_status(self):
        """Each HEARTBEAT_INTERVAL_S of the clock writes the worker's status as it is then, with identity."""
        worker = FakeWorker()
        self.start(worker, identity=EC2)
        await self.writes(1)
        worker.jobs = ["a" * 50]
        self.clock.advance(9.9)
        self.assertEqual(self.recording.attempts, 1)
        self.clock.advance(0.1)
        second = await self.writes(2)
        self.assertEqual((second.last_seen, second.jobs), (T0 + 10, ["a" * 50]))
        stored = await self.registry.get("fake-w0")
        self.assertEqual(stored, second)
        self.assertEqual((stored.instance_id, stored.instance_type, stored.availability_zone, stored.market),
                         ("i-0abc", "c7i.large", "eu-west-1a", "spot"))
        self.assertEqual((stored.capacity, stored.jobs_done, stored.started_at), (2, 7, T0 - 5))

    @ensure
    async def test_failed_write_is_logged_and_retried_next_beat(self):
        """Two failing writes are logged; the loop goes on and the third beat lands."""
        self.recording.fail = 2
        hb = self.start()
        self.assertEqual(self.recording.attempts, 1)
        self.clock.advance(10)
        self.assertEqual(self.recording.attempts, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.clock.advance(10)
        written = await self.writes(1)
        self.assertEqual(written.last_seen, T0 + 20)
        self.assertTrue(hb._loop.running)

    @ensure
    async def test_beat_now_writes_a_state_change_at_once(self):
        """beat_now() writes without waiting for the interval and says whether it was stored."""
        worker = FakeWorker()
        hb = self.start(worker)
        await self.writes(1)
        worker.state = INTERRUPTED
        self.clock.advance(3)
        self.assertIs(await hb.beat_now(), True)
        self.assertEqual((await self.registry.get("fake-w0")).state, INTERRUPTED)
        self.assertEqual((await self.registry.get("fake-w0")).last_seen, T0 + 3)
        self.recording.fail = 1
        self.assertIs(await hb.beat_now(), False)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @ensure
    async def test_writes_are_serialized(self):
        """A beat_now while a beat is still in flight is written after it, so the newest record wins."""
        worker = FakeWorker()
        self.recording.hold = defer.Deferred()
        hb = self.start(worker)
        worker.state = DRAINING
        d = hb.beat_now()
        self.assertEqual(self.recording.attempts, 1)
        self.recording.hold.callback(None)
        self.recording.hold = None
        self.assertIs(await d, True)
        self.assertEqual([r.state for r in self.recording.written], [RUNNING, DRAINING])
        self.assertEqual((await self.registry.get("fake-w0")).state, DRAINING)

    @ensure
    async def test_stop_writes_exited_then_stops_beating(self):
        """stopService writes a last record with state exited; no beat follows."""
        hb = self.start()
        await self.writes(1)
        self.clock.advance(1)
        await hb.stopService()
        record = await self.registry.get("fake-w0")
        self.assertEqual((record.state, record.last_seen), (EXITED, T0 + 1))
        self.clock.advance(100)
        self.assertEqual(self.recording.attempts, 2)

    @ensure
    async def test_stop_gives_up_on_a_hung_registry(self):
        """A last write that hangs is given up after STOP_TIMEOUT_S: stopService still finishes."""
        hb = self.start()
        await self.writes(1)
        self.recording.hold = defer.Deferred()
        d = hb.stopService()
        self.clock.advance(heartbeat.STOP_TIMEOUT_S - 0.1)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertIs(self.successResultOf(d), False)
        self.assertEqual(len(self.flushLoggedErrors(defer.TimeoutError)), 1)
        self.recording.hold.callback(None)

    def test_unknown_identity_key_refused(self):
        """An identity key that is not a WorkerRecord field is a TypeError at construction."""
        with self.assertRaises(TypeError):
            RegistryHeartbeat(self.recording, FakeWorker(), self.settings, self.clock, identity={"zone": "x"})
