"""The checks a merged track passes before the job is called FINISHED
(media-notes §3.3 step 6; issue 13 "Correctness").

The ffmpeg runs of ``plan`` (then ``fallback_steps``), read by ``check``:

1. the track's packets, stream-copied to a ``framecrc`` list (no decoding):
   the frame count, the timestamps, the duration;
2. content alignment, decoding only WINDOWS around the joins (``spans``:
   ``WINDOW`` track frames either side of each join; the source's one more
   each side), ``JOINS_PER_RUN`` joins a run, two inputs per join: the track
   and the file the chunks were cut from (the source, or a TS source's
   Matroska copy), each input-seeked before its window (the source
   ``PREROLL_S`` earlier: not the chunk encode's own seek) and read for a
   few seconds (``-t``), timestamps kept (``-copyts``). Each window's frames
   are picked by their times: the source's from its ``Timeline``, the
   track's from what they must be (i/fps; a VFR track's: the timeline's,
   from the first), so a seek need only land early. Both made tiny and gray
   (``PROBE_SIZE``), both renumbered in one time base (``settb=1/FPS,
   setpts=N+first``: the pairing trap of §3.2, and ``pts`` is then the
   frame's index in the whole track), the source through the track's own
   ``fps`` filter when the track changes the frame rate (its output slots
   counted from 0 s, as over the whole source); PSNR of each pair, and of
   the track frame against the source frames before and after; the frames
   each side got are listed. A window that did not get exactly its frames
   (a seek that landed late) is decoded again, from the start of both files,
   by ``fallback_steps``' one run; one still short is a problem.

``check`` then finds, each a sentence in the list it returns (empty: good):

* frames != expected (the sum over chunks of ``tracks.expected_frames``);
* timestamps not strictly increasing;
* CFR track: a pts delta that is not 1/fps (a gap or an overlap at a join),
  or |duration - frames/fps| >= 1 ms; the first frame not at 0;
* VFR track (``fps`` None) with the source's ``Timeline``: a frame more
  than 1 ms away from its source frame's time (from the first: this finds
  gaps and overlaps at joins). Not the duration: the MP4 muxer stores the
  last frame of a VFR track as one tick of its time base long, in a single
  encode as in a chunked one;
* around each join, a frame whose PSNR against its source frame is more than
  ``DROP_DB`` below the median of the other frames of its window on its
  side of the join (same chunk: scenes on either side of a cut may differ
  in PSNR by more than that), and below ``ALIGNED_FLOOR_DB``: the frames
  are shifted (a seek that dropped a frame shows the next scene's first
  frame before the join);
* around each join, a frame that matches the source frame before or after
  its own better, by more than ``SHIFT_MARGIN_DB``, than its own (and is
  below ``SHIFT_FLOOR_DB`` against it): the chunk is shifted by one frame
  (a duplicated first frame: the default vsync). The frame count catches
  neither; these do;
* a window whose frames could not all be decoded (after the fallback).

``verify`` raises ``PermanentJobError`` with the first problem.
"""

import os
import re
import statistics
from fractions import Fraction

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import tracks as tracks_mod
from nommer.workerd.outputs.framecrc import read_framecrc
from nommer.workerd.outputs import common
from nommer.workerd.outputs.quality import PSNR_KEY, escape_filter_value, psnr_of_mse
from nommer.workerd.outputs.step import Step

