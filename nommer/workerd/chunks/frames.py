"""The source's video frames: a ``Timeline`` from ffprobe's packet list.

``probe_argv`` is the ffprobe run, ``parse`` reads what it printed, and
``read_timeline`` runs it in the worker's sandbox (as ``nommer.workerd.probe``
runs ffprobe). ``needs_remux`` and ``remux_step`` handle the containers whose
input seeking is not frame-exact (media-notes section 3.2: MPEG-TS input
``-ss`` silently lands on the wrong frame): they are copied into Matroska
first, and the timeline is read from that copy.

Seeking: ffmpeg's input ``-ss T`` counts from the *format's* start_time (the
earliest start of any stream), not the video stream's, and keeps the frames
whose pts is at least that start plus T. So ``Timeline.start_s`` is the
format's start_time (the video's own when the format gives none): in a TS,
the audio commonly starts 20-30 ms before the video, about half a frame,
and a seek counted from the video's start would land a frame early.
"""

import os
import statistics
from fractions import Fraction

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks.model import Timeline
from nommer.workerd.outputs.common import positive_fraction, progress_args, to_float, to_int
from nommer.workerd.outputs.step import Step
from nommer.workerd.probe import run_ffprobe

#: Most seconds one packet listing may take (capped further by
#: FFMPEG_TIMEOUT_S): it reads the whole file, but decodes nothing.
TIMELINE_TIMEOUT_S = 1800.0

#: Most bytes of ffprobe output kept: about 60 bytes a frame, so enough for
#: a 3-hour 60 fps source with room to spare.
MAX_OUTPUT_BYTES = 256 * 1024 * 1024

#: ffprobe ``format_name`` parts of containers whose input seeking is not
#: frame-exact (no index; timestamps from the stream), remuxed to MKV first.
REMUX_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo", "avi", "h264", "hevc", "m2ts",
                           "mpegtsraw", "vob"})


def probe_argv(ffprobe_bin, path):
    """The ffprobe argv (list of str) listing the first video stream's
    packets (``pts``, ``duration`` in time-base ticks, ``flags``), the
    stream's ``time_base``, ``start_time``, ``r_frame_rate``,
    ``avg_frame_rate`` and the format's ``start_time``, in ffprobe's
    ``compact`` format (``section|key=value|...`` lines), for ``parse``."""
    return [ffprobe_bin, "-v", "error", "-select_streams", "v:0",
            "-show_entries",
            "packet=pts,duration,flags:stream=time_base,start_time,r_frame_rate,avg_frame_rate"
            ":format=start_time",
            "-of", "compact", os.path.abspath(path)]


def _fields(line):
    """``section|k=v|k=v|side_data|...`` -> (section, {k: v}) (fields after
    the first without ``=`` are side data, ignored)."""
    parts = line.rstrip(",").split("|")
    fields = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            break
        fields[key.strip()] = value.strip().rstrip(",")
    return parts[0].strip(), fields


def nominal_fps(pts, time_base, candidates):
    """The frame rate (``Fraction``) among ``candidates`` (Fractions or
    None, first wins) whose grid the frames lie on: frame i's pts (``pts``:
    ascending ints, ticks of ``time_base``) is ``c + i / rate`` within half a
    tick, for one offset ``c`` (a container rounds each pts to the nearest
    tick; a rate only close to the real one drifts off the grid); else, when
    every interval is the same, that interval's rate; else None (VFR).
    With fewer than two frames: the first candidate."""
    if len(pts) < 2:
        return next((c for c in candidates if c), None)
    tn, td = time_base.numerator, time_base.denominator
    for rate in candidates:
        if not rate:
            continue
        rn, rd = rate.numerator, rate.denominator
        # (pts_i * tb - i / rate) * td * rn, in integers; its spread may be one tick.
        errors = [p * tn * rn - i * rd * td for i, p in enumerate(pts)]
        if max(errors) - min(errors) <= tn * rn:
            return rate
    deltas = {b - a for a, b in zip(pts, pts[1:])}
    if len(deltas) == 1 and min(deltas) > 0:
        return 1 / (min(deltas) * time_base)
    return None


