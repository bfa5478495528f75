"""nommer.workerd.process: ProcessRunner and run_process."""

import os

from twisted.internet import defer, error, reactor
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from nommer.workerd.process import ProcessResult, ProcessRunner, run_process
from tests.helpers import ensure
from tests.workerd.media import ClockTimeReactor


class FakeTransport:
    """Records the signals a runner sends."""

    pid = 4242

    def __init__(self):
        self.signals = []
        self.stdin_closed = False
        self.gone = False

    def signalProcess(self, name):
        if self.gone:
            raise error.ProcessExitedAlready()
        self.signals.append(name)

    def closeStdin(self):
        self.stdin_closed = True


class FakeProcessReactor(Clock):
    """A Clock whose spawnProcess connects the protocol to a FakeTransport."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args=(), env=None, path=None, childFDs=None,
                     **kwargs):
        transport = FakeTransport()
        self.spawned.append({"proto": proto, "executable": executable, "args": list(args),
                             "path": path, "childFDs": childFDs, "transport": transport})
        proto.makeConnection(transport)
        return transport


def end(spawned, exit_code=None, signal=None):
    """Make the fake child end with an exit code or a signal."""
    spawned["transport"].gone = True
    if exit_code == 0 and signal is None:
        reason = error.ProcessDone(0)
    else:
        reason = error.ProcessTerminated(exitCode=exit_code, signal=signal)
    spawned["proto"].processEnded(Failure(reason))


def sh(script):
    return ["sh", "-c", script]


class TimersTests(unittest.TestCase):
    """Timeout and TERM/KILL logic, driven by a Clock (no real process)."""

    def runner(self, **kwargs):
        self.reactor = FakeProcessReactor()
        params = dict(timeout_s=10.0, kill_grace_s=3.0)
        params.update(kwargs)
        runner = ProcessRunner(self.reactor, ["sh", "-c", "true"], **params)
        results = []
        runner.start().addCallback(results.append)
        return runner, self.reactor.spawned[0], results

    def test_timeout_sends_term_then_kill(self):
        """Past timeout_s the child gets TERM, and KILL kill_grace_s later."""
        runner, spawned, results = self.runner()
        self.reactor.advance(9.9)
        self.assertEqual(spawned["transport"].signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(spawned["transport"].signals, ["TERM"])
        self.reactor.advance(2.9)
        self.assertEqual(spawned["transport"].signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(spawned["transport"].signals, ["TERM", "KILL"])
        end(spawned, signal=9)
        self.assertEqual(len(results), 1)
        self.assertTrue(results[0].timed_out)
        self.assertEqual(results[0].signal, 9)
        self.assertIsNone(results[0].exit_code)
        self.assertFalse(results[0].ok)

    def test_no_kill_when_child_obeys_term(self):
        """A child that exits after TERM gets no KILL and leaves no timer behind."""
        runner, spawned, results = self.runner()
        self.reactor.advance(10.0)
        end(spawned, exit_code=255)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(100)
        self.assertEqual(spawned["transport"].signals, ["TERM"])
        self.assertEqual(results[0].exit_code, 255)
        self.assertTrue(results[0].timed_out)

    def test_normal_exit_cancels_timeout(self):
        """A child that ends in time cancels the runtime limit."""
        runner, spawned, results = self.runner()
        self.reactor.advance(5)
        end(spawned, exit_code=0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertTrue(results[0].ok)
        self.assertFalse(results[0].timed_out)
        self.assertEqual(results[0].exit_code, 0)

    def test_terminate_sends_term_then_kill(self):
        """terminate() sends TERM now and KILL after the grace period."""
        runner, spawned, results = self.runner(timeout_s=None)
        runner.terminate()
        runner.terminate()  # idempotent: one KILL timer only
        self.assertEqual(spawned["transport"].signals, ["TERM", "TERM"])
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(3.0)
        self.assertEqual(spawned["transport"].signals[-1], "KILL")
        end(spawned, signal=9)
        self.assertTrue(results[0].terminated)
        self.assertFalse(results[0].timed_out)

    def test_terminate_after_end_is_harmless(self):
        """terminate() after the child ended sends nothing and schedules nothing."""
        runner, spawned, results = self.runner()
        end(spawned, exit_code=0)
        runner.terminate()
        self.assertEqual(spawned["transport"].signals, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_terminate_before_start_spawns_nothing(self):
        """terminate() before start() makes start() return a terminated result."""
        fake = FakeProcessReactor()
        runner = ProcessRunner(fake, ["sh"], timeout_s=1, kill_grace_s=1)
        runner.terminate()
        result = self.successResultOf(runner.start())
        self.assertEqual(fake.spawned, [])
        self.assertTrue(result.terminated)
        self.assertIsNone(result.stdout)

    def test_cancelling_the_deferred_terminates(self):
        """Cancelling start()'s Deferred sends TERM to the child."""
        fake = FakeProcessReactor()
        runner = ProcessRunner(fake, ["sh"], timeout_s=None, kill_grace_s=1)
        d = runner.start()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(fake.spawned[0]["transport"].signals, ["TERM"])
        end(fake.spawned[0], signal=15)  # late end: must not fire d again

    def test_progress_blocks_split_across_chunks(self):
        """Progress lines cut anywhere by the pipe still give whole blocks."""
        blocks = []
        fake = FakeProcessReactor()
        runner = ProcessRunner(fake, ["ffmpeg"], timeout_s=None, kill_grace_s=1,
                               on_progress_line=blocks.append)
        d = runner.start()
        proto = fake.spawned[0]["proto"]
        data = (b"frame=1\r\nout_time_us=40000\nprogress=continue\n"
                b"frame=2\nout_time_us=80000\nprogress=end\n")
        for i in range(0, len(data), 7):
            proto.childDataReceived(1, data[i:i + 7])
        end(fake.spawned[0], exit_code=0)
        self.assertEqual(blocks, [
            {"frame": "1", "out_time_us": "40000", "progress": "continue"},
            {"frame": "2", "out_time_us": "80000", "progress": "end"},
        ])
        self.assertIsNone(self.successResultOf(d).stdout)
        self.assertTrue(fake.spawned[0]["transport"].stdin_closed)

    def test_progress_callback_errors_do_not_stop_the_run(self):
        """An exception in on_progress_line is logged, not raised into the protocol."""
        fake = FakeProcessReactor()

        def boom(block):
            raise RuntimeError("boom")
        runner = ProcessRunner(fake, ["ffmpeg"], timeout_s=None, kill_grace_s=1,
                               on_progress_line=boom)
        d = runner.start()
        fake.spawned[0]["proto"].childDataReceived(1, b"progress=continue\n")
        end(fake.spawned[0], exit_code=0)
        self.assertTrue(self.successResultOf(d).ok)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stdout_is_bounded(self):
        """Collected stdout stops at max_stdout_bytes and says it was truncated."""
        fake = FakeProcessReactor()
        runner = ProcessRunner(fake, ["ffprobe"], timeout_s=None, kill_grace_s=1,
                               max_stdout_bytes=10)
        d = runner.start()
        for _ in range(5):
            fake.spawned[0]["proto"].childDataReceived(1, b"abcdef")
        end(fake.spawned[0], exit_code=0)
        result = self.successResultOf(d)
        self.assertEqual(result.stdout, b"abcdefabcd")
        self.assertTrue(result.stdout_truncated)


