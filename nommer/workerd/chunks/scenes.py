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
"""

import bisect
import re

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
    graph = (f"settb=AVTB,scale={int(proxy_width)}:-2:flags=fast_bilinear,"
             f"select='gte(scene\\,0)',"
             f"metadata=mode=print:key=lavfi.scene_score:value={threshold:g}:function=greater"
             f":file={escape_filter_value(out_path)}")
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-copyts", "-i", input_path,
            "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph, "-fps_mode", "passthrough",
            "-f", "null"]
    weight = 0.2 * (expected_s or 1.0)
    return Step(what="scene cuts", argv=argv + progress_args("-"), expected_s=expected_s,
                weight=weight)


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
