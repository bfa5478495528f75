"""Dead letters of chunk tasks: a chunk whose task was received
MAX_JOB_ATTEMPTS times without finishing ends its job in ERROR, naming the
chunk; a dead letter from an earlier life of a retried job is ignored."""

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.chunking import chunk_message_body
from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.requeue import retry_job
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import dead_letter_name, make_queue
from nommer.core.workqueue.base import Message
from nommer.core.workqueue.jobs import job_message_body, send_chunk
from nommer.feederd.reaper import DeadLetterWatcher
from tests.helpers import ensure, eventually, temp_settings


def dead_letter(body):
    return Message(message_id="m-1", receipt_handle="r-1", body=body, receive_count=3, sent_at=0.0)


class ChunkDeadLetterTests(TestCase):

    def setUp(self):
        self.settings, _ = temp_settings(self, QUEUE_WAIT_TIME_S=0.2)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.watcher = DeadLetterWatcher(self.ledger, self.settings, reactor)

    async def encoding_job(self, retries=0):
        """A job ENCODING (its chunks being encoded) in its life ``retries``
        (each earlier life ended in ERROR and was retried)."""
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="a", dest_path="b", nommer="n",
                                           job_options=[]))
        for _ in range(retries):
            await self.ledger.set_state(job.job_id, JobState.ERROR, "chunk 1 (2.0-4.0 s): it broke")
            await retry_job(self.ledger, job.job_id)
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING, None)
        await self.ledger.set_state(job.job_id, JobState.ENCODING, "chunk 3 (6.0-8.0 s): attempt 3 on w-2")
        job = await self.store.get(job.job_id)
        self.assertEqual(job.retries, retries)
        return job

    def assert_gave_up(self, job, index):
        details = job.job_state_details or ""
        self.assertEqual(job.job_state, JobState.ERROR, details)
        self.assertTrue(details.startswith(f"chunk {index}: gave up after {self.settings.MAX_JOB_ATTEMPTS} "
                                           f"attempts"), details)
        self.assertIn("Last: chunk 3 (6.0-8.0 s): attempt 3 on w-2", details)

    @ensure
    async def test_chunk_dead_letter_sets_the_job_error_naming_the_chunk(self):
        """``<job_id>@chunk3``: the job ERROR, "chunk 3: gave up after 3 attempts: ...", with the last details."""
        job = await self.encoding_job()
        body = f"{job.job_id}@chunk3"
        self.assertEqual(chunk_message_body(job_message_body(job), 3), body)
        await self.watcher.handle(dead_letter(body))
        self.assert_gave_up(await self.store.get(job.job_id), 3)

    @ensure
    async def test_chunk_dead_letter_of_the_current_life_of_a_retried_job(self):
        """``<job_id>#1@chunk3`` for a job retried once: the job ERROR naming chunk 3."""
        job = await self.encoding_job(retries=1)
        body = f"{job.job_id}#1@chunk3"
        self.assertEqual(chunk_message_body(job_message_body(job), 3), body)
        await self.watcher.handle(dead_letter(body))
        self.assert_gave_up(await self.store.get(job.job_id), 3)

    @ensure
    async def test_chunk_dead_letter_of_an_earlier_life_is_ignored(self):
        """A chunk task's dead letter sent before the job's retry (``<job_id>@chunk3``, or
        ``#1@chunk3`` once retried twice) leaves the job as it is."""
        once = await self.encoding_job(retries=1)
        twice = await self.encoding_job(retries=2)
        for job, body in [(once, f"{once.job_id}@chunk3"), (twice, f"{twice.job_id}#1@chunk3"),
                          (twice, f"{twice.job_id}@chunk3")]:
            await self.watcher.handle(dead_letter(body))
            stored = await self.store.get(job.job_id)
            self.assertEqual((stored.job_state, stored.job_state_details),
                             (JobState.ENCODING, "chunk 3 (6.0-8.0 s): attempt 3 on w-2"), body)

    @ensure
    async def test_chunk_dead_letter_of_a_final_job_is_ignored(self):
        """The job finished meanwhile: a late chunk dead letter changes nothing."""
        job = await self.encoding_job()
        await self.ledger.set_state(job.job_id, JobState.UPLOADING, None)
        await self.ledger.set_state(job.job_id, JobState.FINISHED, None)
        await self.watcher.handle(dead_letter(f"{job.job_id}@chunk3"))
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.FINISHED)

    @ensure
    async def test_chunk_task_dead_lettered_through_the_queue(self):
        """A real chunk task received MAX_JOB_ATTEMPTS times without being deleted lands in the dead-letter
        queue; the running watcher sets the job ERROR naming the chunk, and consumes the letter."""
        job = await self.encoding_job(retries=1)
        clock = task.Clock()
        clock.advance(reactor.seconds())
        queue = make_queue(self.settings, reactor)
        queue._clock = clock  # receive times on our clock so leases expire on demand
        self.addCleanup(queue.close)
        # Drop the job's own messages (its first life's and its retry's; a chunked job's is deleted
        # once its chunks are queued).
        own = await queue.receive(self.settings.NEW_JOB_QUEUE_NAME, max_messages=10)
        self.assertEqual(sorted(m.body for m in own), [job.job_id, f"{job.job_id}#1"])
        for m in own:
            await queue.delete(self.settings.NEW_JOB_QUEUE_NAME, m.receipt_handle)
        await send_chunk(queue, self.settings, job, 3)
        for _ in range(self.settings.MAX_JOB_ATTEMPTS):
            [m] = await queue.receive(self.settings.NEW_JOB_QUEUE_NAME, visibility_timeout_s=0.001)
            self.assertEqual(m.body, f"{job.job_id}#1@chunk3")
            clock.advance(0.001)
        self.assertEqual(await queue.receive(self.settings.NEW_JOB_QUEUE_NAME), [])
        watcher = DeadLetterWatcher(self.ledger, self.settings, reactor)
        watcher.startService()
        self.addCleanup(watcher.stopService)

        async def errored():
            return (await self.store.get(job.job_id)).job_state == JobState.ERROR
        await eventually(errored, what="ERROR")
        self.assert_gave_up(await self.store.get(job.job_id), 3)

        async def consumed():
            depth = await self.queue.depth(dead_letter_name(self.settings.NEW_JOB_QUEUE_NAME))
            return sum(depth.values()) == 0
        await eventually(consumed, what="the dead letter consumed")
