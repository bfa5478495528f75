"""The worker loop in-process: real SQLite store and queue, a scripted nommer."""

import json
import os
import types

from cryptography.fernet import Fernet
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.errors import JobCanceled, TransientJobError
from nommer.core.job import Job, new_job_id
from nommer.core.secrets import seal_uri
from nommer.core.states import JobState
from nommer.core.uri import MediaURI
from nommer.workerd import context as context_module
from nommer.workerd.context import SHUTDOWN, JobContext
from nommer.workerd.nommers.base import NoScratchSpace
from nommer.workerd.lifecycle import idle_exit_due
from nommer.workerd.outcome import retry_delay_s
from nommer.workerd.scratch import scratch_needed_bytes
from tests.helpers import ensure, eventually, temp_ledger
from tests.workerd import scripted_nommer
from tests.workerd.worker_harness import NOMMER, WorkerHarness


class WorkerTests(WorkerHarness, TestCase):

    async def final(self, job_id):
        async def check():
            job = await self.store.get(job_id)
            return job if job.is_final else None
        return await eventually(check, what=f"job {job_id} to finish")

    async def announced(self):
        """State changes announced on the state-change queue, in order (the job events
        announced beside them, ``{"event": ...}``, left out)."""
        bodies = []
        while messages := await self.queue.receive(self.settings.STATE_CHANGE_QUEUE_NAME, max_messages=10):
            bodies += [json.loads(m.body) for m in messages]
        return [b["job_state"] for b in bodies if "event" not in b]

    async def queue_depth(self):
        d = await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)
        return d["visible"] + d["in_flight"] + d["delayed"]

    async def queue_empty(self):
        return await self.queue_depth() == 0

    @ensure
    async def test_start_sweeps_stale_scratch_dirs(self):
        """Scratch dirs of dead attempts go at start: job final, job gone, older attempt; the
        directory of the attempt in progress and anything not named <job_id>-<n> stay."""
        def stored_job():  # in the store only: no message, so the worker takes neither
            return self.store.create(Job(job_id=new_job_id(), source_path=f"file://{self.root}/in",
                                         dest_path=f"file://{self.root}/out", nommer=NOMMER,
                                         job_options={"script": "succeed"}))
        finished = await stored_job()
        await self.store.modify(finished.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING, attempts=1))
        await self.store.modify(finished.job_id, lambda j: j.evolve(job_state=JobState.ERROR))
        running = await stored_job()
        await self.store.modify(running.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING, attempts=2))
        names = {"final": f"{finished.job_id}-1", "gone": f"{new_job_id()}-1",
                 "older": f"{running.job_id}-1", "current": f"{running.job_id}-2", "other": "notes"}
        for name in names.values():
            os.makedirs(os.path.join(self.settings.SCRATCH_DIR, name, "sub"))
            with open(os.path.join(self.settings.SCRATCH_DIR, name, "sub", "f"), "w") as f:
                f.write("x")
        worker = self.start_worker()
        self.assertEqual(await worker.swept, 3)
        self.assertEqual(sorted(os.listdir(self.settings.SCRATCH_DIR)), sorted([names["current"], names["other"]]))

    @ensure
    async def test_success_path(self):
        """A job goes DOWNLOADING -> ENCODING -> UPLOADING -> FINISHED; its message is deleted after."""
        self.start_worker()
        job = await self.submit("succeed")
        done = await self.final(job.job_id)
        self.assertEqual(done.job_state, JobState.FINISHED)
        self.assertEqual(done.attempts, 1)
        self.assertEqual(done.progress, 100.0)
        self.assertEqual(done.output, {"size_bytes": 123})
        self.assertEqual(done.worker_id, "test-worker")
        self.assertIsNotNone(done.started_at)
        self.assertEqual(await self.announced(), ["DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED"])
        # Deleted once FINISHED is stored, announced and its events recorded: just after the store shows it.
        await eventually(self.queue_empty, what="message deleted")

    @ensure
    async def test_refuses_a_job_already_final(self):
        """A job canceled before pick-up is refused: its nommer never runs and its message is deleted."""
        job = await self.submit("succeed")
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        self.start_worker()
        await eventually(self.queue_empty, what="message deleted")
        self.assertNotIn(job.job_id, scripted_nommer.RAN)
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.CANCELED)

    @ensure
    async def test_permanent_failure_ends_in_error_at_once(self):
        """A permanent failure is ERROR on the first attempt with the nommer's reason."""
        self.start_worker()
        job = await self.submit("permanent")
        done = await self.final(job.job_id)
        self.assertEqual(done.job_state, JobState.ERROR)
        self.assertEqual(done.attempts, 1)
        self.assertIn("Unknown encoder", done.job_state_details)
        await eventually(self.queue_empty, what="message deleted")

    @ensure
    async def test_spec_refused_on_the_worker_is_permanent(self):
        """A job the worker's own checks refuse (InvalidJobSpec) ends in ERROR at once, not as a crash."""
        self.start_worker()
        job = await self.submit("badspec")
        done = await self.final(job.job_id)
        self.assertEqual((done.job_state, done.attempts), (JobState.ERROR, 1))
        self.assertIn("outside the allowed FILE_STORAGE_ROOTS", done.job_state_details)
        self.assertEqual(self.flushLoggedErrors(), [])

    @ensure
    async def test_transient_failure_retried_then_error(self):
        """A transient failure is retried until MAX_JOB_ATTEMPTS, then ERROR saying so."""
        self.start_worker()
        job = await self.submit("transient")
        done = await self.final(job.job_id)
        self.assertEqual(done.job_state, JobState.ERROR)
        self.assertEqual(done.attempts, self.settings.MAX_JOB_ATTEMPTS)
        self.assertIn("gave up after 3 attempts", done.job_state_details)
        self.assertIn("download timed out", done.job_state_details)
        states = await self.announced()
        self.assertEqual(states.count("PENDING"), 2)
        self.assertEqual(states[-1], "ERROR")

    @ensure
    async def test_cancel_stops_a_running_job(self):
        """Canceling a running job stops its nommer within a heartbeat and deletes its message."""
        self.start_worker()
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled by request")
        await eventually(lambda: job.job_id in scripted_nommer.CANCELED, what="nommer canceled")
        await eventually(self.queue_empty, what="message deleted")
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.CANCELED)

    @ensure
    async def test_lease_is_extended_while_running(self):
        """A job running for several lease periods is not handed to a second worker."""
        self.start_worker()
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        first_heartbeat = (await self.store.get(job.job_id)).heartbeat_at
        await task.deferLater(reactor, 3 * self.settings.JOB_LEASE_S, lambda: None)
        stolen = await self.queue.receive(self.settings.NEW_JOB_QUEUE_NAME, visibility_timeout_s=1)
        self.assertEqual(stolen, [])
        self.assertGreater((await self.store.get(job.job_id)).heartbeat_at, first_heartbeat)
        scripted_nommer.RELEASE[job.job_id].callback(None)
        self.assertEqual((await self.final(job.job_id)).job_state, JobState.FINISHED)

    @ensure
    async def test_warm_shutdown_finishes_the_running_job(self):
        """One shutdown request: the running job finishes, no new job is taken, then the worker exits."""
        worker = self.start_worker()
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        worker.request_shutdown()
        later = await self.submit("succeed")
        scripted_nommer.RELEASE[job.job_id].callback(None)
        self.assertEqual((await self.final(job.job_id)).job_state, JobState.FINISHED)
        await eventually(lambda: self.exits == ["shutdown"], what="exit")
        self.assertEqual((await self.store.get(later.job_id)).job_state, JobState.PENDING)

    @ensure
    async def test_cold_shutdown_releases_the_job(self):
        """A second shutdown request stops the job and hands it back to the queue at once."""
        worker = self.start_worker()
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        worker.request_shutdown()
        worker.request_shutdown()
        await eventually(lambda: self.exits == ["shutdown"], what="exit")
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("released", stored.job_state_details)
        [again] = await self.queue.receive(self.settings.NEW_JOB_QUEUE_NAME)
        self.assertEqual((again.body, again.receive_count), (job.job_id, 2))

    @ensure
    async def test_idle_worker_exits(self):
        """A worker that gets no job for WORKER_MAX_IDLE_S exits by itself."""
        self.start_worker(WORKER_MAX_IDLE_S=0.3)
        await eventually(lambda: self.exits, what="idle exit")
        self.assertIn("idle", self.exits[0])


    @ensure
    async def test_refuses_to_start_when_the_sandbox_does_not_start(self):
        """BWRAP_BIN missing: the worker takes no job and exits saying what to fix."""
        from twisted.logger import formatEvent, globalLogPublisher
        logged = []

        def observe(event):
            logged.append(formatEvent(event) or "")
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        job = await self.submit("succeed")
        worker = self.start_worker(BWRAP_BIN="/nonexistent/bwrap")
        self.assertFalse(await worker.ready)
        self.assertEqual(len(self.exits), 1)
        for part in ("refuses to start", "BWRAP_BIN", "apt-get install bubblewrap", 'FFMPEG_SANDBOX = "none"'):
            self.assertIn(part, self.exits[0])
        self.assertTrue(any("refuses to start" in line for line in logged))
        stored = await self.store.get(job.job_id)
        self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        self.assertNotIn(job.job_id, scripted_nommer.RAN)

    @ensure
    async def test_sandbox_none_warns_at_start_and_runs(self):
        """FFMPEG_SANDBOX = "none" is allowed, with a warning at every start."""
        from twisted.logger import LogLevel, formatEvent, globalLogPublisher
        warnings = []

        def observe(event):
            if event.get("log_level") == LogLevel.warn:
                warnings.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        worker = self.start_worker(FFMPEG_SANDBOX="none", BWRAP_BIN="/nonexistent/bwrap")
        self.assertTrue(await worker.ready)
        self.assertTrue(any("UNSANDBOXED" in w and "FFMPEG_SANDBOX" in w for w in warnings), warnings)
        job = await self.submit("succeed")
        self.assertEqual((await self.final(job.job_id)).job_state, JobState.FINISHED)


