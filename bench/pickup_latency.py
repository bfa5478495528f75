"""Pick-up latency: from submit to the job's ffmpeg process starting, with an idle worker
already waiting on the queue. Embedded (SQLite store + SQLite queue) and on SQS (DynamoDB
store + SQS queue, both served by a local moto server), real daemons.

What is measured, per job (all on this machine's clock):

- t0: the client's clock just before ``POST /job/submit``.
- picked: the job's ``started_at``, the worker's clock when it took the message and is about
  to store DOWNLOADING.
- ffprobe: the worker's first process for the job (the source probe) started.
- **ffmpeg**: the encode's ffmpeg launch started (the headline figure). Every ffmpeg/ffprobe
  runs in the bubblewrap sandbox, as users get it (FFMPEG_SANDBOX = "bwrap"): BWRAP_BIN points
  at a bash wrapper that appends ``$EPOCHREALTIME`` at its start and at bwrap's exit, the tool
  (the executable after bwrap's last ``--``) and the argv to a file, running the real bwrap as
  its child (outside the sandbox, so it can write the file). The time is taken in the new
  process, after fork and bash start-up (~1-3 ms), before bwrap sets the sandbox up and execs
  ffmpeg. So "ffmpeg started" includes the file:// copy of the source, the source ffprobe (in its
  sandbox, set-up to teardown) and the ENCODING write; the set-up of the ffmpeg's own sandbox
  (the time until ffmpeg runs in it) is measured directly, ``bash -c 'echo $EPOCHREALTIME'``
  through the worker's sandbox argv (``Sandbox.wrap``) against bare, and shown in its own row.

The sandbox's share, measured: the embedded run has a twin, a second feederd + worker with
FFMPEG_SANDBOX = "none" whose FFMPEG_BIN and FFPROBE_BIN are 2-line bash wrappers stamping
their start, then ``exec``ing (through util-linux ``setsid``) the real binary, as before the
sandbox. Jobs alternate between the two (which goes first flips every pair), so machine drift
hits both alike; the difference of "submit -> ffmpeg started" is what the sandbox adds before
ffmpeg's launch, plus the set-up row for the launch itself. Every ffmpeg/ffprobe runs in a
session of its own either way (bwrap --new-session, setsid; the bench's bare ffprobe too): with
CFS autogroup a session is a scheduling group, which on a shared machine changes CPU shares.

Jobs are stream copies of a 1 s clip, one after another, each submitted 50-150 ms (random,
so no phase lock with the local queue's poll) after the previous one FINISHED, to a worker
long-polling an empty queue. The first job of each run (worker start-up) is not counted.

References in the same run: a bare ``GET /health`` round trip (client to feederd), and for
SQS a raw boto3 send -> long-poll receive latency on the same moto server.

feederd runs with API_RATE_LIMIT_PER_MINUTE = 10**9: the bench polls its job every 20 ms (3000
a minute) as one anonymous caller, over the default 1200 a minute.
"""

import datetime
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report, fmt  # noqa: E402
from _wrappers import BWRAP_WRAPPER  # noqa: E402
from nommer.conf import defaults  # noqa: E402
from nommer.workerd.sandbox import Sandbox  # noqa: E402
from tests.e2e.harness import TWISTD, Feederd, home_of  # noqa: E402
from tests.processes import stop_process  # noqa: E402
from tests.workerd.media import clip  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "50"))
SETUP_LAUNCHES = int(os.environ.get("BENCH_LAUNCHES", "20"))
RATE_LIMIT_PER_MINUTE = 10**9  # the bench polls as one anonymous caller: no 429 may slow it
OPTIONS = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
           "options": [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}]}
SANDBOXED, BARE = "bwrap", "none"  # the two values of FFMPEG_SANDBOX measured
# FFMPEG_BIN and FFPROBE_BIN without the sandbox: stamp the start, exec the real binary in a
# session of its own (as bwrap --new-session does; ~1 ms for setsid).
WRAPPER = """#!/bin/bash
echo "$EPOCHREALTIME - ${0##*/} $*" >> %(log)s
exec %(setsid)s %(real)s "$@"
"""


