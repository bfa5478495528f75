"""Quality metrics speed (issue 14): VMAF frames per second at 720p, with and without
subsampling.

A 1280x720 30 fps reference (lavfi testsrc2, BENCH_QUALITY_S seconds, default 10: 300
frames; x264 veryfast CRF 18) and a distorted version of it (a 640x360 rung, x264 veryfast
CRF 28) measured by the very runs nommer makes (``quality.pair_step``: the rung scaled up to
720p with bicubic, frames re-timed, libvmaf with the built-in ``vmaf_v0.6.1`` model), run
directly with ``subprocess`` (no sandbox), one after the other:

* VMAF alone, every frame (``n_subsample=1``);
* VMAF alone, every 4th frame (``n_subsample=4``, what a target-quality probe would use);
* nommer's default ``quality``: VMAF + PSNR + SSIM (ffmpeg's psnr and ssim filters in the
  same run), every frame;
* PSNR + SSIM alone on the system ffmpeg (no VMAF binary needed);
* the floor: decoding both files, scaling and re-timing them, no metric (``-f null``).

Figures: frames per second (reference frames / wall time) of each, and the subsampled run's
wall time against the full one's (the notes measured 0.5-0.6 on a 720p trailer), with the
pooled VMAF of both (the notes: within 0.2). BENCH_ROUNDS rounds (default 2), the order
reversed every other round, medians; CPU time (user + system of the children) beside the
walls, steadier on a shared machine. The VMAF binary is the imageio-ffmpeg wheel's
(``pip install 'nommer[vmaf]'``); libvmaf runs with as many threads as the machine has cores
(``quality.MAX_VMAF_THREADS`` at most).
"""

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report, fmt  # noqa: E402
from nommer.conf import defaults  # noqa: E402
from nommer.workerd.outputs import quality  # noqa: E402
from nommer.workerd.outputs.vmaf import find_vmaf_ffmpeg  # noqa: E402

