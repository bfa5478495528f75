"""Scene cuts of a source, from ffmpeg's ``scene`` score on a small proxy.

``plan`` gives the ffmpeg run (one decode of the whole video, scaled to a
320-pixel proxy; the ``select`` filter scores every frame against the one
before, and a ``metadata`` filter writes the frames scoring above the
threshold to a text file); ``parse`` maps that file onto the source's
``Timeline``: the frames where a new scene starts.

Every frame goes on through the graph (only the print is selective), so
``-progress`` reports the decode's real position. The frames are retimed to
microsecond ticks (``settb=AVTB``) before scoring, so the printed ``pts`` is
exact whatever the source's time base (the printed ``pts_time`` keeps only
six significant digits: a tenth of a second at two hours); ``-copyts`` keeps
the container's own timestamps (without it, ffmpeg shifts them by an offset
that depends on the container: the video's start in MPEG-TS, the format's
in MKV), so they compare directly with ``Timeline.pts_s``.

``plan_windows`` and ``parse_windows`` do the same in time windows only
(``cuts.scan_windows``: where the planner looks for cuts): each window is an
input of its own, seeked (``-ss``, ``-t``) to start a few frames early, so
that its first frame is scored against the same two frames before it as in a
whole scan (the score compares a frame with the one before and that
difference with the previous one), and gives the same cuts, exactly. Frames
outside the window are not reported. A few windows share one ffmpeg run
(``MAX_INPUTS``), one filter chain and null output each; ffmpeg feeds the
output whose timestamps are the earliest, so the windows are decoded one
after the other.
"""

import bisect
import re

from nommer.workerd.chunks.cuts import half_frame_s
from nommer.workerd.outputs.common import progress_args
from nommer.workerd.outputs.quality import escape_filter_value
from nommer.workerd.outputs.step import Step

#: The scene score above which a frame starts a new scene (0..1; media-notes
#: section 3.2 measured 0.3).
DEFAULT_THRESHOLD = 0.3

#: The proxy's width in pixels (its height follows the aspect ratio, even).
DEFAULT_PROXY_WIDTH = 320

#: The time base of the printed ``pts`` (``settb=AVTB``): microseconds.
TICKS_PER_S = 1000000

#: How many frames before a window its scan starts (the score of a frame
#: depends on the two before it).
MARGIN_FRAMES = 4

#: Most windows (inputs, each with its own decoder) one ffmpeg run of
#: ``plan_windows`` opens.
MAX_INPUTS = 8

_FRAME_LINE = re.compile(r"^frame:\s*\d+\s+pts:\s*(-?\d+)")


def plan(input_path, out_path, *, ffmpeg_bin, threshold=DEFAULT_THRESHOLD,
         proxy_width=DEFAULT_PROXY_WIDTH, expected_s=None):
    """The ``Step`` decoding ``input_path``'s first video stream once and
    writing, to the text file ``out_path`` (absolute), one ``frame:N pts:P
    pts_time:T`` line (P: the frame's own pts, in microseconds) and one ``lavfi.scene_score=S`` line for each frame
    whose scene score (0..1) exceeds ``threshold``. The video is scaled to
    ``proxy_width`` pixels wide first. Its output is ffmpeg's null muxer
    (the argv ends ``-f null -``). ``expected_s``: the video's duration in
    seconds (progress). Raises ValueError for a threshold outside (0, 1)."""
    if not 0 < threshold < 1:
        raise ValueError(f"scene threshold must be between 0 and 1, not {threshold!r}")
    graph = _graph(threshold, proxy_width, out_path)
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-copyts", "-i", input_path,
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph, "-fps_mode", "passthrough",
            "-f", "null"]
    weight = 0.2 * (expected_s or 1.0)
    return Step(what="scene cuts", argv=argv + progress_args("-"), expected_s=expected_s,
                weight=weight)


def _graph(threshold, proxy_width, out_path):
    return (f"settb=AVTB,scale={int(proxy_width)}:-2:flags=fast_bilinear,"
            f"select='gte(scene\\,0)',"
            f"metadata=mode=print:key=lavfi.scene_score:value={threshold:g}:function=greater"
            f":file={escape_filter_value(out_path)}")


def window_path(out_path, k):
    """The text file ``plan_windows``' window ``k`` (0, 1, ...) writes: ``out_path.k``."""
    return f"{out_path}.{int(k)}"


def margin_s(timeline):
    """How long before a window its scan starts, seconds: ``MARGIN_FRAMES``
    frame intervals (``cuts.half_frame_s``), at least 0.1 s."""
    return max(0.1, MARGIN_FRAMES * 2 * half_frame_s(timeline))


