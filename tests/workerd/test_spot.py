"""The spot watcher (notices from a fake IMDS process or a script, on a
task.Clock), and the worker's spot interruption and drain with a real SQLite
store and local queue."""

import time

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.worker_registry import base as registry
from nommer.core.states import JobState
from nommer.workerd import worker as worker_module
from nommer.workerd.imds import InstanceMetadata, MetadataUnavailable
from nommer.workerd.spot import SpotWatcher
from nommer.workerd.worker import Worker
from tests.helpers import ensure, eventually, temp_settings
from tests.workerd import media, scripted_nommer
from tests.processes import free_port
from tests.workerd.test_imds import shared_imds
from tests.workerd.worker_harness import FAST, NOMMER, WorkerHarness

FFMPEG_NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


class RecordingWorker:
    """What SpotWatcher uses of a Worker, recording the calls."""

    worker_id = "w-test"

    def __init__(self):
        self.calls = []

    def interrupt(self, reason):
        self.calls.append(("interrupt", reason))

    def drain(self, reason):
        self.calls.append(("drain", reason))


class ScriptedMetadata:
    """spot_notice() answers from a list (an Exception is raised); then None."""

    def __init__(self, notices):
        self.notices = list(notices)
        self.polls = 0

    def spot_notice(self):
        self.polls += 1
        answer = self.notices.pop(0) if self.notices else None
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)

    def rebalance_recommendation(self):
        return defer.succeed(None)