#: Size of the pictures compared (pixels, gray): enough to see a shift, cheap.
PROBE_SIZE = (64, 36)
#: Frames looked at on each side of a join.
WINDOW = 3
#: A frame this many dB below its neighbours' median is shifted...
DROP_DB = 10.0
#: ... when it is also below this (dB): two frames of identical content
#: (PSNR 100) beside one of 60 dB are not a shift.
ALIGNED_FLOOR_DB = 30.0
#: Most distance (seconds) between a frame's time and what it should be,
#: and between the video's duration and frames/fps.
TOLERANCE_S = 0.001
#: A frame whose PSNR against the source frame before or after its own is
#: this many dB above the PSNR against its own is shifted (when below
#: SHIFT_FLOOR_DB): a duplicated first frame shifts a whole chunk by one
#: frame, which PSNR by index alone shows only as a mild drop within a scene
#: (37 dB instead of 49 in slow motion, where the shifted pairing gives 49).
SHIFT_MARGIN_DB = 6.0
#: A frame this close to its own source frame (dB, tiny gray) is not called
#: shifted whatever its neighbours give: the difference cannot be seen.
SHIFT_FLOOR_DB = 45.0
#: Suffixes of the logs of the shifted pairings (``psnr_graph``).
PREV_SUFFIX, NEXT_SUFFIX = ".prev", ".next"
#: Scratch directory (in the work dir) of the lists the steps write.
RAW_DIR = ".verify"
#: Seconds before a window each input is seeked to (then decoded from the
#: keyframe before that point): the window's frames are picked by their
#: times, so the seek only has to land early, and it is not the chunk
#: encode's own seek (a wrong seek would be wrong in both).
PREROLL_S = 2.0
#: The same for the merged video (our own MP4: seeks in it are exact, and a
#: late one shows as a short window anyway): the keyframe before the window.
TRACK_PREROLL_S = 0.0
#: Seconds read past a window's end (``-t``).
SLACK_S = 0.25
#: Windows (joins) per alignment run: two inputs each.
JOINS_PER_RUN = 8
#: The run name of ``fallback_steps``' files.
FALLBACK_RUN = "fb"
#: Metadata key marking the frames a run lists (``read_frame_list``).
FRAME_KEY = "nommer.frame"


def raw_paths(work_dir, key, run=0):
    """``{"packets", "psnr", "psnr_prev", "psnr_next", "track_frames",
    "source_frames"}``: the files (absolute paths) the steps verifying track
    ``key`` write; the last five per alignment run ``run`` (0, 1, ...: the
    seeking runs of ``plan``; ``"fb"``: ``fallback_steps``' run)."""
    base = os.path.join(work_dir, RAW_DIR, f"{key}")
    psnr = f"{base}.{run}.psnr.txt"
    return {"packets": base + ".packets.txt", "psnr": psnr, "psnr_prev": psnr + PREV_SUFFIX,
            "psnr_next": psnr + NEXT_SUFFIX, "track_frames": f"{base}.{run}.track.txt",
            "source_frames": f"{base}.{run}.source.txt"}


def track_frames(chunks, track, fps):
    """``(total, joins)``: the frames the merged ``track`` should hold (None
    when it cannot be told) and the index of the first frame of each chunk
    after the first, in the track's frames (list of int)."""
    total, joins = 0, []
    for i, chunk in enumerate(chunks):
        n = tracks_mod.expected_frames(chunk.frames, track, fps)
        if n is None:
            return None, []
        if i:
            joins.append(total)
        total += n
    return total, joins


def _rate(fps):
    value = Fraction(fps).limit_denominator(1001000)
    return f"{value.numerator}/{value.denominator}"


def _windows(joins, total):
    """The frame ranges ``[(first, last)]`` (inclusive) around each join."""
    spans = []
    for j in joins:
        first, last = max(0, j - WINDOW), j + WINDOW - 1
        if total is not None:
            last = min(last, total - 1)
        spans.append((first, last))
    return spans


def spans(chunks, track, fps):
    """The windows the alignment runs decode: ``[(first, last)]``, track
    frame indexes (inclusive), ``WINDOW`` frames either side of each join,
    merged where their source frames (one more each side, for the shifted
    check) would touch. Empty when the track's frames cannot be told."""
    total, joins = track_frames(chunks, track, fps)
    merged = []
    for first, last in _windows(joins, total):
        if merged and first - merged[-1][1] <= 4:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def _groups(spans_):
    """``spans_`` cut into runs of at most ``JOINS_PER_RUN`` windows."""
    return [spans_[i:i + JOINS_PER_RUN] for i in range(0, len(spans_), JOINS_PER_RUN)]


def _tb(track):
    """The time base the renumbered frames are put in (``settb``): 1/fps, or 1/25 for VFR."""
    if track.fps:
        rate = Fraction(track.fps).limit_denominator(1001000)
        return f"{rate.denominator}/{rate.numerator}"
    return "1/25"


