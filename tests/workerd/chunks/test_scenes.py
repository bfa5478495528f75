"""nommer.workerd.chunks.scenes: scene cuts on a proxy, mapped onto the timeline."""

import os
import re
import subprocess

import pytest

from nommer.workerd.chunks import cuts, frames, scenes
from nommer.workerd.chunks.model import Timeline
from tests.workerd.chunks import sources


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("scenes"))
    return {"mp4": sources.make_scenes(d), "ts": sources.make_ts(d),
            "mkv": sources.make_mkv(d, audio=False), "dir": d}


def timeline_of(path):
    out = subprocess.run(frames.probe_argv("ffprobe", path), check=True, capture_output=True)
    return frames.parse(out.stdout)


def detect(path, out_path, **kw):
    """Run the plan's step; return (parsed cuts, ffmpeg's progress stdout)."""
    step = scenes.plan(path, out_path, ffmpeg_bin="ffmpeg", expected_s=8.0, **kw)
    done = subprocess.run(step.argv, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out_path, "rb") as f:
        return scenes.parse(f.read(), timeline_of(path)), done.stdout.decode()


def test_plan_argv():
    step = scenes.plan("/in/src.mp4", "/w/scenes.txt", ffmpeg_bin="/usr/bin/ffmpeg",
                       threshold=0.4, proxy_width=256, expected_s=12.5)
    assert step.argv[0] == "/usr/bin/ffmpeg"
    assert step.argv[-5:] == ["null", "-progress", "pipe:1", "-nostats", "-"]
    graph = step.argv[step.argv.index("-vf") + 1]
    assert "scale=256:-2" in graph and "value=0.4" in graph and "file=/w/scenes.txt" in graph
    assert step.expected_s == 12.5 and step.capped
    with pytest.raises(ValueError):
        scenes.plan("/in/src.mp4", "/w/s.txt", ffmpeg_bin="ffmpeg", threshold=1.5)


@pytest.mark.parametrize("key", ["mp4", "ts", "mkv"])
def test_finds_the_known_cuts(made, key):
    cuts, progress = detect(made[key], os.path.join(made["dir"], f"cuts-{key}.txt"))
    expected = sources.scene_cut_frames()
    assert len(cuts) == len(expected), cuts
    for got, want in zip(cuts, expected):
        assert abs(got - want) <= 1, (cuts, expected)
    # Every frame reaches the null output: progress runs to the end.
    assert "progress=end" in progress
    times = [int(line.split("=")[1]) for line in progress.splitlines()
             if line.startswith("out_time_us=") and line.split("=")[1].isdigit()]
    assert max(times) / 1e6 == pytest.approx(8.0, abs=0.1)


def test_remuxed_ts_gives_the_same_frames(made):
    mezz = os.path.join(made["dir"], "mezz.mkv")
    subprocess.run(frames.remux_step(made["ts"], mezz, "ffmpeg").argv, check=True,
                   capture_output=True)
    cuts, _ = detect(mezz, os.path.join(made["dir"], "cuts-mezz.txt"))
    assert cuts == sources.scene_cut_frames()


def test_awkward_output_path(made):
    """A path with the characters filter graphs treat specially still works."""
    d = os.path.join(made["dir"], "we:ird, [dir]; it's")
    os.makedirs(d)
    cuts, _ = detect(made["mkv"], os.path.join(d, "cuts.txt"))
    assert cuts == sources.scene_cut_frames()


def test_higher_threshold_finds_fewer(made):
    cuts, _ = detect(made["mp4"], os.path.join(made["dir"], "cuts-high.txt"), threshold=0.99)
    assert cuts == []


def test_parse_maps_onto_nearest_frames():
    tl = Timeline(pts_s=tuple(1.5 + i / 24 for i in range(48)), start_s=1.48, end_s=3.5,
                  fps=24)
    text = "\n".join([
        "frame:0    pts:1500000 pts_time:1.5",  # frame 0: never a cut
        "lavfi.scene_score=0.9",
        "frame:1    pts:1916667 pts_time:1.91667",  # frame 10
        "lavfi.scene_score=0.5",
        "frame:2    pts:1916667 pts_time:1.91667",  # the same again
        "frame:3    pts:2500100 pts_time:2.5001",  # frame 24, 0.1 ms off
        "frame:4    pts:2520000 pts_time:2.52",  # 20 ms from frame 24, 21.7 from 25: near
        "garbage line",
        "frame:5    pts:9000000 pts_time:9",  # past the end: ignored
        "",
    ])
    assert scenes.parse(text.encode(), tl) == [10, 24]
    assert scenes.parse("", tl) == []


