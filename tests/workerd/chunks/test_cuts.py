"""nommer.workerd.chunks.cuts: the chunk planner, on synthetic and real timelines."""

import os
import subprocess
from fractions import Fraction

import pytest

from nommer.workerd.chunks import cuts, frames
from nommer.workerd.chunks.model import Chunk, Timeline
from tests.workerd.chunks import sources
from tests.workerd.chunks.sources import framemd5s


def cfr(seconds, fps, *, origin=0.0, start=None):
    fps = Fraction(fps)
    n = int(seconds * fps)
    pts = tuple(origin + float(i / fps) for i in range(n))
    return Timeline(pts_s=pts, start_s=origin if start is None else start,
                    end_s=origin + float(n / fps), fps=fps)


def vfr(parts, origin=0.0):
    """``parts``: (fps, frames) pieces one after the other."""
    pts, t = [], origin
    for fps, count in parts:
        for _ in range(count):
            pts.append(t)
            t += 1 / fps
    return Timeline(pts_s=tuple(pts), start_s=origin, end_s=t, fps=None)


def check_invariants(tl, chunks):
    """Every frame once, in order; the fields as model.Chunk documents them."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_frame == 0
    assert sum(c.frames for c in chunks) == tl.frames
    origin = tl.pts_s[0]
    for c, nxt in zip(chunks, chunks[1:] + [None]):
        assert c.frames >= 1
        assert c.start_s == pytest.approx(tl.pts_s[c.start_frame] - origin)
        if nxt is not None:
            assert nxt.start_frame == c.start_frame + c.frames
            assert c.end_s == nxt.start_s
        else:
            assert c.end_s == pytest.approx(tl.duration_s)
        if c.start_frame == 0:
            assert c.seek_s == 0.0
        else:
            a = c.start_frame
            assert c.seek_s == pytest.approx((tl.pts_s[a - 1] + tl.pts_s[a]) / 2 - tl.start_s)
            # The seek lands after the previous frame and before this one.
            assert tl.pts_s[a - 1] < c.seek_s + tl.start_s < tl.pts_s[a]
        if tl.fps:
            assert c.duration == Fraction(c.frames) / tl.fps
        else:
            assert c.duration == pytest.approx(c.end_s - c.start_s)
        assert Chunk.from_dict(c.to_dict()) == c


def lengths(chunks):
    return [c.end_s - c.start_s for c in chunks]


# --- synthetic timelines ---------------------------------------------------------------

def test_even_split_without_scenes_cfr24():
    tl = cfr(600, 24)
    chunks = cuts.plan_chunks(tl, [], target_s=30, min_s=2, max_s=120)
    check_invariants(tl, chunks)
    assert len(chunks) == 20
    assert [c.start_frame for c in chunks] == [i * 720 for i in range(20)]
    assert sum(c.duration for c in chunks) == Fraction(tl.frames, 24)


def test_boundaries_move_to_scene_cuts_within_the_window():
    tl = cfr(120, 24)  # ideal boundaries at 30, 60, 90 s (frames 720, 1440, 2160)
    # Window: a quarter of a chunk (7.5 s). 700: 0.83 s early; 1200: 10 s early
    # (too far); 2180: 0.83 s late, nearer than 2185.
    scenes = [700, 1200, 2180, 2185, 5]
    chunks = cuts.plan_chunks(tl, scenes, target_s=30, min_s=2, max_s=120)
    check_invariants(tl, chunks)
    assert [c.start_frame for c in chunks] == [0, 700, 1440, 2180]


def test_ntsc_durations_are_exact_fractions():
    tl = cfr(100, Fraction(30000, 1001))
    chunks = cuts.plan_chunks(tl, [], target_s=10, min_s=2, max_s=20)
    check_invariants(tl, chunks)
    assert len(chunks) == 10
    assert sum(c.duration for c in chunks) == Fraction(tl.frames * 1001, 30000)
    assert all(isinstance(c.duration, Fraction) for c in chunks)


def test_vfr_uses_real_timestamps():
    tl = vfr([(24, 240), (30, 300), (24, 240)])  # 10 s + 10 s + 10 s
    chunks = cuts.plan_chunks(tl, [250], target_s=5, min_s=1, max_s=10)
    check_invariants(tl, chunks)
    assert len(chunks) == 6
    assert sum(c.duration for c in chunks) == pytest.approx(30.0)
    assert all(isinstance(c.duration, float) for c in chunks)
    # 10 s falls between the parts (frame 240); the scene cut at 250 (10.33 s) is near it.
    assert chunks[2].start_frame == 250
    # 20 s: frame 240 + 300 = 540.
    assert chunks[4].start_frame == 540


def test_workers_give_at_least_four_chunks_each():
    tl = cfr(600, 24)
    count = lambda **kw: len(cuts.plan_chunks(tl, [], target_s=30, min_s=2, max_s=400, **kw))
    assert count() == 20
    assert count(workers=1) == 20  # the target's 20: more than 4 x 1
    assert count(workers=4) == 20
    assert count(workers=10) == 40  # at least 4 x 10
    assert count(workers=20) == 80
    assert len(cuts.plan_chunks(tl, [], target_s=300, min_s=2, max_s=400, workers=2)) == 8  # 2 by target
    # The length limits win: at most 12 s a chunk needs 50, at least 60 s allows 10.
    assert len(cuts.plan_chunks(tl, [], target_s=30, min_s=2, max_s=12, workers=1)) == 50
    assert len(cuts.plan_chunks(tl, [], target_s=30, min_s=60, max_s=400, workers=20)) == 10


def test_short_source_is_one_chunk():
    tl = cfr(3.5, 24)
    chunks = cuts.plan_chunks(tl, [40], target_s=1, min_s=2, max_s=10, workers=8)
    check_invariants(tl, chunks)
    assert len(chunks) == 1 and chunks[0].frames == 84 and chunks[0].duration == Fraction(7, 2)
    one = Timeline(pts_s=(5.0,), start_s=5.0, end_s=5.04, fps=Fraction(25))
    chunks = cuts.plan_chunks(one, [], target_s=1, min_s=0, max_s=1)
    check_invariants(one, chunks)
    assert len(chunks) == 1


def test_too_short_chunks_merge_into_a_neighbour():
    tl = cfr(10, 24)  # ideal boundaries every 2 s
    # Scene cuts pull the boundaries for 2 s and 4 s to 2.5 s and 3.5 s: a 1 s chunk.
    chunks = cuts.plan_chunks(tl, [60, 84], target_s=2, min_s=2, max_s=8)
    check_invariants(tl, chunks)
    assert min(lengths(chunks)) >= 2
    assert 84 in [c.start_frame for c in chunks]


def test_too_long_chunks_get_extra_cuts():
    tl = cfr(60, 24)
    # Every boundary at a scene cut far from the even split would make a long
    # chunk; max_s forces extra cuts: ceil(60 / 7) = 9 chunks at least.
    chunks = cuts.plan_chunks(tl, [24 * 13], target_s=30, min_s=3, max_s=7)
    check_invariants(tl, chunks)
    assert max(lengths(chunks)) <= 7
    assert min(lengths(chunks)) >= 3
    # A long chunk left by merging is split again.
    tl = cfr(20, 24)
    chunks = cuts.plan_chunks(tl, [12], target_s=4, min_s=4, max_s=8)
    check_invariants(tl, chunks)
    assert max(lengths(chunks)) <= 8 and min(lengths(chunks)) >= 4


def test_lengths_hold_over_many_random_plans():
    import random

    rng = random.Random(13)
    for _ in range(200):
        fps = rng.choice([Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(60)])
        tl = cfr(rng.uniform(1, 400), fps)
        scenes = rng.sample(range(tl.frames), min(tl.frames, rng.randint(0, 60)))
        min_s = rng.uniform(0.5, 5)
        max_s = rng.uniform(2 * min_s + 1, 100)
        target_s = rng.uniform(min_s, max_s)
        workers = rng.choice([None, 1, 3, 16])
        chunks = cuts.plan_chunks(tl, scenes, target_s=target_s, min_s=min_s, max_s=max_s,
                                  workers=workers)
        check_invariants(tl, chunks)
        frame = float(1 / fps)
        assert max(lengths(chunks)) <= max_s + frame
        if tl.duration_s >= 2 * min_s:
            assert min(lengths(chunks)) >= min_s - frame, (tl.duration_s, min_s, max_s)


# --- scan windows ----------------------------------------------------------------------

def windowed_cuts(tl, scenes, **lengths):
    """What a windowed scan of a source whose cuts are ``scenes`` finds: the
    cuts inside the windows ``scan_windows`` gives, round after round until
    it gives none (None: the whole source). Returns (cuts, rounds, scanned)."""
    windows = cuts.scan_windows(tl, **lengths)
    if windows is None:
        return sorted(scenes), 0, None
    origin, found, scanned, rounds = tl.pts_s[0], set(), [], 0
    while windows:
        rounds += 1
        assert rounds <= 6, (windows, scanned)
        for a, b in windows:
            assert 0 <= a < b <= tl.duration_s + 1e-9
        assert windows == sorted(windows)
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(windows, windows[1:]))  # merged
        found |= {i for i in scenes if any(a <= tl.pts_s[i] - origin <= b for a, b in windows)}
        scanned += windows
        windows = cuts.scan_windows(tl, **lengths, scene_frames=sorted(found), scanned=scanned)
    return sorted(found), rounds, scanned


def test_scan_windows_around_the_ideal_boundaries():
    tl = cfr(600, 24)  # 20 chunks of 30 s; windows +-3 s (MAX_SNAP_S, not a quarter): a fifth of it
    windows = cuts.scan_windows(tl, target_s=30, min_s=2, max_s=120)
    assert windows == [pytest.approx((t - 3, t + 3)) for t in range(30, 600, 30)]
    # 10 chunks of 0.4 s: 9 windows of 0.2 s, each 0.5 s more: the whole source.
    assert cuts.scan_windows(cfr(4, 24), target_s=0.4, min_s=0.1, max_s=1) is None
    # 1 worker: the target's 20 chunks; 40 workers: 160 (4 each) of 3.75 s, windows of a quarter.
    assert cuts.scan_windows(tl, target_s=30, min_s=2, max_s=120, workers=1) == windows
    windows = cuts.scan_windows(cfr(150, 24), target_s=30, min_s=2, max_s=120, workers=10)
    assert windows == [pytest.approx((t - 0.9375, t + 0.9375)) for t in [3.75 * i for i in range(1, 40)]]
    # Overlapping windows merge.
    tl = cfr(40, 24)
    windows = cuts.scan_windows(tl, target_s=4, min_s=10, max_s=200, workers=1)  # 4 chunks of 10 s
    assert windows == [pytest.approx((t - 1, t + 1)) for t in (10, 20, 30)]
    # One chunk: nothing to scan.
    assert cuts.scan_windows(cfr(3, 24), target_s=1, min_s=2, max_s=10) == []
    assert cuts.scan_windows(cfr(30, 24), target_s=30, min_s=2, max_s=120) == []
    # Already scanned: nothing left.
    tl = cfr(600, 24)
    windows = cuts.scan_windows(tl, target_s=30, min_s=2, max_s=120, workers=1)
    assert cuts.scan_windows(tl, target_s=30, min_s=2, max_s=120, workers=1,
                             scanned=windows) == []
    with pytest.raises(ValueError):
        cuts.scan_windows(tl, target_s=0, min_s=2, max_s=120)


def test_scan_windows_follow_a_split():
    """Cuts that stretch a chunk past max_s make the planner split it, at
    times the first windows did not hold: a second round scans there, and
    the plan is the whole scan's."""
    tl = cfr(48, 24)  # 4 chunks of 12 s (max 13): windows 9-15, 21-27, 33-39 s
    lengths = dict(target_s=12, min_s=1, max_s=13, workers=1)
    # Cuts at 9.1 s and 26.9 s make a 17.8 s chunk, split at 18 s, where a
    # cut at 17 s waits.
    scenes = [int(9.1 * 24), int(26.9 * 24), 17 * 24]
    found, rounds, scanned = windowed_cuts(tl, scenes, **lengths)
    assert rounds == 2 and sorted(found) == sorted(scenes)
    plan = cuts.plan_chunks(tl, scenes, **lengths)
    assert 17 * 24 in [c.start_frame for c in plan]
    assert cuts.plan_chunks(tl, found, **lengths) == plan


