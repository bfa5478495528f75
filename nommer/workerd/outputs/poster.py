"""Poster: one still, the most representative frame of the first minutes, or
the frame at ``at_s``.

Spec (normalized, ``nommer.core.outputs.schema``): ``name`` (file name under
the destination prefix; ``.jpg``/``.jpeg`` gives a JPEG, ``.png`` a PNG),
``width`` (pixels, optional: the source's width by default; never upscaled,
the height follows the aspect ratio, both even), ``at_s`` (seconds,
optional).

Without ``at_s``: ffmpeg's ``thumbnail`` filter (PeerTube's poster recipe:
``thumbnail=N``, ``-frames:v 1``), which keeps the frame whose colour
histogram is nearest the batch's average, so a black or white opening
frame, a flash or a title card is passed over. The batch is
``FRAMES_TO_ANALYZE`` frames spread evenly over the first
``WINDOW_S`` seconds (input ``-t``), picked with the thumbnails' selection
filter, so the choice covers the first minutes while the filter holds only
that many (scaled) frames in memory.

With ``at_s``: the frame at that time (input ``-ss``, which decodes from the
keyframe before and drops the frames before ``at_s``).

The frame's time is read back from a ``framecrc`` side output of the same
run (``.<file>.frames`` beside the poster, not uploaded).
"""

import os

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.common import progress_args, scaled_size
from nommer.workerd.outputs.step import OutputResult, Step
from nommer.workerd.outputs.thumbnails import (
    every_interval_filter, frame_times, frame_times_args, local_path, number, output_file,
    picture_input, require_video, weight_for)

#: Seconds of the source the representative frame is chosen from.
WINDOW_S = 120
#: Frames the thumbnail filter compares (spread over WINDOW_S), at most...
FRAMES_TO_ANALYZE = 50
#: ...and at least this many, whatever the picture size.
MIN_FRAMES_TO_ANALYZE = 4
#: Memory (bytes) the thumbnail filter's batch of scaled frames may take
#: (counted at 3 bytes per pixel, the worst case of 4:4:4 sources).
BATCH_MEMORY_BYTES = 256 * 1024 * 1024
#: JPEG quality (ffmpeg's -q:v, 2 best .. 31 worst).
JPEG_QUALITY = 2


def _is_jpeg(name):
    return name.lower().endswith((".jpg", ".jpeg"))


def frames_to_analyze(width, height):
    """The thumbnail filter's batch size for frames of ``width`` x
    ``height`` pixels: FRAMES_TO_ANALYZE, fewer when the batch would pass
    BATCH_MEMORY_BYTES, never fewer than MIN_FRAMES_TO_ANALYZE."""
    fit = BATCH_MEMORY_BYTES // max(1, width * height * 3)
    return int(max(MIN_FRAMES_TO_ANALYZE, min(FRAMES_TO_ANALYZE, fit)))


def _times_path(work_dir, name):
    directory, _, base = name.rpartition("/")
    return local_path(work_dir, f"{directory}/.{base}.frames" if directory else f".{base}.frames")


def _check_at(spec, source):
    at_s = spec.get("at_s")
    if at_s is None:
        return None
    at_s = float(at_s)
    if source.duration_s is not None and at_s >= source.duration_s:
        raise PermanentJobError(
            f"poster at_s={number(at_s)} s is beyond the source's duration ({source.duration_s:.3f} s): "
            f"ask for a time before the end")
    return at_s


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra):
    """One ffmpeg run writing ``<work_dir>/<name>`` (it creates the
    directories the name has).

    :param spec: normalized poster output (``name``; ``width`` pixels and
        ``at_s`` seconds, each optional).
    :param source: ``SourceInfo``.
    :returns: ``[Step]``; ``expected_s`` is the seconds of source read
        (min(WINDOW_S, duration)), None with ``at_s`` (one frame is read).
    :raises PermanentJobError: the source has no video, or ``at_s`` is at or
        beyond its duration.
    """
    require_video(source, "a poster")
    at_s = _check_at(spec, source)
    width, height = scaled_size(source.width, source.height, width=spec.get("width"))
    name = spec["name"]
    out = local_path(work_dir, name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    scale = f"scale={width}:{height},setsar=1"
    if at_s is None:
        read_s = min(WINDOW_S, source.duration_s) if source.duration_s else WINDOW_S
        batch = frames_to_analyze(width, height)
        head = picture_input(ffmpeg_bin, input_path, "-t", number(WINDOW_S))
        chain = f"{every_interval_filter(read_s / batch)},{scale},thumbnail={batch}"
        expected_s = read_s
    else:
        read_s = None
        head = picture_input(ffmpeg_bin, input_path, "-ss", number(at_s))
        chain = scale
        expected_s = None
    graph = f"[0:V:0]{chain},split=2[times][poster]"
    quality = ["-q:v", str(JPEG_QUALITY)] if _is_jpeg(name) else []
    argv = head + [
        "-filter_complex", graph,
        "-map", "[times]", "-frames:v", "1", *frame_times_args(_times_path(work_dir, name)),
        "-map", "[poster]", "-frames:v", "1", "-fps_mode", "passthrough", *quality, "-update", "1",
        *progress_args(out)]
    return [Step(what=f"poster {name}", argv=argv, expected_s=expected_s, weight=weight_for(read_s or 1.0))]


def finish(spec, source, steps, work_dir):
    """The poster the step wrote.

    :returns: ``OutputResult``: the picture (role MEDIA), info ``{"width",
        "height"}`` (pixels) and ``"time_s"`` (seconds into the source of
        the frame shown) when ffmpeg reported it.
    :raises PermanentJobError: ffmpeg wrote no picture (no video frame at
        ``at_s``, or none it could decode).
    """
    name = spec["name"]
    if not os.path.isfile(local_path(work_dir, name)):
        if spec.get("at_s") is not None:
            raise PermanentJobError(f"the source has no video frame at poster at_s={number(spec['at_s'])} s: "
                                    f"its video ends before that time")
        raise PermanentJobError("ffmpeg made no poster: the source's video has no frame it could decode")
    width, height = scaled_size(source.width, source.height, width=spec.get("width"))
    info = {"width": width, "height": height}
    times = frame_times(_times_path(work_dir, name))
    if times:
        at = float(spec["at_s"]) if spec.get("at_s") is not None else 0.0
        info["time_s"] = round(at + times[0], 3)
    return OutputResult(files=[output_file(work_dir, name)], info=info)