def ts(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def pct(values, p):
    """The p-th percentile (0..100), linear between closest ranks."""
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def write_script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def make_wrappers(home, mode):
    """Settings pointing the workers' launches at stamping wrappers (in ``home``, outside the
    file root), and the log file they write."""
    bindir = os.path.join(home, "bin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(home, "exec.log")
    if mode == SANDBOXED:
        return {"BWRAP_BIN": write_script(os.path.join(bindir, "bwrap"), BWRAP_WRAPPER % {
            "log": log, "real": shutil.which("bwrap")})}, log
    return {f"{name.upper()}_BIN": write_script(os.path.join(bindir, name), WRAPPER % {
        "log": log, "real": shutil.which(name), "setsid": shutil.which("setsid")})
        for name in ("ffmpeg", "ffprobe")}, log


def exec_times(log, job_id):
    """(first ffprobe start, its end or None, ffmpeg encode start) of a job, from the wrappers'
    log (lines "start end-or-dash tool argv")."""
    probe = probe_end = enc = None
    with open(log) as f:
        for line in f:
            stamp, end, name, args = line.rstrip("\n").split(" ", 3)
            if job_id not in args:
                continue
            if name == "ffprobe" and probe is None:
                probe = float(stamp)
                probe_end = None if end == "-" else float(end)
            if name == "ffmpeg" and "-progress" in args and enc is None:
                enc = float(stamp)
    return probe, probe_end, enc


def setup_costs(scratch, n=SETUP_LAUNCHES):
    """Sandbox set-up per launch, directly: n alternating pairs of ``bash -c 'echo
    $EPOCHREALTIME'`` run bare and through the worker's sandbox argv (Sandbox.wrap, default
    settings), each in a session of its own; (bare, sandboxed) lists of seconds from just before
    the spawn to the moment bash runs."""
    sandbox = Sandbox(defaults)
    stamp = ["bash", "-c", "echo $EPOCHREALTIME"]
    launch = sandbox.wrap(stamp, writable=[scratch])
    runs = {BARE: (stamp, {"PATH": "/usr/bin:/bin"}, scratch), SANDBOXED: (launch.argv, launch.env, launch.cwd)}
    out = {BARE: [], SANDBOXED: []}
    for i in range(n):
        for mode in ((BARE, SANDBOXED) if i % 2 else (SANDBOXED, BARE)):
            argv, env, cwd = runs[mode]
            t = time.time()
            p = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               check=True, timeout=60, start_new_session=True)
            out[mode].append(float(p.stdout) - t)
    return out[BARE], out[SANDBOXED]


class Setup:
    """One feederd (file root ``root``) + one idle hand-started worker, its launches stamped."""

    def __init__(self, label, root, mode, settings):
        self.label, self.root, self.mode = label, root, mode
        os.makedirs(root, exist_ok=True)
        self.src = os.path.join(root, "in.mp4")
        shutil.copy(clip(seconds=1, size="320x240"), self.src)
        tools, self.log = make_wrappers(home_of(root), mode)
        self.feederd = Feederd(root, FLEET_BACKEND="none", QUEUE_WAIT_TIME_S=20.0, WORKER_MAX_IDLE_S=600.0,
                               JOB_LEASE_S=60.0, HEARTBEAT_INTERVAL_S=10.0, AUTOSCALE_INTERVAL_S=5.0,
                               PRUNE_JOBS_INTERVAL_S=300.0, API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE,
                               FFMPEG_SANDBOX=mode, **tools, **settings)
        self.worker = None
        self.rows, self.health, self.probes = [], [], []
        self.jobs_run = 0

    def start(self):
        self.feederd.start(timeout_s=60)
        with open(os.path.join(home_of(self.root), "workerd.log"), "ab") as wlog:
            self.worker = subprocess.Popen([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "workerd", "--local",
                                            "--worker-id", f"bench-{self.label}", "--config", self.feederd.config],
                                           cwd=self.root, stdout=wlog, stderr=subprocess.STDOUT,
                                           start_new_session=True)

    def stop(self):
        if self.worker is not None:
            stop_process(self.worker, grace_s=30)
        self.feederd.stop()

    def job(self, references=True):
        """Submit one job after a random pause and wait for it; record its latencies (not the
        first job's: it also waits for the worker's start-up)."""
        i = self.jobs_run
        self.jobs_run += 1
        time.sleep(random.uniform(0.05, 0.15))
        t0 = time.time()
        job_id = self.feederd.client.submit(f"file://{self.src}", f"file://{self.root}/out{i % 4}.mp4", OPTIONS)
        job = self.feederd.client.wait(job_id, poll_interval_s=0.02, timeout_s=120)
        if job["job_state"] != "FINISHED":
            raise RuntimeError(f"{self.label}: job ended {job['job_state']}: {job['job_state_details']}")
        if i == 0:
            return None
        probe, probe_end, enc = exec_times(self.log, job_id)
        row = {"picked": ts(job["started_at"]) - t0, "ffprobe": probe - t0, "ffmpeg": enc - t0,
               "probe_launch": None if probe_end is None else probe_end - probe,
               "created": ts(job["created_at"]) - t0, "finished": ts(job["finished_at"]) - t0}
        self.rows.append(row)
        if references:
            # A bare round trip to the same feederd; the worker's source ffprobe, run bare (in a
            # session of its own, as the worker's is).
            h0 = time.perf_counter()
            self.feederd.client.health()
            self.health.append(time.perf_counter() - h0)
            h0 = time.perf_counter()
            subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                            self.src], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           start_new_session=True)
            self.probes.append(time.perf_counter() - h0)
        return row