def test_windowed_plans_are_the_whole_scans_over_many_random_sources():
    import random

    rng = random.Random(1313)
    windowed = rounds2 = 0
    for _ in range(300):
        fps = rng.choice([Fraction(24), Fraction(25), Fraction(30000, 1001)])
        tl = cfr(rng.uniform(5, 900), fps) if rng.random() < 0.8 else \
            vfr([(24, rng.randint(50, 3000)), (30, rng.randint(50, 3000))], origin=1.4)
        scenes = sorted(rng.sample(range(1, tl.frames), min(tl.frames - 1, rng.randint(0, 200))))
        min_s = rng.uniform(0.5, 5)
        max_s = rng.uniform(2 * min_s + 1, 150)
        target_s = rng.uniform(min_s, max_s * 2)
        lengths = dict(target_s=target_s, min_s=min_s, max_s=max_s,
                       workers=rng.choice([None, 1, 2, 3, 16]))
        found, rounds, scanned = windowed_cuts(tl, scenes, **lengths)
        if scanned is not None:
            windowed += 1
            rounds2 += rounds > 1
            covered = sum(b - a for a, b in scanned)
            assert covered <= tl.duration_s
        assert cuts.plan_chunks(tl, found, **lengths) == cuts.plan_chunks(tl, scenes, **lengths)
    assert windowed > 100 and rounds2 > 5, (windowed, rounds2)


