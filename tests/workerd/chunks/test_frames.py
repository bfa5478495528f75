"""nommer.workerd.chunks.frames: the frame timeline, the remux of TS/PS/AVI."""

import os
import subprocess
from fractions import Fraction

import pytest
from twisted.internet import reactor
from twisted.trial import unittest

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import frames
from tests.helpers import ensure
from tests.workerd import media
from tests.workerd.chunks import sources
from tests.workerd.chunks.sources import framemd5s


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The test sources, made once: {key: path}."""
    d = str(tmp_path_factory.mktemp("frames"))
    return {
        "mp4": sources.make_scenes(d, audio_duration_s=5),
        "ts": sources.make_ts(d),
        "avi": sources.make_avi(d),
        "mkv": sources.make_mkv(d),
        "vfr": sources.make_vfr(d),
        "dir": d,
    }


def timeline_of(path):
    out = subprocess.run(frames.probe_argv("ffprobe", path), check=True, capture_output=True)
    return frames.parse(out.stdout)


def probe(path):
    return media.probe_json(path)


# --- parse, on synthetic listings -------------------------------------------------------

def listing(pts, *, tb="1/12288", rate="24/1", avg=None, duration=512, start="0.000000",
            fmt_start=None, flags=None, side_data=False):
    """A compact listing as probe_argv prints it (packets in the given order)."""
    lines = []
    for i, p in enumerate(pts):
        f = flags[i] if flags else ("K_" if i == 0 else "__")
        line = f"packet|pts={p}|duration={duration}|flags={f}"
        if side_data:
            line += "|side_data|,"  # what TS packets carry
        lines.append(line)
        if side_data:
            lines.append("")
    lines.append(f"stream|r_frame_rate={rate}|avg_frame_rate={avg or rate}|time_base={tb}|"
                 f"start_time={start}")
    if fmt_start is not None:
        lines.append(f"format|start_time={fmt_start}")
    return "\n".join(lines) + "\n"


def test_parse_sorts_decode_order_and_finds_cfr():
    # I P B B order, as a B-frame stream is stored.
    decode = [0, 1536, 512, 1024, 3584, 2048, 2560, 3072]
    tl = frames.parse(listing(decode).encode())
    assert tl.pts_s == tuple(i * 512 / 12288 for i in range(8))
    assert tl.fps == Fraction(24)
    assert tl.cfr
    assert tl.frames == 8
    assert tl.end_s == pytest.approx(8 / 24)
    assert tl.duration_s == pytest.approx(8 / 24)


def test_parse_ntsc_rate_in_millisecond_time_base():
    """29.97 fps in MKV (1 ms ticks): intervals of 33 and 34 ms are still CFR."""
    pts = [round(i * 1001 / 30) for i in range(300)]
    tl = frames.parse(listing(pts, tb="1/1000", rate="30000/1001", duration=33))
    assert tl.fps == Fraction(30000, 1001)
    # A 30 fps tag on the same timestamps drifts off its grid: not CFR 30.
    tl = frames.parse(listing(pts, tb="1/1000", rate="30/1", avg="30/1", duration=33))
    assert tl.fps is None


def test_parse_vfr():
    pts = [i * 5 for i in range(24)] + [120 + i * 4 for i in range(30)]
    tl = frames.parse(listing(pts, tb="1/120", rate="120/1", avg="54/2", duration=1))
    assert tl.fps is None
    assert not tl.cfr
    # The packets' duration is one tick (as the mp4 muxer writes for VFR): the
    # last frame lasts the typical interval instead.
    assert tl.end_s == pytest.approx((120 + 29 * 4 + 4) / 120)


def test_parse_side_data_lines_and_format_start():
    """TS listings: side data after the fields, trailing commas, blank lines;
    start_s is the format's start_time (what -ss counts from), not the video's."""
    pts = [133500 + 3750 * i for i in (0, 3, 1, 2, 4)]
    tl = frames.parse(listing(pts, tb="1/90000", duration=3750, start="1.483333",
                              fmt_start="1.462000", side_data=True))
    assert tl.frames == 5
    assert tl.pts_s[0] == pytest.approx(1.483333, abs=1e-6)
    assert tl.start_s == pytest.approx(1.462)
    assert tl.fps == Fraction(24)
    assert tl.end_s == pytest.approx(1.483333 + 5 / 24, abs=1e-6)


def test_parse_skips_discarded_packets():
    pts = [-1024, -512, 0, 512, 1024]
    tl = frames.parse(listing(pts, flags=["KD", "_D", "__", "__", "__"]))
    assert tl.frames == 3
    assert tl.pts_s[0] == 0.0


def test_parse_refuses_missing_pts_and_empty():
    with pytest.raises(PermanentJobError, match="without timestamps"):
        frames.parse("packet|pts=N/A|duration=1|flags=K_\nstream|time_base=1/24|r_frame_rate=24/1\n")
    with pytest.raises(PermanentJobError, match="no video frames"):
        frames.parse("stream|time_base=1/24|r_frame_rate=24/1\n")


def test_nominal_fps_single_frame_and_constant_interval():
    assert frames.nominal_fps([0], Fraction(1, 1000), [None, Fraction(25)]) == 25
    # No candidate fits, but every interval is 40 ms: 25 fps.
    assert frames.nominal_fps([0, 40, 80, 120], Fraction(1, 1000), [Fraction(30)]) == 25


# --- real files -----------------------------------------------------------------------

def test_timeline_of_b_frame_mp4(made):
    tl = timeline_of(made["mp4"])
    n = sources.total_frames()
    assert tl.frames == n == len(framemd5s("-i", made["mp4"]))
    assert tl.fps == 24
    assert tl.start_s == 0.0
    assert tl.end_s == pytest.approx(8.0)
    assert list(tl.pts_s) == sorted(tl.pts_s)
    assert all(b - a == pytest.approx(1 / 24) for a, b in zip(tl.pts_s, tl.pts_s[1:]))


def test_timeline_of_ts_counts_from_format_start(made):
    tl = timeline_of(made["ts"])
    info = probe(made["ts"])
    video = [s for s in info["streams"] if s["codec_type"] == "video"][0]
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"][0]
    # The trap this guards: in TS the audio starts before the video.
    assert float(audio["start_time"]) < float(video["start_time"])
    assert tl.start_s == pytest.approx(float(info["format"]["start_time"]))
    assert tl.pts_s[0] == pytest.approx(float(video["start_time"]))
    assert tl.frames == sources.total_frames()
    assert tl.fps == 24


def test_timeline_of_vfr(made):
    tl = timeline_of(made["vfr"])
    intervals = {round(b - a, 4) for a, b in zip(tl.pts_s, tl.pts_s[1:])}
    assert intervals == {round(1 / 24, 4), round(1 / 30, 4)}
    assert tl.fps is None
    assert tl.frames == 48 + 45 + 36 == len(framemd5s("-i", made["vfr"]))
    assert tl.end_s == pytest.approx(sources.vfr_duration_s(), abs=1e-3)


def test_needs_remux(made):
    assert frames.needs_remux(probe(made["ts"]))
    assert frames.needs_remux(probe(made["avi"]))
    assert not frames.needs_remux(probe(made["mp4"]))
    assert not frames.needs_remux(probe(made["mkv"]))
    assert frames.needs_remux({"format": {"format_name": "mpeg"}})
    assert not frames.needs_remux({})
    assert not frames.needs_remux(None)


def remuxed(made, key):
    out = os.path.join(made["dir"], f"mezz-{key}.mkv")
    step = frames.remux_step(made[key], out, "ffmpeg", expected_s=8.0)
    assert step.argv[-1] == out and step.expected_s == 8.0
    done = subprocess.run(step.argv, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def assert_seeks_exact(source, cut_from, starts, n=6):
    """Chunks cut from ``cut_from`` with the midpoint seek hold exactly the
    frames [a, a+n) of a full decode of ``source``."""
    tl = timeline_of(cut_from)
    full = framemd5s("-i", source)
    assert tl.frames == len(full)
    for a in starts:
        mid = (tl.pts_s[a - 1] + tl.pts_s[a]) / 2 - tl.start_s
        got = framemd5s("-ss", f"{mid:.6f}", "-i", cut_from, "-frames:v", str(n))
        assert got == full[a:a + n], (a, [full.index(g) if g in full else None for g in got])


# Frames around the scene cuts (57, 106, 154), on and off the keyframes (33, 79, 90, 138, 179).
STARTS = (1, 32, 33, 34, 57, 79, 106, 137, 154, 180)


def test_remuxed_ts_seeks_exact(made):
    mezz = remuxed(made, "ts")
    assert not frames.needs_remux(probe(mezz))
    assert_seeks_exact(made["ts"], mezz, STARTS)


def test_remuxed_avi_seeks_exact(made):
    mezz = remuxed(made, "avi")
    assert_seeks_exact(made["avi"], mezz, STARTS)


def test_mp4_and_mkv_seek_exact_directly(made):
    assert_seeks_exact(made["mp4"], made["mp4"], STARTS)
    assert_seeks_exact(made["mkv"], made["mkv"], STARTS)


def test_edit_list_discarded_packets(made):
    """An MP4 cut by stream copy off a keyframe keeps the packets before the
    cut, flagged discarded by its edit list: they are not frames."""
    trimmed = os.path.join(made["dir"], "trimmed.mp4")
    sources.ffmpeg("-ss", "1.1", "-i", made["mp4"], "-c", "copy", "-an", trimmed)
    listing_text = subprocess.run(frames.probe_argv("ffprobe", trimmed), check=True,
                                  capture_output=True).stdout.decode()
    assert "flags=_D" in listing_text
    tl = timeline_of(trimmed)
    assert tl.frames == len(framemd5s("-i", trimmed)) < sources.total_frames()
    assert tl.pts_s[0] == 0.0
    assert_seeks_exact(trimmed, trimmed, (1, 20, 31, 80, 150))


def test_vfr_seeks_exact(made):
    assert_seeks_exact(made["vfr"], made["vfr"], (1, 47, 48, 49, 93, 120))


# --- read_timeline, sandboxed -----------------------------------------------------------

class ReadTimelineTests(unittest.TestCase):
    timeout = 120

    @ensure
    async def test_same_as_parse(self):
        d = self.mktemp()
        path = sources.make_scenes(d, duration_s=3, audio=False)
        tl = await frames.read_timeline(reactor, media.settings(), path)
        self.assertEqual(tl, timeline_of(path))
        self.assertEqual(tl.frames, 72)

    @ensure
    async def test_not_media(self):
        d = self.mktemp()
        os.makedirs(d)
        path = os.path.join(d, "notes.mp4")
        with open(path, "wb") as f:
            f.write(b"not a video\n" * 20)
        with self.assertRaises(PermanentJobError) as cm:
            await frames.read_timeline(reactor, media.settings(), path, display_name="s3://b/in.mp4")
        self.assertIn("s3://b/in.mp4", cm.exception.message)
        self.assertNotIn(path, cm.exception.message)

    @ensure
    async def test_playlist_refused(self):
        d = self.mktemp()
        os.makedirs(d)
        path = os.path.join(d, "list.mp4")
        with open(path, "wb") as f:
            f.write(b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n")
        with self.assertRaises(PermanentJobError) as cm:
            await frames.read_timeline(reactor, media.settings(), path)
        self.assertIn("playlist (hls)", cm.exception.message)