class _Window:
    """Where one span's frames lie, in each input's own time (seconds,
    ``-copyts``: as the containers store them) and what they are called.

    ``track_range`` / ``source_range``: ``(low, high)`` seconds selecting
    exactly the track's frames ``first..last`` and the source's (or, for a
    track with an fps filter, the fps filter's output frames)
    ``s_first..s_last`` (one more each side where there is one);
    ``feed_range``: the source frames fed to that fps filter (a margin of two
    output frames either side), else ``source_range``."""

    def __init__(self, span, track, fps, timeline, total):
        self.first, self.last = span
        self.s_first, self.s_last = max(0, self.first - 1), min(total - 1, self.last + 1)
        self.fps_rate = Fraction(track.fps).limit_denominator(1001000) if tracks_mod.fps_filtered(
            track, fps) else None
        if timeline is None:  # indexes only (``check``)
            return
        pts = timeline.pts_s
        if track.fps:
            rate = Fraction(track.fps).limit_denominator(1001000)

            def track_time(i):
                return float(i / rate)
        else:
            def track_time(i):
                return pts[i] - pts[0]
        self.track_range = _between(track_time, self.first, self.last, total)
        if self.fps_rate is not None:
            # The fps filter's output slots are counted from 0 s (its first slot is the
            # rounded time of its first frame), as over the whole source.
            r = self.fps_rate
            n0 = round(Fraction(pts[0]).limit_denominator(10 ** 9) * r)

            def source_time(i):
                return float((n0 + i) / r)
            self.source_range = _between(source_time, self.s_first, self.s_last, total)
            self.feed_range = (float((n0 + self.s_first - 2) / r), float((n0 + self.s_last + 3) / r))
        else:
            self.source_range = _between(lambda i: pts[i], self.s_first, self.s_last, total)
            self.feed_range = self.source_range

    @property
    def source_frames(self):
        return self.s_last - self.s_first + 1

    @property
    def track_frames(self):
        return self.last - self.first + 1


def _between(time_of, first, last, total):
    """``(low, high)`` seconds holding the frames ``first..last`` of a
    sequence of ``total`` frames at ``time_of(i)``: the midpoints to the
    frames outside (a second beyond the ends of the sequence)."""
    low = (time_of(first - 1) + time_of(first)) / 2 if first > 0 else time_of(first) - 1.0
    high = (time_of(last) + time_of(last + 1)) / 2 if last + 1 < total else time_of(last) + 1.0
    return low, high


def _input_args(path, low, high, start_s, preroll_s):
    """``[-ss S] -t D -i path``: read from ``preroll_s`` before ``low`` (a
    time of the file, seconds; ``start_s`` its format's start, what ``-ss``
    counts from) to ``SLACK_S`` past ``high``; no ``-ss`` when ``preroll_s``
    is None (from the start) or the point is at the start."""
    args = []
    at = max(0.0, low - start_s - preroll_s) if preroll_s is not None else 0.0
    if at > 0:
        args += ["-ss", f"{at:.6f}"]
    args += ["-t", f"{high - start_s - at + SLACK_S:.6f}", "-i", path]
    return args


def _sel(low, high):
    return f"select='between(t,{low:.6f},{high:.6f})'"


