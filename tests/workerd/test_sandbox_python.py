"""Python programs in the sandbox (the captions runner): the worker's own
interpreter and its libraries are shown read-only, nothing else of the host.

Each test runs real processes through the launcher the worker uses
(``ProcessRunner(..., sandbox=Sandbox(settings))``), with the readable paths
the captions builder computes (``captions.interpreter_paths``), as root (the
child then runs as ``nobody``) or as the user running the tests.
"""

import json
import os
import subprocess
import sys

from twisted.internet import reactor

from nommer.workerd.outputs.captions import RUNNER_MODULE, interpreter_paths, runner_argv
from nommer.workerd.process import ProcessRunner
from nommer.workerd.sandbox import Sandbox
from tests.helpers import ensure
from tests.workerd.test_sandbox import FAKE_SECRET, SandboxTestCase

#: What the probe program reports, as JSON on stdout.
PROBE = r"""
import json, os, sys
out = {"prefix": sys.prefix, "executable": sys.executable, "environ": dict(os.environ)}
import nommer.workerd.outputs.step
out["nommer"] = os.path.dirname(os.path.abspath(__import__("nommer").__file__))
def attempt(f):
    try:
        return f()
    except OSError as e:
        return type(e).__name__
out["data"] = attempt(lambda: open(sys.argv[1]).read())
out["write_outside"] = attempt(lambda: open(sys.argv[2], "w").write("x"))
out["write_scratch"] = attempt(lambda: open(sys.argv[3], "w").write("x"))
if sys.argv[5:] == ["sandboxed"]:  # (never tried outside: it would write into the venv)
    out["write_prefix"] = attempt(lambda: open(os.path.join(sys.prefix, "planted.py"), "w").write("x"))
out["etc"] = attempt(lambda: sorted(os.listdir("/etc")))
out["home"] = attempt(lambda: os.listdir("/home"))
out["data_dir"] = attempt(lambda: os.listdir(sys.argv[4]))
print(json.dumps(out))
"""


class PythonInSandbox(SandboxTestCase):
    timeout = 120

    def setUp(self):
        super().setUp()
        self.secret = os.path.join(self.data_dir, "jobs.sqlite")
        with open(self.secret, "w") as f:
            f.write(FAKE_SECRET)
        self.outside_file = os.path.join(self.outside, "planted.txt")
        self.scratch_file = os.path.join(self.scratch, "written.txt")

    def probe_argv(self, sandboxed=True):
        return [sys.executable, "-I", "-c", PROBE, self.secret, self.outside_file, self.scratch_file,
                self.data_dir] + (["sandboxed"] if sandboxed else [])

    @ensure
    async def test_the_interpreter_runs_and_sees_nothing_else(self):
        """With the builder's readable paths the worker's interpreter starts in the sandbox
        (its venv found: same sys.prefix, nommer importable) but cannot read DATA_DIR, write
        outside scratch or into its own prefix, and sees no /etc beyond the linker's cache,
        no /home, no environment. The control (unsandboxed) reads the secret and writes
        outside."""
        control = await self.launch(self.probe_argv(sandboxed=False), sandboxed=False)
        self.assertTrue(control.ok, control.stderr_tail)
        seen = json.loads(control.stdout)
        self.assertEqual(seen["data"], FAKE_SECRET)
        self.assertEqual(seen["write_outside"], 1)
        os.unlink(self.outside_file)
        os.unlink(self.scratch_file)

        result = await self.launch(self.probe_argv(), readable=interpreter_paths())
        self.assertTrue(result.ok, result.stderr_tail)
        seen = json.loads(result.stdout)
        self.assertEqual(seen["prefix"], sys.prefix)  # the venv, found by the path it ran as
        import nommer
        self.assertEqual(seen["nommer"], os.path.dirname(os.path.abspath(nommer.__file__)))
        self.assertEqual(seen["data"], "FileNotFoundError")
        # DATA_DIR shows only the way down to this job's scratch dir (bwrap makes its parents).
        self.assertEqual(seen["data_dir"], [os.path.basename(self.scratch_root)])
        self.assertIn(seen["write_outside"], ("FileNotFoundError", "PermissionError", "OSError"))
        self.assertFalse(os.path.exists(self.outside_file))
        self.assertEqual(seen["write_scratch"], 1)
        self.assertTrue(os.path.exists(self.scratch_file))
        self.assertIn(seen["write_prefix"], ("PermissionError", "OSError"))  # read-only bind: EROFS
        self.assertFalse(os.path.exists(os.path.join(sys.prefix, "planted.py")))
        self.assertNotIn("passwd", seen["etc"])
        self.assertLessEqual(set(seen["etc"]), {"ld.so.cache", "alternatives", "fonts"})
        self.assertEqual(seen["home"], "FileNotFoundError")
        self.assertLessEqual(set(seen["environ"]), {"PATH", "PWD", "LC_CTYPE"})
        self.assertNotIn(FAKE_SECRET, result.stdout.decode())

    @ensure
    async def test_without_the_interpreter_paths_python_cannot_start(self):
        """The control for the paths: only the executable bound, the interpreter finds no
        standard library (or no nommer) and fails. So the paths above are what makes it run."""
        result = await self.launch(self.probe_argv())
        self.assertFalse(result.ok)

    @ensure
    async def test_a_readable_path_holding_data_dir_is_not_bound(self):
        """A readable tree that holds DATA_DIR or SCRATCH_DIR (``/``, their parent) is
        refused by the sandbox, so a too-wide interpreter path can never show the job store
        or other jobs: the probe still cannot read the secret."""
        parent = os.path.dirname(self.data_dir)
        readable = interpreter_paths() + [parent, "/"]
        launch = Sandbox(self.settings).wrap(self.probe_argv(), writable=[self.scratch], readable=readable)
        binds = [launch.argv[i + 1] for i, a in enumerate(launch.argv) if a in ("--ro-bind", "--ro-bind-try")]
        self.assertNotIn(parent, binds)
        self.assertNotIn("/", binds)
        result = await self.launch(self.probe_argv(), readable=readable)
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertEqual(json.loads(result.stdout)["data"], "FileNotFoundError")

    @ensure
    async def test_the_runner_starts_in_the_sandbox(self):
        """The transcription runner itself (``python -I -m nommer.workerd.transcribe``) runs
        in the sandbox on a WAV in scratch and writes its JSON there: with no environment,
        no network and only scratch writable, its engine and model load from the bound
        site-packages."""
        wav = os.path.join(self.scratch, "silence.wav")
        subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
                        "-i", "anullsrc=r=16000:cl=mono", "-t", "1.5", "-c:a", "pcm_s16le", wav],
                       check=True)
        out = os.path.join(self.scratch, "result.json")
        argv = runner_argv(engine="pocketsphinx", language="en", input_path=wav, output_path=out,
                           threads=1)
        self.assertEqual(argv[1:4], ["-I", "-m", RUNNER_MODULE])
        runner = ProcessRunner(reactor, argv, timeout_s=90, kill_grace_s=2.0, sandbox=Sandbox(self.settings),
                               writable=[self.scratch], readable=interpreter_paths(), cwd=self.scratch)
        result = await runner.start()
        self.assertTrue(result.ok, result.stderr_tail)
        with open(out) as f:
            written = json.load(f)
        self.assertEqual(written["engine"], "pocketsphinx")
        self.assertEqual(written["words"], [])
        self.assertAlmostEqual(written["duration_s"], 1.5, delta=0.05)
        self.assertIn(b"progress=end", result.stdout)
