"""The ffmpeg sandbox (nommer.workerd.sandbox), checked by its effect.

Every test runs real processes through the launcher the worker uses
(``ProcessRunner(..., sandbox=Sandbox(settings))``) and checks what the child
could or could not do; each escape attempt has a control run (unsandboxed, or
with the path granted) showing the same command does succeed when allowed, so
the test can fail.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

from twisted.internet import protocol, reactor
from twisted.trial import unittest

from nommer.workerd.nommers import ffmpeg_argv
from nommer.workerd.nommers import ffmpeg_options as opts
from nommer.workerd.nommers.ffmpeg import output_caps
from nommer.workerd.process import ProcessRunner
from nommer.workerd.sandbox import Sandbox, SandboxUnavailable, check, sandbox_failure
from tests.e2e.harness import TWISTD
from tests.helpers import ensure, eventually
from tests.workerd import media

FAKE_SECRET = "fake-secret-" + uuid.uuid4().hex
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ffmpeg(*args):
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args]


def sine_to(path, seconds=0.2):
    return ffmpeg("-f", "lavfi", "-i", f"sine=d={seconds}", path)


def pids_running(marker):
    """Pids of live processes whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(name))
    return found


class SandboxTestCase(unittest.TestCase):
    timeout = 60

    def setUp(self):
        base = os.path.realpath(self.mktemp())
        self.scratch_root = os.path.join(base, "data", "scratch")
        self.scratch = os.path.join(self.scratch_root, "jobA-1")
        self.data_dir = os.path.join(base, "data")
        self.outside = os.path.join(base, "outside")
        for d in (self.scratch, self.outside):
            os.makedirs(d)
        self.settings = media.settings(DATA_DIR=self.data_dir, SCRATCH_DIR=self.scratch_root)
        old = os.environ.get("AWS_SECRET_ACCESS_KEY")
        os.environ["AWS_SECRET_ACCESS_KEY"] = FAKE_SECRET
        self.addCleanup(lambda: os.environ.pop("AWS_SECRET_ACCESS_KEY") if old is None
                        else os.environ.__setitem__("AWS_SECRET_ACCESS_KEY", old))

    async def launch(self, argv, *, sandboxed=True, writable=None, readable=(), settings=None, timeout_s=30):
        runner = ProcessRunner(reactor, argv, timeout_s=timeout_s, kill_grace_s=2.0,
                               sandbox=Sandbox(settings or self.settings) if sandboxed else None,
                               writable=[self.scratch] if writable is None else writable,
                               readable=readable, cwd=self.scratch)
        return await runner.start()


