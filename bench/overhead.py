"""Orchestration overhead: 8 encodes through feederd + 2 local workers, against the same
ffmpeg argv run by a plain 2-process pool.

Jobs: a 10 s 640x360 clip with audio, x264 ``veryfast`` + AAC, one pass, file:// in and out.
feederd runs the embedded default with MAX_NUM_WORKERS = 2 and one job per worker; the two
workers are started (by feederd's autoscaler) and warmed up by two jobs before measuring, so
what is measured is steady-state orchestration (queue, state writes, file:// copies, the two
ffprobes, progress), not worker boot.

nommer wall = last ``finished_at`` (the job store's clock) minus the client's clock just
before the first submit. Reference wall = a ``concurrent.futures`` pool of 2 threads each
running the worker's exact ffmpeg argv (built with ``ffmpeg_argv.build_argv`` and checked
against the worker's own "ffmpeg pass 1 of 1: ..." log line, output caps included) with
``subprocess.run``, each in a session of its own as the workers' are (``SESSIONS``: with CFS
autogroup a session is a scheduling group). The two alternate (ref, nommer, ref, nommer, ...)
and the median of the per-round ratios is reported.

The nommer side runs twice, as two feederds (each with its own 2 warm workers) taking turns
within every round: with the ffmpeg sandbox users get by default (FFMPEG_SANDBOX = "bwrap", the
headline figures) and without it (FFMPEG_SANDBOX = "none"). The rows marked "without sandbox"
are the second; the difference of the two is what the sandbox costs per job.

Breakdown: every ffmpeg/ffprobe launch of a worker is stamped (start, end, tool) by a bash
wrapper that runs the real program as its child and appends to a log file. Under the sandbox
the wrapper is BWRAP_BIN (it runs outside the sandbox, so it can write its log; the tool is the
executable after bwrap's last ``--``), so a launch's span includes the sandbox's set-up and
teardown; without it, FFMPEG_BIN and FFPROBE_BIN are the wrappers (as before the sandbox). So
each job splits into before ffmpeg (copy-in, source ffprobe, state writes), ffmpeg, and after
(output ffprobe, copy-out, FINISHED); "time in the worker / its own ffmpeg run" is a per-job
ratio that machine drift cannot skew. Both variants pay one bash process per launch.

Per-launch cost of the sandbox, three ways: the median ffprobe (and ffmpeg) launch of the jobs
with the sandbox minus without it (wrapper stamps); and directly, BENCH_LAUNCHES (20) pairs of
the worker's ffprobe argv on the source run bare and through the worker's own bwrap argv
(``Sandbox.wrap``), alternating, the median of the pair differences; the set-up alone is taken
the same way from ``bash -c 'echo $EPOCHREALTIME'`` (when the sandboxed program starts).

feederd runs with API_RATE_LIMIT_PER_MINUTE = 10**9: the bench polls every pending job 4 times a
second as one anonymous caller, over the default 1200 a minute.
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

from _report import Report, fmt  # noqa: E402
from _wrappers import BWRAP_WRAPPER  # noqa: E402
from nommer.conf import defaults  # noqa: E402
from nommer.workerd.nommers import ffmpeg_argv, ffmpeg_options  # noqa: E402
from nommer.workerd.nommers.ffmpeg import max_output_duration_s, output_caps  # noqa: E402
from nommer.workerd.sandbox import Sandbox  # noqa: E402
from tests.e2e.harness import Feederd, home_of  # noqa: E402
from tests.workerd.media import clip  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LAUNCHES = int(os.environ.get("BENCH_LAUNCHES", "20"))
RATE_LIMIT_PER_MINUTE = 10**9  # the bench polls as one anonymous caller: no 429 may cut it short
CONCURRENCY = 2
OPTIONS = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
           "options": [{"outfile_options": [["vcodec", "libx264"], ["preset", "veryfast"],
                                            ["acodec", "aac"], ["b:a", "128k"], ["f", "mp4"]]}]}
FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
# FFMPEG_BIN and FFPROBE_BIN for the workers without the sandbox: run the real binary as a child
# and append its start and end times ($EPOCHREALTIME) and argv to a file, for the per-job
# breakdown. The child runs in a session of its own (util-linux setsid, ~1 ms), as the sandbox's
# (bwrap --new-session) and the pool's do: see SESSIONS.
WRAPPER = """#!/bin/bash
s=$EPOCHREALTIME
%(setsid)s %(real)s "$@"
rc=$?
echo "$s $EPOCHREALTIME ${0##*/} $*" >> %(log)s
exit $rc
"""
SANDBOXED, BARE = "bwrap", "none"  # the two values of FFMPEG_SANDBOX measured
SESSIONS = ("Every ffmpeg/ffprobe runs in a session of its own on all three sides (the sandbox's bwrap "
            "--new-session; setsid in the wrappers without it; start_new_session in the pool): with CFS "
            "autogroup on (/proc/sys/kernel/sched_autogroup_enabled) a session is a scheduling group, and on a "
            "machine shared with other work an ffmpeg in a session of its own gets a larger CPU share than one "
            "in its worker's session, 15-30 % faster encodes here: that is scheduling, not the sandbox's cost.")


def iso_ts(iso):
    import datetime
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def source_duration_s(src):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", src],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return float(out.strip())


def reference_argv(src, out, duration_s=10.0):
    """The worker's argv: built by ffmpeg_argv.build_argv, with the worker's output caps
    (-fs MAX_OUTPUT_BYTES, -t from the source's duration) before the output path."""
    passes = ffmpeg_options.validate_passes(OPTIONS["options"])
    argv = ffmpeg_argv.build_argv(passes[0], ffmpeg_bin="ffmpeg", input_path=src, output_path=out,
                                     muxer="mp4", passlogfile=None, encoders=None)
    return output_caps(argv, passes[0], max_bytes=defaults.MAX_OUTPUT_BYTES,
                       max_duration_s=max_output_duration_s(duration_s, defaults.MAX_OUTPUT_DURATION_FACTOR))


def run_reference(src, outdir, tag, duration_s):
    """Wall time of the pool, and each ffmpeg's own run time (seconds). Each ffmpeg in a session
    of its own, as in the workers (SESSIONS)."""
    argvs = [reference_argv(src, os.path.join(outdir, f"ref-{tag}-{i}.mp4"), duration_s) for i in range(JOBS)]

    def one(argv):
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300,
                       start_new_session=True)
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


