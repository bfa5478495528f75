"""Chunked jobs when things go wrong: a chunk failing for good, a retried
job keeping its finished chunks, a checkpoint lost before the merge, a
chunk task sent twice. Real in-process workers (a real SQLite store and
local queue, ``WorkerHarness``), real ffmpeg in the sandbox, a real chunked
job (planned, chunk tasks queued, chunks encoded, merged)."""

import os
import re

from twisted.internet import defer, threads
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from nommer.core.chunking import ChunkState, all_finished
from nommer.core.events import EventKind
from nommer.core.job import Job, new_job_id
from nommer.core.requeue import retry_job
from nommer.core.spec import OUTPUTS_NOMMER, validate_submission
from nommer.core.states import JobState
from nommer.core.workqueue.jobs import send_chunk
from tests.helpers import ensure, eventually
from tests.workerd.chunks import sources
from tests.workerd.test_chunk_spot import video_packets
from tests.workerd.worker_harness import WorkerHarness

FPS, DURATION_S = 24, 8
FRAMES = sources.total_frames(FPS, DURATION_S)
CHUNKING = {"target_s": 2, "min_s": 2}  # 4 chunks of 2 s, however many workers the settings allow
FAST_MP4 = {"type": "mp4", "name": "video.mp4", "crf": 23, "encoder_preset": "veryfast"}
#: Slow enough (640x360, x264 "slow", several chunks at once) that a chunk
#: seen ENCODING is still encoding a few seconds later.
SLOW_MP4 = {"type": "mp4", "name": "video.mp4", "crf": 18, "encoder_preset": "slow"}
#: The pattern of a chunk attempt's event ("chunk 3 (6.0-8.0 s): attempt 1 on w").
ATTEMPT_EVENT = re.compile(r"^chunk (\d+) \([^)]*\): attempt (\d+) on (\S+)$")


