"""Where to cut a source into chunks: pure planning on its ``Timeline``.

``plan_chunks`` picks the chunk boundaries (frame indexes) and describes
each chunk as a ``model.Chunk``:

1. how many chunks: about ``duration / target_s``, and with ``workers`` at
   least CHUNKS_PER_WORKER (4) per worker, so that one slow chunk does not
   gate the job (on the bench's 60 s title with scenes of very different
   cost, 2 chunks a worker kept 2 workers at 0.74 of perfect, 4 at 0.99),
   as far as the length limits allow (every chunk between ``min_s`` and
   ``max_s``);
2. the ideal boundaries split the duration evenly; each moves to the
   nearest scene cut within a quarter of a chunk (and of ``target_s``, and
   MAX_SNAP_S), else
   to the nearest frame. For ladders (``grid_s``) the boundaries lie on the
   keyframe grid instead (``grid_frame``), so every segment falls in one chunk;
3. a chunk shorter than ``min_s`` merges into its shorter neighbour, then a
   chunk longer than ``max_s`` is split evenly (at scene cuts when near,
   else at frames; at grid points for ladders).

Times are seconds from the first frame (``pts_s[i] - pts_s[0]``).

``scan_windows`` says where the planner will look for scene cuts (the
windows around the boundaries it tries), so scene detection can decode those
windows only (``scenes.plan_windows``) instead of the whole source: a plan
made from the cuts found in them is the plan the whole scan would give.
"""

import bisect
import math
import statistics
from fractions import Fraction

from nommer.workerd.chunks.model import Chunk


def half_frame_s(timeline):
    """Half the frame interval, seconds: ``1 / (2 fps)`` for CFR, half the
    median interval for VFR (0 for a one-frame timeline)."""
    if timeline.fps:
        return float(1 / (2 * timeline.fps))
    pts = timeline.pts_s
    if len(pts) < 2:
        return 0.0
    return statistics.median(b - a for a, b in zip(pts, pts[1:])) / 2


def grid_frame(timeline, t_s, *, half_s=None):
    """The keyframe-grid frame for the time ``t_s`` (seconds from the first
    frame, e.g. ``k * grid_s``): the first frame whose time is at least
    ``t_s`` minus half a frame (``half_frame_s``); ``timeline.frames`` when
    there is none. Chunk boundaries and the keyframes forced inside a chunk
    use the same rule, so segments line up across chunks. ``half_s``: the
    timeline's ``half_frame_s`` when already known."""
    half = half_frame_s(timeline) if half_s is None else half_s
    return bisect.bisect_left(timeline.pts_s, timeline.pts_s[0] + t_s - half - 1e-9)


def _time(timeline, i):
    """Seconds from the first frame to frame ``i`` (``frames``: the end)."""
    if i >= timeline.frames:
        return timeline.duration_s
    return timeline.pts_s[i] - timeline.pts_s[0]


def _nearest_frame(timeline, t_s):
    """The frame whose time is nearest ``t_s`` (ties: the later)."""
    pts, origin = timeline.pts_s, timeline.pts_s[0]
    i = bisect.bisect_left(pts, origin + t_s)
    if i == 0:
        return 0
    if i == len(pts):
        return len(pts) - 1
    return i if pts[i] - origin - t_s <= t_s - (pts[i - 1] - origin) else i - 1


class _Snapper:
    """Moves an ideal boundary time onto a frame, inside (lo, hi) frames."""

    def __init__(self, timeline, scene_frames, grid_s, window_s, record=None):
        self.timeline = timeline
        self.record = record
        self.scenes = sorted({int(i) for i in scene_frames if 0 < int(i) < timeline.frames})
        self.scene_times = [_time(timeline, i) for i in self.scenes]
        self.grid_s = grid_s
        self.window_s = window_s
        self.half_s = half_frame_s(timeline)

    def snap(self, t_s, lo, hi):
        """A frame strictly between ``lo`` and ``hi`` for the ideal time ``t_s``,
        or None when there is none (grid mode: no grid point inside)."""
        tl = self.timeline
        if self.grid_s:
            return self._snap_grid(t_s, lo, hi)
        if self.record is not None:
            self.record.append((t_s - self.window_s, t_s + self.window_s))
        best = None
        i = bisect.bisect_left(self.scene_times, t_s - self.window_s)
        while i < len(self.scenes) and self.scene_times[i] <= t_s + self.window_s:
            f = self.scenes[i]
            if lo < f < hi and (best is None or
                                abs(self.scene_times[i] - t_s) < abs(_time(tl, best) - t_s)):
                best = f
            i += 1
        if best is not None:
            return best
        f = _nearest_frame(tl, t_s)
        if lo < f < hi:
            return f
        if hi - lo >= 2:
            return min(max(f, lo + 1), hi - 1)
        return None

    def _snap_grid(self, t_s, lo, hi):
        """The grid frame nearest ``t_s`` strictly inside (lo, hi), or None."""
        tl, g = self.timeline, self.grid_s
        j = max(1, round(t_s / g))
        f = grid_frame(tl, j * g, half_s=self.half_s)
        while f <= lo and f < tl.frames:  # step right of lo
            j += 1
            f = grid_frame(tl, j * g, half_s=self.half_s)
        while f >= hi and j > 1:  # step left of hi
            j -= 1
            f = grid_frame(tl, j * g, half_s=self.half_s)
        if not lo < f < hi:
            return None
        # The neighbour on the other side of t_s may be nearer.
        for other in (j - 1, j + 1):
            if other >= 1:
                o = grid_frame(tl, other * g, half_s=self.half_s)
                if lo < o < hi and abs(_time(tl, o) - t_s) < abs(_time(tl, f) - t_s):
                    f = o
        return f


