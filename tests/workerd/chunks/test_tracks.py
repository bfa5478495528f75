"""nommer.workerd.chunks.tracks: the VideoTracks of mp4 outputs and ladder
packages are exactly what the one-piece builders (mp4.plan,
package.plan_command) put in their argv."""

from fractions import Fraction

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import tracks
from nommer.workerd.chunks.model import Timeline, VideoTrack
from nommer.workerd.outputs import mp4, package
from nommer.workerd.outputs.source import AudioTrack, SourceInfo

STEREO = AudioTrack(index=0, channels=2, sample_rate=48000)


def source(width=1280, height=720, fps=Fraction(30), audio=(STEREO,)):
    return SourceInfo(duration_s=10.0, width=width, height=height, fps=fps, video_codec="h264",
                      audio=audio)


def mp4_spec(**fields):
    s = {"type": "mp4", "name": "video.mp4", "codec": "h264", "crf": 23,
         "encoder_preset": "medium", "audio_bitrate": "128k"}
    s.update(fields)
    return s


def ladder_spec(kind="hls", **fields):
    s = {"type": kind, "dir": "stream", "ladder": "default", "codec": "h264", "segment_s": 6,
         "encoder_preset": "veryfast", "audio_bitrate": "128k",
         "name": "master.m3u8" if kind == "hls" else "manifest.mpd"}
    s.update(fields)
    return s


def mp4_video_part(spec, src, tmp_path):
    """``(-vf chain, the encoder options up to the audio)`` of mp4.plan's argv."""
    argv = mp4.plan(spec, src, ffmpeg_bin="ffmpeg", input_path="/in.mp4",
                    work_dir=str(tmp_path))[0].argv
    vf = argv.index("-vf")
    end = argv.index("-map", vf) if "-map" in argv[vf:] else argv.index("-movflags")
    return argv[vf + 1], argv[vf + 2:end]


MP4_CASES = {
    "same size": (mp4_spec(), source()),
    "scaled": (mp4_spec(height=360), source()),
    "portrait": (mp4_spec(height=720), source(1080, 1920)),
    "fps capped": (mp4_spec(fps_max=30, height=480), source(fps=Fraction(60))),
    "29.97 capped": (mp4_spec(fps_max=30), source(fps=Fraction(60000, 1001))),
    "hevc bitrate": (mp4_spec(codec="hevc", bitrate="2M", width=640), source()),
    "silent": (mp4_spec(crf=20.5), source(audio=())),
}


@pytest.mark.parametrize("case", sorted(MP4_CASES))
def test_mp4_track_is_the_video_half_of_mp4_plan(case, tmp_path):
    spec, src = MP4_CASES[case]
    chain, args = mp4_video_part(spec, src, tmp_path)
    track = tracks.mp4_track(spec, src, "o1")
    assert track.key == "o1"
    assert track.chain == chain
    assert list(track.args) == args
    assert track.fps == mp4.output_fps(src.fps, spec.get("fps_max"))


def test_mp4_track_fps_cap_puts_the_fps_filter_first():
    track = tracks.mp4_track(mp4_spec(fps_max=30), source(fps=Fraction(60)), "o0")
    assert track.chain.startswith("fps=30/1,scale=1280:720")
    assert track.fps == 30
    assert "-g" in track.args and track.args[track.args.index("-g") + 1] == "60"
    assert tracks.has_fps_filter(track)


def test_mp4_track_of_a_vfr_source_keeps_its_timestamps():
    vfr = Timeline(pts_s=(0.0, 0.04, 0.1), start_s=0.0, end_s=0.13, fps=None)
    src = source(fps=Fraction(27))
    assert tracks.mp4_track(mp4_spec(), src, "o0", timeline=vfr).fps is None
    # A cap over the VFR source's rate makes it CFR again: the filter's rate.
    capped = tracks.mp4_track(mp4_spec(fps_max=20), src, "o0", timeline=vfr)
    assert capped.fps == 20 and capped.chain.startswith("fps=20/1")


def test_mp4_track_refuses_no_video_a_merge_and_a_bad_key():
    with pytest.raises(PermanentJobError, match="no video"):
        tracks.mp4_track(mp4_spec(), SourceInfo(duration_s=3.0, audio=(STEREO,)), "o0")
    with pytest.raises(ValueError, match="audio merge"):
        tracks.mp4_track(mp4_spec(image_path="s3://b/i.png"), source(), "o0")
    for bad in ("", "o 1", "../o", "o_1", "x" * 33):
        with pytest.raises(ValueError):
            tracks.mp4_track(mp4_spec(), source(), bad)


def ladder_argv(pkg, src, tmp_path):
    argv, rungs, _ = package.plan_command(pkg, src, ffmpeg_bin="ffmpeg", input_path="/in.mp4",
                                          work_dir=str(tmp_path))
    return argv, rungs


