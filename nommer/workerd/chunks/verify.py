"""The checks a merged track passes before the job is called FINISHED
(media-notes §3.3 step 6; issue 13 "Correctness").

Two ffmpeg runs per merged track (``plan``), read by ``check``:

1. its packets, stream-copied to a ``framecrc`` list (no decoding): the
   frame count, the timestamps, the duration;
2. content alignment: the track and the source decoded side by side, both
   made tiny and gray (``PROBE_SIZE``), both renumbered frame by frame in one
   time base (``settb=1/FPS,setpts=N``: the pairing trap of §3.2, different
   containers' time bases mis-pair frames otherwise), the source through the
   track's own ``fps`` filter when the track changes the frame rate; PSNR of
   each pair, kept only over ``WINDOW`` frames either side of each chunk
   join.

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
  neither; these do.

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


def raw_paths(work_dir, key):
    """``{"packets", "psnr", "psnr_prev", "psnr_next"}``: the files (absolute
    paths) the steps verifying track ``key`` write."""
    base = os.path.join(work_dir, RAW_DIR, f"{key}")
    psnr = base + ".psnr.txt"
    return {"packets": base + ".packets.txt", "psnr": psnr, "psnr_prev": psnr + PREV_SUFFIX,
            "psnr_next": psnr + NEXT_SUFFIX}


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


def psnr_graph(chunks, track, *, fps, log_path):
    """The ``-filter_complex`` text pairing input 0 (the merged track) with
    input 1 (the source) and printing each kept pair's luma MSE
    (``lavfi.psnr.mse.y``; ``pts`` is the track frame's index) to three
    logs (``raw_paths``): frame i against source frame i (``log_path``),
    against source frame i-1 (``.prev``) and i+1 (``.next``)."""
    total, joins = track_frames(chunks, track, fps)
    w, h = PROBE_SIZE
    tb = "1/25"
    if track.fps:
        rate = Fraction(track.fps).limit_denominator(1001000)
        tb = f"{rate.denominator}/{rate.numerator}"
    spans = _windows(joins, total)
    select = ""
    if spans:
        # On pts (= the index after setpts=N), so the shifted copies keep the same frames.
        expr = "+".join(f"between(pts,{a},{b})" for a, b in spans)
        select = f",select='{expr}'"
    tiny = f"scale={w}:{h},format=gray,settb={tb},setpts=N"
    source_fps = f"fps={_rate(track.fps)}," if tracks_mod.fps_filtered(track, fps) else ""
    logs = [log_path, log_path + PREV_SUFFIX, log_path + NEXT_SUFFIX]
    graph = [f"[0:v:0]{tiny}{select}[d0]",
             f"[1:V:0]{source_fps}{tiny},split=3[a0][a1][a2]",
             f"[a0]null{select}[r0]",
             f"[a1]setpts=PTS+1{select}[r1]",  # source frame i-1 beside track frame i
             f"[a2]setpts=PTS-1{select}[r2]"]  # source frame i+1 beside track frame i
    for i, log in enumerate(logs):
        tail = f"[d{i + 1}]" if i < 2 else ""
        graph.append(f"[d{i}][r{i}]psnr,metadata=mode=print:key={PSNR_KEY}"
                     f":file={escape_filter_value(log)}{tail}")
    return ";".join(graph)


def plan(track_path, chunks, track, *, input_path, ffmpeg_bin, work_dir, fps=None):
    """The two ``Step`` s verifying the merged ``track`` (module docstring).

    :param track_path: absolute path of the merged track (the concat's MP4).
    :param chunks: the job's ``model.Chunk`` list, in order.
    :param track: its ``model.VideoTrack``.
    :param input_path: the source the chunks were cut from (absolute path).
    :param work_dir: scratch (absolute): the lists go under ``.verify/``.
    :param fps: the source's frame rate (Fraction; None for VFR).
    :returns: ``[packets step, psnr step]``; run both, then ``check``.
    """
    paths = raw_paths(work_dir, track.key)
    common.make_parent(paths["packets"])
    for path in paths.values():
        if os.path.exists(path):
            os.remove(path)
    duration = sum(float(c.duration) for c in chunks)
    packets = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", track_path,
               "-map", "0:v:0", "-c", "copy", "-f", "framecrc"]
    packets += common.progress_args(paths["packets"])
    pair = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", track_path, "-i", input_path,
            "-filter_complex", psnr_graph(chunks, track, fps=fps, log_path=paths["psnr"]),
            "-an", "-sn", "-dn", "-f", "null"] + common.progress_args("-")
    return [
        Step(what=f"verify {track.key} (timestamps)", argv=packets, expected_s=duration,
             weight=duration * 0.001, readable=(track_path,), capped=False),
        Step(what=f"verify {track.key} (alignment)", argv=pair, expected_s=duration,
             weight=duration * 0.05, readable=(track_path, input_path), capped=False),
    ]


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


def check(chunks, track, *, work_dir, fps=None, timeline=None):
    """Read what ``plan``'s steps wrote and return the problems (list of
    str, empty when the track is good; module docstring).

    :param fps: the source's frame rate (Fraction; None for VFR).
    :param timeline: the source's ``Timeline`` (needed for a VFR track's
        timestamps; ignored for CFR).
    :raises PermanentJobError: a list is missing or unreadable.
    """
    paths = raw_paths(work_dir, track.key)
    try:
        packets, time_bases = read_framecrc(paths["packets"])
        psnr = read_psnr_log(paths["psnr"])
        prev = read_psnr_log(paths["psnr_prev"])
        next_ = read_psnr_log(paths["psnr_next"])
    except (OSError, ValueError, IndexError) as e:
        raise PermanentJobError(f"the merged video {track.key} could not be checked: {e}") from None
    found = packets.get(0, [])
    num, den = time_bases.get(0, (1, 1))
    total, joins = track_frames(chunks, track, fps)
    problems = check_timestamps([p for p, _ in found], [d for _, d in found], Fraction(num, den),
                                expected=total, fps=track.fps, timeline=timeline)
    problems += check_alignment(psnr, joins, total, fps=track.fps, prev=prev, next_=next_)
    return problems


def verify(chunks, track, *, work_dir, fps=None, timeline=None):
    """``check``, raising ``PermanentJobError`` with the first problem
    (``"merged video o0: chunk join at frame 593 (24.708 s): PSNR 12.1 dB
    against 39.5 dB around it: the frames are shifted"``)."""
    problems = check(chunks, track, work_dir=work_dir, fps=fps, timeline=timeline)
    if problems:
        raise PermanentJobError(f"merged video {track.key}: {problems[0]}")