def test_grid_boundaries_cfr():
    tl = cfr(61, 24)
    chunks = cuts.plan_chunks(tl, [100, 500], target_s=10, min_s=2, max_s=30, grid_s=2)
    check_invariants(tl, chunks)
    assert len(chunks) == 6
    for c in chunks:
        assert c.start_s % 2 == 0  # exactly on the 2 s grid (24 fps: 48 frames)


def test_grid_boundaries_ntsc_and_vfr_follow_grid_frame():
    tl = cfr(60, Fraction(30000, 1001))
    chunks = cuts.plan_chunks(tl, [], target_s=9, min_s=2, max_s=30, grid_s=2)
    check_invariants(tl, chunks)
    grid = {cuts.grid_frame(tl, k * 2) for k in range(31)}
    assert all(c.start_frame in grid for c in chunks)
    # grid_frame: the first frame at or after k*2 s less half a frame.
    half = 1001 / 60000
    for k in (1, 7, 29):
        f = cuts.grid_frame(tl, k * 2)
        assert tl.pts_s[f] >= k * 2 - half > tl.pts_s[f - 1]
    tl = vfr([(24, 240), (30, 300), (24, 240)])
    chunks = cuts.plan_chunks(tl, [], target_s=6, min_s=2, max_s=12, grid_s=2)
    check_invariants(tl, chunks)
    grid = {cuts.grid_frame(tl, k * 2) for k in range(16)}
    assert all(c.start_frame in grid for c in chunks)
    assert all(c.end_s - c.start_s == pytest.approx(6.0, abs=0.05) for c in chunks)


