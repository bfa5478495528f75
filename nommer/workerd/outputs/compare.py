"""The compare output: a distorted file measured against the job's source.

``{"type": "compare", "distorted": URI, "metrics": [...], "model": ...,
"subsample": N, "name": "compare.json"}`` in a job whose ``source_path`` is
the reference (ElasticRecode's VMAF API). The outputs nommer fetches the
distorted file into scratch and gives its path as ``distorted_input``.
Two runs:

1. the video packets' timestamps of both files (``-c copy -f framecrc``:
   no decoding), from which ``finish`` reads each video's duration;
2. the measurement (``quality.pair_step``: the distorted video scaled to
   the reference's display size, its frame rate brought to the
   reference's, frames paired by index).

``finish`` refuses a pair whose videos' durations differ by more than one
frame of the reference (a compare pairs frame k with frame k: a file cut
short or padded would score nonsense), then writes the per-frame report
(``quality.write_report``) at ``name`` under dest_path and gives the pooled
figures as the output's info: ``vmaf`` (``{"mean", "min",
"harmonic_mean", "p1", "p5"}``), ``psnr_y`` (dB), ``ssim`` (0..1),
``frames``, and ``model``/``subsample`` when VMAF was asked.
"""

import os

from nommer.core.errors import PermanentJobError
from nommer.core.storage.content_types import content_type_for_name
from nommer.workerd.outputs import common, quality
from nommer.workerd.outputs.framecrc import read_framecrc
from nommer.workerd.outputs.step import MEDIA, OutputFile, OutputResult, Step

#: Scratch directory (in the work dir) of the raw logs.
RAW_DIR = ".compare"
#: Slack on the duration check beyond one frame, seconds (timestamps in
#: milliseconds, as Matroska's, round each end).
TIMESTAMP_SLACK_S = 0.002
#: The tolerance when the reference's frame rate is unknown, seconds.
UNKNOWN_FPS_TOLERANCE_S = 0.1


def _raw(spec, work_dir):
    base = os.path.join(work_dir, RAW_DIR, spec["name"])
    return {"packets": base + ".packets.txt", "log": base + ".vmaf.json"}


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, distorted_input, vmaf_bin=None, **extra):
    """The two runs of a compare (module docstring): ``[packets step,
    pair step]``.

    :param distorted_input: absolute path of the fetched distorted file.
    :param vmaf_bin: the VMAF-capable ffmpeg, or None.
    :raises PermanentJobError: the reference (the job's source) has no
        video; VMAF asked without ``vmaf_bin`` (the sentence says how to
        install it).
    """
    if not source.has_video:
        raise PermanentJobError("the reference (source_path) has no video stream: a compare "
                                "measures video")
    raw = _raw(spec, work_dir)
    settings = quality.settings_of(spec)
    packets = common.input_args(ffmpeg_bin, distorted_input, input_path)
    packets += ["-map", "0:v:0?", "-map", "1:v:0", "-c", "copy", "-f", "framecrc"]
    packets += common.progress_args(common.make_parent(raw["packets"]))
    duration = source.duration_s
    pixels = source.width * source.height / 1e6
    return [
        Step(what=f"compare {spec['name']} (durations)", argv=packets, expected_s=duration,
             weight=(duration or 1.0) * 0.01, readable=(distorted_input,)),
        quality.pair_step(distorted_input, input_path, metrics=settings["metrics"], model=spec["model"],
                          subsample=settings["subsample"], ffmpeg_bin=ffmpeg_bin, vmaf_bin=vmaf_bin,
                          log_path=raw["log"], ref_width=source.width, ref_height=source.height,
                          fps=source.fps, what=f"compare {spec['name']}",
                          weight=(duration or 1.0) * pixels, expected_s=duration),
    ]


def read_packet_durations(path):
    """``{stream index: seconds}`` of each stream in a ``-f framecrc`` file:
    from its first packet's pts to its last packet's pts plus duration (a
    packet without a duration counts as long as the median gap between
    packets), in the stream's ``#tb``."""
    packets, time_bases = read_framecrc(path)
    durations = {}
    for index, found in packets.items():
        num, den = time_bases.get(index, (1, 1))
        pts = sorted(p for p, _ in found)
        gaps = sorted(b - a for a, b in zip(pts, pts[1:]) if b > a)
        typical = gaps[len(gaps) // 2] if gaps else 0
        end = max(p + (d if d > 0 else typical) for p, d in found)
        durations[index] = (end - pts[0]) * num / den
    return durations


def check_durations(distorted_s, reference_s, fps):
    """Raise ``PermanentJobError`` when the videos' durations (seconds)
    differ by more than one frame at ``fps`` (the reference's, a Fraction;
    UNKNOWN_FPS_TOLERANCE_S when None) plus TIMESTAMP_SLACK_S."""
    tolerance = (1 / float(fps) if fps else UNKNOWN_FPS_TOLERANCE_S) + TIMESTAMP_SLACK_S
    if abs(distorted_s - reference_s) > tolerance:
        raise PermanentJobError(f"the distorted file lasts {distorted_s:.2f} s and the reference "
                                f"{reference_s:.2f} s: a compare needs the same duration")


def finish(spec, source, steps, work_dir):
    """Check the durations, write the per-frame report at ``spec["name"]``,
    return it with the pooled figures as info (module docstring).

    :raises PermanentJobError: the distorted file has no video; the
        durations differ (``check_durations``); a log is unreadable."""
    raw = _raw(spec, work_dir)
    try:
        durations = read_packet_durations(raw["packets"])
    except (OSError, ValueError, IndexError) as e:
        raise PermanentJobError(f"the durations of the compared files could not be read: {e}") from None
    if len(durations) < 2:
        raise PermanentJobError("the distorted file has no video stream: a compare measures video")
    check_durations(durations[0], durations[1], source.fps)
    settings = quality.settings_of(spec)
    pooled, frames = quality.read_report(raw["log"], settings["metrics"])
    local = common.local_path(work_dir, spec["name"])
    quality.write_report(local, settings, pooled, frames)
    info = dict(pooled)
    if settings["model"]:
        info.update(model=settings["model"], subsample=settings["subsample"])
    return OutputResult(files=[OutputFile(path=spec["name"], local=local, bytes=os.path.getsize(local),
                                          content_type=content_type_for_name(spec["name"]), role=MEDIA)],
                        info=info)
