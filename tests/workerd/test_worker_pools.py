"""Workers and pools, in process (real SQLite store and local queue, the scripted nommer): a worker
takes jobs of its pools only, highest priority first; a retried job's old message is dropped, so
the job runs once."""

import attr
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.requeue import retry_job
from nommer.core.states import JobState
from nommer.workerd.worker import Worker
from tests.helpers import ensure, eventually
from tests.workerd import scripted_nommer
from tests.workerd.worker_harness import FAST, NOMMER, WorkerHarness


class PoolWorkerTests(WorkerHarness, TestCase):
    SETTINGS = dict(FAST, POOLS={"gpu": {"worker": {"MAX_ENCODING_JOBS_PER_WORKER": 1}}, "large": {}})

    def start_pool_worker(self, pools, worker_id):
        worker = Worker(self.ledger, self.settings, reactor, worker_id=worker_id, on_exit=self.exits.append,
                        install_signals=False, pools=pools)
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        return worker

    async def submit_to(self, pool, priority=50, script="succeed"):
        job = Job(job_id=new_job_id(), source_path=f"file://{self.root}/in", dest_path=f"file://{self.root}/out",
                  nommer=NOMMER, job_options={"script": script}, pool=pool, priority=priority)
        return await self.ledger.submit(job)

    async def done(self, job):
        stored = await self.store.get(job.job_id)
        return stored if stored.job_state == JobState.FINISHED else None

    @ensure
    async def test_each_worker_takes_its_pools_jobs(self):
        """A gpu worker runs the gpu job, a default+large worker the others; nobody runs another pool's."""
        jobs = {pool: await self.submit_to(pool) for pool in ("default", "gpu", "large")}
        self.start_pool_worker(["gpu"], "gpu-worker")
        gpu = await eventually(lambda: self.done(jobs["gpu"]), what="the gpu job")
        self.assertEqual(gpu.worker_id, "gpu-worker")
        for pool in ("default", "large"):
            self.assertEqual((await self.store.get(jobs[pool].job_id)).job_state, JobState.PENDING)
        self.start_pool_worker(["default", "large"], "cpu-worker")
        for pool in ("default", "large"):
            finished = await eventually(lambda pool=pool: self.done(jobs[pool]), what=f"the {pool} job")
            self.assertEqual(finished.worker_id, "cpu-worker")

    @ensure
    async def test_priority_order_across_pools(self):
        """A worker of two pools takes the highest priority first, whichever pool it is in."""
        low = await self.submit_to("default", priority=10)
        high = await self.submit_to("large", priority=90)
        normal = await self.submit_to("default")
        scripted_nommer.RAN.clear()
        worker = self.start_pool_worker(["default", "large"], "w")
        for job in (low, high, normal):
            await eventually(lambda job=job: self.done(job), what="every job")
        self.assertEqual(scripted_nommer.RAN[-3:], [high.job_id, normal.job_id, low.job_id])
        self.assertEqual(worker.job_queues, ["media_nommer", "media_nommer_large"])

    @ensure
    async def test_retried_job_runs_once_and_its_old_message_is_dropped(self):
        """A job canceled while PENDING keeps its message; retried, it has a second one ('<id>#1').
        The worker runs it once and deletes the old message: the queue ends empty."""
        job = await self.submit_to("default")
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        retried = await retry_job(self.ledger, job.job_id)
        self.assertEqual((retried.job_state, retried.retries), (JobState.PENDING, 1))
        self.assertEqual((await self.queue.depth("media_nommer"))["visible"], 2)
        scripted_nommer.RAN.clear()
        self.start_pool_worker(None, "w")
        finished = await eventually(lambda: self.done(job), what="the retried job")
        self.assertEqual((finished.attempts, finished.retries), (1, 1))
        await eventually(lambda: self._empty("media_nommer"), what="both messages gone")
        self.assertEqual(scripted_nommer.RAN.count(job.job_id), 1)

    async def _empty(self, queue):
        return await self.queue.depth(queue) == {"visible": 0, "in_flight": 0, "delayed": 0}

    def test_unknown_pool_refused(self):
        """A worker of a pool the settings do not define is not built."""
        from nommer.core.pools import UnknownPool
        with self.assertRaises(UnknownPool) as caught:
            Worker(self.ledger, self.settings, reactor, pools=["tpu"])
        self.assertIn("default, gpu, large", str(caught.exception))

    def test_message_of_old_life_is_recognized(self):
        from nommer.core.workqueue.jobs import is_current, job_message_body, parse_job_message
        job = Job(job_id="a" * 50, source_path="s", dest_path="d", nommer=NOMMER, job_options={})
        self.assertEqual(job_message_body(job), "a" * 50)
        again = attr.evolve(job, retries=2)
        self.assertEqual(job_message_body(again), "a" * 50 + "#2")
        self.assertEqual(parse_job_message("a" * 50 + "#2"), ("a" * 50, 2))
        self.assertFalse(is_current("a" * 50, again))
        self.assertTrue(is_current("a" * 50 + "#2", again))