def test_grid_coarser_than_max():
    tl = cfr(20, 24)
    chunks = cuts.plan_chunks(tl, [], target_s=1, min_s=0.5, max_s=1, grid_s=4)
    check_invariants(tl, chunks)
    assert [c.start_s for c in chunks] == [0, 4, 8, 12, 16]


def test_origin_and_format_start_offsets():
    """A source whose video starts at 1.483 s and format at 1.462 s (TS-like):
    times count from the first frame, seeks from the format's start."""
    tl = cfr(20, 24, origin=1.483333, start=1.462)
    chunks = cuts.plan_chunks(tl, [], target_s=5, min_s=1, max_s=10)
    check_invariants(tl, chunks)
    assert chunks[1].start_s == pytest.approx(5.0)
    assert chunks[1].seek_s == pytest.approx(1.483333 + 5 - 1 / 48 - 1.462)


def test_bad_arguments():
    tl = cfr(10, 24)
    with pytest.raises(ValueError):
        cuts.plan_chunks(tl, [], target_s=0, min_s=1, max_s=5)
    with pytest.raises(ValueError):
        cuts.plan_chunks(tl, [], target_s=2, min_s=6, max_s=5)
    with pytest.raises(ValueError):
        cuts.plan_chunks(tl, [], target_s=2, min_s=1, max_s=5, workers=0)
    with pytest.raises(ValueError):
        cuts.plan_chunks(Timeline(pts_s=(), start_s=0, end_s=0), [], target_s=2, min_s=1,
                         max_s=5)