class Isolation(SandboxTestCase):

    @ensure
    async def test_environment_is_empty_and_pid_1_shows_none_of_ours(self):
        """No variable of the worker (a fake AWS secret) reaches the child: not in its
        environment, not in /proc/1/environ (bwrap, its pid 1), not in any /proc/N."""
        script = ("env; echo ---; tr '\\0' '\\n' < /proc/1/environ; echo ---; "
                  "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done; echo ---; "
                  "ls -d /proc/[0-9]*")
        control = await self.launch(["/bin/sh", "-c", script], sandboxed=False)
        self.assertIn(FAKE_SECRET, control.stdout.decode())  # the check can see it when it is there
        result = await self.launch(["/bin/sh", "-c", script])
        self.assertTrue(result.ok, result.stderr_tail)
        out = result.stdout.decode()
        self.assertNotIn(FAKE_SECRET, out)
        self.assertNotIn("AWS_", out)
        env, pid1, _, pids = out.split("---\n")
        names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
        self.assertLessEqual(names, {"PATH", "PWD", "SHLVL", "_", "OLDPWD"}, env)
        self.assertEqual(pid1.strip(), "")
        # Its own pid namespace: bwrap, the shell and its children only, not the worker.
        self.assertLessEqual(len(pids.split()), 4, pids)
        self.assertNotIn(f"/proc/{os.getpid()}\n", pids if os.getpid() > 10 else "")

    @ensure
    async def test_writes_outside_scratch_leave_nothing(self):
        """An output in a directory outside the scratch dir fails and no file appears; an
        output in /tmp goes to the sandbox's own tmpfs, not the host's /tmp."""
        target = os.path.join(self.outside, "escape.wav")
        result = await self.launch(sine_to(target))
        self.assertFalse(result.ok)
        self.assertFalse(os.path.exists(target))
        host_tmp = os.path.join(tempfile.gettempdir(), f"nommer-escape-{uuid.uuid4().hex}.wav")
        self.addCleanup(lambda: os.path.exists(host_tmp) and os.unlink(host_tmp))
        result = await self.launch(sine_to(host_tmp))
        self.assertTrue(result.ok, result.stderr_tail)  # written, in the sandbox's /tmp
        self.assertFalse(os.path.exists(host_tmp))
        # Control: the same command writes the file when the directory is granted.
        result = await self.launch(sine_to(target), writable=[self.scratch, self.outside])
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertTrue(os.path.getsize(target) > 0)
        # And the scratch dir is writable.
        result = await self.launch(sine_to(os.path.join(self.scratch, "ok.wav")))
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertTrue(os.path.exists(os.path.join(self.scratch, "ok.wav")))

    @ensure
    async def test_data_dir_and_other_jobs_scratch_are_invisible(self):
        """Media in DATA_DIR and in another job's scratch dir, readable by the worker, cannot be
        read by a sandboxed ffmpeg (or ffprobe); /etc beyond what ffmpeg needs is not there."""
        in_data = os.path.join(self.data_dir, "jobs-secret.mp4")
        other_job = os.path.join(self.scratch_root, "jobB-1", "source")
        os.makedirs(os.path.dirname(other_job))
        for path in (in_data, other_job):
            shutil.copyfile(media.clip(seconds=1, size="160x120"), path)
        for path in (in_data, other_job):
            argv = ffmpeg("-i", path, "-f", "null", "-")
            control = await self.launch(argv, sandboxed=False)
            self.assertTrue(control.ok, control.stderr_tail)  # readable outside the sandbox
            result = await self.launch(argv)
            self.assertFalse(result.ok, path)
            self.assertIn("No such file or directory", result.stderr_tail)
            probe = await self.launch(["ffprobe", "-v", "error", path])
            self.assertFalse(probe.ok, path)
        # Granted read-only (an input outside scratch), it reads and cannot write there.
        result = await self.launch(ffmpeg("-i", in_data, "-f", "null", "-"), readable=[in_data])
        self.assertTrue(result.ok, result.stderr_tail)
        result = await self.launch(["/bin/sh", "-c", f"echo x >> {in_data}"], readable=[in_data])
        self.assertFalse(result.ok)
        result = await self.launch(["/bin/sh", "-c", "ls /etc /; ls /root /home /var 2>&1; true"])
        listing = result.stdout.decode()
        self.assertNotIn("passwd", listing)
        self.assertNotIn("shadow", listing)
        self.assertIn("No such file", listing)

    @ensure
    async def test_a_symlink_given_as_readable_does_not_bind_its_target(self):
        """A readable path left as a symlink by an earlier sandboxed run (an output swapped
        for a link to another job's source) is not bound: bwrap would resolve it on the host
        and show the target inside. The child finds nothing there."""
        other_job = os.path.join(self.scratch_root, "jobB-1", "source")
        os.makedirs(os.path.dirname(other_job))
        shutil.copyfile(media.clip(seconds=1, size="160x120"), other_job)
        link = os.path.join(self.scratch, "output.mp4")
        os.symlink(other_job, link)

        def run(path, readable):  # as the worker's ffprobe of an output: nothing writable
            return ProcessRunner(reactor, ffmpeg("-i", path, "-f", "null", "-"), timeout_s=30,
                                 kill_grace_s=2.0, sandbox=Sandbox(self.settings),
                                 readable=readable, cwd="/").start()
        control = await run(other_job, [other_job])
        self.assertTrue(control.ok, control.stderr_tail)  # bound read-only, it is read
        result = await run(link, [link])
        self.assertFalse(result.ok)
        self.assertIn("No such file or directory", result.stderr_tail)

    @ensure
    async def test_kernel_settings_cannot_be_written(self):
        """/proc/sys (kernel.core_pattern would run a program of the job's as root on the
        host) and the rest of /proc are read-only in the sandbox, also for a worker running
        as root (bwrap leaves /proc/sys writable there). Probed by writing back the value read,
        so a failing run changes nothing."""
        script = ("v=$(cat /proc/sys/kernel/core_uses_pid) && echo $v > /proc/sys/kernel/core_uses_pid "
                  "&& echo WROTE-SYSCTL; echo x > /proc/self/comm && echo WROTE-PROC; true")
        if os.geteuid() == 0:  # control: the worker itself (root) may write it
            control = await self.launch(["/bin/sh", "-c", script], sandboxed=False)
            self.assertIn("WROTE-SYSCTL", control.stdout.decode())
        result = await self.launch(["/bin/sh", "-c", script])
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertNotIn("WROTE", result.stdout.decode())
        # ffmpeg still runs (it only reads /proc).
        result = await self.launch(sine_to(os.path.join(self.scratch, "ok.wav")))
        self.assertTrue(result.ok, result.stderr_tail)

    @ensure
    async def test_no_network(self):
        """A sandboxed ffmpeg cannot reach a listener on 127.0.0.1 (tcp:// nor http://): it fails
        and the listener sees no connection. Unsandboxed, the same ffmpeg connects."""
        connections = []

        class Count(protocol.Protocol):
            def connectionMade(self):
                connections.append(self)
                self.transport.loseConnection()

        factory = protocol.Factory.forProtocol(Count)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        for url in (f"tcp://127.0.0.1:{number}", f"http://127.0.0.1:{number}/x.mp4"):
            argv = ffmpeg("-rw_timeout", "3000000", "-i", url, "-f", "null", "-")
            result = await self.launch(argv)
            self.assertFalse(result.ok)
            self.assertEqual(connections, [], result.stderr_tail)
        control = await self.launch(argv, sandboxed=False)
        self.assertFalse(control.ok)  # our listener hangs up: but it was reached
        self.assertGreaterEqual(len(connections), 1)

    @ensure
    async def test_filter_graph_slipping_past_the_validator_writes_nothing(self):
        """The graph the validator once misread (a quote after sws_flags hides a metadata filter
        writing a file), run through build_argv without validation: in the sandbox nothing is
        written outside scratch; unsandboxed, ffmpeg does create the file."""
        target = os.path.join(self.outside, "metadata.txt")
        graph = f"sws_flags=bicubic';[0:v]metadata=mode=print:file={target}'"
        source = os.path.join(self.scratch, "source")
        shutil.copyfile(media.clip(seconds=1, size="160x120", audio=False), source)
        pass_opts = {"infile_options": [], "outfile_options": [["vf", graph], ["f", "null"]],
                     "move_atom_to_front": False}
        argv = ffmpeg_argv.build_argv(pass_opts, ffmpeg_bin="ffmpeg", input_path=source,
                               output_path=os.path.join(self.scratch, "out"), muxer="null")
        argv = output_caps(argv, pass_opts, max_bytes=10 ** 9, max_duration_s=12.0)
        await self.launch(argv)
        self.assertFalse(os.path.exists(target))
        control = await self.launch(argv, sandboxed=False)
        self.assertTrue(control.ok, control.stderr_tail)
        self.assertTrue(os.path.exists(target))  # the graph does write when not sandboxed

    @ensure
    async def test_resource_limits_apply(self):
        """prlimit sets the FFMPEG_RLIMIT_* values; a write past the file-size limit dies of
        SIGXFSZ (reported as the signal, not bwrap's exit status 153) and stops at the limit."""
        settings = media.settings(SCRATCH_DIR=self.scratch_root, FFMPEG_RLIMIT_FSIZE_BYTES=65536,
                                  FFMPEG_RLIMIT_CPU_S=77, FFMPEG_RLIMIT_NPROC=999,
                                  FFMPEG_RLIMIT_AS_BYTES=3 * 1024 ** 3)
        result = await self.launch(["/bin/cat", "/proc/self/limits"], settings=settings)
        limits = {line[:26].strip(): line[26:].split() for line in result.stdout.decode().splitlines()[1:]}
        self.assertEqual(limits["Max cpu time"][:2], ["77", "77"])
        self.assertEqual(limits["Max file size"][:2], ["65536", "65536"])
        self.assertEqual(limits["Max processes"][:2], ["999", "999"])
        self.assertEqual(limits["Max address space"][:2], [str(3 * 1024 ** 3)] * 2)
        big = os.path.join(self.scratch, "big")
        result = await self.launch(["/bin/sh", "-c", f"exec /usr/bin/head -c 200000 /dev/zero > {big}"],
                                settings=settings)
        self.assertEqual(result.signal, signal.SIGXFSZ, result)
        self.assertIsNone(result.exit_code)
        self.assertEqual(os.path.getsize(big), 65536)
        # Unsandboxed (FFMPEG_SANDBOX none) nothing limits it: the control.
        result = await self.launch(["/bin/sh", "-c", f"exec /usr/bin/head -c 200000 /dev/zero > {big}"],
                                sandboxed=False)
        self.assertTrue(result.ok)
        self.assertEqual(os.path.getsize(big), 200000)