def measure(setups, n=JOBS):
    """Start the setups, run n+1 jobs on each, interleaved (who goes first flips every job),
    stop them; their rows, health and probe lists are filled."""
    try:
        for setup in setups:
            setup.start()
        for i in range(n + 1):
            for setup in (setups if i % 2 == 0 else setups[::-1]):
                setup.job(references=setup is setups[0])
    finally:
        for setup in setups:
            setup.stop()


def sqs_reference(endpoint, n=JOBS):
    """Raw boto3 on the same moto server: send -> a waiting long poll returns (seconds)."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName="bench_pickup_reference")["QueueUrl"]
    got = []
    sent = {}
    stop = threading.Event()

    def receiver():
        while not stop.is_set():
            r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=20)
            t = time.time()
            for m in r.get("Messages", []):
                got.append(t - sent[m["Body"]])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()
    for i in range(n):
        time.sleep(random.uniform(0.05, 0.15))
        sent[str(i)] = time.time()
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
        deadline = time.monotonic() + 30
        while len(got) <= i and time.monotonic() < deadline:
            time.sleep(0.002)
    stop.set()
    sqs.send_message(QueueUrl=url, MessageBody="stop")
    sent["stop"] = time.time()
    thread.join(25)
    return got[:n]


def summarize(report, label, rows, probes, reference, reference_name, target):
    ffmpeg = [r["ffmpeg"] for r in rows]
    picked = [r["picked"] for r in rows]
    probe = [r["ffprobe"] for r in rows]
    p50, p95 = pct(ffmpeg, 50), pct(ffmpeg, 95)
    report.figure(f"{label}: submit -> ffmpeg started, p50", p50, "s", target=target)
    report.figure(f"{label}: submit -> ffmpeg started, p95", p95, "s")
    report.ratio(f"{label}: p50 / {reference_name} p50", p50, pct(reference, 50), unit="s")
    report.figure(f"{label}: submit -> picked up (started_at), p50", pct(picked, 50), "s", target=target)
    report.figure(f"{label}: submit -> picked up (started_at), p95", pct(picked, 95), "s")
    report.figure(f"{label}: bare ffprobe of the source (same argv, run by the bench), p50", pct(probes, 50), "s")
    report.ratio(f"{label}: p50 / bare ffprobe p50", p50, pct(probes, 50), unit="s")
    report.figure(f"{label}: submit -> ffmpeg started minus bare ffprobe, p50", p50 - pct(probes, 50), "s",
                  target=target)
    report.figure(f"{label}: picked up -> ffprobe started, p50",
                  statistics.median(b - a for a, b in zip(picked, probe)), "s")
    report.figure(f"{label}: ffprobe started -> ffmpeg started (copy-in done, probe, ENCODING write), p50",
                  statistics.median(b - a for a, b in zip(probe, ffmpeg)), "s")
    launches = [r["probe_launch"] for r in rows if r["probe_launch"] is not None]
    if launches:
        report.figure(f"{label}: the worker's source ffprobe launch in its sandbox (set-up to teardown), p50",
                      pct(launches, 50), "s")
        report.figure(f"{label}: sandboxed ffprobe launch minus bare ffprobe, p50s", pct(launches, 50)
                      - pct(probes, 50), "s")
    report.row(f"{label}: {reference_name}, p50 / p95",
               f"{fmt(pct(reference, 50), 's')} / {fmt(pct(reference, 95), 's')}")
    print(f"{label}: ffmpeg started p50 {p50 * 1000:.1f} ms p95 {p95 * 1000:.1f} ms; "
          f"picked p50 {pct(picked, 50) * 1000:.1f} ms; {reference_name} p50 {pct(reference, 50) * 1000:.1f} ms",
          flush=True)
    return p50


def sandbox_share(report, sandboxed, bare, setup_bare, setup_sandboxed):
    """Rows: the twin run without the sandbox, and the sandbox's share of the latency."""
    with_s = [r["ffmpeg"] for r in sandboxed.rows]
    without = [r["ffmpeg"] for r in bare.rows]
    setup = statistics.median(b - a for a, b in zip(setup_bare, setup_sandboxed))
    report.figure("embedded, no sandbox (FFMPEG_SANDBOX none, jobs interleaved): submit -> ffmpeg started, p50",
                  pct(without, 50), "s", target=0.050)
    report.figure("embedded, no sandbox: submit -> ffmpeg started, p95", pct(without, 95), "s")
    report.figure("embedded, no sandbox: submit -> picked up (started_at), p50",
                  pct([r["picked"] for r in bare.rows], 50), "s")
    report.figure("embedded: sandbox's share before ffmpeg's launch (submit -> ffmpeg started, p50 with - "
                  "without)", pct(with_s, 50) - pct(without, 50), "s")
    report.figure("embedded: the same, median of the per-pair differences (each sandboxed job and its twin)",
                  statistics.median(a - b for a, b in zip(with_s, without)), "s")
    report.figure(f"sandbox set-up of a launch, until the program runs (sandboxed - bare, {len(setup_bare)} "
                  "alternating pairs, median difference)", setup, "s")
    report.row("sandbox set-up: bare / sandboxed spawn -> program running, medians",
               f"{fmt(statistics.median(setup_bare), 's')} / {fmt(statistics.median(setup_sandboxed), 's')}")
    share = pct(with_s, 50) - pct(without, 50) + setup
    report.figure("embedded: submit -> ffmpeg running in its sandbox (started p50 + set-up), p50 ≈",
                  pct(with_s, 50) + setup, "s", target=0.050)
    report.figure("embedded: the sandbox's whole share of it (share before the launch + set-up) ≈", share, "s")
    report.ratio("embedded: sandbox's whole share / submit -> ffmpeg running", share, pct(with_s, 50) + setup,
                 unit="s")
    return share


