"""Chaos harness: the e2e ``Feederd`` plus what it takes to break things on
purpose and to check afterwards that nothing was lost.

- ``ChaosFeederd``: a feederd that can be restarted in place (same root,
  config, data dir and port) and whose whole log can be read.
- ``Monkey``: a thread SIGKILLing random workers, mostly busy ones (seeded
  RNG), and restarting feederd when set fractions of the jobs are done.
- ``FlakyHookReceiver``: a webhook receiver that is slow and sometimes 500s.
- ``TcpProxy``: a loopback TCP relay that can be taken down and brought back
  on the same port (an AWS endpoint going away and coming back).
- ``sqlite_lock``: hold ``BEGIN EXCLUSIVE`` on a SQLite file from outside.
- ``HealthProbe``: polls /health in a thread, records every answer.
- ``sequence_problems``: what is wrong with one job's webhook sequence.

Everything listens on or connects to 127.0.0.1 only, and every wait is bounded.
"""

import contextlib
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from nommer.client.api import APIError, ConnectionFailed
from tests.e2e.harness import Feederd

OLD_NOMMER = "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"
FINAL = ("FINISHED", "ERROR", "ABANDONED", "CANCELED")
IN_PROGRESS = ("DOWNLOADING", "ENCODING", "UPLOADING")

#: Job options of the chaos jobs: one fast pass each, some read at native
#: speed (``-re``) so that they last about as long as the clip and kills land
#: mid-encode.
OPTIONS = {
    "realtime": [{"infile_options": [["re", None]],
                  "outfile_options": [["c:v", "libx264"], ["preset", "ultrafast"], ["c:a", "aac"],
                                      ["f", "mp4"]]}],
    "x264": [{"outfile_options": [["c:v", "libx264"], ["preset", "ultrafast"], ["c:a", "aac"],
                                  ["f", "mp4"]]}],
    "copy": [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}],
}


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams", path], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"ffprobe refused {path}: {out.stderr.strip()}")
    return json.loads(out.stdout)


# --- feederd ------------------------------------------------------------------


