"""API throughput: requests per second and p99 latency of feederd's JSON API
under ``wrk``, against a bare Klein JSON app measured in the same run.

A real ``twistd feederd`` (embedded default: SQLite store, local queue;
``FLEET_BACKEND = "none"`` so no worker starts) on 127.0.0.1, and as the
reference a tiny Klein app on the same Twisted (no twistd, no log file) that
answers ``{"ok": true}``. Each is loaded by ``wrk --latency`` with 16
connections for BENCH_API_SECONDS (10) seconds:

- ``GET /job/<id>`` of an existing job, against ``GET`` on the echo app;
- ``POST /job/submit`` with a valid media-nommer job body (a ``file://``
  source under FILE_STORAGE_ROOTS; existence is not checked at submit),
  against ``POST`` of the same body to the echo app (which reads it).

Targets: each endpoint at least 0.7 of its echo's req/s, and p99 at most
50 ms. feederd runs with API_RATE_LIMIT_PER_MINUTE = 10**9: wrk is one
anonymous caller (one rate-limit bucket), and at the default (1200 a
minute) nearly every request would be a 429, measuring the refusal path
instead of the API (the limiter's bookkeeping is still done per request). BENCH_API_PREFILL_JOBS=N (default 0) first puts N finished jobs in
the store (copies of a real one), to see the API with a big store.

``wrk`` is the Debian package; it is installed with apt-get when missing
(root, or sudo without a password). Only loopback is used and every
step has a time limit. Not a test: it never fails on a number.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._report import Report  # noqa: E402
from tests.e2e.harness import Feederd, home_of  # noqa: E402
from tests.processes import free_port  # noqa: E402

SECONDS = int(os.environ.get("BENCH_API_SECONDS", "10"))
PREFILL = int(os.environ.get("BENCH_API_PREFILL_JOBS", "0"))
CONNECTIONS = 16
THREADS = 2
RATIO_TARGET = 0.7
P99_TARGET_S = 0.050
#: feederd's API_RATE_LIMIT_PER_MINUTE here: high enough that wrk is never refused (429).
RATE_LIMIT_PER_MINUTE = 10**9

# The reference: Klein on the same Twisted, nothing else. POST reads and parses
# the body so that it does what any JSON endpoint must do at least.
ECHO_APP = r"""
import json, sys
from klein import Klein
from twisted.internet import reactor
from twisted.web.server import Site

app = Klein()

@app.route("/echo", methods=["GET", "POST"])
def echo(request):
    if request.method == b"POST":
        json.loads(request.content.read())
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({"ok": True}).encode()

reactor.listenTCP(int(sys.argv[1]), Site(app.resource()), interface="127.0.0.1")
reactor.run()
"""

# The original media-nommer two-pass body from the README (old nommer path,
# 2011 option spellings), so submit exercises the compatibility path too.
JOB_OPTIONS = {
    "nommer": "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer",
    "options": [
        {"outfile_options": [["vcodec", "libx264"], ["preset", "medium"], ["b", "400k"],
                             ["vf", "scale=640:-2"], ["pass", "1"], ["f", "mp4"], ["an", None]]},
        {"outfile_options": [["vcodec", "libx264"], ["preset", "medium"], ["b", "400k"],
                             ["vf", "scale=640:-2"], ["pass", "2"], ["acodec", "libfaac"], ["ab", "128k"],
                             ["f", "mp4"]],
         "move_atom_to_front": True},
    ],
}


def lua_string(text):
    """A Lua long-bracket string literal holding ``text`` verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def post_script(path, body):
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {lua_string(body)}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
    return path


def ensure_wrk():
    """Path of wrk, installing the Debian package if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("wrk not found: apt-get install -y wrk", flush=True)
    for argv in (sudo + ["apt-get", "install", "-y", "-qq", "wrk"],
                 sudo + ["apt-get", "update", "-qq"],
                 sudo + ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(argv, env=env, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"{' '.join(argv)} failed: {exc}", flush=True)
        if shutil.which("wrk"):
            return shutil.which("wrk")
    raise SystemExit("wrk is missing and could not be installed (apt-get install wrk)")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    """req/s, latency percentiles (s), request count, non-2xx and socket errors from wrk's output."""
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "non2xx": 0, "socket_errors": 0, "latency": {}}
    for pct, value in re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M):
        result["latency"][int(pct)] = _seconds(value)
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        result["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["socket_errors"] = sum(int(x) for x in m.groups())
    return result


def run_wrk(wrk, url, script=None):
    argv = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "5s", "--latency"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=SECONDS + 60, check=True).stdout
    r = parse_wrk(out)
    print(f"  {url}: {r['rps']:.0f} req/s, p50 {r['latency'].get(50, 0) * 1000:.2f} ms, "
          f"p99 {r['latency'].get(99, 0) * 1000:.2f} ms, {r['requests']} requests, "
          f"{r['non2xx']} non-2xx, {r['socket_errors']} socket errors", flush=True)
    return r