def write_script(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def start_variant(base, mode, src):
    """A feederd (file root ``base/mode``, holding a copy of the source) whose workers run
    ffmpeg with FFMPEG_SANDBOX = ``mode``, every launch stamped into ``base/mode-runs.log``.
    Returns (feederd, its source path, the log path)."""
    root = os.path.join(base, mode)
    os.makedirs(os.path.join(root, "out"))
    shutil.copy(src, os.path.join(root, "in.mp4"))
    log = os.path.join(base, f"{mode}-runs.log")
    bindir = os.path.join(base, f"bin-{mode}")  # outside every file root
    os.makedirs(bindir)
    if mode == SANDBOXED:
        tools = dict(BWRAP_BIN=write_script(os.path.join(bindir, "bwrap"),
                                            BWRAP_WRAPPER % {"real": shutil.which("bwrap"), "log": log}))
    else:
        tools = {f"{tool.upper()}_BIN": write_script(os.path.join(bindir, tool),
                                                     WRAPPER % {"real": shutil.which(tool), "log": log,
                                                                "setsid": shutil.which("setsid")})
                 for tool in ("ffmpeg", "ffprobe")}
    # Defaults for everything that costs time per job (lease, heartbeat, progress writes).
    feederd = Feederd(root, MAX_NUM_WORKERS=CONCURRENCY, MAX_ENCODING_JOBS_PER_WORKER=1,
                      WORKER_MAX_IDLE_S=3600.0, QUEUE_WAIT_TIME_S=20.0, JOB_LEASE_S=60.0,
                      HEARTBEAT_INTERVAL_S=10.0, AUTOSCALE_INTERVAL_S=5.0, PRUNE_JOBS_INTERVAL_S=300.0,
                      API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE, FFMPEG_SANDBOX=mode, **tools)
    return feederd, os.path.join(root, "in.mp4"), log


def launch_costs(src, scratch, n=LAUNCHES):
    """Per launch, the sandbox directly: n alternating pairs (order flipped every pair) of the
    worker's source ffprobe run bare and through the worker's bwrap argv (Sandbox.wrap with the
    default settings), and of ``bash -c 'echo $EPOCHREALTIME'`` (the time the program starts,
    so the set-up alone). Returns lists of seconds: ffprobe bare, sandboxed, set-up bare,
    set-up sandboxed."""
    sandbox = Sandbox(defaults)
    probe = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", src]
    stamp = ["bash", "-c", "echo $EPOCHREALTIME"]
    # Bare in a session of its own like the sandboxed (SESSIONS), without setsid's exec.
    argvs = {("probe", BARE): (probe, {"PATH": "/usr/bin:/bin"}, None),
             ("probe", SANDBOXED): sandbox.wrap(probe, readable=[src]),
             ("setup", BARE): (stamp, {"PATH": "/usr/bin:/bin"}, scratch),
             ("setup", SANDBOXED): sandbox.wrap(stamp, writable=[scratch])}
    argvs = {k: (v.argv, v.env, v.cwd) if not isinstance(v, tuple) else v for k, v in argvs.items()}
    out = {k: [] for k in argvs}
    for i in range(n):
        for kind in ("probe", "setup"):
            for mode in ((BARE, SANDBOXED) if i % 2 else (SANDBOXED, BARE)):
                argv, env, cwd = argvs[(kind, mode)]
                t = time.time()
                p = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   check=True, timeout=60, start_new_session=True)
                if kind == "probe":
                    out[(kind, mode)].append(time.time() - t)
                else:
                    out[(kind, mode)].append(float(p.stdout) - t)
    return out[("probe", BARE)], out[("probe", SANDBOXED)], out[("setup", BARE)], out[("setup", SANDBOXED)]