class ChunkFailureTests(WorkerHarness, TestCase):

    SETTINGS = dict(ALLOWED_NOMMERS=[OUTPUTS_NOMMER], JOB_LEASE_S=6.0, HEARTBEAT_INTERVAL_S=0.3,
                    RETRY_BACKOFF_S=0.1, WORKER_MAX_IDLE_S=600.0, QUEUE_WAIT_TIME_S=0.2,
                    PROGRESS_WRITE_INTERVAL_S=0.1)

    # --- helpers ---------------------------------------------------------------------

    async def make_source(self, width=320, height=180):
        return await threads.deferToThread(sources.make_scenes, self.root, width=width, height=height,
                                           fps=FPS, duration_s=DURATION_S)

    async def submit_chunked(self, output=FAST_MP4, width=320, height=180):
        source = await self.make_source(width, height)
        spec = validate_submission({"source_path": f"file://{source}", "dest_path": f"file://{self.root}/out/",
                                    "outputs": [output], "chunking": CHUNKING}, self.settings)
        return source, await self.ledger.submit(Job(job_id=new_job_id(), **spec))

    async def chunks(self, job_id):
        return (await self.store.get(job_id)).chunks or []

    async def final(self, job_id, timeout_s=60):
        async def done():
            job = await self.store.get(job_id)
            return job if job.is_final else None
        return await eventually(done, timeout_s=timeout_s, what=f"job {job_id} final")

    async def depth(self):
        return await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)

    async def queue_empty(self):
        async def empty():
            return sum((await self.depth()).values()) == 0
        await eventually(empty, timeout_s=20, what="the job queue empty")

    def area(self, job_id):
        return os.path.join(self.settings.DATA_DIR, "chunks", job_id)

    def checkpoint_paths(self, job_id, chunk):
        return [os.path.join(self.area(job_id), f["name"]) for f in (chunk.get("files") or {}).values()]

    async def attempt_events(self, job_id, after_seq=0):
        """``[(index, attempt, worker_id)]`` of the chunk attempt events recorded after ``after_seq``."""
        found = []
        for e in await self.store.list_events(job_id, after_seq=after_seq):
            m = ATTEMPT_EVENT.match(e.details or "") if e.kind == EventKind.CHUNK else None
            if m:
                found.append((int(m.group(1)), int(m.group(2)), m.group(3)))
        return found

    async def check_output(self):
        frames, duration = await threads.deferToThread(video_packets, os.path.join(self.root, "out", "video.mp4"))
        self.assertEqual(frames, FRAMES)
        self.assertAlmostEqual(duration, frames / FPS, delta=0.001)

    async def fail_with_missing_source(self):
        """A job whose first chunks were encoded by ``first-worker`` (stopped
        warm after its first finished chunk), then whose source went
        missing, so that ``second-worker``'s first chunk fails for good.
        Returns ``(source path, failed Job, {index: chunk} FINISHED before)``."""
        source, job = await self.submit_chunked()
        first = self.start_worker("first-worker")

        async def some_finished():
            stored = await self.store.get(job.job_id)
            return stored if any(c["state"] == ChunkState.FINISHED for c in stored.chunks or ()) else None
        planned = await eventually(some_finished, timeout_s=60, what="a chunk finished")
        await first.stopService()   # warm: the chunk it holds, if any, is finished first
        self.assertEqual(planned.job_state, JobState.ENCODING)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.ENCODING, stored.job_state_details)
        self.assertGreaterEqual(len(stored.chunks), 3)
        self.assertEqual(sum(c["frames"] for c in stored.chunks), FRAMES)
        done = {c["index"]: c for c in stored.chunks if c["state"] == ChunkState.FINISHED}
        left = [c for c in stored.chunks if c["state"] != ChunkState.FINISHED]
        self.assertTrue(done and left, f"set-up: want some chunks finished and some not, got "
                                       f"{[c['state'] for c in stored.chunks]}")
        self.assertTrue(all(c["state"] == ChunkState.PENDING and not c["attempts"] for c in left), left)
        for c in done.values():
            self.assertEqual((c["worker_id"], c["attempts"]), ("first-worker", 1))
            for path in self.checkpoint_paths(job.job_id, c):
                self.assertTrue(os.path.isfile(path), path)

        os.remove(source)
        # The second worker stands for another machine: without this one's shared copy of the source.
        await first.scratch.sources.drop(job.job_id)
        self.start_worker("second-worker")
        failed = await self.final(job.job_id)
        return source, failed, done

    # --- 1. a chunk failing for good --------------------------------------------------

    @ensure
    async def test_chunk_failing_for_good_fails_the_job_with_its_reason(self):
        """The source gone after the plan: the first chunk the next worker takes fails for good, the
        job ends ERROR with that chunk's reason ("chunk N (a-b s): ... does not exist"); the other
        chunk tasks are dropped; the checkpoints of the chunks finished before stay."""
        source, failed, done = await self.fail_with_missing_source()
        self.assertEqual(failed.job_state, JobState.ERROR, failed.job_state_details)
        details = failed.job_state_details or ""
        m = re.match(r"chunk (\d+) \((\d+\.\d)-(\d+\.\d) s\): ", details)
        self.assertIsNotNone(m, details)
        index = int(m.group(1))
        self.assertNotIn(index, done)
        self.assertIn("does not exist", details)
        self.assertIn(os.path.basename(source), details)
        chunk = failed.chunks[index]
        self.assertEqual((m.group(2), m.group(3)), (f"{chunk['start_s']:.1f}", f"{chunk['end_s']:.1f}"))
        self.assertEqual((chunk["worker_id"], chunk["attempts"]), ("second-worker", 1))
        # One attempt only: a permanent failure is not retried; no other chunk was started.
        attempts = await self.attempt_events(failed.job_id)
        self.assertEqual([a for a in attempts if a[2] == "second-worker"], [(index, 1, "second-worker")])
        for c in failed.chunks:
            if c["index"] in done:
                self.assertEqual(c, done[c["index"]])
            elif c["index"] != index:
                self.assertEqual((c["state"], c["attempts"]), (ChunkState.PENDING, 0))
        await self.queue_empty()
        for c in done.values():
            for path in self.checkpoint_paths(failed.job_id, c):
                self.assertTrue(os.path.isfile(path), f"checkpoint {path} removed")
        self.assertFalse(os.path.exists(os.path.join(self.root, "out", "video.mp4")))

    # --- 2. the retried job keeps its finished chunks ---------------------------------

    @ensure
    async def test_retried_job_skips_the_chunks_already_done(self):
        """After the failure above, the source back and the job retried (as POST /job/<id>/retry):
        the job FINISHES; the chunks FINISHED before the retry are not encoded again (same worker,
        same attempts, no attempt event after the retry); every other chunk is encoded once in the
        new life; the output is frame-exact and the checkpoints are removed."""
        source, failed, done = await self.fail_with_missing_source()
        self.assertEqual(failed.job_state, JobState.ERROR, failed.job_state_details)
        await self.queue_empty()
        self.assertEqual(await self.make_source(), source)
        last_seq = max(e.seq for e in await self.store.list_events(failed.job_id))

        retried = await retry_job(self.ledger, failed.job_id)
        self.assertEqual((retried.job_state, retried.retries), (JobState.PENDING, 1))
        finished = await self.final(failed.job_id)
        self.assertEqual(finished.job_state, JobState.FINISHED, finished.job_state_details)

        again = await self.attempt_events(failed.job_id, after_seq=last_seq)
        redone = sorted(a[0] for a in again)
        self.assertEqual(redone, sorted(c["index"] for c in finished.chunks if c["index"] not in done),
                         f"chunk attempts after the retry: {again}")
        self.assertTrue(all(a[1:] == (1, "second-worker") for a in again), again)
        for c in finished.chunks:
            self.assertEqual(c["state"], ChunkState.FINISHED)
            if c["index"] in done:
                before = done[c["index"]]
                self.assertEqual((c["worker_id"], c["attempts"], c["files"]),
                                 ("first-worker", 1, before["files"]))
            else:
                self.assertEqual((c["worker_id"], c["attempts"], c.get("life")), ("second-worker", 1, 1))
        await self.check_output()
        area = self.area(failed.job_id)
        self.assertFalse(os.path.isdir(area) and os.listdir(area), "checkpoints left after the merge")
        await self.queue_empty()

    # --- 3. a checkpoint lost before the merge ----------------------------------------

    @ensure
    async def test_checkpoint_missing_at_the_merge_is_encoded_again(self):
        """Every chunk finished by a worker that stops before queuing the merge; one checkpoint
        deleted; the next worker's merge notices, queues that chunk again (its attempts 2), encodes
        it and merges: FINISHED, frame-exact, the other chunks encoded once."""
        source, job = await self.submit_chunked()
        first = self.start_worker("first-worker")
        stopped = []
        merge_if_last = first.chunks._merge_if_last

        async def stop_before_the_merge(stored):
            # The last chunk is FINISHED: the worker stops taking messages (the
            # slot loop ends after this one), then the merge is queued as usual.
            if all_finished(stored.chunks) and not stopped:
                stopped.append(defer.ensureDeferred(first.stopService()))
            return await merge_if_last(stored)
        first.chunks._merge_if_last = stop_before_the_merge

        await eventually(lambda: stopped, timeout_s=60, what="every chunk finished")
        await stopped[0]
        stored = await self.store.get(job.job_id)
        self.assertFalse(stored.is_final, stored.job_state)
        self.assertTrue(all_finished(stored.chunks), [c["state"] for c in stored.chunks])
        self.assertGreaterEqual(len(stored.chunks), 3)
        self.assertEqual(await self.depth(), {"visible": 1, "in_flight": 0, "delayed": 0})   # the merge
        self.assertFalse(os.path.exists(os.path.join(self.root, "out", "video.mp4")))

        lost = stored.chunks[1]
        paths = self.checkpoint_paths(job.job_id, lost)
        self.assertTrue(paths and all(os.path.isfile(p) for p in paths), paths)
        os.remove(paths[0])

        self.start_worker("second-worker")
        done = await self.final(job.job_id)
        self.assertEqual(done.job_state, JobState.FINISHED, done.job_state_details)
        self.assertEqual({c["index"]: c["attempts"] for c in done.chunks},
                         {c["index"]: (2 if c["index"] == 1 else 1) for c in done.chunks})
        self.assertEqual({c["index"]: c["worker_id"] for c in done.chunks},
                         {c["index"]: ("second-worker" if c["index"] == 1 else "first-worker")
                          for c in done.chunks})
        self.assertTrue(all(c["state"] == ChunkState.FINISHED for c in done.chunks))
        events = await self.store.list_events(job.job_id)
        self.assertTrue(any(e.kind == EventKind.CHUNK and "checkpoints of chunks [1] missing" in (e.details or "")
                            for e in events), [e.details for e in events])
        self.assertEqual([a for a in await self.attempt_events(job.job_id) if a[2] == "second-worker"],
                         [(1, 2, "second-worker")])
        await self.check_output()
        area = self.area(job.job_id)
        self.assertFalse(os.path.isdir(area) and os.listdir(area), "checkpoints left after the merge")
        await self.queue_empty()

    # --- 4. a chunk task sent twice ---------------------------------------------------

    async def every_chunk_encoding_on(self, job_id, worker_id):
        """Wait until every chunk of ``job_id`` is ENCODING on ``worker_id`` and no task waits in the
        queue; returns the chunks."""
        async def all_taken():
            chunks = await self.chunks(job_id)
            if not chunks or any(c["state"] != ChunkState.ENCODING or c["worker_id"] != worker_id
                                 for c in chunks):
                return None
            return chunks if (await self.depth())["visible"] == 0 else None
        chunks = await eventually(all_taken, timeout_s=60, what=f"every chunk encoding on {worker_id}")
        self.assertGreaterEqual(len(chunks), 3)
        self.assertTrue(all(c["attempts"] == 1 for c in chunks), chunks)
        # The chunk with the most left to do: still encoding when the duplicate arrives.
        return chunks, min(chunks, key=lambda c: (c["progress"] or 0.0, -c["frames"]))

    def watch_duplicates(self):
        """A list filled with ``(index, job_id, other worker)`` each time a worker logs that it dropped
        a duplicate chunk task."""
        dropped = []

        def observe(event):
            if "dropping a duplicate task" in (event.get("log_format") or ""):
                dropped.append((event.get("index"), event.get("job_id"), event.get("other")))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return dropped

    async def check_encoded_once(self, job_id, worker_id):
        done = await self.final(job_id, timeout_s=90)
        self.assertEqual(done.job_state, JobState.FINISHED, done.job_state_details)
        self.assertEqual({c["index"]: (c["attempts"], c["worker_id"]) for c in done.chunks},
                         {c["index"]: (1, worker_id) for c in done.chunks})
        attempts = await self.attempt_events(job_id)
        self.assertEqual(sorted(attempts), sorted((c["index"], 1, worker_id) for c in done.chunks))
        await self.check_output()
        await self.queue_empty()

    @ensure
    async def test_duplicate_chunk_task_dropped_while_the_chunk_is_encoding(self):
        """A second task for a chunk another worker is encoding: the worker receiving it deletes it
        (no second attempt), the job finishes with every chunk at attempts 1."""
        source, job = await self.submit_chunked(SLOW_MP4, width=640, height=360)
        first = self.start_worker("first-worker", MAX_ENCODING_JOBS_PER_WORKER=8)
        chunks, victim = await self.every_chunk_encoding_on(job.job_id, "first-worker")
        index = victim["index"]
        # Warm stop: the first worker finishes the chunks it holds but receives nothing more, so
        # the duplicate can only go to the second worker.
        stopping = defer.ensureDeferred(first.stopService())
        dropped = self.watch_duplicates()

        await send_chunk(self.queue, self.settings, await self.store.get(job.job_id), index)
        self.start_worker("second-worker")
        await eventually(lambda: dropped, timeout_s=20, what="the duplicate task dropped")
        self.assertEqual(dropped, [(index, job.job_id, "first-worker")])
        now = (await self.chunks(job.job_id))[index]
        self.assertEqual((now["worker_id"], now["attempts"]), ("first-worker", 1))
        await stopping
        await self.check_encoded_once(job.job_id, "first-worker")

    @ensure
    async def test_duplicate_chunk_task_received_by_the_worker_encoding_it(self):
        """A second task for a chunk, received by another slot of the very worker encoding it, must
        not start a second attempt beside the first (the chunk would be encoded twice, the first
        attempt stopped as if its lease were lost, the slot's context bookkeeping broken).

        PRODUCT BUG (fails today): chunk_attempt.ChunkRunner._run drops a duplicate only when the
        chunk's worker_id is another worker's, so the same worker takes it again: attempts 2, the
        first attempt's ctx.owned() fails and it stops (LEASE_LOST), and one of the two attempts
        crashes in its finally on ``del self.attempts.contexts[key]`` (KeyError: the second attempt
        overwrote the same key), leaving its scratch dir behind."""
        source, job = await self.submit_chunked(SLOW_MP4, width=640, height=360)
        self.start_worker("first-worker", MAX_ENCODING_JOBS_PER_WORKER=8)
        chunks, victim = await self.every_chunk_encoding_on(job.job_id, "first-worker")
        index = victim["index"]
        dropped = self.watch_duplicates()

        await send_chunk(self.queue, self.settings, await self.store.get(job.job_id), index)

        async def received():   # an idle slot of the first worker receives it at once
            depth = await self.depth()
            return depth["visible"] == 0 and depth["delayed"] == 0
        await eventually(received, timeout_s=20, what="the duplicate task received")
        now = (await self.chunks(job.job_id))[index]
        self.assertEqual((now["state"], now["worker_id"], now["attempts"]),
                         (ChunkState.ENCODING, "first-worker", 1),
                         f"chunk {index} was taken a second time by the worker already encoding it "
                         f"(product bug in nommer/workerd/chunk_attempt.py ChunkRunner._run)")
        await eventually(lambda: dropped, timeout_s=20, what="the duplicate task dropped")
        self.assertEqual(dropped, [(index, job.job_id, "first-worker")])
        await self.check_encoded_once(job.job_id, "first-worker")