class SpotWatcherTests(TestCase):

    def setUp(self):
        self.fake = shared_imds()
        self.fake.clear()
        self.addCleanup(self.fake.clear)
        self.settings, _ = temp_settings(self, SPOT_INTERRUPTION_POLL_S=5.0)
        self.clock = task.Clock()
        self.worker = RecordingWorker()

    def watcher(self, metadata=None, **kwargs):
        metadata = metadata or InstanceMetadata(self.fake.url, reactor)
        watcher = SpotWatcher(metadata, self.worker, self.settings, self.clock, **kwargs)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        return watcher

    async def poll(self, watcher, n=1):
        """Advance the clock one poll interval, n times, waiting for each poll."""
        for _ in range(n):
            before = watcher.polls
            self.clock.advance(self.settings.SPOT_INTERRUPTION_POLL_S)
            await eventually(lambda: watcher.polls > before, what="a poll")

    @ensure
    async def test_notice_interrupts_once(self):
        """A spot notice calls worker.interrupt once, with action and time; polling then ends."""
        states = []
        watcher = self.watcher(on_state_change=lambda: states.append("beat"))
        await eventually(lambda: watcher.polls == 1, what="first poll at start")
        await self.poll(watcher, 2)
        self.assertEqual(self.worker.calls, [])
        self.fake.spot_notice("terminate", "2026-11-22T06:02:00Z")
        await self.poll(watcher)
        self.assertEqual(self.worker.calls,
                         [("interrupt", "spot interruption notice: terminate at 2026-11-22T06:02:00Z")])
        self.assertEqual(states, ["beat"])
        self.assertEqual(watcher.notice["action"], "terminate")
        self.clock.advance(60)
        self.assertEqual(len(self.worker.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @ensure
    async def test_rebalance_drains_then_notice_interrupts(self):
        """A rebalance recommendation drains the worker once; polling goes on,
        and a later notice interrupts it."""
        watcher = self.watcher()
        await eventually(lambda: watcher.polls == 1, what="first poll")
        self.fake.rebalance("2026-11-22T06:00:00Z")
        await self.poll(watcher, 3)
        self.assertEqual(self.worker.calls, [("drain", "rebalance recommendation at 2026-11-22T06:00:00Z")])
        self.fake.spot_notice()
        await self.poll(watcher)
        self.assertEqual([c[0] for c in self.worker.calls], ["drain", "interrupt"])

    @ensure
    async def test_failed_polls_are_retried(self):
        """IMDS failing does not stop the polling: the notice after the failures still interrupts."""
        metadata = ScriptedMetadata([MetadataUnavailable("http://imds/x", "refused"),
                                     MetadataUnavailable("http://imds/x", "refused"),
                                     None, {"action": "terminate", "time": "T"}])
        watcher = self.watcher(metadata)
        self.assertEqual(watcher.failures, 1)
        self.clock.advance(5)
        self.assertEqual(watcher.failures, 2)
        self.clock.advance(5)
        self.assertEqual((watcher.failures, self.worker.calls), (0, []))
        self.clock.advance(5)
        self.assertEqual(self.worker.calls, [("interrupt", "spot interruption notice: terminate at T")])
        self.assertEqual(metadata.polls, 4)
        self.assertEqual(self.flushLoggedErrors(), [])

    @ensure
    async def test_unreachable_imds_keeps_polling(self):
        """A watcher on an IMDS that is not there keeps polling, without raising."""
        watcher = self.watcher(InstanceMetadata(f"http://127.0.0.1:{free_port()}", reactor))
        await eventually(lambda: watcher.polls == 1, what="first poll")
        await self.poll(watcher, 2)
        self.assertEqual(watcher.failures, 3)
        self.assertTrue(watcher._loop.running)
        self.assertEqual(self.worker.calls, [])


class WorkerOnEC2Tests(WorkerHarness, TestCase):
    """Worker.interrupt / drain / idle exit with a real store and queue."""

    SETTINGS = dict(FAST, ALLOWED_NOMMERS=[NOMMER, FFMPEG_NOMMER], SPOT_INTERRUPTION_POLL_S=0.05)

    def hold_releases(self):
        """Make the ledger's PENDING writes (a job released) wait for the
        returned Deferred; the test fires it (or cleanup does, before the
        worker's stop)."""
        hold = defer.Deferred()
        self.addCleanup(lambda: hold.called or hold.callback(None))
        real_set_state = self.ledger.set_state

        async def held_release(job_id, state, *args, **kwargs):
            if state == JobState.PENDING:
                await hold
            return await real_set_state(job_id, state, *args, **kwargs)
        self.patch(self.ledger, "set_state", held_release)
        return hold

    async def encoding(self, job_id, progress=50.0):
        async def check():
            job = await self.store.get(job_id)
            return job.job_state == JobState.ENCODING and job.progress == progress
        await eventually(check, what=f"job {job_id} encoding at {progress}%")

    async def depth(self):
        return await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)

    @ensure
    async def test_interrupt_releases_the_running_job_at_once(self):
        """A spot notice mid-job: the job is PENDING again with its progress
        and a reason, its message visible at once; the worker exits; another
        worker finishes the job."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.interrupt("spot interruption notice: terminate at 2026-11-22T06:02:00Z")
        self.assertEqual(worker.state, registry.INTERRUPTED)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["spot interruption"])
        self.assertEqual(self.states, [("test-worker", registry.INTERRUPTED), ("test-worker", registry.EXITED)])
        self.assertIn(job.job_id, scripted_nommer.CANCELED)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("released: spot interruption notice on test-worker", stored.job_state_details)
        self.assertIn("50% done", stored.job_state_details)
        self.assertEqual((stored.progress, stored.attempts), (50.0, 1))
        self.assertEqual((await self.depth())["visible"], 1)

        scripted_nommer.RELEASE.pop(job.job_id)
        self.start_worker("other-worker")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="taken again")
        scripted_nommer.RELEASE[job.job_id].callback(None)
        await eventually(lambda: self.in_state(job.job_id, JobState.FINISHED), what="finished")
        done = await self.store.get(job.job_id)
        self.assertEqual((done.worker_id, done.attempts), ("other-worker", 2))
        self.assertEqual(sum((await self.depth()).values()), 0)

    @ensure
    async def test_no_job_taken_after_interrupt(self):
        """After the notice no slot takes a job: one sent while the running
        job is being released, and one sent after the exit, stay queued."""
        worker = self.start_worker(MAX_ENCODING_JOBS_PER_WORKER=2)
        running = await self.submit("block")
        await self.encoding(running.job_id)
        hold = self.hold_releases()
        worker.interrupt("spot interruption notice")
        during = await self.submit("succeed")
        await task.deferLater(reactor, 0.3, lambda: None)   # ~15 local-queue polls
        hold.callback(None)
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        after = await self.submit("succeed")
        await task.deferLater(reactor, 0.2, lambda: None)
        for job in (during, after):
            stored = await self.store.get(job.job_id)
            self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        self.assertNotIn(during.job_id, scripted_nommer.RAN)
        self.assertEqual((await self.depth())["visible"], 3)

    @ensure
    async def test_message_in_hand_when_interrupted_is_not_taken(self):
        """A message received just before the notice (job not yet taken) goes
        back to the queue at once, the job untouched."""
        worker = self.start_worker()
        real_get = self.store.get
        interrupted = []

        async def get_then_interrupt(job_id):
            job = await real_get(job_id)
            if not interrupted:
                interrupted.append(job_id)
                worker.interrupt("spot interruption notice")
            return job
        self.patch(self.store, "get", get_then_interrupt)
        job = await self.submit("succeed")
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        stored = await real_get(job.job_id)
        self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        self.assertEqual((await self.depth())["visible"], 1)

    @ensure
    async def test_idle_exit_waits_for_a_message_in_hand(self):
        """A slot idle past WORKER_MAX_IDLE_S does not start the idle exit
        while another slot holds a message it has not started yet (else that
        job would be taken after the exit began)."""
        hold = defer.Deferred()
        real_get = self.store.get

        async def slow_get(job_id):
            await hold
            return await real_get(job_id)
        self.patch(self.store, "get", slow_get)
        job = await self.submit("succeed")   # queued first: the worker is never idle before it
        worker = self.start_worker(MAX_ENCODING_JOBS_PER_WORKER=2, WORKER_MAX_IDLE_S=0.2, QUEUE_WAIT_TIME_S=0.05)
        self.addCleanup(lambda: hold.called or hold.callback(None))   # before the worker's stop
        await eventually(lambda: worker._busy == 1, what="message in hand")
        await task.deferLater(reactor, 0.5, lambda: None)  # the other slot is idle past the limit
        second = await self.submit("succeed")   # still taken: the worker has not begun to exit
        await eventually(lambda: worker._busy == 2, what="second message in hand")
        hold.callback(None)
        for done in (job, second):
            await eventually(lambda: self.in_state(done.job_id, JobState.FINISHED), what="finished")
        await eventually(lambda: self.exits, what="idle exit")
        self.assertIn("idle", self.exits[0])

    @ensure
    async def test_interrupt_exits_by_the_deadline(self):
        """A job whose release hangs (store unreachable) does not keep the
        worker past SPOT_EXIT_DEADLINE_S."""
        self.patch(worker_module, "SPOT_EXIT_DEADLINE_S", 0.3)
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        hold = self.hold_releases()
        worker.interrupt("spot interruption notice")
        await eventually(lambda: self.exits, what="exit by deadline")
        self.assertEqual(self.exits, ["spot interruption (not every job released in time)"])
        hold.callback(None)
        await eventually(lambda: self.in_state(job.job_id, JobState.PENDING), what="released late")
        await defer.DeferredList(worker._loops)
        self.assertEqual(len(self.exits), 1)

    @ensure
    async def test_drain_finishes_the_running_job(self):
        """drain (rebalance recommendation): the running job finishes, none
        is taken, the worker exits with the reason."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.drain("rebalance recommendation at T")
        self.assertEqual(worker.state, registry.DRAINING)
        later = await self.submit("succeed")
        scripted_nommer.RELEASE[job.job_id].callback(None)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["rebalance recommendation at T"])
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.FINISHED)
        self.assertEqual((await self.store.get(later.job_id)).attempts, 0)
        self.assertEqual([s for _, s in self.states], [registry.DRAINING, registry.EXITED])

    @ensure
    async def test_interrupt_while_draining_releases(self):
        """The notice after a rebalance: the draining job is released, the exit says spot interruption."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.drain("rebalance recommendation at T")
        worker.drain("again")   # no-op
        worker.interrupt("spot interruption notice")
        worker.request_shutdown()   # SIGTERM from the instance shutting down: changes nothing
        self.assertEqual(worker.state, registry.INTERRUPTED)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["spot interruption"])
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("spot interruption", stored.job_state_details)

    @ensure
    async def test_notice_from_imds_releases_the_job(self):
        """The whole path: a notice raised on the fake IMDS reaches the worker
        through SpotWatcher and the job is released."""
        fake = shared_imds()
        self.addCleanup(fake.clear)
        worker = self.start_worker()
        watcher = SpotWatcher(InstanceMetadata(fake.url, reactor), worker, self.settings, reactor)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        job = await self.submit("block")
        await self.encoding(job.job_id)
        fake.spot_notice()
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        self.assertIn("released: spot interruption notice on test-worker",
                      (await self.store.get(job.job_id)).job_state_details)

    @ensure
    async def test_interrupt_stops_ffmpeg_within_seconds(self):
        """With real ffmpeg: the encode is stopped (TERM) and the job released within seconds."""
        source = media.clip(seconds=3, size="1280x720")
        job = Job(job_id=new_job_id(), source_path=f"file://{source}", dest_path=f"file://{self.root}/out.mp4",
                  nommer=FFMPEG_NOMMER, job_options=[{"outfile_options": [
                      ["vcodec", "libx264"], ["preset", "veryslow"], ["s", "1920x1080"], ["f", "mp4"]]}])
        settings = self.settings_with(FILE_STORAGE_ROOTS=[self.root, media._dir()])
        worker = Worker(self.ledger, settings, reactor, worker_id="ffmpeg-worker", on_exit=self.exits.append,
                        install_signals=False)
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        await self.ledger.submit(job)
        async def ffmpeg_running():
            stored = await self.store.get(job.job_id)
            return stored.job_state == JobState.ENCODING and (stored.progress or 0) > 0
        await eventually(ffmpeg_running, what="ffmpeg reporting progress", timeout_s=30)
        started = time.monotonic()
        worker.interrupt("spot interruption notice")
        await eventually(lambda: self.exits, what="exit", timeout_s=30)
        self.assertLess(time.monotonic() - started, 10)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("released: spot interruption notice on ffmpeg-worker", stored.job_state_details)
        self.assertGreater(stored.progress, 0)
        self.assertEqual((await self.depth())["visible"], 1)