def paired(a, b):
    """Median of the pair differences b[i] - a[i]."""
    return statistics.median(y - x for x, y in zip(a, b))


class Side:
    """What one nommer variant measured over the rounds."""

    def __init__(self, mode, feederd, src, log):
        self.mode, self.feederd, self.src, self.log = mode, feederd, src, log
        self.outdir = os.path.join(os.path.dirname(src), "out")
        self.noms, self.ratios, self.busy = [], [], []
        self.pre, self.enc, self.post, self.probes, self.in_worker = [], [], [], [], []
        self.warm_s = None

    def round(self, tag, ref):
        nom, jobs = run_jobs(self.feederd, self.src, self.outdir, tag)
        self.noms.append(nom)
        self.ratios.append(nom / ref)
        self.busy.append(statistics.mean(iso_ts(j["finished_at"]) - iso_ts(j["started_at"]) for j in jobs))
        runs = tool_runs(self.log)
        for j in jobs:
            run = runs.get(j["job_id"])
            if run and run["ffmpeg"]:
                start, end = run["ffmpeg"]
                self.pre.append(start - iso_ts(j["started_at"]))
                self.enc.append(end - start)
                self.post.append(iso_ts(j["finished_at"]) - end)
                self.in_worker.append(iso_ts(j["finished_at"]) - iso_ts(j["started_at"]))
                self.probes += [b - a for a, b in run["ffprobe"]]
        for name in os.listdir(self.outdir):
            os.unlink(os.path.join(self.outdir, name))
        return nom

    def overhead_per_job(self, refs):
        return (statistics.median(self.noms) - statistics.median(refs)) * CONCURRENCY / JOBS