#: Farthest a boundary moves to a scene cut, seconds (and a quarter of a
#: chunk): films cut every few seconds, so a window of +-3 s around an ideal
#: boundary almost always holds one, and scene detection decodes only those
#: windows (``scan_windows``): a fifth of a title cut in 30 s chunks.
MAX_SNAP_S = 3.0

#: Fewest chunks per worker the planner makes when the length limits allow.
CHUNKS_PER_WORKER = 4


def _chunk_count(duration_s, frames, *, target_s, min_s, max_s, workers):
    n = max(1, round(duration_s / target_s))
    if workers:
        n = max(n, CHUNKS_PER_WORKER * workers)
    most = max(1, math.floor(duration_s / min_s + 1e-9)) if min_s > 0 else frames
    least = max(1, math.ceil(duration_s / max_s - 1e-9))
    n = max(min(n, most), least)
    return max(1, min(n, frames))


def plan_chunks(timeline, scene_frames, *, target_s, min_s, max_s, workers=None, grid_s=None):
    """The chunks (list of ``model.Chunk``, in order, covering every frame of
    ``timeline`` once) to cut the source into.

    :param timeline: the source's ``model.Timeline`` (at least one frame).
    :param scene_frames: frame indexes where scenes start (``scenes.parse``;
        any order, out-of-range ones ignored); ignored when ``grid_s`` is given.
    :param target_s: the wished chunk length, seconds (> 0).
    :param min_s: shortest chunk, seconds (>= 0); a source shorter than
        ``2 * min_s`` is one chunk.
    :param max_s: longest chunk, seconds (> 0); holds always (up to the frame
        or grid step), while ``min_s`` holds when ``max_s >= 2 * min_s``.
    :param workers: the workers available (int >= 1) or None: the chunk
        count is at least CHUNKS_PER_WORKER per worker when the length
        limits allow.
    :param grid_s: the keyframe interval of a ladder, seconds (or None):
        every boundary is then a grid frame (``grid_frame(timeline, k * grid_s)``).

    Each chunk: ``start_s = pts[a] - pts[0]``; ``end_s`` the next one's
    ``start_s`` (the last's: ``timeline.duration_s``); ``seek_s`` the
    midpoint of frames a-1 and a minus ``timeline.start_s`` (0 for chunk 0);
    ``duration`` ``Fraction(frames) / fps`` for CFR, else ``end_s - start_s``.
    Raises ValueError on an empty timeline or limits out of range.
    """
    return _plan(timeline, scene_frames, target_s=target_s, min_s=min_s, max_s=max_s,
                 workers=workers, grid_s=grid_s)


#: ``scan_windows`` gives None (scan the whole source) when its windows,
#: each with ``SEEK_ALLOWANCE_S`` more, would cover more than this share of
#: the source's duration: seeking to each window then saves too little.
#: (The windows of one pass cover at most half the source: a quarter of a
#: chunk on each side of each boundary.)
FULL_SCAN_SHARE = 0.75

#: What one window costs beyond its length, seconds of decoding: the frames
#: from the keyframe before it (half a GOP on average; the timeline does not
#: say where the keyframes are) and its margin.
SEEK_ALLOWANCE_S = 0.5


def scan_windows(timeline, *, target_s, min_s, max_s, workers=None, scene_frames=(), scanned=()):
    """Where ``plan_chunks`` (same ``timeline`` and lengths, no ``grid_s``)
    looks for scene cuts: the time windows (list of ``(start_s, end_s)``,
    seconds from the first frame, ascending, disjoint, overlapping ones
    merged) of every snap it makes (each ideal boundary ``t`` and each split
    of a chunk longer than ``max_s``: ``t`` +- a quarter of a chunk and of
    ``target_s``), less those already inside a window of ``scanned``.

    Scene cuts are only needed there. Call it first with no ``scanned``:
    the windows of the plan without scene cuts, or None when they (each with
    ``SEEK_ALLOWANCE_S`` more) would cover more than ``FULL_SCAN_SHARE`` of
    the source (then scan it all: ``scenes.plan``); [] when the plan is one chunk (no scan at all). Once
    the cuts inside those windows are known (``scene_frames``), call it again
    with ``scanned`` (every window scanned so far): the plan made from the
    cuts found can snap elsewhere (a chunk split because the snapped
    boundaries made it too long); the windows it gives are those still to
    scan ([] when none). When it gives [], ``plan_chunks(timeline,
    scene_frames, ...)`` is the plan the cuts of the whole source would give,
    as long as ``scene_frames`` holds every cut inside the scanned windows.
    Raises ValueError as ``plan_chunks`` does.
    """
    queries = []
    _plan(timeline, scene_frames, target_s=target_s, min_s=min_s, max_s=max_s,
          workers=workers, grid_s=None, record=queries)
    end = timeline.duration_s
    queries = [(max(0.0, a), min(end, b)) for a, b in queries]
    done = _merge_windows(scanned)
    eps = 1e-9
    todo = [(a, b) for a, b in queries
            if not any(sa <= a + eps and b - eps <= sb for sa, sb in done)]
    windows = _merge_windows(todo)
    if not scanned and sum(b - a + SEEK_ALLOWANCE_S for a, b in windows) > FULL_SCAN_SHARE * end:
        return None
    return windows


