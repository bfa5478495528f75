"""Target-quality encoding's two figures (issue 14).

The source: BENCH_TARGET_S seconds (default 20) of 1280x720 30 fps video, lavfi ``testsrc2``
(full-frame synthetic motion) with a light grain changing every frame (``noise``), stored
near-lossless (x264 CRF 8). Every ffmpeg run below is the very argv nommer plans (``mp4.plan``,
``target.refine``'s probes, ``quality.pair_step``), run directly with ``subprocess`` (no
sandbox), one after the other, in a session of its own as the worker's are; each run's wall
and CPU time (user + system of the child) recorded. x264 preset BENCH_TARGET_PRESET (default
``medium``, the schema's default): the probes use the final encode's preset, so it sets both.

1. The reference: the mp4 output at the fixed CRF 23 (what an mp4 without a target gets),
   measured with VMAF (every frame, ``vmaf_v0.6.1``): its mean and 5th-percentile scores, its
   video bitrate.
2. The target-quality mp4 asking ``{"vmaf": <CRF 23's p5>, "pool": "p5"}``: ``target.refine``
   (sample cut, probes, their VMAF runs: the probe time), then the final encode at the CRF it
   chose (the final encode time), measured the same way (the achieved p5).

3. The same with ``{"vmaf": 93, "pool": "mean"}``: a usual target, below what CRF 23 gives
   this (easy) title.

Figures: probe time / final encode time (target <= 0.5), wall and CPU, by kind of run, and
estimated for longer titles of the same content from the per-second CPU costs measured; the
bitrate saved against CRF 23 at equal or better 5th-percentile VMAF (the achieved p5 against
CRF 23's p5 beside it), and at the usual target.
"""

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _report import Report, fmt  # noqa: E402
from nommer.conf import defaults  # noqa: E402
from nommer.core.outputs.normalize import normalize_output  # noqa: E402
from nommer.workerd.outputs import mp4, quality, target  # noqa: E402
from nommer.workerd.outputs.vmaf import find_vmaf_ffmpeg  # noqa: E402
from tests.workerd.outputs.media import probe  # noqa: E402

DURATION_S = float(os.environ.get("BENCH_TARGET_S", "20"))
PRESET = os.environ.get("BENCH_TARGET_PRESET", "medium")
WIDTH, HEIGHT, FPS = 1280, 720, 30
#: ``-t`` before each argv's output, as the worker caps it (MAX_OUTPUT_DURATION_FACTOR x duration).
CAP_S = DURATION_S * defaults.MAX_OUTPUT_DURATION_FACTOR


class Runs:
    """Runs steps as the worker does (``-t`` capped), recording ``(what, wall s, CPU s)``."""

    def __init__(self):
        self.log = []

    def run_step(self, step):
        argv = list(step.argv)
        if step.capped:
            argv = argv[:-1] + ["-t", f"{CAP_S:.3f}"] + argv[-1:]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1800,
                              start_new_session=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{step.what}: {done.stderr.decode(errors='replace')[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.log.append((step.what, wall, cpu))
        return wall, cpu

    async def run(self, steps, on_fraction=None):
        for step in steps:
            self.run_step(step)

    def total(self, since=0):
        return (sum(w for _, w, _ in self.log[since:]), sum(c for _, _, c in self.log[since:]))


def make_source(directory):
    path = os.path.join(directory, "source720.mp4")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={DURATION_S},"
                          "noise=alls=3:allf=t",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "8", "-pix_fmt", "yuv420p", path],
                   check=True)
    return path


def encode(runs, spec, source, src, work_dir):
    """Plan, run, finish the mp4 ``spec``: (wall s, CPU s, OutputResult)."""
    steps = mp4.plan(spec, source, ffmpeg_bin="ffmpeg", input_path=src, work_dir=work_dir)
    start = len(runs.log)
    for step in steps:
        runs.run_step(step)
    wall, cpu = runs.total(start)
    return wall, cpu, mp4.finish(spec, source, steps, work_dir)


def measure(runs, spec, source, src, result, work_dir, vmaf_bin):
    """VMAF of the encoded mp4 against the source (every frame): the ``quality`` info."""
    spec = dict(spec, quality={"metrics": ["vmaf"], "model": "vmaf_v0.6.1", "subsample": 1})
    steps = quality.plan(spec, source, result, ffmpeg_bin="ffmpeg", vmaf_bin=vmaf_bin, input_path=src,
                         work_dir=work_dir)
    for step in steps:
        runs.run_step(step)
    return quality.finish(spec, source, result, steps, work_dir).info["quality"]


