"""A spot interruption notice while a worker encodes a chunk of a chunked
job: only that chunk is redone. Real in-process workers (a real SQLite store
and local queue), real ffmpeg in the sandbox, a real chunked job (planned,
chunk tasks queued, chunks encoded, merged)."""

import os
import subprocess

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from nommer.core.chunking import ChunkState
from nommer.core.events import EventKind
from nommer.core.job import Job, new_job_id
from nommer.core.spec import OUTPUTS_NOMMER, validate_submission
from nommer.core.states import JobState
from nommer.core.worker_registry import base as registry
from tests.helpers import ensure, eventually
from tests.workerd.chunks import sources
from tests.workerd.worker_harness import WorkerHarness

FPS, DURATION_S = 24, 8
#: Slow enough (640x360, x264 "slow", ~1 s a chunk here) that a chunk seen
#: ENCODING is still encoding when the notice comes.
MP4 = {"type": "mp4", "name": "video.mp4", "crf": 18, "encoder_preset": "slow"}


def ffmpeg_pids_of(marker):
    """pids of the ffmpeg processes whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ffmpeg" and any(marker.encode() in a for a in argv):
            pids.append(int(entry))
    return pids


def video_packets(path):
    """``(packets, duration_s)`` of the first video stream of ``path`` (ffprobe)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                          "-show_entries", "stream=nb_read_packets,duration", "-of", "default=nw=1", path],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    fields = dict(line.split("=", 1) for line in out.split())
    return int(fields["nb_read_packets"]), float(fields["duration"])


class SpotNoticeDuringAChunkTests(WorkerHarness, TestCase):

    SETTINGS = dict(ALLOWED_NOMMERS=[OUTPUTS_NOMMER], JOB_LEASE_S=6.0, HEARTBEAT_INTERVAL_S=0.3,
                    RETRY_BACKOFF_S=0.1, WORKER_MAX_IDLE_S=600.0, QUEUE_WAIT_TIME_S=0.2,
                    PROGRESS_WRITE_INTERVAL_S=0.1)

    async def submit_chunked(self):
        source = await threads.deferToThread(sources.make_scenes, self.root, width=640, height=360, fps=FPS,
                                             duration_s=DURATION_S)
        spec = validate_submission({"source_path": f"file://{source}", "dest_path": f"file://{self.root}/out/",
                                    "outputs": [MP4], "chunking": {"target_s": 2, "min_s": 1}}, self.settings)
        return await self.ledger.submit(Job(job_id=new_job_id(), **spec))

    async def chunks(self, job_id):
        return (await self.store.get(job_id)).chunks or []

    @ensure
    async def test_spot_notice_mid_chunk_redoes_only_that_chunk(self):
        """The notice while a chunk's ffmpeg runs: ffmpeg stopped, that chunk PENDING again (attempts
        still 1, details saying why, no worker), its message visible at once beside the other chunks'
        (none lost), the worker exits; a second worker then encodes every chunk left and merges: the
        interrupted chunk at attempts 2, the others at 1, the output frame-exact."""
        job = await self.submit_chunked()
        first = self.start_worker("first-worker")

        async def encoding_chunk():
            return [c for c in await self.chunks(job.job_id) if c["state"] == ChunkState.ENCODING]
        victim = (await eventually(encoding_chunk, timeout_s=60, what="a chunk encoding"))[0]
        index = victim["index"]
        self.assertEqual((victim["attempts"], victim["worker_id"]), (1, "first-worker"))
        marker = f"{job.job_id}-c{index}-1/"   # the chunk attempt's scratch dir, in its ffmpeg's argv
        await eventually(lambda: ffmpeg_pids_of(marker), timeout_s=20, what="the chunk's ffmpeg running")

        first.interrupt("spot interruption notice: terminate at 2026-11-22T06:02:00Z")
        self.assertEqual(first.state, registry.INTERRUPTED)
        await eventually(lambda: self.exits, timeout_s=20, what="the interrupted worker's exit")
        self.assertEqual(self.exits, ["spot interruption"])
        self.assertEqual(ffmpeg_pids_of(marker), [])

        stored = await self.store.get(job.job_id)
        self.assertFalse(stored.is_final, stored.job_state)
        chunks = stored.chunks
        self.assertGreaterEqual(len(chunks), 3)
        self.assertEqual(sum(c["frames"] for c in chunks), sources.total_frames(FPS, DURATION_S))
        released = chunks[index]
        self.assertEqual((released["state"], released["attempts"], released["worker_id"]),
                         (ChunkState.PENDING, 1, None))
        self.assertIn("released: spot interruption notice on first-worker", released["details"])
        self.assertFalse(released.get("files"))
        others = [c for c in chunks if c["index"] != index]
        self.assertTrue(all(c["state"] == ChunkState.PENDING and (c["attempts"] or 0) == 0 for c in others),
                        others)
        # Every chunk's task is in the queue, visible now: the released one at once, none lost.
        depth = await self.depth()
        self.assertEqual(depth, {"visible": len(chunks), "in_flight": 0, "delayed": 0})
        events = await self.store.list_events(job.job_id)
        self.assertIn(f"chunk {index} (", " ".join(e.details or "" for e in events
                                                   if e.kind == EventKind.CHUNK and "spot interruption" in
                                                   (e.details or "")))

        self.start_worker("second-worker")

        async def final():
            return (await self.store.get(job.job_id)).is_final
        await eventually(final, timeout_s=90, what="the job final")
        done = await self.store.get(job.job_id)
        self.assertEqual(done.job_state, JobState.FINISHED, done.job_state_details)
        attempts = {c["index"]: c["attempts"] for c in done.chunks}
        self.assertEqual(attempts, {c["index"]: (2 if c["index"] == index else 1) for c in done.chunks})
        self.assertEqual({c["worker_id"] for c in done.chunks}, {"second-worker"})
        self.assertTrue(all(c["state"] == ChunkState.FINISHED for c in done.chunks))
        frames, duration = await threads.deferToThread(video_packets, os.path.join(self.root, "out", "video.mp4"))
        self.assertEqual(frames, sources.total_frames(FPS, DURATION_S))
        self.assertAlmostEqual(duration, frames / FPS, delta=0.001)
        area = os.path.join(self.settings.DATA_DIR, "chunks", job.job_id)
        self.assertFalse(os.path.isdir(area) and os.listdir(area), "checkpoints left after the merge")
        self.assertEqual(sum((await self.depth()).values()), 0)

    async def depth(self):
        return await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)