def parse(stdout):
    """ffprobe's output of ``probe_argv`` (str or bytes) -> ``Timeline``.

    Packets come in decode order (B-frames): their pts are sorted. Packets
    flagged ``D`` (discarded by an edit list) are left out. ``fps``: the
    stream's ``r_frame_rate`` (or ``avg_frame_rate``) when every frame lies on
    that rate's grid within half a tick (``nominal_fps``), else None (VFR). ``end_s``:
    the last frame's pts plus its packet duration, or the typical frame
    interval when the packet gives none or one less than half of it (some
    muxers write one tick). ``start_s``: the format's start_time (what
    ffmpeg's input ``-ss`` counts from), else the stream's, else the first pts.

    Raises ``PermanentJobError`` when there is no video packet, when a
    packet has no pts (a raw stream or an AVI: remux it first), or when the
    time base is missing.
    """
    if isinstance(stdout, bytes):
        stdout = stdout.decode("utf-8", "replace")
    stream, fmt, pts, durations = {}, {}, [], {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        section, fields = _fields(line)
        if section == "packet":
            if "D" in fields.get("flags", ""):
                continue
            value = to_int(fields.get("pts"))
            if value is None:
                raise PermanentJobError(
                    "the source's video has packets without timestamps, so it cannot be "
                    "cut frame-exact (remux it into MKV or MP4 first)")
            pts.append(value)
            durations[value] = to_int(fields.get("duration"))
        elif section == "stream" and not stream:
            stream = fields
        elif section == "format":
            fmt = fields
    if not pts:
        raise PermanentJobError("the source has no video frames to cut into chunks")
    time_base = positive_fraction(stream.get("time_base"))
    if time_base is None:
        raise PermanentJobError("ffprobe gave no time base for the source's video stream")
    pts.sort()
    fps = nominal_fps(pts, time_base, [positive_fraction(stream.get("r_frame_rate")),
                                       positive_fraction(stream.get("avg_frame_rate"))])
    if fps is not None:
        typical = 1 / fps
    elif len(pts) > 1:
        typical = statistics.median(b - a for a, b in zip(pts, pts[1:])) * time_base
    else:
        typical = Fraction(0)
    last = durations.get(pts[-1])
    last_s = last * time_base if last is not None and last > 0 else None
    if last_s is None or last_s < typical / 2:
        last_s = typical
    pts_s = tuple(float(p * time_base) for p in pts)
    start_s = to_float(fmt.get("start_time"))
    if start_s is None:
        start_s = to_float(stream.get("start_time"))
    if start_s is None:
        start_s = pts_s[0]
    return Timeline(pts_s=pts_s, start_s=start_s, end_s=float(pts[-1] * time_base + last_s),
                    fps=fps)


async def read_timeline(reactor, settings, path, *, display_name=None):
    """Run ``probe_argv`` on the local file ``path`` in the worker's sandbox
    (only ``path`` readable) and return its ``Timeline`` (``parse``).

    ``display_name`` (default ``path``) replaces the path in error messages.
    Raises ``PermanentJobError`` when the file is a playlist (refused before
    ffprobe runs, as ``probe.ffprobe`` does), when ffprobe cannot read it, takes
    longer than ``min(FFMPEG_TIMEOUT_S, TIMELINE_TIMEOUT_S)``, prints more
    than ``MAX_OUTPUT_BYTES``, or ``parse`` refuses what it printed;
    ``TransientJobError`` when ffprobe is missing, its sandbox fails to
    start, or it dies of a signal we did not send.
    """
    full = os.path.abspath(path)
    stdout = await run_ffprobe(reactor, settings, full, probe_argv(settings.FFPROBE_BIN, full),
                               what="source", display_name=display_name, timeout_s=TIMELINE_TIMEOUT_S,
                               max_stdout_bytes=MAX_OUTPUT_BYTES,
                               unreadable="ffprobe could not list the source's video frames")
    return parse(stdout)


def needs_remux(probe_dict):
    """True when the source (ffprobe's ``-show_format`` JSON, a dict) is in a
    container whose input ``-ss`` is not frame-exact (MPEG-TS, MPEG-PS, AVI,
    raw streams: ``REMUX_FORMATS``), so chunks must be cut from a Matroska
    copy (``remux_step``). Never raises on odd input (False)."""
    fmt = (probe_dict or {}).get("format") if isinstance(probe_dict, dict) else None
    name = str((fmt or {}).get("format_name") or "")
    return bool({part.strip() for part in name.split(",")} & REMUX_FORMATS)


def remux_step(input_path, out_path, ffmpeg_bin, *, expected_s=None):
    """The ``Step`` copying ``input_path``'s video and audio streams, as they
    are (``-c copy``), into the Matroska file ``out_path`` (absolute), which
    chunks are then cut from. Timestamps are generated where the container
    has none (``-fflags +genpts``, AVI). Subtitle and data streams are left
    out (Matroska cannot hold every kind TS carries). ``expected_s``: the
    source's duration (progress)."""
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-fflags", "+genpts",
            "-i", input_path]
    argv += ["-map", "0:v", "-map", "0:a?", "-c", "copy", "-f", "matroska"]
    return Step(what=f"remux {os.path.basename(out_path)}", argv=argv + progress_args(out_path),
                expected_s=expected_s, weight=0.05 * (expected_s or 1.0))
