"""Memory: feederd's RSS with 0 vs 100,000 stored jobs, and a real workerd's RSS while it
moves a 4 GiB file over http:// and file://.

feederd: the jobs (FINISHED/ERROR documents shaped like real ones, spread over 30 days) are
written straight into ``<DATA_DIR>/jobs.sqlite`` with the store's own schema before feederd
starts; then ``GET /health`` and ``GET /jobs`` (first pages, a state filter, a few cursor
pages) are called 5 times each and VmRSS / VmHWM are read from /proc/<pid>/status.

workerd: a real ``twistd workerd`` (started by hand, FLEET_BACKEND "none", so its pid is
known) runs two jobs on a 4 GiB Matroska file (raw gray 640x480 frames, made in ~15 s with
ffmpeg from /dev/zero):
1. source ``http://127.0.0.1:PORT/big.mkv`` (python -m http.server in its own process),
   options ``-c copy`` to a file:// destination: a 4 GiB HTTP download (treq, streamed),
   a 4 GiB remux by ffmpeg (a child process: not in the worker's RSS), a 4 GiB file:// upload;
2. source ``file://.../big.mkv``, ``-c copy -t 1``: a 4 GiB file:// download.
The worker's VmRSS is sampled every 100 ms with the job's state (from the API) alongside, and
the peak per state is reported.

Reference in the same run: the RSS of an idle ``twistd`` running an empty .tac (Twisted
loaded, no nommer code), so growth over the bare runtime is printed.
"""

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report  # noqa: E402
from nommer.core.job import Job, new_job_id  # noqa: E402
from nommer.core.store.sqlite import SCHEMA  # noqa: E402
from tests.e2e.harness import TWISTD, Feederd, home_of  # noqa: E402
from tests.processes import free_port  # noqa: E402

STORED_JOBS = int(os.environ.get("BENCH_STORED_JOBS", "100000"))
BIG_BYTES = int(os.environ.get("BENCH_BIG_BYTES", str(4 << 30)))
FRAME = (640, 480)  # gray: one byte per pixel
MB = 1024 * 1024
#: feederd's API_RATE_LIMIT_PER_MINUTE: the sampler asks the job's state 10 times a second (600 a
#: minute, plus the waits' polls) from the one anonymous bucket; no 429 may cut a sample.
RATE_LIMIT_PER_MINUTE = 10**9