DURATION_S = float(os.environ.get("BENCH_QUALITY_S", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
FPS = 30
WIDTH, HEIGHT = 1280, 720


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def make_media(directory):
    ref = os.path.join(directory, "ref720.mp4")
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={DURATION_S}",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", ref)
    rung = os.path.join(directory, "rung360.mp4")
    ffmpeg("-i", ref, "-vf", "scale=640:360", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", rung)
    return ref, rung


def timed(argv):
    """(wall seconds, CPU seconds of the child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, start_new_session=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace")[-2000:])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    vmaf_bin = find_vmaf_ffmpeg(defaults)
    if vmaf_bin is None:
        print("no VMAF-capable ffmpeg: pip install 'nommer[vmaf]'")
        return 1
    report = Report("Quality metrics: VMAF speed at 720p (bench/quality.py)",
                    f"A {DURATION_S:g} s 1280x720 {FPS} fps testsrc2 reference (x264 veryfast CRF 18) and a "
                    "640x360 rung of it (CRF 28), measured by the runs quality.pair_step makes (the rung "
                    "scaled up to 720p, bicubic; frames re-timed; libvmaf vmaf_v0.6.1, imageio-ffmpeg's "
                    f"binary), run directly. {ROUNDS} rounds, medians; frames per second = reference "
                    "frames / wall time.")
    frames = int(DURATION_S * FPS)
    with tempfile.TemporaryDirectory(prefix="nommer-bench-quality-") as d:
        ref, rung = make_media(d)

        def step(name, metrics, subsample=1):
            return quality.pair_step(rung, ref, metrics=metrics, model="vmaf_v0.6.1", subsample=subsample,
                                     ffmpeg_bin="ffmpeg", vmaf_bin=vmaf_bin,
                                     log_path=os.path.join(d, name, "log.json"), ref_width=WIDTH,
                                     ref_height=HEIGHT, fps=FPS, what=name)
        runs = {
            "vmaf": step("vmaf", ["vmaf"]),
            "vmaf_sub4": step("vmaf_sub4", ["vmaf"], subsample=4),
            "all": step("all", ["vmaf", "psnr", "ssim"]),
            "psnr_ssim": step("psnr_ssim", ["psnr", "ssim"]),
        }
        graph = runs["all"].argv[runs["all"].argv.index("-filter_complex") + 1]
        floor = graph.split(";")[0] + ";" + graph.split(";")[1].split(",split")[0] + "[r0];[r0]nullsink;[d0]null"
        floor_argv = [vmaf_bin, "-hide_banner", "-nostdin", "-y", "-i", rung, "-i", ref,
                      "-filter_complex", floor, "-an", "-f", "null", "-"]
        walls = {k: [] for k in list(runs) + ["floor"]}
        cpus = {k: [] for k in walls}
        order = list(walls)
        for r in range(ROUNDS):
            for key in (order if r % 2 == 0 else list(reversed(order))):
                argv = floor_argv if key == "floor" else runs[key].argv
                wall, cpu = timed(argv)
                walls[key].append(wall)
                cpus[key].append(cpu)
        wall = {k: statistics.median(v) for k, v in walls.items()}
        cpu = {k: statistics.median(v) for k, v in cpus.items()}
        full = quality.read_log(os.path.join(d, "vmaf", "log.json"), ["vmaf"])
        sub = quality.read_log(os.path.join(d, "vmaf_sub4", "log.json"), ["vmaf"])
        every = quality.read_log(os.path.join(d, "all", "log.json"), ["vmaf", "psnr", "ssim"])

    labels = {"vmaf": "VMAF alone, every frame", "vmaf_sub4": "VMAF alone, n_subsample=4",
              "all": "VMAF + PSNR + SSIM (the default quality), every frame",
              "psnr_ssim": "PSNR + SSIM alone (system ffmpeg)",
              "floor": "floor: decode both, scale and re-time, no metric"}
    for key, label in labels.items():
        report.row(f"{label}: frames per second of wall time (wall; CPU time; frames per CPU second)",
                   f"{frames / wall[key]:.1f} fps ({fmt(wall[key], 's')}; {fmt(cpu[key], 's')} CPU; "
                   f"{frames / cpu[key]:.1f} per CPU s)")
    report.ratio("n_subsample=4 wall / every frame wall (notes: 0.5-0.6)", wall["vmaf_sub4"], wall["vmaf"],
                 unit="s", target=0.7)
    report.ratio("the same in CPU time", cpu["vmaf_sub4"], cpu["vmaf"], unit="s")
    report.ratio("VMAF + PSNR + SSIM wall / VMAF alone wall", wall["all"], wall["vmaf"], unit="s")
    delta = abs(sub["vmaf"]["mean"] - full["vmaf"]["mean"])
    report.figure("|pooled VMAF mean, n_subsample=4 - every frame| (notes: within 0.2)", delta, "",
                  target=0.5)
    report.row("pooled VMAF mean / p5, every frame", f"{full['vmaf']['mean']:.2f} / {full['vmaf']['p5']:.2f}")
    report.row("pooled VMAF mean / p5, n_subsample=4", f"{sub['vmaf']['mean']:.2f} / {sub['vmaf']['p5']:.2f}")
    report.row("PSNR-Y / SSIM of the rung", f"{every['psnr_y']:.2f} dB / {every['ssim']:.4f}")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    report.note(f"{os.cpu_count()} CPUs, libvmaf n_threads={min(os.cpu_count() or 1, quality.MAX_VMAF_THREADS)}; "
                f"load average (1 min) {load:.2f} at the end: other work on the machine moves the wall times.")
    report.note("per-round walls: " + "; ".join(f"{k} " + ", ".join(f"{w:.2f}" for w in v)
                                                for k, v in walls.items()))
    report.note("media-notes §4.2 measured 86 fps for VMAF alone on a 720p trailer (1323 frames, 15.3 s) "
                "on a machine like this one; testsrc2 is busier than most films.")
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
