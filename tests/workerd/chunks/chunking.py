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

from nommer.workerd.chunks.model import Chunk

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


def frame_times(path):
    """``(pts_s sorted, stream start_time)`` of the first video stream of ``path``."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-print_format", "json",
                          "-show_entries", "packet=pts_time:stream=start_time", path],
                         check=True, capture_output=True, timeout=60)
    doc = json.loads(out.stdout)
    pts = sorted(float(p["pts_time"]) for p in doc["packets"])
    return pts, float(doc["streams"][0]["start_time"])


def make_chunks(pts, start_s, cuts, fps=None, *, seek_shift_s=0.0):
    """``model.Chunk`` s of a source whose frames are at ``pts`` (seconds),
    cut before each frame index of ``cuts``. ``fps`` (Fraction) gives CFR
    durations ``frames/fps``; None: VFR durations from the pts (the last
    frame as long as the one before it). ``seek_shift_s`` moves every seek
    (but chunk 0's) by that much: a deliberately wrong chunking."""
    n = len(pts)
    bounds = [0] + list(cuts) + [n]
    last_end = pts[-1] + (pts[-1] - pts[-2])
    chunks = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seek = 0.0 if a == 0 else (pts[a - 1] + pts[a]) / 2 - start_s + seek_shift_s
        end = (pts[b] if b < n else last_end) - pts[0]
        start = pts[a] - pts[0]
        duration = Fraction(b - a) / fps if fps else end - start
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