def plan_windows(input_path, out_path, windows, timeline, *, ffmpeg_bin,
                 threshold=DEFAULT_THRESHOLD, proxy_width=DEFAULT_PROXY_WIDTH,
                 max_inputs=MAX_INPUTS):
    """The ``Step`` s (list, run in order) scoring the frames of
    ``input_path``'s first video stream inside ``windows`` only, as ``plan``
    does for the whole stream: window ``k`` (``(start_s, end_s)``, seconds
    from the first frame of ``timeline``, the source's ``Timeline``; e.g.
    ``cuts.scan_windows``) prints its frames scoring above ``threshold`` to
    ``window_path(out_path, k)`` (``out_path`` absolute), in ``plan``'s
    format; read them with ``parse_windows``. Each window is an input seeked
    to ``margin_s`` before it (``-ss``: from ``timeline.start_s``, as
    ffmpeg counts) and read to two frames past its end (``-t``), with
    ``-copyts``; at most ``max_inputs`` windows a run. The steps are not
    ``capped`` (their inputs are bounded). Raises ValueError for a threshold
    outside (0, 1) or a window that does not end after it starts."""
    if not 0 < threshold < 1:
        raise ValueError(f"scene threshold must be between 0 and 1, not {threshold!r}")
    windows = [(float(a), float(b)) for a, b in windows]
    for a, b in windows:
        if not b > a:
            raise ValueError(f"a scan window must end after it starts, not {(a, b)!r}")
    margin = margin_s(timeline)
    tail = 4 * half_frame_s(timeline)
    origin = timeline.pts_s[0] if timeline.pts_s else timeline.start_s
    steps = []
    for first in range(0, len(windows), max(1, int(max_inputs))):
        batch = list(enumerate(windows))[first:first + max(1, int(max_inputs))]
        inputs, chains, outputs = [], [], []
        for j, (k, (a, b)) in enumerate(batch):
            seek = origin + a - margin - timeline.start_s
            begin = timeline.start_s + max(0.0, seek)
            inputs += ["-copyts"]
            if seek > 0:
                inputs += ["-ss", f"{seek:.6f}"]
            inputs += ["-t", f"{origin + b + tail - begin:.6f}", "-i", input_path]
            chains.append(f"[{j}:v:0]{_graph(threshold, proxy_width, window_path(out_path, k))}[w{j}]")
            outputs += ["-map", f"[w{j}]", "-fps_mode", "passthrough", "-f", "null"]
            if j < len(batch) - 1:
                outputs.append("-")
        scanned = sum(b - a for _, (a, b) in batch)
        last = batch[-1][1][1]
        argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", *inputs,
                "-filter_complex", ";".join(chains), *outputs]
        steps.append(Step(what=f"scene cuts (windows {batch[0][0] + 1}-{batch[-1][0] + 1} "
                               f"of {len(windows)})",
                          argv=argv + progress_args("-"), expected_s=origin + last + tail,
                          weight=0.2 * scanned, capped=False))
    return steps


def parse_windows(texts, timeline, windows):
    """The frames (ascending, unique, never 0) where a scene starts inside
    ``windows`` (as given to ``plan_windows``), from the files its steps
    wrote (``texts``: one str or bytes per window, in order; ``parse`` reads
    each). A frame counts when its time from the first frame lies inside its
    window (ends included); frames of the margins are left out. Raises
    ValueError when ``texts`` and ``windows`` differ in length."""
    texts, windows = list(texts), list(windows)
    if len(texts) != len(windows):
        raise ValueError(f"{len(texts)} scan files for {len(windows)} windows")
    pts_s = timeline.pts_s
    found = set()
    for text, (a, b) in zip(texts, windows):
        for i in parse(text, timeline):
            t = pts_s[i] - pts_s[0]
            if a - 1e-9 <= t <= b + 1e-9:
                found.add(i)
    return sorted(found)


def parse(text, timeline):
    """The frames (indexes into ``timeline.pts_s``, ascending, unique, never
    0) where a scene starts, from the file ``plan``'s step wrote (``text``:
    str or bytes). Each printed pts (microseconds) is matched to the
    timeline's nearest frame; a pts farther than half a frame interval from every frame is
    ignored. Never raises on odd lines (they are skipped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    pts_s = timeline.pts_s
    n = len(pts_s)
    found = set()
    for line in text.splitlines():
        m = _FRAME_LINE.match(line.strip())
        if not m or n < 2:
            continue
        t = int(m.group(1)) / TICKS_PER_S
        i = _nearest(pts_s, t)
        left = pts_s[i] - pts_s[i - 1] if i > 0 else pts_s[1] - pts_s[0]
        right = pts_s[i + 1] - pts_s[i] if i + 1 < n else left
        if abs(pts_s[i] - t) <= min(left, right) / 2 and i > 0:
            found.add(i)
    return sorted(found)


def _nearest(values, t):
    """Index of the element of the ascending ``values`` nearest ``t``."""
    i = bisect.bisect_left(values, t)
    if i == 0:
        return 0
    if i == len(values):
        return len(values) - 1
    return i if values[i] - t < t - values[i - 1] else i - 1
