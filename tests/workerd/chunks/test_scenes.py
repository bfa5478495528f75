"""nommer.workerd.chunks.scenes: scene cuts on a proxy, mapped onto the timeline."""

import os
import subprocess

import pytest

from nommer.workerd.chunks import frames, scenes
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