class Failures(SandboxTestCase):

    @ensure
    async def test_bwrap_failing_is_told_from_ffmpeg_failing(self):
        """bwrap's own failure (here: a scratch dir that vanished) is recognised, so the job is
        retried rather than failed as bad media; an ffmpeg error is not mistaken for it."""
        gone = os.path.join(self.scratch_root, "vanished")
        result = await self.launch(ffmpeg("-version"), writable=[gone])
        self.assertIn("bwrap: Can't find source path", sandbox_failure(result))
        result = await self.launch(ffmpeg("-i", os.path.join(self.scratch, "missing.mp4"), "-f", "null", "-"))
        self.assertFalse(result.ok)
        self.assertIsNone(sandbox_failure(result))


class Stopping(SandboxTestCase):

    @ensure
    async def test_terminate_stops_the_encode_and_leaves_no_ffmpeg(self):
        """terminate() (job canceled, timeout) sends SIGTERM to bwrap: the sandbox and the
        ffmpeg in it end at once, and no process of the run is left."""
        marker = f"marker-{uuid.uuid4().hex}"
        argv = ffmpeg("-re", "-f", "lavfi", "-i", "sine", "-f", "wav", os.path.join(self.scratch, marker))
        runner = ProcessRunner(reactor, argv, timeout_s=60, kill_grace_s=30.0, sandbox=Sandbox(self.settings),
                               writable=[self.scratch])
        d = runner.start()
        await eventually(lambda: len(pids_running(marker)) >= 3, timeout_s=60,
                             what="bwrap, bwrap and ffmpeg running")
        started = reactor.seconds()
        runner.terminate()
        result = await d
        self.assertTrue(result.terminated)
        self.assertLess(reactor.seconds() - started, 10.0)  # not the 30 s SIGKILL grace
        await eventually(lambda: not pids_running(marker), timeout_s=60, what="every process of the run gone")

    @ensure
    async def test_worker_killed_takes_the_sandbox_with_it(self):
        """--die-with-parent: a worker process dying of SIGKILL leaves no ffmpeg behind."""
        marker = f"marker-{uuid.uuid4().hex}"
        script = (
            "import sys\n"
            "from twisted.internet import reactor\n"
            "from nommer.workerd.process import ProcessRunner\n"
            "from nommer.workerd.sandbox import Sandbox\n"
            "from tests.workerd import media\n"
            f"argv = {ffmpeg('-re', '-f', 'lavfi', '-i', 'sine', '-f', 'wav', os.path.join(self.scratch, marker))!r}\n"
            f"s = media.settings(SCRATCH_DIR={self.scratch_root!r})\n"
            f"r = ProcessRunner(reactor, argv, timeout_s=60, kill_grace_s=5, sandbox=Sandbox(s), "
            f"writable=[{self.scratch!r}])\n"
            "reactor.callWhenRunning(r.start)\n"
            "reactor.run()\n")
        worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
        self.addCleanup(lambda: worker.poll() is None and worker.kill())
        try:
            await eventually(lambda: len(pids_running(marker)) >= 3, timeout_s=60,
                             what="bwrap, bwrap and ffmpeg running")
        finally:
            worker.kill()
            worker.wait(10)
        await eventually(lambda: not pids_running(marker), timeout_s=60, what="the sandbox gone with its parent")


