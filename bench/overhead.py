"""Orchestration overhead: 8 encodes through feederd + 2 local workers, against the same
ffmpeg argv run by a plain 2-process pool.

Jobs: a 10 s 640x360 clip with audio, x264 ``veryfast`` + AAC, one pass, file:// in and out.
feederd runs the embedded default with MAX_NUM_WORKERS = 2 and one job per worker; the two
workers are started (by feederd's autoscaler) and warmed up by two jobs before measuring, so
what is measured is steady-state orchestration (queue, state writes, file:// copies, the two
ffprobes, progress), not worker boot.

nommer wall = last ``finished_at`` (the job store's clock) minus the client's clock just
before the first submit. Reference wall = a ``concurrent.futures`` pool of 2 threads each
running the worker's exact ffmpeg argv (built with ``ffmpeg_options.build_argv`` and checked
against the worker's own "ffmpeg pass 1 of 1: ..." log line) with ``subprocess.run``. The two
alternate (ref, nommer, ref, nommer, ...) and the median of the per-round ratios is reported.

Breakdown: the workers' FFMPEG_BIN and FFPROBE_BIN are bash wrappers stamping each run's start
and end, so each job splits into before ffmpeg (copy-in, source ffprobe, state writes), ffmpeg,
and after (output ffprobe, copy-out, FINISHED); "time in the worker / its own ffmpeg run" is a
per-job ratio that machine drift cannot skew.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report  # noqa: E402
from nommer.workerd.nommers import ffmpeg_options  # noqa: E402
from tests.e2e.harness import Feederd, home_of  # noqa: E402
from tests.workerd.media import clip  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CONCURRENCY = 2
OPTIONS = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
           "options": [{"outfile_options": [["vcodec", "libx264"], ["preset", "veryfast"],
                                            ["acodec", "aac"], ["b:a", "128k"], ["f", "mp4"]]}]}
FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
# FFMPEG_BIN and FFPROBE_BIN for the workers: run the real binary as a child and append its
# start and end times ($EPOCHREALTIME) and argv to a file, for the per-job breakdown.
WRAPPER = """#!/bin/bash
s=$EPOCHREALTIME
%(real)s "$@"
rc=$?
echo "$s $EPOCHREALTIME ${0##*/} $*" >> %(log)s
exit $rc
"""


def iso_ts(iso):
    import datetime
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def reference_argv(src, out):
    passes = ffmpeg_options.validate_passes(OPTIONS["options"])
    return ffmpeg_options.build_argv(passes[0], ffmpeg_bin="ffmpeg", input_path=src, output_path=out,
                                     muxer="mp4", passlogfile=None, encoders=None)


def run_reference(src, outdir, tag):
    """Wall time of the pool, and each ffmpeg's own run time (seconds)."""
    argvs = [reference_argv(src, os.path.join(outdir, f"ref-{tag}-{i}.mp4")) for i in range(JOBS)]

    def one(argv):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300)
        return time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        each = list(pool.map(one, argvs))
    return time.perf_counter() - t0, each


def tool_runs(log):
    """{job_id: {"ffmpeg": (start, end), "ffprobe": [(start, end), ...]}} from the wrappers' file."""
    runs = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                start, end, tool, args = line.rstrip("\n").split(" ", 3)
                m = re.search(r"/scratch/([0-9a-f]{50})-\d+/", args)
                if not m:
                    continue
                job = runs.setdefault(m.group(1), {"ffmpeg": None, "ffprobe": []})
                if tool == "ffmpeg" and "-progress" in args:
                    job["ffmpeg"] = (float(start), float(end))
                elif tool == "ffprobe":
                    job["ffprobe"].append((float(start), float(end)))
    return runs