def target_run(runs, tmp, name, target_spec, source, src, vmaf_bin):
    """``target.refine`` then the final encode of an mp4 with ``target_spec``, measured:
    a dict of the probe runs (``probe_steps``: (what, wall, CPU)), probe and final wall/CPU,
    the final OutputResult and quality info, the refine's info and its total wall time."""
    work = os.path.join(tmp, name)
    os.makedirs(work)
    spec = normalize_output({"type": "mp4", "name": f"{name}.mp4", "encoder_preset": PRESET,
                             "target": target_spec})
    start = len(runs.log)
    t = time.perf_counter()
    refined, info = asyncio.run(target.refine(
        spec, source, run=runs.run, report=lambda f: None, ffmpeg_bin="ffmpeg", vmaf_bin=vmaf_bin,
        input_path=src, work_dir=work))
    refine_wall = time.perf_counter() - t
    out = {"probe_steps": runs.log[start:], "refine_wall": refine_wall, "info": info["target"]}
    out["probe_wall"], out["probe_cpu"] = runs.total(start)
    out["final_wall"], out["final_cpu"], out["result"] = encode(runs, refined, source, src, work)
    out["quality"] = measure(runs, refined, source, src, out["result"], work, vmaf_bin)
    return out


def by_kind(steps, prefix, field):
    """Sum of ``field`` (1 wall, 2 CPU) of the steps whose ``what`` starts with ``prefix``, and their count."""
    chosen = [step for step in steps if step[0].startswith(prefix)]
    return sum(step[field] for step in chosen), len(chosen)


def estimated_ratio(run, duration_s):
    """Probe CPU / final encode CPU expected for a ``duration_s`` title of the same content,
    from the per-second CPU costs measured here (sample cut per second cut, probe encode per
    second encoded, VMAF per second scored, final encode per second of title) and the same
    number of probes; None when such a title is probed whole."""
    windows = target.sample_windows(duration_s)
    measured = target.sample_windows(DURATION_S)
    if not windows or not measured:
        return None
    scored, scored_here = sum(l for _, l in windows), sum(l for _, l in measured)
    lead = target.LEAD_IN_S
    steps = run["probe_steps"]
    probes = len(run["info"]["probes"])
    cut_cpu, _ = by_kind(steps, "target-quality sample", 2)
    enc_cpu, _ = by_kind(steps, "target-quality probe", 2)   # encodes and their lead-in cuts
    vmaf_cpu, _ = by_kind(steps, "target-quality score", 2)
    final_per_s = run["final_cpu"] / DURATION_S
    per_probe_s = scored + lead
    expected = (cut_cpu / (scored_here + lead) * per_probe_s
                + enc_cpu / (probes * (scored_here + lead)) * per_probe_s * probes
                + vmaf_cpu / (probes * scored_here) * scored * probes)
    return expected / (final_per_s * duration_s)


