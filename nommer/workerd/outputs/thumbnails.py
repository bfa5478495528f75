"""Thumbnails: a JPEG every ``interval_s`` seconds, aspect ratio kept.

Spec (normalized, ``nommer.core.outputs.schema``): ``interval_s`` (seconds),
``width`` (pixels; never upscaled, the height follows the aspect ratio, both
even), ``dir`` (directory under the destination prefix). The files are
``<dir>/thumb_00000.jpg``, ``thumb_00001.jpg``... (0-based): thumbnail k is
the first frame at or after k x interval_s seconds of the video.

Picking the frames: ``select='gte(t,selected_n*I)'`` on timestamps that
start at 0 (``setpts=PTS-STARTPTS``). Each thumbnail's time is k x I
exactly, measured from the first one, so the times never drift; the source's
own timestamps are kept, so a variable-frame-rate source is sampled at its
real times. The two recipes seen elsewhere are worse: PeerTube's
``select='isnan(prev_selected_t)+gte(t-prev_selected_t,I)'`` spaces each
pick from the previous one, so when I is not a whole number of frames the
error adds up (10 fps, I = 0.55 s: picks at 0, 0.6, 1.2, 1.8, 2.4 s instead
of 0, 0.6, 1.1, 1.7, 2.2, 2.8 s, one thumbnail short over 3 s; after
``setpts=N/FRAME_RATE/TB`` the times are also wrong for variable frame
rates); ``fps=1/I`` restamps the frames it keeps, so which source frame a
thumbnail shows cannot be told.

This module also holds what the picture outputs (poster, storyboard)
share: the selection filter, the argv head with input options, and reading
the frame times ffmpeg reports through a ``framecrc`` side output.
"""

import os

from nommer.core.errors import PermanentJobError
from nommer.core.storage.content_types import content_type_for_name
from nommer.workerd.outputs.common import input_args, local_path, progress_args, scaled_size
from nommer.workerd.outputs.step import MEDIA, OutputFile, OutputResult, Step

#: File name pattern of the thumbnails (ffmpeg's image2 numbering, from 0).
NAME_PATTERN = "thumb_%05d.jpg"
#: JPEG quality (ffmpeg's -q:v, 2 best .. 31 worst).
JPEG_QUALITY = 3
#: Decode-only work of one source second, relative to the ladder steps'
#: weights (seconds x encoded megapixels).
WEIGHT_PER_SOURCE_S = 0.05
#: A frame this close (seconds) before a pick time counts as at it (the
#: pick times are decimal; frame times are fractions of a time base).
TIME_TOLERANCE_S = 0.0005


def number(x):
    """``x`` (seconds, float) as ffmpeg reads it: fixed point, no exponent,
    no trailing zeros (``0.55``, ``10``)."""
    text = f"{float(x):.6f}".rstrip("0").rstrip(".")
    return text or "0"


def every_interval_filter(interval_s):
    """Filter chain (str) keeping, from a video whose timestamps it makes
    start at 0, the first frame at or after each multiple of
    ``interval_s`` (seconds): ``setpts=PTS-STARTPTS,select='gte(t,...)'``.
    Frame k it keeps is the one at k x interval_s (or the first after)."""
    threshold = f"selected_n*{number(interval_s)}-{number(TIME_TOLERANCE_S)}"
    return f"setpts=PTS-STARTPTS,select='gte(t,{threshold})'"


def picture_input(ffmpeg_bin, input_path, *input_options):
    """``input_args`` with ``input_options`` (e.g. ``-ss 12.5``, ``-t 120``)
    placed before the source's ``-i``."""
    argv = input_args(ffmpeg_bin, input_path)
    i = argv.index("-i")
    return argv[:i] + [str(o) for o in input_options] + argv[i:]


def frame_times_args(path):
    """Output options writing, for each frame of the filter output it is
    mapped after, one ``framecrc`` line (``frame_times`` reads them):
    rawvideo CRCs, cheap, with the frames' timestamps untouched."""
    return ["-fps_mode", "passthrough", "-c:v", "rawvideo", "-f", "framecrc", path]


