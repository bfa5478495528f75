"""Helpers of the encode, concat and verify tests: a source's frame times,
chunks planned by hand, the chunk steps run, packets listed.

Chunks are built here directly (``model.Chunk``), as the cut planner would
(seek at the midpoint between the previous frame's pts and the chunk's
first, minus the stream's start; duration frames/fps), so these tests do not
depend on the planner.
"""

import json
import os
import subprocess
from fractions import Fraction

from nommer.workerd.chunks import frames
from nommer.workerd.chunks.model import Chunk

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def timeline(path):
    """The ``model.Timeline`` of ``path`` (``frames.probe_argv`` + ``frames.parse``)."""
    out = subprocess.run(frames.probe_argv(FFPROBE, path), check=True, capture_output=True,
                         timeout=60)
    return frames.parse(out.stdout.decode())


def make_chunks(tl, cuts, *, seek_shift_s=None):
    """``model.Chunk`` s of the ``Timeline`` ``tl`` cut before each frame index
    of ``cuts``: seek at the midpoint between the previous frame's pts and
    the chunk's first, minus ``tl.start_s``; duration ``frames/fps`` (CFR)
    or the pts difference to the next chunk (VFR). ``seek_shift_s``
    (``{chunk index: seconds}``) moves those chunks' seeks: a deliberately
    wrong chunking."""
    pts, n = tl.pts_s, tl.frames
    bounds = [0] + list(cuts) + [n]
    chunks = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seek = 0.0 if a == 0 else (pts[a - 1] + pts[a]) / 2 - tl.start_s
        seek += (seek_shift_s or {}).get(i, 0.0)
        start = pts[a] - pts[0]
        end = pts[b] - pts[0] if b < n else tl.duration_s
        duration = Fraction(b - a) / tl.fps if tl.fps else end - start
        chunks.append(Chunk(index=i, start_frame=a, frames=b - a, start_s=start, end_s=end,
                            seek_s=seek, duration=duration))
    return chunks


def run(argv, timeout=300):
    """Run a Step's argv as the worker would (without the sandbox); fail with
    ffmpeg's stderr tail."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:].decode(errors="replace")
    return done


def packets(path, stream="v:0"):
    """``[(pts_s, duration_s)]`` of ``path``'s ``stream``, in presentation order."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", stream, "-print_format",
                          "json", "-show_entries", "packet=pts_time,duration_time", path],
                         check=True, capture_output=True, timeout=60)
    found = [(float(p["pts_time"]), float(p.get("duration_time") or 0))
             for p in json.loads(out.stdout)["packets"]]
    return sorted(found)


def size(path):
    return os.path.getsize(path)