class PolicyTests(TestCase):

    def test_idle_exit_due(self):
        """Idle exit needs: enabled, nothing running, idle at least the limit."""
        self.assertTrue(idle_exit_due(700, 100, 0, 600))
        self.assertFalse(idle_exit_due(699, 100, 0, 600))
        self.assertFalse(idle_exit_due(700, 100, 1, 600))
        self.assertFalse(idle_exit_due(700, 100, 0, 600, enabled=False))

    def test_retry_delay_doubles(self):
        """Transient retries back off: base, 2x, 4x."""
        self.assertEqual([retry_delay_s(a, 5) for a in (1, 2, 3)], [5, 10, 20])

    def test_scratch_needed_bytes(self):
        """Short of SCRATCH_MIN_FREE_BYTES (+ the source's size when known): the bytes needed."""
        self.assertIsNone(scratch_needed_bytes(100, 100))
        self.assertEqual(scratch_needed_bytes(99, 100), 100)
        self.assertEqual(scratch_needed_bytes(150, 100, 60), 160)
        self.assertIsNone(scratch_needed_bytes(160, 100, 60))
        self.assertIsNone(scratch_needed_bytes(None, 100, 60))  # unknown: do not block


class JobContextTransferTests(TestCase):
    """JobContext.download_source / upload_result: the job's own URIs, unsealed and parsed once,
    no DOWNLOADING written (the worker stored it when it took the job), UPLOADING before the upload."""

    SOURCE = "s3://AKIDEXAMPLE:se/cret+key@media-in/raw/clip.mov"
    DEST = "s3://AKIDEXAMPLE:se/cret+key@media-out/web/clip.mp4"

    async def context(self, source, dest, **settings):
        ledger, root = temp_ledger(self, **settings)
        self.ledger = ledger
        fields, sealed = {}, {}
        for field, uri in (("source_path", source), ("dest_path", dest)):
            fields[field], token = seal_uri(uri, ledger.settings, field)
            if token:
                sealed[field] = token
        job = await ledger.store.create(Job(job_id=new_job_id(), nommer=NOMMER, job_options={"script": "succeed"},
                                            sealed_credentials=sealed or None, **fields))
        job = await ledger.store.modify(job.job_id, lambda j: j.evolve(
            job_state=JobState.DOWNLOADING, attempts=1, worker_id="w-1"))
        worker = types.SimpleNamespace(reactor=reactor, settings=ledger.settings, ledger=ledger, worker_id="w-1")
        scratch = os.path.join(root, "scratch")
        os.makedirs(scratch)
        return JobContext(worker, job, scratch), root

    def fake_storage(self, seen, download_error=None):
        class FakeStorage:
            async def download(self, uri, local_path):
                seen.append(("download", uri))
                if download_error is not None:
                    raise download_error
                return 3

            async def upload(self, local_path, uri):
                seen.append(("upload", uri))
                return 5
        made = []

        def get_storage(uri, settings, reactor_):
            made.append(uri)
            return FakeStorage()
        self.patch(context_module, "get_storage", get_storage)
        return made

    @ensure
    async def test_sealed_job_uris_unsealed_and_parsed_once(self):
        """The storage gets the job's original URIs as MediaURIs (the same object it was chosen by)."""
        ctx, root = await self.context(self.SOURCE, self.DEST, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        self.assertNotEqual(ctx.job.source_path, self.SOURCE)  # stored redacted, sealed apart
        seen = []
        made = self.fake_storage(seen)
        self.assertEqual(await ctx.download_source(os.path.join(root, "scratch", "source")), 3)
        await ctx.set_state(JobState.ENCODING)
        self.assertEqual(await ctx.upload_result(os.path.join(root, "scratch", "out")), 5)
        self.assertEqual([op for op, _ in seen], ["download", "upload"])
        for (_, uri), original, chosen_by in zip(seen, (self.SOURCE, self.DEST), made):
            self.assertIsInstance(uri, MediaURI)
            self.assertIs(uri, chosen_by)
            self.assertEqual(uri.password, "se/cret+key")
            self.assertEqual(uri.key, original.split("@", 1)[1].split("/", 1)[1])

    @ensure
    async def test_download_writes_no_state_upload_writes_uploading(self):
        """download_source leaves the job DOWNLOADING (no second write); upload_result stores UPLOADING."""
        ctx, root = await self.context(f"file://{os.path.realpath(self.mktemp())}/in", "file:///srv/out.mp4")
        writes = []
        real_set_state = self.ledger.set_state_unless_final

        async def recording(job_id, state, *args, **kwargs):
            writes.append(JobState(state))
            return await real_set_state(job_id, state, *args, **kwargs)
        self.patch(self.ledger, "set_state_unless_final", recording)
        self.fake_storage([])
        await ctx.download_source(os.path.join(root, "scratch", "source"))
        self.assertEqual(writes, [])
        self.assertEqual((await self.ledger.store.get(ctx.job.job_id)).job_state, JobState.DOWNLOADING)
        await ctx.set_state(JobState.ENCODING)
        await ctx.upload_result(os.path.join(root, "scratch", "out"))
        self.assertEqual(writes, [JobState.ENCODING, JobState.UPLOADING])
        self.assertEqual((await self.ledger.store.get(ctx.job.job_id)).job_state, JobState.UPLOADING)

    @ensure
    async def test_real_file_transfer(self):
        """With FileStorage: the source lands in scratch, the result at the job's destination."""
        ctx, root = await self.context("file:///placeholder", "file:///placeholder")
        with open(os.path.join(root, "in.mov"), "wb") as f:
            f.write(b"source bytes")
        ctx.job = ctx.job.evolve(source_path=f"file://{root}/in.mov", dest_path=f"file://{root}/out/result.mp4")
        local = os.path.join(ctx.scratch_dir, "source")
        self.assertEqual(await ctx.download_source(local), len(b"source bytes"))
        with open(local, "rb") as f:
            self.assertEqual(f.read(), b"source bytes")
        await ctx.set_state(JobState.ENCODING)
        await ctx.upload_result(local)
        with open(os.path.join(root, "out", "result.mp4"), "rb") as f:
            self.assertEqual(f.read(), b"source bytes")

    @ensure
    async def test_full_disk_while_downloading_is_no_scratch_space(self):
        """A transient download error saying the disk is full becomes NoScratchSpace."""
        ctx, root = await self.context("file:///in.mov", "file:///out.mp4")
        self.fake_storage([], download_error=TransientJobError("[Errno 28] No space left on device"))
        with self.assertRaises(NoScratchSpace):
            await ctx.download_source(os.path.join(root, "scratch", "source"))

    @ensure
    async def test_stopped_context_transfers_nothing(self):
        """A job stopped already raises JobCanceled before any transfer."""
        ctx, root = await self.context("file:///in.mov", "file:///out.mp4")
        seen = []
        self.fake_storage(seen)
        ctx.stop(SHUTDOWN)
        with self.assertRaises(JobCanceled):
            await ctx.download_source(os.path.join(root, "scratch", "source"))
        with self.assertRaises(JobCanceled):
            await ctx.upload_result(os.path.join(root, "scratch", "out"))
        self.assertEqual(seen, [])