class RealProcessTests(unittest.TestCase):
    """Real children through the real reactor."""

    timeout = 30

    @ensure
    async def test_exit_code_stdout_and_stderr(self):
        """Exit status, stdout bytes and the stderr lines come back as written."""
        result = await run_process(
            reactor, sh("echo out; echo e1 >&2; printf e2 >&2; exit 3"),
            timeout_s=30, kill_grace_s=5)
        self.assertIsInstance(result, ProcessResult)
        self.assertEqual(result.exit_code, 3)
        self.assertIsNone(result.signal)
        self.assertEqual(result.stdout, b"out\n")
        self.assertEqual(result.stderr_tail, "e1\ne2")
        self.assertFalse(result.ok)
        self.assertFalse(result.timed_out)

    @ensure
    async def test_stderr_keeps_only_the_tail(self):
        """Of 2000 stderr lines only the last stderr_tail_lines are kept."""
        runner = ProcessRunner(
            reactor, sh("i=0; while [ $i -lt 2000 ]; do echo line$i >&2; i=$((i+1)); done"),
            timeout_s=30, kill_grace_s=5, stderr_tail_lines=5)
        result = await runner.start()
        self.assertEqual(result.stderr_tail.splitlines(),
                         ["line1995", "line1996", "line1997", "line1998", "line1999"])
        self.assertEqual(runner._stderr_lines.maxlen, 5)

    @ensure
    async def test_progress_blocks_from_a_real_child(self):
        """-progress style key=value output reaches on_progress_line one block at a time."""
        blocks = []
        result = await run_process(
            reactor, sh("printf 'frame=1\\nout_time_us=1000\\nprogress=continue\\n'; "
                        "printf 'frame=2\\nout_time_us=2000\\nprogress=end\\n'"),
            timeout_s=30, kill_grace_s=5, on_progress_line=blocks.append)
        self.assertTrue(result.ok)
        self.assertIsNone(result.stdout)
        self.assertEqual([b["out_time_us"] for b in blocks], ["1000", "2000"])
        self.assertEqual([b["progress"] for b in blocks], ["continue", "end"])

    @ensure
    async def test_cwd_is_used(self):
        """The child runs in the given working directory."""
        where = os.path.realpath(self.mktemp())
        os.makedirs(where)
        result = await run_process(reactor, sh("pwd -P"), timeout_s=30, kill_grace_s=5,
                                   cwd=where)
        self.assertEqual(result.stdout.decode().strip(), where)

    @ensure
    async def test_missing_executable(self):
        """A missing executable fails with FileNotFoundError, nothing spawned."""
        with self.assertRaises(FileNotFoundError):
            await run_process(reactor, ["/nonexistent/ffmpeg-nope"], timeout_s=1,
                              kill_grace_s=1)
        with self.assertRaises(FileNotFoundError):
            await run_process(reactor, ["no-such-binary-on-path-xyz"], timeout_s=1,
                              kill_grace_s=1)

    @ensure
    async def test_terminate_stops_a_real_child(self):
        """terminate() ends a running child with SIGTERM and leaves no timer behind."""
        fake_time = ClockTimeReactor()
        runner = ProcessRunner(fake_time, sh("exec sleep 30"), timeout_s=600, kill_grace_s=5)
        d = runner.start()
        self.assertTrue(runner.running)
        runner.terminate()
        result = await d
        self.assertEqual(result.signal, 15)
        self.assertTrue(result.terminated)
        self.assertFalse(runner.running)
        self.assertEqual(fake_time.clock.getDelayedCalls(), [])

    @ensure
    async def test_child_ignoring_term_is_killed_after_grace(self):
        """A real child that ignores SIGTERM is SIGKILLed once the grace period passes."""
        fake_time = ClockTimeReactor()
        ready = defer.Deferred()
        runner = ProcessRunner(
            fake_time, sh("trap '' TERM; echo progress=continue; exec sleep 30"),
            timeout_s=60, kill_grace_s=5,
            on_progress_line=lambda block: ready.called or ready.callback(None))
        d = runner.start()
        await ready  # the trap is installed
        fake_time.clock.advance(60)  # runtime limit: TERM (ignored)
        self.assertTrue(runner.running)
        fake_time.clock.advance(5)  # grace over: KILL
        result = await d
        self.assertEqual(result.signal, 9)
        self.assertTrue(result.timed_out)