class StartCheck(SandboxTestCase):

    @ensure
    async def test_check_passes_and_names_ffmpeg(self):
        version = await check(reactor, self.settings)
        self.assertTrue(version.startswith("ffmpeg version"), version)

    @ensure
    async def test_check_fails_with_missing_or_broken_bwrap(self):
        for bwrap, said in (("/nonexistent/bwrap", "not found"), ("/bin/false", "exit status 1")):
            with self.assertRaises(SandboxUnavailable) as cm:
                await check(reactor, media.settings(BWRAP_BIN=bwrap))
            message = str(cm.exception)
            for part in (said, "BWRAP_BIN", bwrap, "apt-get install bubblewrap", 'FFMPEG_SANDBOX = "none"'):
                self.assertIn(part, message)

    @ensure
    async def test_check_names_a_missing_ffmpeg(self):
        with self.assertRaises(SandboxUnavailable) as cm:
            await check(reactor, media.settings(FFMPEG_BIN="/nonexistent/ffmpeg"))
        self.assertIn("FFMPEG_BIN not found: /nonexistent/ffmpeg (apt-get install ffmpeg", str(cm.exception))

    def test_twistd_workerd_refuses_to_start_without_bwrap(self):
        """A real `twistd -n workerd --local` with BWRAP_BIN missing exits 1 and says why."""
        base = os.path.realpath(self.mktemp())
        os.makedirs(base)
        config = os.path.join(base, "nomconf_nobwrap.py")
        with open(config, "w") as f:
            f.write(f"DATA_DIR = {os.path.join(base, 'data')!r}\nBWRAP_BIN = '/nonexistent/bwrap'\n")
        proc = subprocess.run([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "--logfile=-", "workerd",
                               "--local", "--config", config], cwd=base, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 1, out[-3000:])
        for part in ("refuses to start", "BWRAP_BIN", "/nonexistent/bwrap", "apt-get install bubblewrap",
                     'FFMPEG_SANDBOX = "none"'):
            self.assertIn(part, out)
        self.assertNotIn("Traceback", out)