def main():
    report = Report("Pick-up latency (bench/pickup_latency.py)",
                    f"Submit -> the job's ffmpeg process started, {JOBS} stream-copy jobs of a 1 s clip one after "
                    "another, one idle worker long-polling, every ffmpeg/ffprobe in the bubblewrap sandbox (the "
                    "default). \"ffmpeg started\" is stamped by a bash wrapper (BWRAP_BIN) in the new process "
                    "just before it runs bwrap, which then sets up the sandbox (its own row) and execs ffmpeg; it "
                    "includes the file:// copy of the source, the sandboxed source ffprobe and the ENCODING write. "
                    "\"picked up\" is the job's started_at (worker took the message, before the DOWNLOADING "
                    "write). Rows marked \"no sandbox\" are a twin feederd + worker with FFMPEG_SANDBOX \"none\" "
                    "(stamped by FFMPEG_BIN wrappers before exec, as before the sandbox), its jobs interleaved.")
    roots = []
    try:
        root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-pickup-"))
        roots.append(root)
        sandboxed = Setup("embedded", os.path.join(root, "sandboxed"), SANDBOXED, {})
        bare = Setup("embedded-nosandbox", os.path.join(root, "bare"), BARE, {})
        measure([sandboxed, bare])
        p50_embedded = summarize(report, "embedded", sandboxed.rows, sandboxed.probes, sandboxed.health,
                                 "GET /health round trip", 0.050)
        scratch = os.path.join(root, "setup-scratch")
        os.makedirs(scratch)
        setup_bare, setup_sandboxed = setup_costs(scratch)
        share = sandbox_share(report, sandboxed, bare, setup_bare, setup_sandboxed)
        print(f"embedded without sandbox: ffmpeg started p50 {pct([r['ffmpeg'] for r in bare.rows], 50) * 1000:.1f}"
              f" ms; sandbox set-up {statistics.median(setup_sandboxed) * 1000:.1f} ms vs bare "
              f"{statistics.median(setup_bare) * 1000:.1f} ms; sandbox's share {share * 1000:.1f} ms", flush=True)

        from tests.aws_server import moto_endpoint, reset_moto
        endpoint = moto_endpoint()
        reset_moto()
        raw = sqs_reference(endpoint)
        reset_moto()
        root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-pickup-sqs-"))
        roots.append(root)
        sqs = Setup("sqs", os.path.join(root, "sqs"), SANDBOXED,
                    dict(JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs", AWS_ENDPOINT_URL=endpoint,
                         AWS_REGION="us-east-1", DYNAMODB_JOB_TABLE="nommer_jobs_bench",
                         CONFIG_S3_BUCKET="nommer-config-bench"))
        measure([sqs])
        p50_sqs = summarize(report, "SQS + DynamoDB (moto)", sqs.rows, sqs.probes, raw,
                            "raw boto3 SQS send -> long-poll receive", 0.300)
        report.note("The SQS run uses the DynamoDB store too (the AWS configuration); every store and queue call "
                    "is an HTTP request to the moto server on 127.0.0.1, which stands in for AWS: real AWS adds "
                    "network round trips, moto adds its own CPU time on this machine.")
        report.note("The sandbox's share: the twin without it runs the same jobs interleaved with the sandboxed "
                    "ones (its idle worker long-polls meanwhile); both stamp a launch after fork and bash start-up, "
                    "so their difference is what the sandbox adds before ffmpeg's launch (the source ffprobe's "
                    "sandbox), and the set-up row what it adds before ffmpeg runs. The twin's wrappers exec setsid "
                    "(~1 ms on its ffprobe launch) so that its ffmpeg/ffprobe have a session of their own like "
                    "the sandboxed ones (CFS autogroup: a session is a scheduling group).")
        report.note(f"feederd runs with API_RATE_LIMIT_PER_MINUTE = {RATE_LIMIT_PER_MINUTE:.0e}: the bench polls "
                    "its job every 20 ms as one anonymous caller, over the default 1200 a minute.")
        if p50_embedded > 0.050:
            report.note("Embedded target for submit -> ffmpeg started not met: the worker ffprobes the source "
                        "before it starts ffmpeg, and a bare ffprobe process alone takes the time shown on this "
                        "machine (ffmpeg's libraries load slowly here: `ffmpeg -version` takes as long). "
                        "What nommer itself adds (queue, store writes, copy-in, the sandbox) is the 'minus bare "
                        "ffprobe' row.")
        if p50_sqs > 0.300:
            report.note("SQS target not met: see the breakdown (each state write is a DynamoDB request).")
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