def frame_times(path):
    """Timestamps (seconds, floats, in output order) of the frames listed in
    the ``framecrc`` file at ``path``; ``[]`` if it is missing or empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    time_base = 1.0
    times = []
    for line in lines:
        if line.startswith("#tb 0:"):
            num, _, den = line.split(":", 1)[1].strip().partition("/")
            time_base = int(num) / int(den or 1)
        elif line and not line.startswith("#"):
            fields = [field.strip() for field in line.split(",")]
            if len(fields) >= 3 and fields[0] == "0":
                times.append(int(fields[2]) * time_base)
    return times


def require_video(source, what):
    """Raise ``PermanentJobError`` if ``source`` (``SourceInfo``) has no
    video stream; ``what`` names the output for the message."""
    if not source.has_video:
        raise PermanentJobError(f"the source has no video stream, so it cannot give {what}")


def weight_for(read_s):
    """``Step.weight`` of a step decoding ``read_s`` seconds of source (None: unknown)."""
    return max(0.01, (read_s if read_s else 1.0) * WEIGHT_PER_SOURCE_S)


def output_file(work_dir, relative, role=MEDIA):
    """``OutputFile`` of the file the steps wrote at ``relative`` (under ``work_dir``)."""
    local = local_path(work_dir, relative)
    return OutputFile(path=relative, local=local, bytes=os.path.getsize(local),
                      content_type=content_type_for_name(relative), role=role)


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra):
    """One ffmpeg run writing ``<work_dir>/<dir>/thumb_NNNNN.jpg`` (it
    creates the directory).

    :param spec: normalized thumbnails output (``interval_s`` seconds,
        ``width`` pixels, ``dir``).
    :param source: ``SourceInfo``.
    :returns: ``[Step]``; ``expected_s`` is the source's duration (seconds).
    :raises PermanentJobError: the source has no video.
    """
    require_video(source, "thumbnails")
    width, height = scaled_size(source.width, source.height, width=spec["width"])
    os.makedirs(local_path(work_dir, spec["dir"]), exist_ok=True)
    pattern = os.path.join(local_path(work_dir, spec["dir"]), NAME_PATTERN)
    graph = (f"[0:V:0]{every_interval_filter(spec['interval_s'])},"
             f"scale={width}:{height},setsar=1[thumbs]")
    argv = picture_input(ffmpeg_bin, input_path) + [
        "-filter_complex", graph, "-map", "[thumbs]",
        "-fps_mode", "passthrough", "-q:v", str(JPEG_QUALITY), "-start_number", "0",
        *progress_args(pattern)]
    return [Step(what=f"thumbnails {spec['dir']}/", argv=argv, expected_s=source.duration_s,
                 weight=weight_for(source.duration_s))]


def numbered(work_dir, directory, pattern):
    """Relative paths (``directory/name``) of the files ``pattern`` (a
    ``%0Nd`` pattern) names from 0 up, as long as they exist."""
    found = []
    while True:
        relative = f"{directory}/{pattern % len(found)}"
        if not os.path.isfile(local_path(work_dir, relative)):
            return found
        found.append(relative)


def finish(spec, source, steps, work_dir):
    """The thumbnails the step wrote.

    :returns: ``OutputResult``: the JPEGs (role MEDIA, in time order), info
        ``{"count", "width", "height", "interval_s"}`` (pixels, seconds).
    :raises PermanentJobError: ffmpeg wrote none (no decodable video frame).
    """
    width, height = scaled_size(source.width, source.height, width=spec["width"])
    names = numbered(work_dir, spec["dir"], NAME_PATTERN)
    if not names:
        raise PermanentJobError("ffmpeg made no thumbnail: the source's video has no frame it could decode")
    files = [output_file(work_dir, name) for name in names]
    return OutputResult(files=files, info={"count": len(files), "width": width, "height": height,
                                           "interval_s": spec["interval_s"]})