def _merge_windows(windows):
    """``(start_s, end_s)`` pairs sorted, the overlapping or touching ones merged."""
    out = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _plan(timeline, scene_frames, *, target_s, min_s, max_s, workers, grid_s, record=None):
    """``plan_chunks``; each scene-cut snap's window goes into the list ``record``."""
    if not timeline.frames:
        raise ValueError("the timeline has no frames")
    if not target_s > 0 or not max_s > 0 or min_s < 0 or min_s > max_s:
        raise ValueError(f"bad chunk lengths: target_s={target_s!r}, min_s={min_s!r}, "
                         f"max_s={max_s!r} (need target_s > 0, 0 <= min_s <= max_s)")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers!r}")
    if grid_s is not None and not grid_s > 0:
        raise ValueError(f"grid_s must be positive, not {grid_s!r}")
    n_frames = timeline.frames
    duration = timeline.duration_s
    if duration < 2 * min_s or n_frames < 2:
        return _describe(timeline, [0, n_frames])
    n = _chunk_count(duration, n_frames, target_s=target_s, min_s=min_s, max_s=max_s,
                     workers=workers)
    length = duration / n
    snapper = _Snapper(timeline, () if grid_s else scene_frames, grid_s,
                       min(min(target_s, length) / 4, MAX_SNAP_S), record)
    bounds = [0]
    for k in range(1, n):
        f = snapper.snap(k * length, bounds[-1], n_frames)
        if f is not None:
            bounds.append(f)
    bounds.append(n_frames)
    bounds = _merge_short(timeline, bounds, min_s)
    bounds = _split_long(timeline, bounds, max_s, snapper)
    return _describe(timeline, bounds)


def _lengths(timeline, bounds):
    return [_time(timeline, b) - _time(timeline, a) for a, b in zip(bounds, bounds[1:])]


def _merge_short(timeline, bounds, min_s):
    """Drop boundaries until no chunk is shorter than ``min_s`` (each short
    chunk joins its shorter neighbour), or one chunk is left."""
    bounds = list(bounds)
    eps = 1e-9
    while len(bounds) > 2:
        lengths = _lengths(timeline, bounds)
        short = min(range(len(lengths)), key=lambda i: lengths[i])
        if lengths[short] >= min_s - eps:
            break
        if short == 0:
            del bounds[1]
        elif short == len(lengths) - 1:
            del bounds[-2]
        elif lengths[short - 1] <= lengths[short + 1]:
            del bounds[short]
        else:
            del bounds[short + 1]
    return bounds


def _split_long(timeline, bounds, max_s, snapper):
    """Insert boundaries into every chunk longer than ``max_s``: split into
    the fewest even parts that each fit (snapped as the first boundaries)."""
    out = [bounds[0]]
    eps = 1e-9
    for a, b in zip(bounds, bounds[1:]):
        t_a, t_b = _time(timeline, a), _time(timeline, b)
        span = t_b - t_a
        inner = []
        if span > max_s + eps:
            first = math.ceil(span / max_s - eps)
            for m in range(first, min(first + 4, b - a + 1)):
                inner, lo = [], a
                for k in range(1, m):
                    f = snapper.snap(t_a + k * span / m, lo, b)
                    if f is None:
                        break
                    inner.append(f)
                    lo = f
                if max(_lengths(timeline, [a, *inner, b])) <= max_s + eps:
                    break
                if snapper.grid_s and not inner:
                    break  # no grid point inside: it cannot be split
        out += inner + [b]
    return out


def _describe(timeline, bounds):
    pts, origin = timeline.pts_s, timeline.pts_s[0]
    chunks = []
    for index, (a, b) in enumerate(zip(bounds, bounds[1:])):
        start_s = pts[a] - origin
        end_s = pts[b] - origin if b < len(pts) else timeline.duration_s
        seek_s = 0.0 if a == 0 else (pts[a - 1] + pts[a]) / 2 - timeline.start_s
        frames = b - a
        duration = Fraction(frames) / timeline.fps if timeline.fps else end_s - start_s
        chunks.append(Chunk(index=index, start_frame=a, frames=frames, start_s=start_s,
                            end_s=end_s, seek_s=seek_s, duration=duration))
    return chunks
