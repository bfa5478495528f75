"""The ABR ladder's two speed figures (issue 11).

1. One decode for the whole ladder: a 5-rung H.264 ladder (1080p 6000k, 720p 3000k, 540p
   2000k, 360p 730k, 234p 145k; x264 ``veryfast``) of a 1920x1080 30 fps source with audio
   (lavfi testsrc2 + a sine tone, BENCH_LADDER_S seconds, default 20), made by the one ffmpeg
   run ``nommer.workerd.outputs.package.plan`` gives (one decode, a ``split`` into five
   scale+x264 chains, the dash muxer writing CMAF segments), against five separate ffmpeg runs,
   one per rung, each planned by the same ``package.plan`` with a one-rung ladder (so each
   decodes the source, scales and encodes that rung with the same x264 options into the dash
   muxer); the audio goes with the 1080p run only (the others are planned with no audio track),
   so both sides encode the audio once. Figure: one-decode wall / sum of the five walls,
   target <= 0.8.

2. The ladder job through nommer against the same ffmpeg command run directly: an hls+dash job
   with that ladder submitted to a real feederd (embedded default backends, one local worker,
   MAX_NUM_WORKERS = 1, started and warmed up by a small job first), source and destination
   file:// under a temporary file root; wall time = the job's ``finished_at`` minus the
   client's clock just before the submit. The reference is the one-decode run of figure 1:
   the very argv the worker runs (planned the same way, ``-t`` capped at
   MAX_OUTPUT_DURATION_FACTOR x the duration as the worker does; checked against the argv the
   worker logs, identical but for paths), run with ``subprocess`` without the sandbox. Figure:
   nommer wall / direct wall, target <= 1.05.

BENCH_ROUNDS rounds (default 2); each round runs the five separate runs, the one-decode run
and the nommer job, the one-decode run in the middle (next to both runs it is compared with),
the order reversed every round; the figures are medians over the rounds. Every direct ffmpeg
runs in a session of its own as the sandboxed one does (bwrap --new-session): see
bench/overhead.py's note on CFS autogroup.

On a machine shared with other work wall times move by tens of per cent from run to run, so
beside the walls: CPU time (user + system) of the direct runs (getrusage of the children) and
of the worker's sandboxed ffmpeg (sampled from /proc every 50 ms, ``CpuSampler``); a decode of
the source alone (``-f null``), the most one decode can save being four of them; and the
nommer job split by the launch-stamping bwrap wrapper of bench/_wrappers.py into pick-up
(submit -> started_at), before ffmpeg (copy-in, ffprobe, ENCODING), the ffmpeg run in the
sandbox and after it (``package.finish``, timed here in-process on the direct run's output,
the file checks, copy-out, FINISHED); their sum added to the direct run is the drift-free
estimate of figure 2.
"""

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import attr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report, fmt  # noqa: E402
from _wrappers import BWRAP_WRAPPER  # noqa: E402
from overhead import RATE_LIMIT_PER_MINUTE, iso_ts, tool_runs, write_script  # noqa: E402
from nommer.conf import defaults  # noqa: E402
from nommer.core.outputs.validate import validate_outputs  # noqa: E402
from nommer.workerd.nommers.ffmpeg import max_output_duration_s  # noqa: E402
from nommer.workerd.outputs import package  # noqa: E402
from tests.e2e.harness import Feederd, home_of  # noqa: E402
from tests.workerd.outputs.media import make_source, probe  # noqa: E402