def run_jobs(feederd, src, outdir, tag, n=JOBS, timeout_s=300):
    """Submit n jobs, wait for all to end; returns (wall s, jobs)."""
    t0 = time.time()
    ids = [feederd.client.submit(f"file://{src}", f"file://{outdir}/nom-{tag}-{i}.mp4", OPTIONS)
           for i in range(n)]
    pending, jobs = set(ids), {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not done in {timeout_s} s: {sorted(pending)}")
        time.sleep(0.25)
        for job_id in list(pending):
            job = feederd.client.get(job_id)
            if job["job_state"] in FINAL:
                if job["job_state"] != "FINISHED":
                    raise RuntimeError(f"job ended {job['job_state']}: {job['job_state_details']}")
                jobs[job_id] = job
                pending.discard(job_id)
    return max(iso_ts(j["finished_at"]) for j in jobs.values()) - t0, list(jobs.values())


def logged_argv(log):
    m = re.findall(r"ffmpeg pass 1 of 1: (.*)", log)
    return m[-1].split() if m else None


def main():
    report = Report("Orchestration overhead (bench/overhead.py)",
                    f"{JOBS} jobs (10 s 640x360 clip with audio, x264 veryfast + AAC, one pass, file://) "
                    f"through feederd + {CONCURRENCY} warm local workers, against the same ffmpeg argv in a "
                    f"plain {CONCURRENCY}-process pool; {ROUNDS} alternating rounds (ref, nommer, ...), "
                    "median of the per-round ratios.")
    root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-overhead-"))
    src = os.path.join(root, "in.mp4")
    shutil.copy(clip(seconds=10, size="640x360", audio=True), src)
    outdir = os.path.join(root, "out")
    os.makedirs(outdir)
    wrapper_log = os.path.join(root, "tool-runs.log")
    os.makedirs(os.path.join(root, "bin"))
    for tool in ("ffmpeg", "ffprobe"):
        with open(os.path.join(root, "bin", tool), "w") as f:
            f.write(WRAPPER % {"real": shutil.which(tool), "log": wrapper_log})
        os.chmod(os.path.join(root, "bin", tool), 0o755)
    # Defaults for everything that costs time per job (lease, heartbeat, progress writes).
    feederd = Feederd(root, MAX_NUM_WORKERS=CONCURRENCY, MAX_ENCODING_JOBS_PER_WORKER=1,
                      WORKER_MAX_IDLE_S=3600.0, QUEUE_WAIT_TIME_S=20.0, JOB_LEASE_S=60.0,
                      HEARTBEAT_INTERVAL_S=10.0, AUTOSCALE_INTERVAL_S=5.0, PRUNE_JOBS_INTERVAL_S=300.0,
                      FFMPEG_BIN=os.path.join(root, "bin", "ffmpeg"),
                      FFPROBE_BIN=os.path.join(root, "bin", "ffprobe"))
    try:
        feederd.start()
        # Warm-up: two jobs start the two workers (and warm the page cache and ffmpeg).
        t = time.monotonic()
        run_jobs(feederd, src, outdir, "warm", n=CONCURRENCY)
        warm_s = time.monotonic() - t
        workers = feederd.client.health().get("workers", [])
        argv = logged_argv(feederd.log())
        expected = reference_argv("SRC", "OUT")
        same = argv is not None and len(argv) == len(expected) and os.path.basename(argv[0]) == "ffmpeg" and all(
            a == b or b in ("SRC", "OUT") for a, b in zip(argv[1:], expected[1:]))
        print(f"warm-up ({CONCURRENCY} jobs, workers started cold): {warm_s:.2f} s; workers {workers}")
        print(f"worker argv: {' '.join(argv or ['(not found in the log)'])}")
        print(f"reference argv: {' '.join(expected)}  (identical but for paths: {same})")

        refs, noms, ratios, busy = [], [], [], []
        ref_ffmpeg, pre, enc, post, probes, in_worker = [], [], [], [], [], []
        for r in range(ROUNDS):
            ref, each = run_reference(src, outdir, r)
            nom, jobs = run_jobs(feederd, src, outdir, r)
            refs.append(ref)
            noms.append(nom)
            ratios.append(nom / ref)
            ref_ffmpeg += each
            busy.append(statistics.mean(iso_ts(j["finished_at"]) - iso_ts(j["started_at"]) for j in jobs))
            runs = tool_runs(wrapper_log)
            for j in jobs:
                run = runs.get(j["job_id"])
                if run and run["ffmpeg"]:
                    start, end = run["ffmpeg"]
                    pre.append(start - iso_ts(j["started_at"]))
                    enc.append(end - start)
                    post.append(iso_ts(j["finished_at"]) - end)
                    in_worker.append(iso_ts(j["finished_at"]) - iso_ts(j["started_at"]))
                    probes += [b - a for a, b in run["ffprobe"]]
            print(f"round {r + 1}: reference {ref:.2f} s, nommer {nom:.2f} s, ratio {nom / ref:.3f}", flush=True)
            for name in os.listdir(outdir):
                os.unlink(os.path.join(outdir, name))

        med = statistics.median(ratios)
        mid = sorted(range(ROUNDS), key=lambda i: ratios[i])[ROUNDS // 2]
        report.ratio("nommer wall / pool wall (the round with the median ratio)", noms[mid], refs[mid], unit="s", target=1.03)
        report.figure("nommer wall, median of rounds", statistics.median(noms), "s")
        report.figure("pool wall, median of rounds", statistics.median(refs), "s")
        report.figure("overhead per job (median wall difference x 2 / jobs)",
                      (statistics.median(noms) - statistics.median(refs)) * CONCURRENCY / JOBS, "s")
        report.figure("mean job time in a worker (started_at to finished_at)", statistics.mean(busy), "s")
        report.ratio("per job: time in the worker / its own ffmpeg run (medians; drift-free)",
                     statistics.median(in_worker), statistics.median(enc), unit="s")
        report.ratio("ffmpeg run time in a worker / in the pool (medians)", statistics.median(enc),
                     statistics.median(ref_ffmpeg), unit="s")
        report.figure("per job before ffmpeg (started_at -> ffmpeg start: copy-in, ffprobe, ENCODING), median",
                      statistics.median(pre), "s")
        report.figure("per job after ffmpeg (ffmpeg end -> finished_at: ffprobe, copy-out, FINISHED), median",
                      statistics.median(post), "s")
        report.figure("one ffprobe run in a worker (2 per job), median", statistics.median(probes), "s")
        report.figure("warm-up: 2 jobs incl. starting both workers", warm_s, "s")
        report.note("per-round ratios: " + ", ".join(f"{x:.3f}" for x in ratios))
        report.note(f"ffmpeg argv of the worker and of the reference identical but for paths: {same}")
        report.note("Workers run ffmpeg and ffprobe through bash wrappers (FFMPEG_BIN, FFPROBE_BIN) that stamp "
                    "their start and end: one bash process (~2-3 ms) per run, on the nommer side only.")
        if med > 1.03:
            report.note("Above target: besides ffmpeg, each job pays what the before/after rows show: a file:// "
                        "copy in and out (the copy out is fsynced), an ffprobe of the source and of the output "
                        "(the ffprobe row), and the store/queue writes, none of which the pool does. Against "
                        "encodes this short (10 s clips) that fixed cost is several per cent of the wall time.")
    finally:
        feederd.stop()
        for d in (root, home_of(root)):
            shutil.rmtree(d, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