class Unprivileged(SandboxTestCase):
    """The same launch as an ordinary user (the `nommer` service user on EC2)."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            raise unittest.SkipTest("needs root to switch to an unprivileged user")
        try:
            import pwd
            pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user nobody on this machine")
        # A scratch dir of its own, in a place the user can reach.
        self.scratch = tempfile.mkdtemp(prefix="nommer-sbx-user-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        shutil.chown(self.scratch, "nobody")
        self.outside = tempfile.mkdtemp(prefix="nommer-sbx-outside-")
        self.addCleanup(shutil.rmtree, self.outside, True)
        os.chmod(self.outside, 0o777)

    def as_user(self, argv, **wrap):
        launch = Sandbox(self.settings, as_root=False).wrap(argv, **wrap)
        return subprocess.run(["runuser", "-u", "nobody", "--", "env", "-i"] + launch.argv, cwd="/",
                              capture_output=True, timeout=60)

    def test_runs_and_confines_as_an_unprivileged_user(self):
        out = os.path.join(self.scratch, "ok.wav")
        result = self.as_user(sine_to(out), writable=[self.scratch])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertGreater(os.path.getsize(out), 0)
        escape = os.path.join(self.outside, "escape.wav")
        result = self.as_user(sine_to(escape), writable=[self.scratch])
        self.assertNotEqual(result.returncode, 0)
        self.assertFalse(os.path.exists(escape))
        result = self.as_user(["/bin/sh", "-c", "id -u; cat /proc/self/status"], writable=[self.scratch])
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout.decode()
        self.assertIn("CapEff:\t0000000000000000", text)
        self.assertIn("NoNewPrivs:\t1", text)


class RootWorker(SandboxTestCase):
    """A worker running as root (CI, `make run` as root): the kernel exempts uid 0 from
    RLIMIT_NPROC and a root ffmpeg could leave setuid-root files in scratch, so the sandboxed
    child runs as the unprivileged user `nobody`, with no capabilities left."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            raise unittest.SkipTest("the worker is not root here: the sandbox runs as this user")
        import pwd
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user nobody on this machine")
        # As the worker's scratch: root-owned 0700 directories, like SCRATCH_DIR/<job>-<n>.
        for d in (self.scratch_root, self.scratch):
            os.chmod(d, 0o700)

    def settings_with(self, **overrides):
        return media.settings(DATA_DIR=self.data_dir, SCRATCH_DIR=self.scratch_root, **overrides)

    @ensure
    async def test_fork_bomb_stops_at_rlimit_nproc(self):
        """A sandboxed shell starting 60 background `sleep`s gets no further than
        FFMPEG_RLIMIT_NPROC = 20 (fork fails); with a high limit, the control, it starts
        them all. Every process is gone once the run ends."""
        marker = f"30.{uuid.uuid4().int % 10 ** 9:09d}"  # sleep's argument: seconds, and the marker
        script = f"for i in $(seq 60); do sleep {marker} & echo started; done; true"
        result = await self.launch(["/bin/sh", "-c", script], settings=self.settings_with(FFMPEG_RLIMIT_NPROC=20))
        started = result.stdout.decode().split().count("started")
        # Every process of the user counts (others' sandboxes running now too): at most the limit.
        self.assertLess(started, 20 + 3, result.stderr_tail)
        await eventually(lambda: not pids_running(marker), timeout_s=30, what="the sleeps gone")
        control = await self.launch(["/bin/sh", "-c", script], settings=self.settings_with(FFMPEG_RLIMIT_NPROC=1000))
        self.assertEqual(control.stdout.decode().split().count("started"), 60, control.stderr_tail)
        await eventually(lambda: not pids_running(marker), timeout_s=30, what="the sleeps gone")

    @ensure
    async def test_runs_as_nobody_without_capabilities(self):
        """Inside: uid and gid of `nobody`, no supplementary group, every capability set
        empty (bounding set included), no_new_privs; a file made setuid there is owned by
        nobody, not root. The control (unsandboxed, as the worker) makes a root one."""
        script = ("id -u; id -g; id -G; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; "
                  "touch suid && chmod u+s suid && echo MADE-SUID")
        result = await self.launch(["/bin/sh", "-c", script])
        self.assertTrue(result.ok, result.stderr_tail)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(lines[:3], [str(self.nobody.pw_uid), str(self.nobody.pw_gid), str(self.nobody.pw_gid)])
        status = dict(line.split(":\t") for line in lines[3:] if ":\t" in line)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[cap], 16), 0, (cap, status))
        self.assertEqual(status["NoNewPrivs"], "1")
        self.assertIn("MADE-SUID", lines)
        made = os.stat(os.path.join(self.scratch, "suid"))
        self.assertTrue(made.st_mode & 0o4000)  # it is setuid, but
        self.assertEqual(made.st_uid, self.nobody.pw_uid)  # not root's
        control = await self.launch(["/bin/sh", "-c", "touch suid2 && chmod u+s suid2"], sandboxed=False)
        self.assertTrue(control.ok)
        self.assertEqual(os.stat(os.path.join(self.scratch, "suid2")).st_uid, 0)

    @ensure
    async def test_job_files_made_by_the_root_worker_are_usable(self):
        """The worker's own files in scratch, root-owned and unreadable to others (umask
        027: a 0640 source), are read by the sandboxed ffprobe and ffmpeg; the output ffmpeg
        writes (owned by nobody) is read by the worker. The 0700 scratch dir is the sandbox
        user's; its root-owned 0700 parent stays the worker's."""
        source = os.path.join(self.scratch, "source")
        shutil.copyfile(media.clip(seconds=1, size="160x120"), source)
        os.chmod(source, 0o640)
        probe = await self.launch(["ffprobe", "-v", "error", "-show_format", source], writable=[],
                                  readable=[source])
        self.assertTrue(probe.ok, probe.stderr_tail)
        self.assertIn(b"format_name", probe.stdout)
        out = os.path.join(self.scratch, "output.mp4")
        result = await self.launch(ffmpeg("-i", source, "-t", "0.5", out), readable=[source])
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertEqual(os.stat(out).st_uid, self.nobody.pw_uid)
        self.assertGreater(len(open(out, "rb").read()), 0)  # the worker reads it
        self.assertEqual(os.stat(self.scratch).st_uid, self.nobody.pw_uid)
        self.assertEqual(os.stat(self.scratch).st_mode & 0o777, 0o700)
        self.assertEqual((os.stat(self.scratch_root).st_uid, os.stat(self.scratch_root).st_mode & 0o777), (0, 0o700))
        shutil.rmtree(self.scratch)  # and removes it

    @ensure
    async def test_giving_files_to_the_sandbox_user_follows_no_link(self):
        """A readable path the sandbox swapped for a symlink (to a root-owned 0600 file of
        the worker's) is not handed to the sandbox user: its target keeps its owner, and the
        child cannot read it."""
        secret = os.path.join(self.data_dir, "secret")
        with open(secret, "w") as f:
            f.write(FAKE_SECRET)
        os.chmod(secret, 0o600)
        link = os.path.join(self.scratch, "source")
        os.symlink(secret, link)
        result = await self.launch(["/bin/cat", link], readable=[link])
        self.assertFalse(result.ok)
        self.assertNotIn(FAKE_SECRET.encode(), result.stdout)
        self.assertEqual((os.stat(secret).st_uid, os.stat(secret).st_mode & 0o777), (0, 0o600))

    @ensure
    async def test_check_refuses_without_the_sandbox_user(self):
        """No user `nobody` (simulated by another name): the start check says so."""
        from nommer.workerd import sandbox as sandbox_module
        self.patch(sandbox_module, "SANDBOX_USER", "nommer-no-such-user")
        with self.assertRaises(SandboxUnavailable) as cm:
            await check(reactor, self.settings)
        self.assertIn("nommer-no-such-user", str(cm.exception))

    def test_command_line_as_root_and_not(self):
        """As root: no user namespace, setpriv to nobody before prlimit; as another user the
        command line is what it always was (a user namespace, no setpriv)."""
        root = Sandbox(self.settings, as_root=True).wrap(["/bin/true"], writable=[self.scratch]).argv
        self.assertNotIn("--unshare-all", root)
        self.assertIn("--unshare-net", root)
        setpriv = root.index("/usr/bin/setpriv")
        self.assertLess(setpriv, root.index("/usr/bin/prlimit"))
        self.assertIn(f"--reuid={self.nobody.pw_uid}", root[setpriv:])
        user = Sandbox(self.settings, as_root=False).wrap(["/bin/true"], writable=[self.scratch]).argv
        self.assertIn("--unshare-all", user)
        self.assertNotIn("/usr/bin/setpriv", user)
        self.assertNotIn("--cap-add", user)