def alignment_argv(track_path, input_path, windows, track, *, ffmpeg_bin, paths, timeline,
                   seek=True):
    """The argv of one alignment run over ``windows`` (``_Window`` list).

    With ``seek``: two inputs per window, the track and the source, each
    input-seeked ``PREROLL_S`` before the window (``-copyts``: the frames
    keep the containers' times, and are picked by them, so the seek only has
    to land early: one landing late shows as a short window); without: one
    input of each, read from the start, ``split`` into every window.

    Each window's frames are made tiny and gray (``PROBE_SIZE``), put in the
    track's time base and renumbered (``setpts=N+first``: ``pts`` is the
    frame's index in the whole track / source); the windows are
    ``interleave`` d into one stream per side. Each side's frames are listed
    (``track_frames``, ``source_frames``: counted by ``check``), and the
    track frames paired with the source frames of the same index, the one
    before and the one after (``psnr``, ``psnr_prev``, ``psnr_next``)."""
    w, h = PROBE_SIZE
    tb = _tb(track)
    tiny = f"scale={w}:{h},format=gray,settb={tb}"
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-copyts"]
    graph, d_pads, s_pads = [], [], []
    if seek:
        for k, win in enumerate(windows):
            argv += _input_args(track_path, *win.track_range, 0.0, TRACK_PREROLL_S)
            argv += _input_args(input_path, *win.feed_range, timeline.start_s, PREROLL_S)
        pairs = [(f"{2 * k}:v:0", f"{2 * k + 1}:V:0") for k in range(len(windows))]
    else:
        argv += _input_args(track_path, 0.0, max(x.track_range[1] for x in windows), 0.0, None)
        argv += _input_args(input_path, 0.0, max(x.feed_range[1] for x in windows),
                            timeline.start_s, None)
        n = len(windows)
        if n > 1:
            graph.append(f"[0:v:0]split={n}" + "".join(f"[ti{k}]" for k in range(n)))
            graph.append(f"[1:V:0]split={n}" + "".join(f"[si{k}]" for k in range(n)))
            pairs = [(f"ti{k}", f"si{k}") for k in range(n)]
        else:
            pairs = [("0:v:0", "1:V:0")]
    for k, (win, (tin, sin)) in enumerate(zip(windows, pairs)):
        graph.append(f"[{tin}]{_sel(*win.track_range)},{tiny},setpts=N+{win.first}[d{k}]")
        fps_part = ""
        if win.fps_rate is not None:
            fps_part = f"fps={_rate(win.fps_rate)},{_sel(*win.source_range)},"
        graph.append(f"[{sin}]{_sel(*win.feed_range)},{fps_part}{tiny},"
                     f"setpts=N+{win.s_first}[s{k}]")
        d_pads.append(f"[d{k}]")
        s_pads.append(f"[s{k}]")

    def joined(pads, name):
        if len(pads) == 1:
            return f"{pads[0]}null[{name}]"
        # interleave puts its output in microseconds: back to the track's time base.
        return f"{''.join(pads)}interleave=nb_inputs={len(pads)},settb={tb}[{name}]"

    def listed(pad, path):
        return (f"[{pad}]metadata=mode=add:key={FRAME_KEY}:value=1,metadata=mode=print:"
                f"key={FRAME_KEY}:file={escape_filter_value(path)},nullsink")

    graph.append(joined(d_pads, "D"))
    graph.append(joined(s_pads, "S"))
    graph.append("[D]split=2[dm][dl]")
    graph.append(listed("dl", paths["track_frames"]))
    graph.append("[S]split=4[a0][a1][a2][sl]")
    graph.append(listed("sl", paths["source_frames"]))
    expr = "+".join(f"between(pts,{x.first},{x.last})" for x in windows)
    select = f",select='{expr}'"
    graph += [f"[a0]null{select}[r0]",
              f"[a1]setpts=PTS+1{select}[r1]",  # source frame i-1 beside track frame i
              f"[a2]setpts=PTS-1{select}[r2]"]  # source frame i+1 beside track frame i
    logs = [paths["psnr"], paths["psnr_prev"], paths["psnr_next"]]
    mains = ["dm", "m1", "m2"]
    for i, log in enumerate(logs):
        tail = f"[{mains[i + 1]}]" if i < 2 else ""
        graph.append(f"[{mains[i]}][r{i}]psnr,metadata=mode=print:key={PSNR_KEY}"
                     f":file={escape_filter_value(log)}{tail}")
    return argv + ["-filter_complex", ";".join(graph), "-an", "-sn", "-dn", "-f", "null"
                   ] + common.progress_args("-")


def _layout(chunks, track, fps, timeline):
    """``[[_Window]]``: the windows of each seeking run, in order."""
    total, _ = track_frames(chunks, track, fps)
    return [[_Window(s, track, fps, timeline, total) for s in group]
            for group in _groups(spans(chunks, track, fps))]


def _clear(work_dir, key):
    folder = os.path.join(work_dir, RAW_DIR)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(f"{key}."):
            os.remove(os.path.join(folder, name))