# --- real sources: every chunk holds exactly the source's frames ----------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cuts"))
    ts = sources.make_ts(d)
    mezz = os.path.join(d, "mezz.mkv")
    subprocess.run(frames.remux_step(ts, mezz, "ffmpeg").argv, check=True, capture_output=True)
    return {"mp4": sources.make_scenes(d, audio_duration_s=5.5), "ts": ts, "mezz": mezz,
            "vfr": sources.make_vfr(d), "dir": d}


def timeline_of(path):
    out = subprocess.run(frames.probe_argv("ffprobe", path), check=True, capture_output=True)
    return frames.parse(out.stdout)


def assert_chunks_exact(source, cut_from, chunks):
    """``ffmpeg -ss seek_s -i cut_from -frames:v N`` decodes exactly the
    frames [a, a+N) of a full decode of ``source``, for every chunk."""
    full = framemd5s("-i", source)
    assert sum(c.frames for c in chunks) == len(full)
    for c in chunks:
        got = framemd5s("-ss", f"{c.seek_s:.6f}", "-i", cut_from, "-frames:v", str(c.frames))
        want = full[c.start_frame:c.start_frame + c.frames]
        assert got == want, (c, [full.index(g) if g in full else None for g in got[:3]])


def test_real_scene_chunks_are_frame_exact(made):
    tl = timeline_of(made["mp4"])
    scene_frames = sources.scene_cut_frames()
    chunks = cuts.plan_chunks(tl, scene_frames, target_s=2, min_s=1, max_s=3)
    check_invariants(tl, chunks)
    starts = [c.start_frame for c in chunks]
    assert set(scene_frames) <= set(starts), starts  # the cuts are chunk starts
    # Irregular keyframes: most chunks start on a non-keyframe (B-frames around).
    keys = {round(t * 24) for t in sources.keyframe_times()}
    assert len(set(starts) - keys) >= 3
    assert_chunks_exact(made["mp4"], made["mp4"], chunks)


def test_real_grid_chunks_are_frame_exact(made):
    tl = timeline_of(made["mp4"])
    chunks = cuts.plan_chunks(tl, [], target_s=2, min_s=1, max_s=4, grid_s=2, workers=1)
    check_invariants(tl, chunks)
    assert [c.start_s for c in chunks] == [0, 2, 4, 6]
    # 3 chunks: ideal boundaries at 2.67 s and 5.33 s snap to the grid (2 s, 6 s).
    chunks = cuts.plan_chunks(tl, [], target_s=2.5, min_s=1, max_s=4, grid_s=2)
    check_invariants(tl, chunks)
    assert [c.start_s for c in chunks] == [0, 2, 6]
    assert_chunks_exact(made["mp4"], made["mp4"], chunks)


def test_remuxed_ts_chunks_are_frame_exact(made):
    tl = timeline_of(made["mezz"])
    chunks = cuts.plan_chunks(tl, sources.scene_cut_frames(), target_s=1.5, min_s=0.5, max_s=3)
    check_invariants(tl, chunks)
    assert len(chunks) >= 5
    assert_chunks_exact(made["ts"], made["mezz"], chunks)


def test_vfr_chunks_are_frame_exact(made):
    tl = timeline_of(made["vfr"])
    assert tl.fps is None
    chunks = cuts.plan_chunks(tl, [], target_s=1, min_s=0.5, max_s=2)
    check_invariants(tl, chunks)
    assert sum(c.duration for c in chunks) == pytest.approx(sources.vfr_duration_s(), abs=1e-6)
    assert_chunks_exact(made["vfr"], made["vfr"], chunks)