def wait_http(url, proc, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"echo app exited {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer in {timeout_s} s")


def prefill(feederd, job_id, n):
    """Stop feederd, add ``n`` FINISHED copies of job ``job_id`` to its SQLite
    store, start it again."""
    feederd.stop()
    db = sqlite3.connect(os.path.join(feederd.data_dir, "jobs.sqlite"))
    try:
        (doc,) = db.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        doc = json.loads(doc)
        rows = []
        for i in range(n):
            doc.update(job_id=f"{i:050x}", job_state="FINISHED")
            rows.append((doc["job_id"], "FINISHED", doc["created_at"] - 1 - i, doc["updated_at"], json.dumps(doc)))
        db.executemany("INSERT INTO jobs (job_id, job_state, created_at, updated_at, doc) VALUES (?, ?, ?, ?, ?)",
                       rows)
        db.commit()
    finally:
        db.close()
    feederd.start()


def main():
    wrk = ensure_wrk()
    root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-api-"))
    report = Report("API throughput (wrk)",
                    f"wrk -t{THREADS} -c{CONNECTIONS} -d{SECONDS}s --latency on 127.0.0.1 against a real "
                    "`twistd feederd` (SQLite store, local queue, no fleet) and, as the reference, a bare "
                    "Klein app answering `{\"ok\": true}` on the same Twisted; client and servers share "
                    "the machine.")
    feederd = echo = None
    try:
        # Production-like housekeeping intervals, not the e2e harness's fast ones.
        # The rate limit out of the way: one anonymous caller hammers the API (see the docstring).
        feederd = Feederd(root, FLEET_BACKEND="none", AUTOSCALE_INTERVAL_S=5.0, PRUNE_JOBS_INTERVAL_S=300.0,
                          HEARTBEAT_INTERVAL_S=10.0, JOB_LEASE_S=60.0,
                          API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE).start()
        src, dest = f"file://{root}/in.mp4", f"file://{root}/out.mp4"
        job_id = feederd.client.submit(src, dest, JOB_OPTIONS)
        if PREFILL:
            print(f"adding {PREFILL} finished jobs to the store", flush=True)
            prefill(feederd, job_id, PREFILL)
        body = json.dumps({"source_path": src, "dest_path": dest, "notify_url": None, "job_options": JOB_OPTIONS})
        script = post_script(os.path.join(root, "post.lua"), body)

        echo_port = free_port()
        echo = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(echo_port)], cwd=root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        echo_url = f"http://127.0.0.1:{echo_port}/echo"
        wait_http(echo_url, echo)
        api = f"http://127.0.0.1:{feederd.port}"

        print("warm-up", flush=True)
        for url in (echo_url, f"{api}/job/{job_id}"):
            for _ in range(50):
                urllib.request.urlopen(url, timeout=5).read()

        print("measuring", flush=True)
        echo_get = run_wrk(wrk, echo_url)
        get = run_wrk(wrk, f"{api}/job/{job_id}")
        echo_post = run_wrk(wrk, echo_url, script)
        submit = run_wrk(wrk, f"{api}/job/submit", script)
        jobs = feederd.client.health()["jobs"]

        for name, r, ref in (("GET /job/<id>", get, echo_get), ("POST /job/submit", submit, echo_post)):
            report.ratio(f"{name} req/s ÷ echo req/s", r["rps"], ref["rps"], unit="req/s",
                         target=RATIO_TARGET, higher_is_better=True)
            report.figure(f"{name} p99 latency", r["latency"].get(99), "s", target=P99_TARGET_S)
            report.figure(f"{name} p50 latency", r["latency"].get(50), "s")
        report.figure("echo GET p99 latency", echo_get["latency"].get(99), "s")
        report.figure("echo POST p99 latency", echo_post["latency"].get(99), "s")
        bad = {name: (r["non2xx"], r["socket_errors"]) for name, r in
               (("echo GET", echo_get), ("GET", get), ("echo POST", echo_post), ("submit", submit))
               if r["non2xx"] or r["socket_errors"]}
        report.note("errors (non-2xx, socket): " + (json.dumps(bad) if bad else "none"))
        report.note(f"feederd ran with API_RATE_LIMIT_PER_MINUTE = {RATE_LIMIT_PER_MINUTE:.0e} (default 1200): wrk "
                    "is one anonymous caller, so at the default nearly every request would be a 429; this "
                    "measures the API itself (the limiter still counts every request), not the refusal path.")
        report.note(f"jobs in the store after the run: {sum(jobs.values())} "
                    f"({submit['requests']} submitted by wrk" + (f", {PREFILL} put there first)" if PREFILL else ")"))
        report.write()
    finally:
        if echo is not None and echo.poll() is None:
            os.killpg(echo.pid, signal.SIGTERM)
            try:
                echo.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(echo.pid, signal.SIGKILL)
                echo.wait()
        if feederd is not None:
            feederd.stop()
        for d in (root, home_of(root)):
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