def main():
    vmaf_bin = find_vmaf_ffmpeg(defaults)
    if not vmaf_bin:
        raise SystemExit("no VMAF-capable ffmpeg: pip install 'nommer[vmaf]'")
    report = Report(
        "Target quality: probe cost and bitrate saved (bench/target_quality.py)",
        f"A {DURATION_S:g} s {WIDTH}x{HEIGHT} {FPS} fps source (testsrc2 with a light grain), the mp4 "
        f"output at x264 {PRESET}: (1) at the fixed CRF 23, measured with VMAF (every frame); (2) with "
        "target {vmaf: CRF 23's 5th percentile, pool: p5}: target.refine's runs (sample cut, probes at "
        "the same preset, their VMAF runs) then the final encode at the chosen CRF, measured the same "
        "way; (3) the same with target {vmaf: 93, pool: mean}, a usual target below what CRF 23 "
        "gives this title. The very argvs nommer plans, run directly (no sandbox), one after the other.")
    with tempfile.TemporaryDirectory(prefix="bench-target-") as tmp:
        src = make_source(tmp)
        source = probe(src)
        runs = Runs()

        fixed_dir = os.path.join(tmp, "fixed")
        os.makedirs(fixed_dir)
        fixed = normalize_output({"type": "mp4", "name": "crf23.mp4", "crf": 23, "encoder_preset": PRESET})
        fixed_wall, fixed_cpu, fixed_result = encode(runs, fixed, source, src, fixed_dir)
        fixed_q = measure(runs, fixed, source, src, fixed_result, fixed_dir, vmaf_bin)
        fixed_p5 = fixed_q["vmaf"]["p5"]
        equal = target_run(runs, tmp, "equal", {"vmaf": fixed_p5, "pool": "p5"}, source, src, vmaf_bin)
        usual = target_run(runs, tmp, "usual", {"vmaf": 93, "pool": "mean"}, source, src, vmaf_bin)

    t_info = equal["info"]
    achieved_p5 = equal["quality"]["vmaf"]["p5"]
    fixed_bps = fixed_result.info["bitrate_average"]
    final_bps = equal["result"].info["bitrate_average"]
    report.ratio("probe time / final encode time (wall: target.refine's runs / the encode at the "
                 "chosen CRF)", equal["probe_wall"], equal["final_wall"], unit="s", target=0.5)
    report.ratio("the same in CPU time (user + system of the ffmpeg runs)", equal["probe_cpu"],
                 equal["final_cpu"], unit="s")
    parts = []
    for label, prefix in (("sample cut", "target-quality sample"), ("probe encodes and lead-in cuts",
                                                                    "target-quality probe"),
                          ("VMAF", "target-quality score")):
        wall, n = by_kind(equal["probe_steps"], prefix, 1)
        cpu, _ = by_kind(equal["probe_steps"], prefix, 2)
        parts.append(f"{label} {fmt(wall, 's')} / {fmt(cpu, 's')} ({n} runs)")
    report.row("probe time by kind (wall / CPU)", "; ".join(parts))
    report.row("probes (CRF -> p5 VMAF of the sample, video kb/s)",
               ", ".join(f"{p['crf']:g} -> {p['score']:.2f} ({p['bitrate'] / 1000:.0f})"
                         for p in t_info["probes"]))
    report.row("seconds scored per probe (of the title's)",
               f"{fmt(t_info['sample_s'], 's')} of {fmt(DURATION_S, 's')} "
               f"(+ {fmt(target.LEAD_IN_S, 's')} lead-in encoded, not scored)"
               if DURATION_S > target.WHOLE_SOURCE_MAX_S else "the whole source")
    for longer in (60, 120, 600, 3600):
        estimate = estimated_ratio(equal, longer)
        if estimate is not None:
            windows = target.sample_windows(longer)
            report.row(f"estimated probe / final CPU for a {longer} s title of this content "
                       f"({len(windows)} windows, same probes; from the per-second costs above)",
                       f"{estimate:.3f}", "≤ 0.5", "met" if estimate <= 0.5 else "NOT met")
    saved = 1.0 - final_bps / fixed_bps
    equal_or_better = achieved_p5 >= fixed_p5
    report.figure("bitrate saved against fixed CRF 23 at equal or better p5 VMAF "
                  f"(target = CRF 23's p5; CRF {t_info['crf']:g} chosen)", saved * 100, "%",
                  ok=None if equal_or_better else False)
    report.row("video bitrate: target-quality encode / CRF 23",
               f"{final_bps / 1000:.0f} kb/s / {fixed_bps / 1000:.0f} kb/s")
    report.row("p5 VMAF: achieved (measured on the final encode) / CRF 23's (the target)",
               f"{achieved_p5:.2f} / {fixed_p5:.2f} (predicted {t_info['predicted']})",
               "≥ CRF 23's", "met" if equal_or_better else "NOT met")
    report.row("mean VMAF: target-quality encode / CRF 23",
               f"{equal['quality']['vmaf']['mean']:.2f} / {fixed_q['vmaf']['mean']:.2f}")
    usual_bps = usual["result"].info["bitrate_average"]
    report.row(f"target mean 93 (CRF {usual['info']['crf']:g} chosen, {len(usual['info']['probes'])} "
               "probes): bitrate saved against CRF 23; achieved mean / p5 VMAF (CRF 23's)",
               f"{(1.0 - usual_bps / fixed_bps) * 100:.1f} % ({usual_bps / 1000:.0f} kb/s); "
               f"{usual['quality']['vmaf']['mean']:.2f} / {usual['quality']['vmaf']['p5']:.2f} "
               f"({fixed_q['vmaf']['mean']:.2f} / {fixed_p5:.2f})")
    report.ratio("target mean 93: probe time / final encode time (CPU; wall "
                 f"{fmt(usual['probe_wall'], 's')} / {fmt(usual['final_wall'], 's')})", usual["probe_cpu"],
                 usual["final_cpu"], unit="s")
    report.row("final encodes / CRF 23 encode, wall",
               f"{fmt(equal['final_wall'], 's')}, {fmt(usual['final_wall'], 's')} / {fmt(fixed_wall, 's')}")
    report.note(f"target.refine took {equal['refine_wall']:.2f} s of wall time in all, "
                f"{equal['refine_wall'] - equal['probe_wall']:.2f} s of it outside ffmpeg (Python, file reads).")
    report.note("Per title, a target equal to CRF 23's own p5 is met near CRF 23 by construction (a "
                "constant-quality encoder's score falls monotonically with the CRF): that bitrate figure "
                "measures what the search's safety margins cost (the CRF rounded down to 0.25, a probe "
                "within 0.5 accepted, so it lands at or below 23). Target quality saves bits when a "
                "title's target is below what CRF 23 gives it (the mean-93 row: an easy title), and "
                "spends more on hard titles to protect them.")
    report.note(f"Probe cost: each probe encodes the sample (windows of {target.WINDOW_S:g} s, "
                f"{target.SAMPLE_SHARE:.0%} of the title, {target.MAX_WINDOWS} at most, after a "
                f"{target.LEAD_IN_S:g} s lead-in; the whole source up to {target.WHOLE_SOURCE_MAX_S:g} s) "
                "and scores its windows, so on a short title one window plus the lead-in is a fifth of "
                "it per probe; the ratio falls with the title's length once the sample stops growing "
                f"({target.MAX_WINDOWS * target.WINDOW_S + target.LEAD_IN_S:g} s): the estimated rows.")
    report.write()


if __name__ == "__main__":
    main()