def plan(track_path, chunks, track, *, input_path, ffmpeg_bin, work_dir, timeline, fps=None):
    """The ``Step`` s verifying the merged ``track`` (module docstring): the
    packet listing, then one alignment run per ``JOINS_PER_RUN`` joins (none
    when the track has no join, or its frames cannot be told).

    :param track_path: absolute path of the merged track (the concat's MP4).
    :param chunks: the job's ``model.Chunk`` list, in order.
    :param track: its ``model.VideoTrack``.
    :param input_path: the file the chunks were cut from (absolute path: the
        source, or its Matroska copy for a TS/PS/AVI source), seeked in.
    :param work_dir: scratch (absolute): the lists go under ``.verify/``.
    :param timeline: that file's ``Timeline`` (``frames.read_timeline``):
        the times the windows' source frames are picked by.
    :param fps: the source's frame rate (Fraction; None for VFR).
    :returns: ``[packets step, alignment steps...]``; run them, then
        ``fallback_steps`` (and run those), then ``check``.
    """
    _clear(work_dir, track.key)
    paths = raw_paths(work_dir, track.key)
    duration = sum(float(c.duration) for c in chunks)
    packets = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", track_path,
               "-map", "0:v:0", "-c", "copy", "-f", "framecrc"]
    packets += common.progress_args(paths["packets"])
    steps = [Step(what=f"verify {track.key} (timestamps)", argv=packets, expected_s=duration,
                  weight=duration * 0.001, readable=(track_path,), capped=False)]
    layout = _layout(chunks, track, fps, timeline)
    for run, windows in enumerate(layout):
        argv = alignment_argv(track_path, input_path, windows, track, ffmpeg_bin=ffmpeg_bin,
                              paths=raw_paths(work_dir, track.key, run), timeline=timeline)
        part = f" {run + 1}/{len(layout)}" if len(layout) > 1 else ""
        steps.append(Step(what=f"verify {track.key} (alignment{part})", argv=argv, expected_s=None, weight=len(windows) * 0.1,
                          readable=(track_path, input_path), capped=False))
    return steps


def read_frame_list(path):
    """The frame indexes (set of int) a run's ``track_frames`` /
    ``source_frames`` list holds (``pts`` is the index). A missing file: empty."""
    found = set()
    if not os.path.exists(path):
        return found
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("frame:"):
                m = re.search(r"\bpts:(-?\d+)", line)
                if m:
                    found.add(int(m.group(1)))
    return found


def _complete(windows, paths):
    """``[(track frames found, source frames found, whole)]`` for each window
    of a run: whole when it got exactly its frames on both sides (a seek
    landing after the window's start gives fewer)."""
    tracked = read_frame_list(paths["track_frames"])
    sourced = read_frame_list(paths["source_frames"])
    out = []
    for k, win in enumerate(windows):
        nxt = windows[k + 1] if k + 1 < len(windows) else None
        t_end = nxt.first if nxt else float("inf")
        s_end = nxt.s_first if nxt else float("inf")
        t = {i for i in tracked if win.first <= i < t_end}
        s = {i for i in sourced if win.s_first <= i < s_end}
        out.append((len(t), len(s), t == set(range(win.first, win.last + 1))
                    and s == set(range(win.s_first, win.s_last + 1))))
    return out


def _incomplete(chunks, track, *, work_dir, fps, timeline):
    """The windows (``_Window`` list) a seeking run did not get whole."""
    left = []
    for run, windows in enumerate(_layout(chunks, track, fps, timeline)):
        done = _complete(windows, raw_paths(work_dir, track.key, run))
        left += [w for w, (_, _, ok) in zip(windows, done) if not ok]
    return left


def fallback_steps(track_path, chunks, track, *, input_path, ffmpeg_bin, work_dir, timeline,
                   fps=None):
    """After ``plan``'s steps ran: ``[Step]`` decoding again, from the start
    of both files (no seek), the windows a seeking run did not get whole (a
    seek that landed after the window); ``[]`` when every window was whole.
    Same arguments as ``plan``."""
    left = _incomplete(chunks, track, work_dir=work_dir, fps=fps, timeline=timeline)
    if not left:
        return []
    paths = raw_paths(work_dir, track.key, FALLBACK_RUN)
    for path in paths.values():
        if path != paths["packets"] and os.path.exists(path):
            os.remove(path)
    argv = alignment_argv(track_path, input_path, left, track, ffmpeg_bin=ffmpeg_bin, paths=paths,
                          timeline=timeline, seek=False)
    end = max(w.track_range[1] for w in left)
    return [Step(what=f"verify {track.key} (alignment from the start, {len(left)} windows)",
                 argv=argv, expected_s=None, weight=end * 0.05,
                 readable=(track_path, input_path), capped=False)]


def read_psnr_log(path):
    """``{frame index: PSNR dB}`` from the psnr step's log (``pts`` is the
    index: ``setpts=N``). Raises OSError if unreadable."""
    values, index = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("frame:"):
                m = re.search(r"\bpts:(-?\d+)", line)
                index = int(m.group(1)) if m else None
            elif line.startswith(PSNR_KEY + "=") and index is not None:
                values[index] = psnr_of_mse(float(line.split("=", 1)[1]))
    return values