def rss(pid, field="VmRSS"):
    """A /proc/<pid>/status memory field in MiB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def idle_twistd_rss(root):
    """RSS of a twistd with an empty application (the bare runtime), MiB."""
    tac = os.path.join(root, "idle.tac")
    with open(tac, "w") as f:
        f.write("from twisted.application import service\napplication = service.Application('idle')\n")
    proc = subprocess.Popen([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "-y", tac], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)
        return rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


# --- feederd with many stored jobs ---------------------------------------------

def fill_store(data_dir, n):
    """n finished jobs written straight into jobs.sqlite (the store's schema)."""
    os.makedirs(data_dir, exist_ok=True)
    db = sqlite3.connect(os.path.join(data_dir, "jobs.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    for statement in SCHEMA:
        db.execute(statement)
    options = [{"infile_options": [], "outfile_options": [["c:v", "libx264"], ["preset", "medium"],
                                                          ["b:v", "400k"], ["vf", "scale=640:-2"], ["pass", "1"],
                                                          ["f", "mp4"], ["an", None]], "move_atom_to_front": False},
               {"infile_options": [], "outfile_options": [["c:v", "libx264"], ["preset", "medium"],
                                                          ["b:v", "400k"], ["vf", "scale=640:-2"], ["pass", "2"],
                                                          ["c:a", "aac"], ["b:a", "128k"], ["f", "mp4"]],
                "move_atom_to_front": True}]
    now = time.time()
    rng = random.Random(1)

    def rows():
        for i in range(n):
            created = now - 30 * 86400 + i * (30 * 86400 / max(n, 1))
            error = rng.random() < 0.02
            job = Job(job_id=new_job_id(), source_path=f"file:///srv/media/in/{i:06d}.mov",
                      dest_path=f"file:///srv/media/out/{i:06d}.mp4",
                      nommer="nommer.workerd.nommers.ffmpeg.FFmpegNommer", job_options=options,
                      notify_url="http://127.0.0.1:9/hook" if i % 3 == 0 else None,
                      job_state="ERROR" if error else "FINISHED",
                      job_state_details="ffmpeg failed (exit status 1); its last output: ..." if error else None,
                      progress=None if error else 100.0, attempts=1, worker_id=f"host-{i % 7}-w{i % 3}",
                      output=None if error else {"size_bytes": 1234567 + i, "duration_s": 61.2, "format": "mp4",
                                                 "video_codec": "h264", "audio_codec": "aac", "width": 640,
                                                 "height": 360},
                      created_at=created, updated_at=created + 40, started_at=created + 0.2,
                      finished_at=created + 40, heartbeat_at=created + 39)
            yield (job.job_id, job.job_state.value, job.created_at, job.updated_at, json.dumps(job.to_dict()))

    t0 = time.monotonic()
    with db:
        db.executemany("INSERT INTO jobs (job_id, job_state, created_at, updated_at, doc) VALUES (?, ?, ?, ?, ?)",
                       rows())
    db.close()
    return time.monotonic() - t0


def feederd_rss(root, n):
    """(VmRSS, VmHWM) MiB of feederd over n stored jobs after some API calls; insert time s."""
    os.makedirs(root, exist_ok=True)
    fill_s = fill_store(os.path.join(home_of(root), "data"), n) if n else 0.0
    feederd = Feederd(root, MAX_NUM_WORKERS=2, AUTOSCALE_INTERVAL_S=5.0, PRUNE_JOBS_INTERVAL_S=300.0,
                      API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE)
    try:
        feederd.start(timeout_s=60)
        c = feederd.client
        for _ in range(5):
            c.health()
            _, cursor = c.list()
            c.list(state="ERROR")
            for _ in range(3):
                if cursor:
                    _, cursor = c.list(cursor=cursor)
        return rss(feederd.proc.pid), rss(feederd.proc.pid, "VmHWM"), fill_s, c.health()
    finally:
        feederd.stop()


# --- workerd moving a 4 GiB file ------------------------------------------------

def make_big(path, size):
    frame = FRAME[0] * FRAME[1]
    frames = max(1, size // frame)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo",
                    "-pix_fmt", "gray", "-s", f"{FRAME[0]}x{FRAME[1]}", "-r", "25", "-i", "/dev/zero",
                    "-frames:v", str(frames), "-c", "copy", "-f", "matroska", path],
                   check=True, timeout=600)
    return os.path.getsize(path)


class Sampler(threading.Thread):
    """VmRSS of pid and the job's state, every interval_s."""

    def __init__(self, pid, client, interval_s=0.1):
        super().__init__(daemon=True)
        self.pid, self.client, self.interval_s = pid, client, interval_s
        self.job_id = None
        self.samples = []  # (t, state, rss MiB)
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            state = None
            if self.job_id:
                try:
                    state = self.client.get(self.job_id)["job_state"]
                except Exception:
                    state = "?"
            value = rss(self.pid)
            if value is not None:
                self.samples.append((time.monotonic(), state, value))
            self.stop_event.wait(self.interval_s)

    def seconds_in(self, state, since):
        """Time the job was seen in ``state`` (first to last sample) after ``since``."""
        ts = [t for t, s, _ in self.samples if s == state and t >= since]
        return ts[-1] - ts[0] if len(ts) > 1 else None

    def peak(self, job_id_states):
        return max((v for _, s, v in self.samples if s in job_id_states), default=None)


def worker_rss(root, big_bytes):
    big = os.path.join(root, "media", "big.mkv")
    os.makedirs(os.path.dirname(big))
    t0 = time.monotonic()
    size = make_big(big, big_bytes)
    gen_s = time.monotonic() - t0
    print(f"source: {size / MB:.0f} MiB made in {gen_s:.1f} s", flush=True)
    port = free_port()
    http = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                             os.path.dirname(big), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    feederd = Feederd(root, FLEET_BACKEND="none", QUEUE_WAIT_TIME_S=2.0, WORKER_MAX_IDLE_S=600.0,
                      JOB_LEASE_S=60.0, HEARTBEAT_INTERVAL_S=5.0, AUTOSCALE_INTERVAL_S=5.0,
                      PRUNE_JOBS_INTERVAL_S=300.0, HTTP_DOWNLOAD_TIMEOUT_S=120.0,
                      API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE)
    worker = sampler = None
    results = {}
    try:
        feederd.start(timeout_s=60)
        wlog = open(os.path.join(root, "workerd.log"), "ab")
        worker = subprocess.Popen([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "workerd", "--local",
                                   "--worker-id", "bench-memory", "--config", feederd.config],
                                  cwd=root, stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = Sampler(worker.pid, feederd.client)
        sampler.start()
        time.sleep(3.0)
        idle = rss(worker.pid)
        jobs = [("http", f"http://127.0.0.1:{port}/big.mkv", [["c", "copy"], ["f", "matroska"]]),
                ("file", f"file://{big}", [["c", "copy"], ["t", "1"], ["f", "matroska"]])]
        for name, source, opts in jobs:
            dest = os.path.join(root, "out", f"{name}.mkv")
            job_id = feederd.client.submit(source, f"file://{dest}", {
                "nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer", "options": [{"outfile_options": opts}]})
            sampler.job_id = job_id
            t0 = time.monotonic()
            job = feederd.client.wait(job_id, poll_interval_s=0.2, timeout_s=400)
            sampler.job_id = None
            if job["job_state"] != "FINISHED":
                raise RuntimeError(f"{name} job ended {job['job_state']}: {job['job_state_details']}")
            results[name] = {"s": time.monotonic() - t0, "job": job,
                             "download_s": sampler.seconds_in("DOWNLOADING", t0),
                             "upload_s": sampler.seconds_in("UPLOADING", t0),
                             "DOWNLOADING": sampler.peak({"DOWNLOADING"}),
                             "ENCODING": sampler.peak({"ENCODING"}),
                             "UPLOADING": sampler.peak({"UPLOADING"})}
            os.unlink(dest)
            print(f"{name} job: {results[name]['s']:.1f} s; peak RSS by state "
                  f"{ {k: v for k, v in results[name].items() if k.isupper()} }", flush=True)
        peak_all = max(v for _, _, v in sampler.samples)
        hwm = rss(worker.pid, "VmHWM")
        return idle, results, peak_all, hwm, size, gen_s, len(sampler.samples)
    finally:
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(5)
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        feederd.stop()
        http.terminate()
        http.wait(10)


def main():
    free = shutil.disk_usage(tempfile.gettempdir()).free
    need = 4 * BIG_BYTES + (1 << 30)  # source, scratch copy, remuxed output, destination
    big_bytes = BIG_BYTES if free >= need else max(256 << 20, (free - (1 << 30)) // 4)
    report = Report("Memory (bench/memory.py)",
                    f"feederd VmRSS with 0 vs {STORED_JOBS:,} stored jobs (SQLite store filled directly, then "
                    "/health and /jobs called); a real workerd's VmRSS sampled every 100 ms while it downloads a "
                    f"{big_bytes / (1 << 30):.3g} GiB file over http:// (treq) and file://, and uploads one over "
                    "file://. Reference: an idle twistd with an empty .tac.")
    if big_bytes < BIG_BYTES:
        report.note(f"only {free / MB:.0f} MiB free in {tempfile.gettempdir()}: the big file is scaled down "
                    f"from {BIG_BYTES / MB:.0f} MiB")
    roots = []
    try:
        root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-mem-"))
        roots.append(root)
        idle = idle_twistd_rss(root)
        report.figure("idle twistd, empty .tac (reference)", idle, "MiB")

        r0, hwm0, _, _ = feederd_rss(os.path.join(root, "f0"), 0)
        r1, hwm1, fill_s, health = feederd_rss(os.path.join(root, "f1"), STORED_JOBS)
        print(f"feederd RSS: {r0:.1f} MiB with 0 jobs, {r1:.1f} MiB with {STORED_JOBS} "
              f"(inserted in {fill_s:.1f} s); health jobs {health.get('jobs')}", flush=True)
        report.figure("feederd RSS, 0 jobs stored", r0, "MiB")
        report.figure(f"feederd RSS, {STORED_JOBS:,} jobs stored", r1, "MiB")
        report.figure(f"feederd RSS growth, 0 -> {STORED_JOBS:,} jobs", r1 - r0, "MiB", target=20)
        report.figure("feederd peak RSS (VmHWM) growth", hwm1 - hwm0, "MiB", target=20)
        report.ratio(f"feederd RSS with {STORED_JOBS:,} jobs / idle twistd", r1, idle, unit="MiB")
        report.note(f"{STORED_JOBS:,} job documents inserted in {fill_s:.1f} s; /health counted "
                    f"{health.get('jobs')}")

        root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-mem-w-"))
        roots.append(root)
        widle, results, peak_all, hwm, size, gen_s, nsamples = worker_rss(root, big_bytes)
        report.figure("workerd RSS, idle (waiting on the queue)", widle, "MiB")
        report.figure(f"workerd peak RSS, http:// download of {size / MB:,.0f} MiB", results["http"]["DOWNLOADING"],
                      "MiB", target=100)
        report.figure(f"workerd peak RSS, file:// upload of {size / MB:,.0f} MiB", results["http"]["UPLOADING"],
                      "MiB", target=100)
        report.figure(f"workerd peak RSS, file:// download of {size / MB:,.0f} MiB", results["file"]["DOWNLOADING"],
                      "MiB", target=100)
        report.figure("workerd peak RSS, whole run (all samples)", peak_all, "MiB", target=100)
        report.figure("workerd VmHWM at the end (kernel's peak)", hwm, "MiB", target=100)
        report.ratio("workerd peak RSS / idle twistd", peak_all, idle, unit="MiB")
        report.figure("workerd peak RSS growth over its idle RSS", peak_all - widle, "MiB")
        for name in ("http", "file"):
            job = results[name]["job"]
            res = results[name]
            rate = lambda t: f"~{t:.1f} s, ~{size / MB / t:.0f} MiB/s" if t else "n/a"  # noqa: E731
            report.note(f"{name} job: {res['s']:.1f} s submit to FINISHED; DOWNLOADING {rate(res['download_s'])}"
                        + (f", UPLOADING {rate(res['upload_s'])}" if name == "http" else "")
                        + f"; output {(job.get('output') or {}).get('size_bytes')} bytes")
        report.note(f"feederd ran with API_RATE_LIMIT_PER_MINUTE = {RATE_LIMIT_PER_MINUTE:.0e} (default 1200): the "
                    "sampler polls the job's state 10 times a second as one anonymous caller")
        report.note(f"{nsamples} RSS samples; the {size / MB:,.0f} MiB source (raw gray 640x480 Matroska) "
                    f"was made in {gen_s:.1f} s; disk free at start {free / MB / 1024:.0f} GiB")
    finally:
        for root in roots:
            for d in (root, home_of(root)):
                shutil.rmtree(d, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