def rung_options(argv, i):
    """``[(option without :v:i, value)]`` for output video stream i of a package argv."""
    suffix = f":v:{i}"
    return [(a[:-len(suffix)], argv[k + 1]) for k, a in enumerate(argv)
            if a.startswith("-") and a.endswith(suffix)]


LADDER_CASES = {
    "default 720p30": ({"hls": ladder_spec()}, source()),
    "default 1080p60 hls+dash": ({"hls": ladder_spec(), "dash": ladder_spec("dash")},
                                 source(1920, 1080, Fraction(60))),
    "hevc portrait": ({"dash": ladder_spec("dash", codec="hevc")}, source(720, 1280)),
    "custom with fps_max": ({"hls": ladder_spec(ladder=[
        {"height": 360, "bitrate": "800k"}, {"height": 720, "bitrate": "3M", "fps_max": 24}])},
        source(fps=Fraction(60000, 1001))),
}


@pytest.mark.parametrize("case", sorted(LADDER_CASES))
def test_package_tracks_are_the_rungs_of_package_plan(case, tmp_path):
    pkg, src = LADDER_CASES[case]
    argv, rungs = ladder_argv(pkg, src, tmp_path)
    got = tracks.package_tracks(pkg, src, "p0")
    assert [t.key for t in got] == [f"p0r{i}" for i in range(len(rungs))]
    chains = package.rung_chains(rungs)
    preset = argv[argv.index("-preset:v") + 1]
    for i, (track, rung) in enumerate(zip(got, rungs)):
        # The rung's filters, between the split's label and the [v<i>] label.
        label = f"[s{i}]" if len(rungs) > 1 else "[0:v:0]"
        assert chains[i + (1 if len(rungs) > 1 else 0)] == f"{label}{track.chain}[v{i}]"
        assert track.chain.endswith(f"scale={rung.width}:{rung.height},setsar=1")
        assert track.chain.startswith("fps=") == rung.fps_capped
        args = list(track.args)
        assert args[:4] == ["-preset", preset, "-pix_fmt", "yuv420p"]
        assert list(zip(args[4::2], args[5::2])) == rung_options(argv, i)
        assert not any(":v:" in a for a in args)
        assert track.fps == rung.fps


def test_package_tracks_keyframes_are_on_the_2s_grid_of_each_rung():
    got = tracks.package_tracks({"hls": ladder_spec()}, source(1920, 1080, Fraction(60)), "p1")
    for track in got:
        args = list(track.args)
        assert args[args.index("-force_key_frames") + 1] == "expr:gte(t,n_forced*2)"
        assert args[args.index("-g") + 1] == str(int(track.fps * 2))
        assert args[args.index("-sc_threshold") + 1] == "0"
    assert {t.fps for t in got} == {30, 60}


def test_package_tracks_refuse_an_audio_only_source():
    with pytest.raises(PermanentJobError, match="no video"):
        tracks.package_tracks({"hls": ladder_spec()}, SourceInfo(duration_s=3.0, audio=(STEREO,)),
                              "p0")


@pytest.mark.parametrize("frames,src,out,expected", [
    (25, 60, 30, 13), (24, 60, 30, 12), (48, 24, 20, 40), (25, 24, 20, 21), (7, 24, 20, 6),
    (31, Fraction(30000, 1001), 20, 21), (1, 60, 30, 1)])
def test_expected_frames_after_an_fps_filter_as_ffmpeg_counts(frames, src, out, expected):
    # The figures are ffmpeg 5.1's (trim=end_frame=N,setpts=PTS-STARTPTS,fps=R, counted);
    # test_encode checks one against a real run.
    track = VideoTrack(key="o0", chain=f"fps={out}/1,scale=64:36", args=(), fps=Fraction(out))
    assert tracks.expected_frames(frames, track, Fraction(src)) == expected


def test_expected_frames_without_an_fps_filter_or_unknown():
    plain = VideoTrack(key="o0", chain="scale=64:36", args=(), fps=Fraction(24))
    assert tracks.expected_frames(37, plain, Fraction(24)) == 37
    assert tracks.expected_frames(37, VideoTrack(key="o0", chain="", args=()), None) == 37
    capped = VideoTrack(key="o0", chain="fps=20/1,scale=64:36", args=(), fps=Fraction(20))
    assert tracks.expected_frames(37, capped, None) is None  # VFR source through an fps filter


def test_pixels_from_the_chain():
    assert tracks.pixels(VideoTrack(key="a", chain="fps=30/1,scale=640:360,setsar=1", args=())) \
        == 640 * 360
    assert tracks.pixels(VideoTrack(key="a", chain="", args=())) is None