def check_timestamps(pts, durations, tb, *, expected, fps, timeline=None):
    """Problems (list of str) of a track's packet timestamps.

    :param pts: presentation timestamps (ints, in ``tb`` units) in any order.
    :param durations: the packets' durations (ints, ``tb`` units), same order.
    :param tb: the stream's time base, a ``Fraction`` (seconds per unit).
    :param expected: frames expected, or None (not checked).
    :param fps: the track's frame rate (Fraction) for a CFR track, None for VFR.
    :param timeline: the source's ``Timeline`` for a VFR track (its frame
        times, from the first, are what the track's must be).
    """
    problems = []
    n = len(pts)
    if expected is not None and n != expected:
        problems.append(f"the video has {n} frames, {expected} expected")
    if n == 0:
        return problems
    order = sorted(range(n), key=lambda i: pts[i])
    ordered = [pts[i] for i in order]
    for i in range(1, n):
        if ordered[i] <= ordered[i - 1]:
            problems.append(f"two frames have the same time {float(ordered[i] * tb):.6f} s "
                            f"(frame {i})")
            break
    first = ordered[0]
    last_duration = durations[order[-1]]
    if fps is not None:
        step = 1 / Fraction(fps)
        tick = Fraction(tb)
        tolerance = max(tick / 2, Fraction(1, 10 ** 6))
        if abs(first * tick) > TOLERANCE_S:
            problems.append(f"the video starts at {float(first * tick):.6f} s, not 0")
        for i in range(1, n):
            delta = (ordered[i] - ordered[i - 1]) * tick
            if abs(delta - step) > tolerance:
                kind = "a gap" if delta > step else "an overlap"
                problems.append(f"{kind} before frame {i} ({float(ordered[i - 1] * tick):.6f} "
                                f"s to {float(ordered[i] * tick):.6f} s: "
                                f"{float(delta) * 1000:.3f} ms, not {float(step) * 1000:.3f} ms)")
                break
        if last_duration <= 0:
            last_duration = ordered[-1] - ordered[-2] if n > 1 else 0
        duration = (ordered[-1] + last_duration - first) * tick
        wanted = n * step
        if abs(duration - wanted) >= TOLERANCE_S:
            problems.append(f"the video lasts {float(duration):.6f} s, not {float(wanted):.6f} s "
                            f"({n} frames at {float(fps):.3f} fps)")
    elif timeline is not None:
        base = timeline.pts_s[0]
        for i in range(min(n, timeline.frames)):
            got = float((ordered[i] - first) * tb)
            want = timeline.pts_s[i] - base
            if abs(got - want) > TOLERANCE_S:
                problems.append(f"frame {i} is at {got:.6f} s, the source's at {want:.6f} s")
                break
    return problems


def check_alignment(psnr, joins, total, *, fps=None, prev=None, next_=None):
    """Problems (list of str) of the per-frame PSNR around each join.

    :param psnr: ``{frame index: dB}`` of each track frame against the
        source frame of the same index (``read_psnr_log``).
    :param joins: index of each chunk's first frame after the first (track frames).
    :param total: frames in the track (None: unknown).
    :param fps: the track's rate (Fraction), for the times in the sentences.
    :param prev, next_: ``{frame index: dB}`` of each track frame against
        the source frame before / after its own (None: not checked).
    """
    problems = []
    prev, next_ = prev or {}, next_ or {}
    for k, join in enumerate(joins):
        # Each side within its own chunk: from the previous join, to the next one.
        first = max(0, join - WINDOW, joins[k - 1] if k else 0)
        last = join + WINDOW
        if k + 1 < len(joins):
            last = min(last, joins[k + 1])
        if total is not None:
            last = min(last, total)
        sides = [range(first, join), range(join, last)]
        where = f"chunk join at frame {join}" + (f" ({float(join / Fraction(fps)):.3f} s)"
                                                 if fps else "")
        missing = [i for side in sides for i in side if i not in psnr]
        if missing:
            problems.append(f"{where}: frame {missing[0]} has no source frame to compare with "
                            "(the video is shorter than the source)")
            continue
        worst = None
        for side in sides:
            for i in side:
                others = [psnr[k] for k in side if k != i]
                if not others:
                    continue
                median = statistics.median(others)
                if psnr[i] < median - DROP_DB and psnr[i] < ALIGNED_FLOOR_DB:
                    if worst is None or median - psnr[i] > worst[2] - worst[1]:
                        worst = (i, psnr[i], median)
        if worst is not None:
            i, value, median = worst
            at = f"frame {i}: " if i != join else ""
            problems.append(f"{where}: {at}PSNR {value:.1f} dB against {median:.1f} dB around it: "
                            "the frames are shifted")
            continue
        for side in sides:
            shifted = [(i, psnr[i], max(prev.get(i, -1.0), next_.get(i, -1.0))) for i in side]
            shifted = [x for x in shifted if x[2] > x[1] + SHIFT_MARGIN_DB and x[1] < SHIFT_FLOOR_DB]
            if shifted:
                i, own, better = max(shifted, key=lambda x: x[2] - x[1])
                which = "before" if prev.get(i, -1.0) >= next_.get(i, -1.0) else "after"
                problems.append(f"{where}: frame {i} matches the source frame {which} its own "
                                f"(PSNR {better:.1f} dB against {own:.1f} dB): the frames are "
                                "shifted by one")
                break
    return problems