def test_parse_vfr_uses_local_intervals():
    pts = tuple([i / 24 for i in range(24)] + [1 + i / 30 for i in range(30)])
    tl = Timeline(pts_s=pts, start_s=0.0, end_s=2.0, fps=None)
    assert scenes.parse(f"frame:0 pts:{round(pts[30] * 1e6)} pts_time:x\n", tl) == [30]
    # 19 ms from a 24 fps frame is within its half interval; 20 ms past the
    # last 30 fps frame is not (half of 1/30 s is 16.7 ms).
    assert scenes.parse(f"frame:0 pts:{round((pts[10] + 0.019) * 1e6)} pts_time:x\n", tl) == [10]
    assert scenes.parse(f"frame:0 pts:{round((pts[-1] + 0.02) * 1e6)} pts_time:x\n", tl) == []


# --- scanning windows only ------------------------------------------------------------

#: Chunk lengths whose windows (+-0.5 s around 2, 4 and 6 s) hold the three
#: cuts of the 8 s sources (2.417, 4.417, 6.417 s).
LENGTHS = dict(target_s=2.0, min_s=0.5, max_s=4.0)


def run_windows(path, out_path, windows, tl, **kw):
    """Run ``plan_windows``' steps (ffmpeg at -v verbose, for its per-stream
    counts); return (parsed cuts, frames decoded, frames scored, steps)."""
    steps = scenes.plan_windows(path, out_path, windows, tl, ffmpeg_bin="ffmpeg", **kw)
    decoded = scored = 0
    for step in steps:
        assert not step.capped
        argv = [step.argv[0], "-v", "verbose", *step.argv[1:]]
        done = subprocess.run(argv, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        err = done.stderr.decode()
        decoded += sum(int(m) for m in re.findall(r"(\d+) frames decoded", err))
        scored += sum(int(m) for m in re.findall(r"(\d+) frames encoded", err))
        assert "progress=end" in done.stdout.decode()
    texts = []
    for k in range(len(windows)):
        with open(scenes.window_path(out_path, k), "rb") as f:
            texts.append(f.read())
    return scenes.parse_windows(texts, tl, windows), decoded, scored, steps


@pytest.fixture(scope="module")
def mezz(made):
    path = os.path.join(made["dir"], "mezz-w.mkv")
    subprocess.run(frames.remux_step(made["ts"], path, "ffmpeg").argv, check=True,
                   capture_output=True)
    return path


@pytest.mark.parametrize("key", ["mp4", "mkv", "mezz"])
def test_windows_find_the_cuts_the_whole_scan_finds(made, mezz, key):
    path = mezz if key == "mezz" else made[key]
    tl = timeline_of(path)
    windows = cuts.scan_windows(tl, **LENGTHS)
    assert windows == [pytest.approx((t - 0.5, t + 0.5), abs=0.01) for t in (2.0, 4.0, 6.0)]
    whole, _ = detect(path, os.path.join(made["dir"], f"whole-{key}.txt"))
    got, decoded, scored, steps = run_windows(path, os.path.join(made["dir"], f"win-{key}.txt"),
                                              windows, tl)
    assert got == whole == sources.scene_cut_frames()
    assert len(steps) == 1
    # Each window is scored from 4 frames before it to 2 past it: 3 x (24 + 7)
    # of the 192 frames (decoding starts at the keyframe before each seek:
    # this source has few, see test_windows_decode_a_fraction).
    total = sources.total_frames()
    assert 3 * 24 <= scored <= 3 * 32 <= total / 2
    assert decoded >= scored


def test_windows_decode_a_fraction(made):
    """With a keyframe every 0.5 s (a typical GOP against a typical window),
    the windowed scan decodes about its windows' share of the frames."""
    path = sources.make_scenes(made["dir"], "dense.mkv", audio=False,
                               extra_args=["-force_key_frames", "expr:gte(t,n_forced*0.5)"])
    tl = timeline_of(path)
    windows = cuts.scan_windows(tl, **LENGTHS)
    got, decoded, scored, _ = run_windows(path, os.path.join(made["dir"], "dense.txt"), windows, tl)
    assert got == sources.scene_cut_frames()
    _, progress = detect(path, os.path.join(made["dir"], "dense-whole.txt"))
    whole = max(int(line.split("=")[1]) for line in progress.splitlines()
                if line.startswith("frame="))
    assert whole == sources.total_frames() == 192
    # 3 windows of 1 s (24 frames) + 4 frames before + 2 after, each decoded
    # from the keyframe up to 0.5 s (12 frames) before: at most 3 x 42.
    assert scored <= 3 * 32 and decoded <= 3 * 42 < whole * 2 / 3


def test_first_and_last_frame_of_a_window_are_scored(made):
    """A cut exactly at a window's start (no frame of the window before it)
    or end is found: the scan starts a few frames early and ends late."""
    tl = timeline_of(made["mp4"])
    t58, t106, t154 = (tl.pts_s[i] - tl.pts_s[0] for i in sources.scene_cut_frames())
    windows = [(t58, t58 + 0.3), (t106 - 0.3, t106)]
    got, _, _, _ = run_windows(made["mp4"], os.path.join(made["dir"], "edges.txt"), windows, tl)
    assert got == [58, 106]
    # One frame later / earlier, the cut is outside: not reported.
    step = 1 / 24
    windows = [(t58 + step, t58 + 0.5), (t106 - 0.5, t106 - step), (t154 - 1.0, t154 + 1.0)]
    got, _, _, _ = run_windows(made["mp4"], os.path.join(made["dir"], "edges2.txt"), windows, tl)
    assert got == [154]


def test_cuts_outside_every_window_are_not_reported(made):
    tl = timeline_of(made["mkv"])
    windows = [(0.5, 1.5), (3.5, 4.5), (7.0, 7.9)]  # only 4.417 s inside
    got, _, scored, _ = run_windows(made["mkv"], os.path.join(made["dir"], "out.txt"), windows,
                                    tl)
    assert got == [106]
    assert scored < sources.total_frames() / 2


def test_a_window_at_the_start_is_not_seeked(made):
    tl = timeline_of(made["mp4"])
    steps = scenes.plan_windows(made["mp4"], "/w/s.txt", [(0.0, 1.0), (2.0, 3.0)], tl,
                                ffmpeg_bin="ffmpeg")
    argv = steps[0].argv
    first = argv[:argv.index("-i")]
    assert "-ss" not in first and first[-2:] == ["-t", "1.083333"]  # to 1 s + 2 frames
    second = argv[argv.index("-i") + 2:]
    assert second[:6] == ["-copyts", "-ss", "1.833333", "-t", "1.250000", "-i"]


def test_plan_windows_batches_inputs(made):
    tl = timeline_of(made["mkv"])
    windows = [(1.5, 2.5), (3.5, 4.5), (5.5, 6.5)]
    got, _, _, steps = run_windows(made["mkv"], os.path.join(made["dir"], "we:ird [w].txt"),
                                   windows, tl, max_inputs=2)
    assert len(steps) == 2 and got == sources.scene_cut_frames()
    assert steps[0].argv.count("-i") == 2 and steps[1].argv.count("-i") == 1
    assert steps[0].argv[-5:] == ["null", "-progress", "pipe:1", "-nostats", "-"]
    assert "file=" + scenes.window_path("/x", 2) not in steps[1].argv
    assert "win" not in scenes.window_path("/w/a.txt", 2) and scenes.window_path("/w/a.txt", 2) == "/w/a.txt.2"
    with pytest.raises(ValueError):
        scenes.plan_windows("/in.mkv", "/w/s.txt", [(2.0, 2.0)], tl, ffmpeg_bin="ffmpeg")
    with pytest.raises(ValueError):
        scenes.plan_windows("/in.mkv", "/w/s.txt", windows, tl, ffmpeg_bin="ffmpeg", threshold=0)


def test_parse_windows_keeps_frames_inside_their_window():
    tl = Timeline(pts_s=tuple(1.0 + i / 24 for i in range(96)), start_s=1.0, end_s=5.0, fps=24)
    line = "frame:0 pts:{} pts_time:x\n".format
    texts = [line(round((1.0 + 12 / 24) * 1e6)) + line(round((1.0 + 30 / 24) * 1e6)),
             line(round((1.0 + 48 / 24) * 1e6)).encode()]
    # Frame 12 (0.5 s) is in the first window's margin; 30 inside; 48 at the second's end.
    assert scenes.parse_windows(texts, tl, [(1.0, 1.5), (1.5, 2.0)]) == [30, 48]
    with pytest.raises(ValueError):
        scenes.parse_windows(texts, tl, [(1.0, 1.5)])


@pytest.mark.parametrize("key", ["mp4", "mezz"])
def test_plan_from_windows_is_the_plan_from_the_whole_scan(made, mezz, key):
    path = mezz if key == "mezz" else made[key]
    tl = timeline_of(path)
    whole, _ = detect(path, os.path.join(made["dir"], f"plan-whole-{key}.txt"))
    for lengths in (LENGTHS, dict(target_s=2.5, min_s=0.5, max_s=3.0),
                    dict(target_s=1.6, min_s=1.0, max_s=2.2, workers=1)):
        found, scanned, rounds = [], [], 0
        windows = cuts.scan_windows(tl, **lengths)
        assert windows  # the windowed path, not the whole scan
        while windows:
            rounds += 1
            assert rounds <= 3
            got, _, _, _ = run_windows(path, os.path.join(made["dir"], f"plan-{key}-{rounds}.txt"),
                                       windows, tl)
            found = sorted(set(found) | set(got))
            scanned += windows
            windows = cuts.scan_windows(tl, **lengths, scene_frames=found, scanned=scanned)
        assert set(found) <= set(whole)
        assert cuts.plan_chunks(tl, found, **lengths) == cuts.plan_chunks(tl, whole, **lengths)
