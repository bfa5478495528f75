"""Dead-lettered jobs end in ERROR; silent in-progress jobs are ABANDONED; long-gone workers are forgotten."""

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.base import WorkerRecord
from nommer.feederd.reaper import Abandoner, DeadLetterWatcher, RegistryPruner, stale_jobs
from tests.helpers import ensure, eventually, temp_settings


def job(state, heartbeat_at=None, updated_at=0.0):
    return Job(job_id=new_job_id(), source_path="a", dest_path="b", nommer="n", job_options=[],
               job_state=state, heartbeat_at=heartbeat_at, updated_at=updated_at)


class StaleJobsTests(TestCase):

    def test_only_silent_in_progress_jobs(self):
        """Stale = in progress and silent longer than the limit; PENDING and final jobs never are."""
        silent = job(JobState.ENCODING, heartbeat_at=100)
        alive = job(JobState.ENCODING, heartbeat_at=950)
        no_heartbeat = job(JobState.DOWNLOADING, heartbeat_at=None, updated_at=10)
        pending = job(JobState.PENDING, updated_at=0)
        final = job(JobState.FINISHED, heartbeat_at=0)
        found = stale_jobs([silent, alive, no_heartbeat, pending, final], now=1000, max_silence_s=500)
        self.assertEqual(found, [silent, no_heartbeat])


class ReaperTests(TestCase):

    def setUp(self):
        self.settings, _ = temp_settings(self, QUEUE_WAIT_TIME_S=0.2, ABANDON_INACTIVE_JOBS_S=60.0)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)

    async def submit(self):
        return await self.ledger.submit(Job(job_id=new_job_id(), source_path="a", dest_path="b",
                                            nommer="n", job_options=[]))

    @ensure
    async def test_dead_letter_becomes_error(self):
        """A job received MAX_JOB_ATTEMPTS times without finishing ends in ERROR with the reason."""
        j = await self.submit()
        clock = task.Clock()
        clock.advance(reactor.seconds())
        queue = make_queue(self.settings, reactor)
        queue._clock = clock  # receive times on our clock so leases expire on demand
        self.addCleanup(queue.close)
        await self.ledger.set_state(j.job_id, JobState.DOWNLOADING, None)
        for _ in range(self.settings.MAX_JOB_ATTEMPTS):
            [m] = await queue.receive(self.settings.NEW_JOB_QUEUE_NAME, visibility_timeout_s=0.001)
            clock.advance(0.001)
        self.assertEqual(await queue.receive(self.settings.NEW_JOB_QUEUE_NAME), [])
        watcher = DeadLetterWatcher(self.ledger, self.settings, reactor)
        watcher.startService()
        self.addCleanup(watcher.stopService)

        async def errored():
            return (await self.store.get(j.job_id)).job_state == JobState.ERROR
        await eventually(errored, what="ERROR")
        stored = await self.store.get(j.job_id)
        self.assertIn("gave up after 3 attempts", stored.job_state_details)
        self.flushLoggedErrors()

    @ensure
    async def test_abandoner_marks_silent_jobs(self):
        """One prune pass abandons a job silent past ABANDON_INACTIVE_JOBS_S, with the reason."""
        j = await self.submit()
        await self.ledger.set_state(j.job_id, JobState.DOWNLOADING, None)
        await self.ledger.set_state(j.job_id, JobState.ENCODING, None, worker_id="w1",
                                    heartbeat_at=reactor.seconds() - 120)
        fresh = await self.submit()
        await self.ledger.set_state(fresh.job_id, JobState.DOWNLOADING, None)
        await self.ledger.set_state(fresh.job_id, JobState.ENCODING, None, heartbeat_at=reactor.seconds())
        await Abandoner(self.ledger, self.settings, reactor).prune()
        stored = await self.store.get(j.job_id)
        self.assertEqual(stored.job_state, JobState.ABANDONED)
        self.assertIn("no heartbeat from worker w1", stored.job_state_details)
        self.assertEqual((await self.store.get(fresh.job_id)).job_state, JobState.ENCODING)


class RegistryPrunerTests(TestCase):

    @ensure
    async def test_forgets_workers_silent_past_the_limit_every_interval(self):
        """At start and every PRUNE_JOBS_INTERVAL_S, records older than WORKER_FORGET_AFTER_S go;
        a failing registry is logged and the timer goes on."""
        settings, _ = temp_settings(self, WORKER_FORGET_AFTER_S=3600.0, PRUNE_JOBS_INTERVAL_S=300.0)
        registry = make_registry(settings, reactor)
        self.addCleanup(registry.close)
        clock = task.Clock()
        clock.advance(10_000)
        for worker_id, seen in [("gone", 10_000 - 3601), ("recent", 10_000 - 3599), ("later", 10_000 - 3400)]:
            await registry.heartbeat(WorkerRecord(worker_id=worker_id, last_seen=seen))
        pruner = RegistryPruner(registry, settings, clock)
        pruner.startService()
        self.addCleanup(pruner.stopService)
        await eventually(lambda: registry.list().addCallback(lambda rs: len(rs) == 2), what="first pass")
        self.assertEqual([r.worker_id for r in await registry.list()], ["later", "recent"])
        clock.advance(300)
        await eventually(lambda: registry.list().addCallback(lambda rs: len(rs) == 0), what="second pass")
        registry.close()
        self.assertEqual(await pruner.prune(), 0)
        self.assertEqual(len(self.flushLoggedErrors()), 1)
        self.assertTrue(pruner._loop.running)