def main():
    report = Report("Orchestration overhead (bench/overhead.py)",
                    f"{JOBS} jobs (10 s 640x360 clip with audio, x264 veryfast + AAC, one pass, file://) "
                    f"through feederd + {CONCURRENCY} warm local workers, against the same ffmpeg argv in a "
                    f"plain {CONCURRENCY}-process pool; {ROUNDS} alternating rounds (ref, nommer, ...), "
                    "median of the per-round ratios. nommer runs as users get it, every ffmpeg/ffprobe in "
                    "the bubblewrap sandbox (FFMPEG_SANDBOX \"bwrap\"); rows marked \"without sandbox\" are "
                    "a second feederd with FFMPEG_SANDBOX \"none\" taking its turn in the same rounds.")
    base = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-overhead-"))
    src = os.path.join(base, "in.mp4")
    shutil.copy(clip(seconds=10, size="640x360", audio=True), src)
    refdir = os.path.join(base, "ref")
    os.makedirs(refdir)
    sides = {}
    try:
        for mode in (SANDBOXED, BARE):
            feederd, side_src, log = start_variant(base, mode, src)
            side = sides[mode] = Side(mode, feederd, side_src, log)
            feederd.start()
            # Warm-up: two jobs start the two workers (and warm the page cache and ffmpeg).
            t = time.monotonic()
            run_jobs(feederd, side_src, side.outdir, "warm", n=CONCURRENCY)
            side.warm_s = time.monotonic() - t
            print(f"{mode}: warm-up ({CONCURRENCY} jobs, workers started cold): {side.warm_s:.2f} s; "
                  f"workers {feederd.client.health().get('workers', [])}", flush=True)
        argv = logged_argv(sides[SANDBOXED].feederd.log())
        duration_s = source_duration_s(src)
        expected = reference_argv("SRC", "OUT", duration_s)
        same = argv is not None and len(argv) == len(expected) and os.path.basename(argv[0]) == "ffmpeg" and all(
            a == b or b in ("SRC", "OUT") for a, b in zip(argv[1:], expected[1:]))
        print(f"worker argv: {' '.join(argv or ['(not found in the log)'])}")
        print(f"reference argv: {' '.join(expected)}  (identical but for paths: {same})")

        refs, ref_ffmpeg = [], []
        for r in range(ROUNDS):
            ref, each = run_reference(src, refdir, r, duration_s)
            refs.append(ref)
            ref_ffmpeg += each
            order = (SANDBOXED, BARE) if r % 2 == 0 else (BARE, SANDBOXED)
            walls = {mode: sides[mode].round(r, ref) for mode in order}
            print(f"round {r + 1}: reference {ref:.2f} s, nommer {walls[SANDBOXED]:.2f} s "
                  f"(ratio {walls[SANDBOXED] / ref:.3f}), without sandbox {walls[BARE]:.2f} s "
                  f"(ratio {walls[BARE] / ref:.3f})", flush=True)
            for name in os.listdir(refdir):
                os.unlink(os.path.join(refdir, name))

        scratch = os.path.join(base, "launch-scratch")
        os.makedirs(scratch)
        probe_bare, probe_sbx, setup_bare, setup_sbx = launch_costs(src, scratch)
        print(f"direct launches: ffprobe bare {statistics.median(probe_bare) * 1000:.1f} ms, sandboxed "
              f"{statistics.median(probe_sbx) * 1000:.1f} ms; set-up bare {statistics.median(setup_bare) * 1000:.1f}"
              f" ms, sandboxed {statistics.median(setup_sbx) * 1000:.1f} ms", flush=True)

        sb, nb = sides[SANDBOXED], sides[BARE]
        med = statistics.median(sb.ratios)
        mid = sorted(range(ROUNDS), key=lambda i: sb.ratios[i])[ROUNDS // 2]
        report.ratio("nommer wall / pool wall (the round with the median ratio)", sb.noms[mid], refs[mid], unit="s",
                     target=1.03)
        report.figure("nommer wall, median of rounds", statistics.median(sb.noms), "s")
        report.figure("pool wall, median of rounds", statistics.median(refs), "s")
        report.figure("overhead per job (median wall difference x 2 / jobs)", sb.overhead_per_job(refs), "s")
        report.figure("mean job time in a worker (started_at to finished_at)", statistics.mean(sb.busy), "s")
        report.ratio("per job: time in the worker / its own ffmpeg run (medians; drift-free)",
                     statistics.median(sb.in_worker), statistics.median(sb.enc), unit="s")
        report.ratio("ffmpeg run time in a worker / in the pool (medians)", statistics.median(sb.enc),
                     statistics.median(ref_ffmpeg), unit="s")
        report.figure("per job before ffmpeg (started_at -> ffmpeg start: copy-in, ffprobe, ENCODING), median",
                      statistics.median(sb.pre), "s")
        report.figure("per job after ffmpeg (ffmpeg end -> finished_at: ffprobe, copy-out, FINISHED), median",
                      statistics.median(sb.post), "s")
        report.figure("one ffprobe run in a worker (2 per job), median", statistics.median(sb.probes), "s")
        report.figure("warm-up: 2 jobs incl. starting both workers", sb.warm_s, "s")

        # The same run without the sandbox (FFMPEG_SANDBOX "none"), and what the sandbox costs.
        mid_n = sorted(range(ROUNDS), key=lambda i: nb.ratios[i])[ROUNDS // 2]
        report.ratio("without sandbox: nommer wall / pool wall (the round with the median ratio)", nb.noms[mid_n],
                     refs[mid_n], unit="s", target=1.03)
        report.figure("without sandbox: nommer wall, median of rounds", statistics.median(nb.noms), "s")
        report.figure("without sandbox: overhead per job (median wall difference x 2 / jobs)",
                      nb.overhead_per_job(refs), "s")
        report.ratio("without sandbox: per job: time in the worker / its own ffmpeg run (medians)",
                     statistics.median(nb.in_worker), statistics.median(nb.enc), unit="s")
        report.figure("without sandbox: per job before ffmpeg, median", statistics.median(nb.pre), "s")
        report.figure("without sandbox: per job after ffmpeg, median", statistics.median(nb.post), "s")
        report.figure("without sandbox: one ffprobe run in a worker, median", statistics.median(nb.probes), "s")
        report.figure("sandbox cost per job: overhead per job with - without sandbox",
                      sb.overhead_per_job(refs) - nb.overhead_per_job(refs), "s")
        report.ratio("nommer wall with / without sandbox (medians of rounds)", statistics.median(sb.noms),
                     statistics.median(nb.noms), unit="s")
        report.figure("sandbox cost per job in the worker: median time in the worker with - without",
                      statistics.median(sb.in_worker) - statistics.median(nb.in_worker), "s")
        report.figure("sandbox cost per job outside the encode: (before + after ffmpeg) with - without, medians",
                      statistics.median(sb.pre) + statistics.median(sb.post)
                      - statistics.median(nb.pre) - statistics.median(nb.post), "s")
        report.ratio("per ffprobe launch in a worker: with / without sandbox (wrapper stamps, medians)",
                     statistics.median(sb.probes), statistics.median(nb.probes), unit="s")
        report.figure("per ffprobe launch in a worker: sandbox cost (with - without, medians)",
                      statistics.median(sb.probes) - statistics.median(nb.probes), "s")
        report.figure("per ffmpeg launch in a worker: sandbox cost (with - without, medians; the encode's noise "
                      "dominates)", statistics.median(sb.enc) - statistics.median(nb.enc), "s")
        report.figure(f"per launch, direct: sandboxed - bare ffprobe of the source ({LAUNCHES} alternating pairs, "
                      "median difference)", paired(probe_bare, probe_sbx), "s")
        report.row("per launch, direct: bare / sandboxed ffprobe of the source, medians",
                   f"{fmt(statistics.median(probe_bare), 's')} / {fmt(statistics.median(probe_sbx), 's')}")
        report.figure("per launch, direct: sandbox set-up before the program starts (sandboxed - bare, "
                      "median difference)", paired(setup_bare, setup_sbx), "s")
        report.figure("sandbox cost per job from the direct per-launch cost x 3 launches (2 ffprobe, 1 ffmpeg; "
                      "the steadiest estimate)", 3 * paired(probe_bare, probe_sbx), "s")
        report.figure("without sandbox: warm-up, 2 jobs incl. starting both workers", nb.warm_s, "s")

        report.note("per-round ratios: " + ", ".join(f"{x:.3f}" for x in sb.ratios)
                    + "; without sandbox: " + ", ".join(f"{x:.3f}" for x in nb.ratios))
        report.note(f"ffmpeg argv of the worker and of the reference identical but for paths: {same}")
        report.note("Workers' launches are stamped by bash wrappers that run the real program as a child: with the "
                    "sandbox the wrapper is BWRAP_BIN (outside the sandbox; a launch's span, the \"ffmpeg run\" and "
                    "\"ffprobe run\" rows, includes the sandbox's set-up and teardown), without it FFMPEG_BIN and "
                    "FFPROBE_BIN. One bash process (~2-3 ms) per launch either way, on the nommer side only.")
        report.note(SESSIONS + " The wrappers' setsid adds ~1 ms per launch without the sandbox, which the "
                    "sandbox cost rows from the jobs then under-state by as much; the direct rows have no setsid.")
        report.note("The two feederds run side by side: while one works, the other's 2 idle workers long-poll "
                    "their queue (as the measured feederd's do while the pool runs). feederd runs with "
                    f"API_RATE_LIMIT_PER_MINUTE = {RATE_LIMIT_PER_MINUTE:.0e}: the bench polls every pending job "
                    "4 times a second as one anonymous caller, over the default 1200 a minute.")
        report.note("Noise: per-job differences of a few ms are read off walls of several seconds and 1 s "
                    "encodes; on a shared or busy machine (see the load averages) the wall-based rows move by "
                    "more than the sandbox costs, while the per-launch rows (ffprobe medians, the direct "
                    "alternating pairs) are the steadier measure of it.")
        if med > 1.03:
            report.note("Above target: besides ffmpeg, each job pays what the before/after rows show: a file:// "
                        "copy in and out (the copy out is fsynced), an ffprobe of the source and of the output "
                        "(the ffprobe row), and the store/queue writes, none of which the pool does. Against "
                        "encodes this short (10 s clips) that fixed cost is several per cent of the wall time.")
    finally:
        for side in sides.values():
            side.feederd.stop()
        for d in [base] + [home_of(os.path.join(base, mode)) for mode in (SANDBOXED, BARE)]:
            shutil.rmtree(d, ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
