"""The worker short of scratch space: jobs are released to another worker, not failed
and not retried here; a worker below SCRATCH_MIN_FREE_BYTES takes no job. The scratch
directory is a real 2 MB tmpfs (needs root; skipped otherwise)."""

import json
import os
import shutil
import subprocess

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.states import JobState
from tests.helpers import ensure, eventually
from tests.workerd import media, scripted_nommer
from tests.workerd.worker_harness import FAST, NOMMER, WorkerHarness

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
TMPFS_BYTES = 2 * 1024 * 1024


class ScratchSpaceTests(WorkerHarness, TestCase):
    SETTINGS = dict(FAST, ALLOWED_NOMMERS=[NOMMER, FFMPEG])
    timeout = 60

    def setUp(self):
        if os.geteuid() != 0:
            raise SkipTest("mounting a small tmpfs needs root")
        super().setUp()
        self.small = os.path.realpath(self.mktemp())
        os.makedirs(self.small)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", self.small],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            raise SkipTest(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", self.small], check=True)
        self.changes = []
        self.logged = []

        def observe(event):
            self.logged.append(formatEvent(event) or "")
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def state_changes(self):
        """Every (state, details) announced so far, in order."""
        for message in await self.queue.receive(self.settings.STATE_CHANGE_QUEUE_NAME, max_messages=10):
            body = json.loads(message.body)
            if "event" not in body:  # a job event announced beside the state changes
                self.changes.append((body["job_state"], body["job_state_details"] or ""))
            await self.queue.delete(self.settings.STATE_CHANGE_QUEUE_NAME, message.receipt_handle)
        return self.changes

    async def released(self):
        changes = await self.state_changes()
        return [d for s, d in changes if s == "PENDING" and d.startswith("released: scratch space low")]

    @ensure
    async def test_scratch_filling_up_during_the_encode_releases_the_job(self):
        """ffmpeg writing raw video into a 2 MB scratch dir hits ENOSPC: the job goes back to
        PENDING for another worker with the reason; it is neither failed nor retried as an
        ordinary transient error."""
        shutil.copyfile(media.clip(seconds=2, size="320x240"), os.path.join(self.root, "in.mp4"))
        job = Job(job_id=new_job_id(), source_path=f"file://{self.root}/in.mp4",
                  dest_path=f"file://{self.root}/out.avi", nommer=FFMPEG,
                  job_options=[{"outfile_options": [["vcodec", "rawvideo"], ["an", None], ["f", "avi"]]}])
        await self.ledger.submit(job)
        worker = self.start_worker(SCRATCH_DIR=self.small, SCRATCH_MIN_FREE_BYTES=100_000)
        released = await eventually(self.released, timeout_s=30, what="the job released")
        await worker.stopService()
        details = released[0]
        self.assertTrue(details.startswith("released: scratch space low on test-worker: "), details)
        self.assertIn("No space left on device", details)
        self.assertIn("bytes free", details)
        states = [s for s, _ in await self.state_changes()]
        self.assertNotIn("ERROR", states)
        self.assertFalse(any("retrying in" in d for _, d in self.changes), self.changes)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertTrue(any("released: scratch space low on test-worker" in line for line in self.logged))
        # The attempt's scratch directory is gone: the space is back for the next job.
        self.assertEqual(os.listdir(self.small), [])

    @ensure
    async def test_job_whose_source_does_not_fit_is_released_before_it_starts(self):
        """Pre-start check: free space < SCRATCH_MIN_FREE_BYTES + the file:// source's size ->
        released with both figures, the nommer never runs."""
        source = os.path.join(self.root, "in")
        with open(source, "wb") as f:
            f.write(b"\0" * 1_500_000)
        job = await self.submit("succeed")  # source_path file://ROOT/in
        worker = self.start_worker(SCRATCH_DIR=self.small, SCRATCH_MIN_FREE_BYTES=1_000_000)
        released = await eventually(self.released, what="the job released")
        await worker.stopService()
        details = released[0]
        free, needed = int(details.split(": ")[2].split()[0]), int(details.split(", ")[1].split()[0])
        self.assertLessEqual(free, TMPFS_BYTES)
        self.assertEqual(needed, 1_000_000 + 1_500_000)
        self.assertIn("the source's 1500000", details)
        self.assertNotIn(job.job_id, scripted_nommer.RAN)
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.PENDING)

    @ensure
    async def test_worker_short_of_space_takes_no_job(self):
        """Below SCRATCH_MIN_FREE_BYTES a worker says so and takes nothing; a worker with room
        takes the job (its first attempt) and finishes it."""
        job = await self.submit("succeed")
        self.start_worker(worker_id="cramped", SCRATCH_DIR=self.small, SCRATCH_MIN_FREE_BYTES=100 * 1024 ** 2)
        await eventually(lambda: any("scratch space low" in line and "cramped" in line for line in self.logged),
                         what="the cramped worker to say why it takes nothing")
        self.assertEqual((await self.store.get(job.job_id)).attempts, 0)
        self.start_worker(worker_id="roomy")

        async def finished():
            stored = await self.store.get(job.job_id)
            return stored if stored.job_state == JobState.FINISHED else None
        done = await eventually(finished, what="the roomy worker to finish the job")
        self.assertEqual((done.worker_id, done.attempts), ("roomy", 1))
        self.assertFalse(any("cramped" in line and "attempt" in line for line in self.logged))


class PrivateScratchTests(TestCase):
    """Scratch directories are the worker's alone (mode 0700), whatever the umask: no other
    local user can list or reach a job's files."""

    def setUp(self):
        old = os.umask(0)  # the most permissive umask: the modes must not come from it
        self.addCleanup(os.umask, old)
        self.base = os.path.realpath(self.mktemp())
        os.makedirs(self.base)
        os.chmod(self.base, 0o755)

    def space(self, root):
        from nommer.workerd.scratch import ScratchSpace
        return ScratchSpace(media.settings(SCRATCH_DIR=root, SCRATCH_MIN_FREE_BYTES=0), "w1")

    def mode(self, path):
        return os.stat(path).st_mode & 0o7777

    def test_new_scratch_and_attempt_dirs_are_0700(self):
        root = os.path.join(self.base, "scratch")
        path = self.space(root).make("job1", 1)
        self.assertEqual(path, os.path.join(root, "job1-1"))
        self.assertEqual((self.mode(root), self.mode(path)), (0o700, 0o700))

    @ensure
    async def test_scratch_dir_made_by_the_space_check_is_0700(self):
        root = os.path.join(self.base, "scratch")
        self.assertIsNone(await self.space(root).short())
        self.assertEqual(self.mode(root), 0o700)

    def test_an_existing_open_scratch_dir_is_closed(self):
        """A SCRATCH_DIR left 0755 (by an earlier version) is made 0700; an attempt dir that
        exists already too."""
        root = os.path.join(self.base, "scratch")
        os.makedirs(os.path.join(root, "job1-2"))
        os.chmod(root, 0o755)
        os.chmod(os.path.join(root, "job1-2"), 0o777)
        path = self.space(root).make("job1", 2)
        self.assertEqual((self.mode(root), self.mode(path)), (0o700, 0o700))

    def test_a_shared_sticky_directory_is_left_alone(self):
        """SCRATCH_DIR set to a shared directory (sticky, like /tmp) keeps its mode; the
        attempt dirs in it are still 0700."""
        root = os.path.join(self.base, "shared")
        os.makedirs(root)
        os.chmod(root, 0o1777)
        path = self.space(root).make("job1", 1)
        self.assertEqual((self.mode(root), self.mode(path)), (0o1777, 0o700))