class ChaosFeederd(Feederd):
    """A ``Feederd`` that can be restarted in place and stopped while workers
    come and go."""

    def __init__(self, root, **settings):
        super().__init__(root, **settings)
        self.restarts = 0
        #: Held by ``restart()``: hold it to keep feederd up meanwhile.
        self.up = threading.Lock()

    def restart(self, stop_timeout_s=90, start_timeout_s=60):
        """SIGTERM feederd (it stops its workers warm, as in production), wait
        for it to exit, then start a new one on the same port, config and data
        dir. Returns the seconds the API was down."""
        with self.up:
            return self._restart(stop_timeout_s, start_timeout_s)

    def _restart(self, stop_timeout_s, start_timeout_s):
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"feederd did not stop within {stop_timeout_s} s:\n{self.log()}")
        self._log.close()
        self.start(timeout_s=start_timeout_s)
        self.restarts += 1
        return time.monotonic() - began

    def worker_ids_to_pids(self):
        """{worker_id: pid} of the workerd processes using this config."""
        out = subprocess.run(["pgrep", "-af", f"workerd --local --worker-id .* --config {self.config}"],
                             capture_output=True, text=True).stdout
        found = {}
        for line in out.splitlines():
            m = re.match(r"(\d+) .*--worker-id (\S+) ", line)
            if m:
                found[m.group(2)] = int(m.group(1))
        return found

    def full_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def call(self, fn, *args, deadline_s=120, **kwargs):
        """``fn(*args, **kwargs)`` (a client method), retried while feederd is
        unreachable (restarting) or answers 5xx, until ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                return fn(*args, **kwargs)
            except (ConnectionFailed, APIError) as exc:
                if isinstance(exc, APIError) and exc.status < 500:
                    raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"feederd unreachable for {deadline_s} s: {exc}\n{self.log()}")
                time.sleep(0.2)

    def all_jobs(self):
        return list(self.call(lambda: list(self.client.iter_jobs(page_size=200))))

    def wait_all_final(self, job_ids, timeout_s):
        """Poll until every job is final; returns {job_id: job}. Bounded."""
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = {j["job_id"]: j for j in self.all_jobs()}
            missing = [i for i in job_ids if i not in jobs]
            assert not missing, f"jobs unknown to feederd: {missing}"
            pending = [i for i in job_ids if jobs[i]["job_state"] not in FINAL]
            if not pending:
                return jobs
            if time.monotonic() > deadline:
                states = {i: (jobs[i]["job_state"], jobs[i]["attempts"]) for i in pending}
                raise AssertionError(f"{len(pending)} jobs not final after {timeout_s} s: {states}\n{self.log()}")
            time.sleep(0.5)


# --- log reading -----------------------------------------------------------------

def ledger_changes(log_text):
    """Every state change the ledger logged, in any process (feederd's log
    holds its workers' lines): list of (job_id, old, new)."""
    return re.findall(r"job ([0-9a-f]{50}): ([A-Z]+) -> ([A-Z]+)", log_text)


#: Log lines that mean a loop or a Deferred died, which the daemons must never show.
FATAL_LOG_MARKERS = ("Unhandled error in Deferred", "Unhandled Error", "slot loop died")


# --- webhook sequences -----------------------------------------------------------

#: What a notify_url may receive after each state, written down from the
#: transition table of nommer/core/states.py (not imported, on purpose):
#:   PENDING -> DOWNLOADING; DOWNLOADING -> ENCODING -> UPLOADING -> FINISHED;
#:   any in-progress state -> DOWNLOADING (another worker took the job after a
#:   lease expired) or PENDING (released); PENDING or in-progress -> ERROR,
#:   ABANDONED, CANCELED; nothing leaves a final state.
#: A state may repeat (a notification delivered twice: delivery is
#: at-least-once), and a job's first notification is DOWNLOADING (PENDING at
#: submit is not announced).
ALLOWED_NEXT = {
    "PENDING": {"DOWNLOADING", "ERROR", "ABANDONED", "CANCELED"},
    "DOWNLOADING": {"DOWNLOADING", "ENCODING", "PENDING", "ERROR", "ABANDONED", "CANCELED"},
    "ENCODING": {"DOWNLOADING", "UPLOADING", "PENDING", "ERROR", "ABANDONED", "CANCELED"},
    "UPLOADING": {"DOWNLOADING", "FINISHED", "PENDING", "ERROR", "ABANDONED", "CANCELED"},
    "FINISHED": set(), "ERROR": set(), "ABANDONED": set(), "CANCELED": set(),
}


def sequence_problems(states, final="FINISHED"):
    """Problems (list of str, empty if none) of one job's webhook states:
    it must start with DOWNLOADING, follow ALLOWED_NEXT (repeats allowed),
    end with ``final``, and show only repeats of ``final`` after it."""
    problems = []
    if not states:
        return ["no notification at all"]
    if states[0] != "DOWNLOADING":
        problems.append(f"starts with {states[0]}, not DOWNLOADING")
    for before, after in zip(states, states[1:]):
        if after != before and after not in ALLOWED_NEXT[before]:
            problems.append(f"{before} -> {after} breaks the transition table")
    if final not in states:
        problems.append(f"no {final}")
    elif any(s != final for s in states[states.index(final):]):
        problems.append(f"something after {final}: {states[states.index(final):]}")
    return problems


# --- a webhook receiver like real ones: slow, sometimes failing ------------------


class FlakyHookReceiver:
    """Records every notification it accepts (``posts``, in arrival order),
    like ``tests.e2e.harness.HookReceiver``, but answers after a random delay
    up to ``max_delay_s`` and fails a ``fail_rate`` fraction of requests with
    500 (not recorded: the notifier must retry them). ``rng`` is seeded by
    the test."""

    def __init__(self, rng, max_delay_s=0.3, fail_rate=0.1):
        self.posts = []
        self.failed = 0
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                with lock:
                    delay, fail = rng.uniform(0, max_delay_s), rng.random() < fail_rate
                time.sleep(delay)
                with lock:
                    if fail:
                        receiver.failed += 1
                    else:
                        receiver.posts.append({k: v[0] for k, v in form.items()})
                self.send_response(500 if fail else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self, job_id):
        return [p["job_state"] for p in list(self.posts) if p.get("job_id") == job_id]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- chaos --------------------------------------------------------------------------


class Monkey(threading.Thread):
    """Chaos in a thread. Every ``kill_every_s`` (a (low, high) range drawn
    from ``rng``) it SIGKILLs one worker of ``feederd``: with probability
    ``busy_bias`` one that runs a job (so kills land mid-encode), else any.
    When the fraction of ``planned`` jobs that are final reaches the next of
    ``restart_at_fraction`` while some job is in progress, it restarts feederd
    instead. A job is targeted only while it has had fewer than
    ``max_attempts_targeted`` attempts, so chaos alone cannot use up
    MAX_JOB_ATTEMPTS (random kills may still hit it, rarely). ``kills``
    (seconds since start, pid, busy), ``restart_downtimes``
    (seconds the API was down) record what happened; ``error`` holds an
    exception that stopped the thread."""

    def __init__(self, feederd, rng, planned, kill_every_s=(1.0, 3.0), restart_at_fraction=(),
                 busy_bias=0.8, max_attempts_targeted=5):
        super().__init__(daemon=True, name="chaos-monkey")
        self.feederd = feederd
        self.rng = rng
        self.planned = planned
        self.kill_every_s = kill_every_s
        self.restart_at_fraction = list(restart_at_fraction)
        self.busy_bias = busy_bias
        self.max_attempts_targeted = max_attempts_targeted
        self.kills = []
        self.restart_downtimes = []
        self.error = None
        self._halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        try:
            while not self._halt.wait(self.rng.uniform(*self.kill_every_s)):
                try:
                    jobs = list(self.feederd.client.iter_jobs(page_size=200))
                except (ConnectionFailed, APIError):
                    jobs = None  # feederd restarting: kill blind
                running = [j for j in jobs or () if j["job_state"] in IN_PROGRESS]
                busy = {j["worker_id"] for j in running}
                targets = {j["worker_id"] for j in running if j["attempts"] < self.max_attempts_targeted}
                if jobs is not None and self.restart_at_fraction and busy:
                    done = sum(j["job_state"] in FINAL for j in jobs)
                    if done >= self.restart_at_fraction[0] * self.planned:
                        self.restart_at_fraction.pop(0)
                        self.restart_downtimes.append(self.feederd.restart())
                        continue
                workers = self.feederd.worker_ids_to_pids()
                if self.rng.random() < self.busy_bias:
                    candidates = sorted(targets & set(workers))
                else:
                    candidates = sorted(set(workers) - (busy - targets))
                if not candidates:
                    continue
                worker_id = self.rng.choice(candidates)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(workers[worker_id], signal.SIGKILL)
                    self.kills.append((round(time.monotonic() - t0, 1), workers[worker_id],
                                       worker_id in busy))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self, timeout_s=150):
        self._halt.set()
        self.join(timeout_s)
        assert not self.is_alive(), "chaos thread did not stop"
        if self.error is not None:
            raise self.error

    @property
    def restarts_left(self):
        return len(self.restart_at_fraction)


