"""End-to-end harness: real ``twistd feederd`` (which starts real ``twistd
workerd`` children) in a temp dir, a webhook receiver, and helpers to look
at processes. Synchronous on purpose: these tests drive the daemons from
outside, as a user would, through the real client library over real HTTP.
"""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from nommer.client.api import ConnectionFailed, NommerClient
from nommer.client.webhooks import SIGNATURE_HEADER
from tests.processes import free_port
from tests.workerd.media import clip

TWISTD = "from twisted.scripts.twistd import run; run()"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def home_of(root):
    """Where the ``Feederd`` of file root ``root`` keeps its data dir, config
    and log: ``<root>.feederd``, beside the root, because a file root may not
    contain them (feederd refuses to start: nommer.core.storage.roots)."""
    return os.path.normpath(os.fspath(root)) + ".feederd"


class Feederd:
    """A feederd subprocess with its own data dir, config and log file.

    ``root`` is its file root (FILE_STORAGE_ROOTS, where tests put media);
    ``home`` (``home_of(root)``) holds ``data_dir``, the config and the log.
    Loopback servers (webhook receivers, http sources) are allowed
    (ALLOWED_PRIVATE_NETWORKS)."""

    def __init__(self, root, **settings):
        self.root = root
        self.home = home_of(root)
        os.makedirs(self.home, exist_ok=True)
        self.data_dir = os.path.join(self.home, "data")
        self.port = free_port()
        values = dict(DATA_DIR=self.data_dir, FILE_STORAGE_ROOTS=[root],
                      ALLOWED_PRIVATE_NETWORKS=["127.0.0.0/8"],
                      JOB_LEASE_S=3.0, HEARTBEAT_INTERVAL_S=0.5, RETRY_BACKOFF_S=0.2,
                      WORKER_MAX_IDLE_S=3.0, AUTOSCALE_INTERVAL_S=0.5, PRUNE_JOBS_INTERVAL_S=1.0,
                      MAX_NUM_WORKERS=2, WEBHOOK_BACKOFF_S=0.1, QUEUE_WAIT_TIME_S=2.0,
                      API_RATE_LIMIT_PER_MINUTE=1_000_000)
        values.update(settings)
        self.config = os.path.join(self.home, "nomconf_e2e.py")
        with open(self.config, "w") as f:
            for name, value in values.items():
                f.write(f"{name} = {value!r}\n")
        self.log_path = os.path.join(self.home, "feederd.log")
        self.client = NommerClient(f"http://127.0.0.1:{self.port}", timeout_s=10)
        self.proc = None

    def start(self, timeout_s=30):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "--pidfile=", "-n", "feederd", "--config", self.config,
             "--port", str(self.port)],
            cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"feederd exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.client.health()
                return self
            except ConnectionFailed:
                time.sleep(0.05)
        raise AssertionError(f"feederd did not answer in {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s=60):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # exited between pgrep and kill
        if getattr(self, "_log", None):
            self._log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-20000:]

    def worker_pids(self):
        """pids of workerd processes using this feederd's config."""
        out = subprocess.run(["pgrep", "-f", f"workerd --local --worker-id .* --config {self.config}"],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def pid_of_worker(self, worker_id):
        """pid of the workerd named ``worker_id``.

        A worker starting ffmpeg forks first: until the child execs, it has the worker's command
        line too, so a match whose parent is also a match is that child, not a second worker.
        """
        out = subprocess.run(["pgrep", "-f", "--", f"--worker-id {worker_id} "], capture_output=True, text=True).stdout
        pids = {int(p) for p in out.split()}
        workers = [pid for pid in pids if _parent_of(pid) not in pids]
        assert len(workers) == 1, (worker_id, sorted(pids))
        return workers[0]

    def wait_for(self, job_id, predicate, timeout_s=60, what="condition"):
        """Poll the job until ``predicate(job)``; returns the job."""
        deadline = time.monotonic() + timeout_s
        job = None
        while time.monotonic() < deadline:
            job = self.client.get(job_id)
            if predicate(job):
                return job
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; job: {json.dumps(job, indent=1)}\n{self.log()}")


def daemon_fixture(**settings):
    """A pytest fixture (assign it to ``daemon`` in a test module): a started ``Feederd`` on the
    module's ``root`` fixture with ``settings``, stopped after the test."""
    @pytest.fixture
    def daemon(root):
        feederd = Feederd(root, **settings)
        feederd.start()
        yield feederd
        feederd.stop()
    return daemon


def realtime_pass():
    """A one-pass job read at native speed (``-re``), so it runs about as long as the clip: long
    enough to kill, cancel or signal a worker mid-encode, and progress is written several times
    along the way."""
    return [{"infile_options": [["re", None]],
             "outfile_options": [["c:v", "libx264"], ["preset", "ultrafast"], ["c:a", "aac"], ["f", "mp4"]]}]


def put_clip(root, name, **kw):
    """A copy of ``tests.workerd.media.clip(**kw)`` at ``root/name``; its path."""
    path = os.path.join(root, name)
    shutil.copy(clip(**kw), path)
    return path


def create_key(feederd, name, scopes):
    """``nommer keys create NAME --scope SCOPES --config <feederd's>``: the secret."""
    out = subprocess.run([sys.executable, "-c", "from nommer.client.cli import main; main()", "keys", "create",
                          name, "--scope", scopes, "--config", feederd.config],
                         capture_output=True, text=True, timeout=60, cwd=feederd.root)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def children_of(pid):
    """Direct and indirect child pids (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class HookReceiver:
    """A webhook receiver on loopback recording every form POST: ``posts``
    holds each one's fields, ``signed`` its raw body and X-Nommer-Signature
    header (``(bytes, str or None)``, to verify). ``fail_first`` answers 500
    to that many requests first (to exercise retries; those are not
    recorded)."""

    def __init__(self, fail_first=0):
        self.posts = []
        self.signed = []
        self.fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
                fields = {k: v[0] for k, v in form.items()}
                with receiver._lock:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    receiver.posts.append(fields)
                    receiver.signed.append((body, self.headers.get(SIGNATURE_HEADER)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def states(self, job_id):
        return [p["job_state"] for p in self.posts if p.get("job_id") == job_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _parent_of(pid):
    """Parent pid of ``pid`` from /proc (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