DURATION_S = float(os.environ.get("BENCH_LADDER_S", "20"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
LADDER = [{"height": 1080, "bitrate": "6000k"}, {"height": 720, "bitrate": "3000k"},
          {"height": 540, "bitrate": "2000k"}, {"height": 360, "bitrate": "730k"},
          {"height": 234, "bitrate": "145k"}]
PRESET = "veryfast"
FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
JOB_TIMEOUT_S = 900


def outputs(ladder=LADDER):
    """The job's outputs: hls and dash over one set of segments (``package.SHARED_FIELDS``)."""
    return [{"type": "hls", "ladder": ladder, "encoder_preset": PRESET},
            {"type": "dash", "ladder": ladder, "encoder_preset": PRESET}]


def normalized_package(ladder=LADDER):
    """``{"hls": spec, "dash": spec}``, every field filled as the worker gets them."""
    hls, dash = validate_outputs(outputs(ladder))
    return {"hls": hls, "dash": dash}


def planned_argv(ladder, source, src, work_dir):
    """The worker's argv for the package: ``package.plan`` on the normalized outputs, then
    ``-t`` before the output as OutputsNommer adds it."""
    argv = package.plan(normalized_package(ladder), source, ffmpeg_bin="ffmpeg", input_path=src,
                        work_dir=work_dir)[0].argv
    cap = max_output_duration_s(source.duration_s, defaults.MAX_OUTPUT_DURATION_FACTOR)
    return argv[:-1] + ["-t", f"{cap:.3f}"] + argv[-1:] if cap is not None else argv


def run_ffmpeg(argv):
    """``(wall s, CPU s)`` of one ffmpeg run, in a session of its own; CPU = user + system time
    of the child (``getrusage(RUSAGE_CHILDREN)`` before and after: the bench reaps no other
    child meanwhile), far less moved by other work on the machine than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=JOB_TIMEOUT_S,
                   start_new_session=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fresh(path):
    """An empty ``path`` holding the package's directory (``stream``, where ffmpeg writes)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, "stream"))
    return path


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of the worker's ffmpeg runs, read from /proc/<pid>/stat every
    ``interval_s``: a process of the host whose command line is an ffmpeg with ``-progress`` and
    ``marker`` (the workers' scratch directory) in it. In the sandbox ffmpeg's usage never
    reaches the wrapper (bwrap's pid 1 reaps it), hence the sampling; the last sample is at
    most ``interval_s`` before the exit, so the figure is low by up to that much per thread
    busy then. ``by_start`` maps the wall time a run was first seen to its CPU seconds."""

    def __init__(self, marker, interval_s=0.05):
        super().__init__(daemon=True)
        self.marker, self.interval_s = marker, interval_s
        self.by_start = {}
        self.halt = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def _find(self):
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if (args and os.path.basename(args[0]) == b"ffmpeg" and b"-progress" in args
                    and any(self.marker.encode() in a for a in args)):
                return pid
        return None

    def _cpu(self, pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime (fields 14, 15)

    def run(self):
        pid = started = None
        while not self.halt.wait(self.interval_s):
            if pid is None:
                pid = self._find()
                started = time.time()
                continue
            cpu = self._cpu(pid)
            if cpu is None:
                pid = None
            else:
                self.by_start[started] = cpu


def run_job(feederd, src, dest, timeout_s=JOB_TIMEOUT_S):
    """Submit the ladder job, wait for it; (wall s from before the submit to finished_at, job)."""
    t0 = time.time()
    job_id = feederd.client.submit(f"file://{src}", f"file://{dest}/", outputs=outputs())
    deadline = time.monotonic() + timeout_s
    while True:
        time.sleep(0.25)
        job = feederd.client.get(job_id)
        if job["job_state"] in FINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not done in {timeout_s} s: {job['job_state']}")
    if job["job_state"] != "FINISHED":
        raise RuntimeError(f"job ended {job['job_state']}: {job.get('job_state_details')}\n{feederd.log()}")
    return iso_ts(job["finished_at"]) - t0, job, t0


def logged_argv(log, job_id):
    """The ladder command line the worker logged for ``job_id`` (``job <id>: hls+dash ladder
    stream/: <argv joined by spaces>``), or None."""
    m = re.findall(rf"job {job_id}: hls\+dash ladder [^:]*: (.*)", log)
    return m[-1].strip() if m else None


def same_but_paths(logged, planned, src, work_dir):
    """True if the worker's logged command line and ``planned`` (an argv) differ only in the
    input path and the output directory (the log joins the argv with spaces, so the two are
    compared joined)."""
    if not logged:
        return False
    w_src = re.search(r" -i (\S+)", logged).group(1)
    w_dir = os.path.dirname(os.path.dirname(logged.split()[-1]))
    exe, _, rest = logged.partition(" ")
    planned_rest = " ".join(planned[1:])
    return (os.path.basename(exe) == "ffmpeg"
            and rest.replace(w_src, "SRC").replace(w_dir, "OUT") == planned_rest.replace(src, "SRC").replace(
                work_dir, "OUT"))


def main():
    report = Report(
        "ABR ladder: one decode, and through nommer (bench/ladder.py)",
        f"A 5-rung H.264 ladder (1080p 6000k, 720p 3000k, 540p 2000k, 360p 730k, 234p 145k; x264 {PRESET}; "
        f"AAC 128k) of a {DURATION_S:g} s 1920x1080 30 fps testsrc2 source with a stereo tone. (1) The one "
        "ffmpeg run package.plan makes (one decode, split into five scale+x264 chains, dash muxer) against "
        "five single-rung runs planned the same way (each decodes, scales, encodes its rung; audio once). "
        "(2) The same ladder as an hls+dash job through feederd + one warm local worker (embedded "
        "defaults, file:// in and out, ffmpeg in the bwrap sandbox) against the argv it runs, run directly. "
        f"{ROUNDS} rounds (the direct run between the other two, order reversed each round), medians.")
    cores = os.cpu_count()
    load_start = os.getloadavg()
    base = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-ladder-"))
    root = os.path.join(base, "root")
    os.makedirs(root)
    feederd = None
    try:
        t = time.monotonic()
        src = make_source(root, "in.mp4", width=1920, height=1080, fps=30, duration_s=DURATION_S)
        small = make_source(root, "warm.mp4", width=640, height=360, fps=30, duration_s=1)
        source = probe(src)
        print(f"source {src}: {source.width}x{source.height} {source.fps} fps {source.duration_s} s "
              f"(made in {time.monotonic() - t:.1f} s); {cores} CPUs, load average {load_start[0]:.2f}", flush=True)

        ref_dir = os.path.join(base, "ref")
        one_argv = planned_argv(LADDER, source, src, ref_dir)
        shutil.rmtree(ref_dir)
        silent = attr.evolve(source, audio=())
        sep_dirs = [os.path.join(base, f"sep{i}") for i in range(len(LADDER))]
        sep_argvs = [planned_argv([rung], source if i == 0 else silent, src, sep_dirs[i])
                     for i, rung in enumerate(LADDER)]
        for d in sep_dirs:
            shutil.rmtree(d)

        log = os.path.join(base, "runs.log")
        bindir = os.path.join(base, "bin")  # outside the file root
        os.makedirs(bindir)
        wrapper = write_script(os.path.join(bindir, "bwrap"),
                               BWRAP_WRAPPER % {"real": shutil.which("bwrap"), "log": log})
        # Production defaults for what costs time per job (lease, heartbeat, progress writes).
        feederd = Feederd(root, MAX_NUM_WORKERS=1, MAX_ENCODING_JOBS_PER_WORKER=1, WORKER_MAX_IDLE_S=3600.0,
                          QUEUE_WAIT_TIME_S=20.0, JOB_LEASE_S=60.0, HEARTBEAT_INTERVAL_S=10.0,
                          AUTOSCALE_INTERVAL_S=5.0, PRUNE_JOBS_INTERVAL_S=300.0,
                          API_RATE_LIMIT_PER_MINUTE=RATE_LIMIT_PER_MINUTE, BWRAP_BIN=wrapper)
        feederd.start()
        t = time.monotonic()
        run_job(feederd, small, os.path.join(root, "out", "warm"))
        warm_s = time.monotonic() - t
        print(f"warm-up job (starts the worker): {warm_s:.2f} s", flush=True)

        decode_argv = ["ffmpeg", "-hide_banner", "-nostdin", "-i", src, "-map", "0:v:0", "-f", "null", "-"]
        ones, seps, sep_each, noms, in_worker = [], [], [], [], []
        one_cpu, sep_cpu, decodes, decode_cpu = [], [], [], []
        finishes, out_files, out_bytes, worker_cpu = [], [], [], []
        pickup, before, enc, after, probes = [], [], [], [], []
        ratios1, ratios2, argv_same = [], [], []
        for r in range(ROUNDS):
            # The direct run in the middle, next to both runs it is compared with; sides swapped
            # every round.
            order = ("separate", "one", "nommer") if r % 2 == 0 else ("nommer", "one", "separate")
            walls = {}
            for kind in order:
                if kind == "one":
                    fresh(ref_dir)
                    walls[kind], cpu = run_ffmpeg(one_argv)
                    one_cpu.append(cpu)
                    if not os.path.isfile(os.path.join(ref_dir, "stream", package.MPD_NAME)):
                        raise RuntimeError("the direct ladder run wrote no MPD")
                    # What the worker does next, in-process: measure the segments, write the
                    # HLS playlists and the MPD with measured bandwidths.
                    t = time.perf_counter()
                    made = package.finish(normalized_package(), source, None, ref_dir)
                    finishes.append(time.perf_counter() - t)
                    files = {f.local for result in made.values() for f in result.files}
                    out_files.append(len(files))
                    out_bytes.append(sum(os.path.getsize(f) for f in files))
                    shutil.rmtree(ref_dir)
                elif kind == "separate":
                    each, cpu = [], 0.0
                    for d, argv in zip(sep_dirs, sep_argvs):
                        fresh(d)
                        w, c = run_ffmpeg(argv)
                        if not os.path.isfile(os.path.join(d, "stream", package.MPD_NAME)):
                            raise RuntimeError("a single-rung run wrote no MPD")
                        each.append(w)
                        cpu += c
                        shutil.rmtree(d)
                    sep_each.append(each)
                    sep_cpu.append(cpu)
                    walls[kind] = sum(each)
                    # What one decode can save at most: the decoding of the source, 4 times.
                    w, c = run_ffmpeg(decode_argv)
                    decodes.append(w)
                    decode_cpu.append(c)
                else:
                    dest = os.path.join(root, "out", f"r{r}")
                    sampler = CpuSampler(os.path.join(home_of(root), "data", "scratch"))
                    sampler.start()
                    try:
                        wall, job, t0 = run_job(feederd, src, dest)
                    finally:
                        sampler.halt.set()
                        sampler.join()
                    if len(sampler.by_start) == 1:
                        worker_cpu.append(sum(sampler.by_start.values()))
                    walls[kind] = wall
                    entries = job["result"]["outputs"] if "result" in job else job.get("outputs")
                    rungs = entries[0]["rungs"] if entries else []
                    if len(rungs) != len(LADDER):
                        raise RuntimeError(f"the job made {len(rungs)} rungs, not {len(LADDER)}: {entries}")
                    started, finished = iso_ts(job["started_at"]), iso_ts(job["finished_at"])
                    in_worker.append(finished - started)
                    pickup.append(started - t0)
                    run = tool_runs(log).get(job["job_id"])
                    if run and run["ffmpeg"]:
                        a, b = run["ffmpeg"]
                        before.append(a - started)
                        enc.append(b - a)
                        after.append(finished - b)
                        probes += [y - x for x, y in run["ffprobe"]]
                    with open(feederd.log_path, encoding="utf-8", errors="replace") as f:
                        text = f.read()
                        worker_argv = logged_argv(text, job["job_id"])
                    argv_same.append(same_but_paths(worker_argv, one_argv, src, ref_dir))
                    if not argv_same[-1]:
                        print(f"worker argv: {worker_argv or '(not found in the log)'}\n"
                              f"direct argv: {' '.join(one_argv)}", flush=True)
                    shutil.rmtree(dest)
            ones.append(walls["one"])
            seps.append(walls["separate"])
            noms.append(walls["nommer"])
            ratios1.append(walls["one"] / walls["separate"])
            ratios2.append(walls["nommer"] / walls["one"])
            print(f"round {r + 1} ({', '.join(order)}): one decode {walls['one']:.2f} s, five separate "
                  f"{walls['separate']:.2f} s ({' + '.join(f'{x:.2f}' for x in sep_each[-1])}), ratio "
                  f"{ratios1[-1]:.3f}; nommer job {walls['nommer']:.2f} s (in the worker {in_worker[-1]:.2f} s), "
                  f"ratio {ratios2[-1]:.3f}; load average {os.getloadavg()[0]:.2f}", flush=True)

        med = statistics.median
        report.ratio("one-decode 5-rung ladder run / sum of 5 single-rung runs (medians of rounds)", med(ones),
                     med(seps), unit="s", target=0.8)
        report.row("single-rung runs, median each (1080p with the audio, 720p, 540p, 360p, 234p)",
                   " / ".join(fmt(med(col), "s") for col in zip(*sep_each)))
        report.ratio("the same in CPU time (user + system of the ffmpeg processes; steadier on a shared machine)",
                     med(one_cpu), med(sep_cpu), unit="s")
        report.row("decoding the source alone (ffmpeg -f null), median wall / CPU",
                   f"{fmt(med(decodes), 's')} / {fmt(med(decode_cpu), 's')}")
        report.ratio("expected from the 4 decodes saved alone, in CPU time: (separate - 4 decodes) / separate "
                     "(medians)", med(sep_cpu) - 4 * med(decode_cpu), med(sep_cpu), unit="s")
        report.ratio("ladder job through nommer, submit -> finished_at / the same argv run directly (medians)",
                     med(noms), med(ones), unit="s", target=1.05)
        report.ratio("ladder job in the worker, started_at -> finished_at / the same argv run directly (medians)",
                     med(in_worker), med(ones), unit="s")
        fixed = None
        if enc:
            report.ratio("the worker's sandboxed ffmpeg run / the same argv run directly (medians)", med(enc),
                         med(ones), unit="s")
            if worker_cpu:
                report.ratio("the same in CPU time (the worker's ffmpeg sampled from /proc, the direct one from "
                             "getrusage; medians)", med(worker_cpu), med(one_cpu), unit="s")
            report.figure("submit -> started_at (queue pick-up), median", med(pickup), "s")
            report.figure("started_at -> ffmpeg start (copy-in, ffprobe of the source, ENCODING), median",
                          med(before), "s")
            report.figure("  of which the worker's ffprobe of the source (sandboxed), median", med(probes), "s")
            report.figure("ffmpeg end -> finished_at (segment measuring, manifests, file checks, copy-out, "
                          "FINISHED), median", med(after), "s")
            report.figure(f"  of which package.finish (measure segments, write playlists and MPD; timed in the "
                          f"bench on the direct run's {out_files[0]} files, {out_bytes[0] / 1e6:.1f} MB), median",
                          med(finishes), "s")
            fixed = med(pickup) + med(before) + med(after)
            report.figure("nommer's fixed cost outside ffmpeg: pick-up + before + after (medians)", fixed, "s")
            report.ratio("drift-free estimate: (direct run + that fixed cost) / direct run (medians)",
                         med(ones) + fixed, med(ones), unit="s", target=1.05)
        report.figure("warm-up job (1 s 640x360, starts the worker)", warm_s, "s")
        report.note(f"{cores} CPUs; load average (1 min) {load_start[0]:.2f} at the start: other work on the "
                    "machine moves every wall time here by more than the orchestration costs.")
        report.note("per-round ratios, one decode / separate: " + ", ".join(f"{x:.3f}" for x in ratios1)
                    + "; nommer / direct: " + ", ".join(f"{x:.3f}" for x in ratios2))
        report.note(f"ffmpeg argv of the worker and of the direct run identical but for paths: "
                    f"{all(argv_same) if argv_same else 'not checked'}")
        report.note("What the nommer path adds to the ffmpeg run: the queue pick-up (submit -> started_at), the "
                    "copy of the source into the worker's scratch directory (file:// download), an ffprobe of "
                    "the source, the bubblewrap sandbox's set-up (a few ms a launch: bench/overhead.py), the job "
                    "store writes (DOWNLOADING, ENCODING, progress, UPLOADING, FINISHED), after ffmpeg reading "
                    "the MPD, measuring every segment and writing the HLS playlists and the rewritten MPD, a "
                    "regular-file check of every output, and the copy of every segment and manifest to the "
                    "destination prefix (file:// upload, fsynced).")
        report.note("Every ffmpeg runs in a session of its own, the direct ones (start_new_session) as the "
                    "worker's (bwrap --new-session): with CFS autogroup a session is a scheduling group, and "
                    "on a shared machine an ffmpeg's share of the CPUs depends on it (bench/overhead.py).")
        if fixed is not None and med(noms) > 1.05 * med(ones):
            report.note("Figure 2 above target on the wall clock: the job's time outside ffmpeg is the fixed "
                        f"cost row ({fmt(fixed, 's')} a job), and the worker's ffmpeg burned the same CPU "
                        "time as the direct run (the CPU row), so the rest of the gap is the encode's wall "
                        "time moving with the other work on the machine between the runs (see the per-round "
                        "ratios and the load averages), not work nommer adds.")
    finally:
        if feederd is not None:
            feederd.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home_of(root), ignore_errors=True)
    report.write()


if __name__ == "__main__":
    main()