# --- a relay that can go down -------------------------------------------------------


class TcpProxy:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``, one thread per
    connection. ``down()`` closes the listener and every relayed connection (as
    if the endpoint went away: connections refused and reset); ``up()`` listens
    again on the same port."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = None
        self._listener = None
        self._conns = set()
        self._lock = threading.Lock()
        self._accepting = None
        self.up()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port or 0))
        s.listen(128)
        self.port = s.getsockname()[1]
        self._listener = s
        self._accepting = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self._accepting.start()

    def down(self):
        listener, self._listener = self._listener, None
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        self._accepting.join(5)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with contextlib.suppress(OSError):
                c.close()

    def close(self):
        if self._listener is not None:
            self.down()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a, b):
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._conns -= {a, b}


# --- a SQLite file locked from outside -------------------------------------------------


@contextlib.contextmanager
def sqlite_lock(path, timeout_s=30):
    """Hold ``BEGIN EXCLUSIVE`` on the SQLite file ``path`` (another process's
    writers then wait for it, or fail after their busy timeout)."""
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


# --- /health in the background ----------------------------------------------------------


class HealthProbe(threading.Thread):
    """GETs /health every ``every_s`` (each request bounded by ``timeout_s``)
    until stopped; ``answers`` is a list of (time.monotonic() at send,
    status or the exception's name, latency s)."""

    def __init__(self, port, every_s=0.25, timeout_s=45):
        super().__init__(daemon=True, name="health-probe")
        self.url = f"http://127.0.0.1:{port}/health"
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.answers = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                    resp.read()
                    status = resp.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError as e:
                status = type(e).__name__
            self.answers.append((sent, status, time.monotonic() - sent))
            self._halt.wait(self.every_s)

    def stop(self):
        self._halt.set()
        self.join(self.timeout_s + 5)

    def between(self, start, end):
        return [a for a in self.answers if start <= a[0] <= end]


def seeded_rng(default_seed):
    """``random.Random`` seeded from NOMMER_CHAOS_SEED, else ``default_seed``;
    returns (rng, seed) so a failing run can be replayed."""
    seed = int(os.environ.get("NOMMER_CHAOS_SEED", default_seed))
    return random.Random(seed), seed