def _where(win, joins, fps):
    join = next((j for j in joins if win.first <= j <= win.last + 1), win.first)
    return f"chunk join at frame {join}" + (f" ({float(join / Fraction(fps)):.3f} s)" if fps else "")


def _read_window_psnr(windows, paths, into, joins, fps, problems, *, last_try):
    """Copy the PSNR of the whole windows of one run into ``into`` (three
    dicts); returns the windows not whole (with a sentence in ``problems``
    when ``last_try``)."""
    done = _complete(windows, paths)
    left = [(w, d) for w, d in zip(windows, done) if not d[2]]
    if len(left) < len(windows):
        logs = [read_psnr_log(paths[k]) for k in ("psnr", "psnr_prev", "psnr_next")]
        for win, (_, _, ok) in zip(windows, done):
            if ok:
                for log, out in zip(logs, into):
                    out.update({i: v for i, v in log.items() if win.first <= i <= win.last})
    if last_try:
        for win, (t, s, _) in left:
            problems.append(f"{_where(win, joins, fps)}: its frames could not all be decoded "
                            f"({t} of {win.track_frames} frames of the video, {s} of "
                            f"{win.source_frames} of the source)")
    return [w for w, _ in left]


def check(chunks, track, *, work_dir, fps=None, timeline=None):
    """Read what ``plan``'s (and ``fallback_steps``') steps wrote and return
    the problems (list of str, empty when the track is good; module docstring).

    :param fps: the source's frame rate (Fraction; None for VFR).
    :param timeline: the source's ``Timeline`` (needed for a VFR track's
        timestamps; ignored for CFR).
    :raises PermanentJobError: a list is missing or unreadable.
    """
    paths = raw_paths(work_dir, track.key)
    total, joins = track_frames(chunks, track, fps)
    problems, values = [], ({}, {}, {})
    try:
        packets, time_bases = read_framecrc(paths["packets"])
        left = []
        for run, windows in enumerate(_layout(chunks, track, fps, None)):
            left += _read_window_psnr(windows, raw_paths(work_dir, track.key, run), values, joins,
                                      track.fps, problems, last_try=False)
        if left:
            fb = raw_paths(work_dir, track.key, FALLBACK_RUN)
            if os.path.exists(fb["psnr"]):
                _read_window_psnr(left, fb, values, joins, track.fps, problems, last_try=True)
            else:
                _read_window_psnr(left, {**fb, "track_frames": "", "source_frames": ""}, values,
                                  joins, track.fps, problems, last_try=True)
    except (OSError, ValueError, IndexError) as e:
        raise PermanentJobError(f"the merged video {track.key} could not be checked: {e}") from None
    found = packets.get(0, [])
    num, den = time_bases.get(0, (1, 1))
    problems = check_timestamps([p for p, _ in found], [d for _, d in found], Fraction(num, den),
                                expected=total, fps=track.fps, timeline=timeline) + problems
    psnr, prev, next_ = values
    problems += check_alignment(psnr, joins, total, fps=track.fps, prev=prev, next_=next_)
    return problems


def verify(chunks, track, *, work_dir, fps=None, timeline=None):
    """``check``, raising ``PermanentJobError`` with the first problem
    (``"merged video o0: chunk join at frame 593 (24.708 s): PSNR 12.1 dB
    against 39.5 dB around it: the frames are shifted"``)."""
    problems = check(chunks, track, work_dir=work_dir, fps=fps, timeline=timeline)
    if problems:
        raise PermanentJobError(f"merged video {track.key}: {problems[0]}")

