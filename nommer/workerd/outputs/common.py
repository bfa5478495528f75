"""Pieces every output builder shares: the input and progress options,
bitrates, scaled sizes, where files go in the work dir, and the lenient
number readers for ffprobe's and the MPD's text. Pure functions (but
``make_parent``)."""

import math
import os
from fractions import Fraction

#: ffmpeg's encoder of each ``codec`` value of the schema.
VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
#: Keyframe grid of every video output: an IDR every this many seconds.
KEYFRAME_INTERVAL_S = 2


def input_args(ffmpeg_bin, input_path, *extra_inputs):
    """``[ffmpeg_bin, -hide_banner, -nostdin, -y, -i, input_path]`` then
    ``-i`` for each of ``extra_inputs`` (each an absolute path, or a list of
    input options ending with the path, e.g. ``["-loop", "1", path]``)."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", input_path]
    for extra in extra_inputs:
        if isinstance(extra, (list, tuple)):
            argv += list(extra[:-1]) + ["-i", extra[-1]]
        else:
            argv += ["-i", extra]
    return argv


def progress_args(output_path):
    """``[-progress, pipe:1, -nostats, output_path]``: the end of every argv
    (the worker reads progress from stdout)."""
    return ["-progress", "pipe:1", "-nostats", output_path]


def parse_bitrate(value):
    """A schema bitrate (int bits/s, ``"128k"``, ``"7.8M"``) -> int bits per second.
    Raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a bitrate: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    scale = 1
    if text.endswith("k"):
        scale, text = 1000, text[:-1]
    elif text.endswith("M"):
        scale, text = 1000000, text[:-1]
    return int(round(float(text) * scale))


def even(n):
    """``n`` rounded to the nearest even integer, at least 2 (yuv420p needs even sides)."""
    return max(2, int(round(n / 2.0)) * 2)


def scaled_size(src_w, src_h, *, width=None, height=None):
    """Size (w, h), even, of a ``src_w`` x ``src_h`` picture scaled to
    ``width`` or ``height`` (height wins if both: the other side follows the
    aspect ratio), never larger than the source (no upscaling). Neither
    given: the source size (made even)."""
    if height is not None:
        h = min(height, src_h)
        return even(src_w * h / src_h), even(h)
    if width is not None:
        w = min(width, src_w)
        return even(w), even(src_h * w / src_w)
    return even(src_w), even(src_h)


def bounded_size(src_w, src_h, *, height=None, width=None):
    """Size (w, h), even, of a ``src_w`` x ``src_h`` picture whose short side
    is at most ``height`` and long side at most ``width`` (``height`` wins
    if both; the other side follows the aspect ratio), never larger than
    the source (no upscaling), as the ladder reads a rung's size: for a
    landscape or square source ``height`` bounds the height and ``width``
    the width; for a portrait one (``src_h > src_w``) ``height`` bounds the
    width and ``width`` the height (720 on a 1080x1920 source gives
    720x1280). Neither given: the source size (made even)."""
    if src_h > src_w:
        if height is not None:
            return scaled_size(src_w, src_h, width=height)
        return scaled_size(src_w, src_h, height=width)
    return scaled_size(src_w, src_h, width=width, height=height)


def gop_frames(fps):
    """Frames between keyframes on the KEYFRAME_INTERVAL_S grid at ``fps``
    (a Fraction or float), at least 1."""
    return max(1, int(math.floor(float(fps) * KEYFRAME_INTERVAL_S + 0.5)))


def keyframe_args(fps):
    """x264/x265 options for IDRs exactly on the KEYFRAME_INTERVAL_S grid and
    nowhere else (so rungs switch cleanly and DASH segments align):
    ``-force_key_frames expr:gte(t,n_forced*2)``, ``-g``/``-keyint_min`` of
    one grid interval, ``-sc_threshold 0`` (no scene-cut IDRs)."""
    g = str(gop_frames(fps)) if fps else "250"
    return ["-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_S})",
            "-g", g, "-keyint_min", g, "-sc_threshold", "0"]


def local_path(work_dir, relative):
    """Absolute path in ``work_dir`` of the ``/``-separated ``relative`` path
    (an output's ``name``): where a step writes that file."""
    return os.path.join(work_dir, *relative.split("/"))


def make_parent(path):
    """Create the directory ``path`` goes in (ffmpeg does not); return ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def to_int(value):
    """``int(value)``, or None when it is not a number (None, ``"N/A"``, ``""``)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def to_float(value):
    """``float(value)``, or None when it is not a number (None, ``"N/A"``)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def positive_fraction(value):
    """A rate or ratio as ffprobe and MPDs write it (``"30000/1001"``,
    ``"30"``, ``"29.97/1"``) -> ``Fraction`` > 0; None for anything else
    (``"0/0"``, ``"N/A"``, a negative, not a str)."""
    if not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    try:
        result = Fraction(num.strip()) / Fraction(den.strip() or 1)
    except (ValueError, ZeroDivisionError):
        return None
    return result if result > 0 else None