class SandboxedRunTests(unittest.TestCase):
    """ProcessRunner with ``sandbox=``: the child runs in bwrap (nommer.workerd.sandbox;
    its confinement is tested in test_sandbox)."""

    timeout = 30

    def sandbox(self, **overrides):
        from nommer.workerd.sandbox import Sandbox
        from tests.workerd import media
        return Sandbox(media.settings(**overrides))

    @ensure
    async def test_exit_status_and_signals_come_back_as_the_childs(self):
        """bwrap exits 128 + N when its child dies of signal N: reported as the signal."""
        result = await run_process(reactor, ["/bin/sh", "-c", "exit 3"], timeout_s=10, kill_grace_s=1,
                                   sandbox=self.sandbox())
        self.assertEqual((result.exit_code, result.signal), (3, None))
        result = await run_process(reactor, ["/bin/sh", "-c", "kill -SEGV $$"], timeout_s=10, kill_grace_s=1,
                                   sandbox=self.sandbox())
        self.assertEqual((result.exit_code, result.signal), (None, 11))
        self.assertFalse(result.ok)
        result = await run_process(reactor, ["/bin/sh", "-c", "echo hi"], timeout_s=10, kill_grace_s=1,
                                   sandbox=self.sandbox())
        self.assertTrue(result.ok)
        self.assertEqual(result.stdout, b"hi\n")

    @ensure
    async def test_missing_bwrap_or_executable_fails_the_start(self):
        for argv, sandbox, said in ((["/bin/true"], self.sandbox(BWRAP_BIN="/nonexistent/bwrap"), "BWRAP_BIN"),
                                    (["/nonexistent/ffmpeg"], self.sandbox(), "/nonexistent/ffmpeg")):
            with self.assertRaises(FileNotFoundError) as cm:
                await run_process(reactor, argv, timeout_s=10, kill_grace_s=1, sandbox=sandbox)
            self.assertIn(said, str(cm.exception))


class FFmpegTimeoutTests(unittest.TestCase):
    """FFMPEG_TIMEOUT_S hit (the runner stops ffmpeg): a permanent failure. The job ends in
    ERROR on its first attempt with the reason; it is not retried MAX_JOB_ATTEMPTS times
    (3 x 6 h by default)."""

    timeout = 60

    @ensure
    async def test_ffmpeg_timeout_ends_the_job_at_once(self):
        import shutil

        from nommer.core.job import Job, new_job_id
        from nommer.core.states import JobState
        from tests.helpers import eventually
        from tests.workerd import media
        from tests.workerd.worker_harness import FAST, WorkerHarness

        ffmpeg_nommer = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"

        class Harness(WorkerHarness):
            SETTINGS = dict(FAST, ALLOWED_NOMMERS=[ffmpeg_nommer], MAX_JOB_ATTEMPTS=3,
                            FFMPEG_TIMEOUT_S=1.0, FFMPEG_KILL_GRACE_S=1.0)

        harness = Harness()
        harness.mktemp, harness.addCleanup = self.mktemp, self.addCleanup
        harness.setUp()
        root = harness.root
        shutil.copyfile(media.clip(seconds=10, size="160x120"), os.path.join(root, "in.mp4"))
        job = Job(job_id=new_job_id(), source_path=f"file://{root}/in.mp4",
                  dest_path=f"file://{root}/out.mp4", nommer=ffmpeg_nommer,
                  job_options=[{"infile_options": [["re", None]],  # 10 s at the source's pace
                                "outfile_options": [["vcodec", "libx264"], ["f", "mp4"]]}])
        await harness.ledger.submit(job)
        worker = harness.start_worker()

        async def ended():
            stored = await harness.store.get(job.job_id)
            return stored if stored.is_final else None
        stored = await eventually(ended, timeout_s=30, what="the job to end")
        await worker.stopService()
        self.assertEqual(stored.job_state, JobState.ERROR, stored.job_state_details)
        self.assertEqual(stored.attempts, 1)
        self.assertIn("ffmpeg ran longer than FFMPEG_TIMEOUT_S = 1 s; stopped",
                      stored.job_state_details)
        self.assertFalse(os.path.exists(os.path.join(root, "out.mp4")))
