"""The ladder plan (nommer.workerd.outputs.ladder): pure, table-style."""

from fractions import Fraction as F

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.ladder import DEFAULT_LADDER, capped_fps, plan_rungs
from nommer.workerd.outputs.source import AudioTrack, SourceInfo

STEREO = (AudioTrack(index=0, channels=2, sample_rate=48000),)


def src(width, height, fps=F(30), audio=STEREO):
    return SourceInfo(duration_s=10.0, width=width, height=height, fps=fps, video_codec="h264",
                      audio=audio)


def default(codec="h264"):
    return {"type": "hls", "ladder": "default", "codec": codec}


def sizes(rungs):
    return [(r.width, r.height) for r in rungs]


def test_default_ladder_is_apples_table():
    assert [(e.width, e.height, e.h264_bps // 1000) for e in DEFAULT_LADDER] == [
        (416, 234, 145), (640, 360, 365), (768, 432, 730), (768, 432, 1100), (960, 540, 2000),
        (1280, 720, 3000), (1280, 720, 4500), (1920, 1080, 6000), (1920, 1080, 7800)]
    assert [e.hevc_bps // 1000 for e in DEFAULT_LADDER] == [
        145, 290, 580, 900, 1600, 2400, 3400, 4500, 5800]


def test_1080p60_source_gets_the_whole_ladder_fps_capped_up_to_540p():
    rungs = plan_rungs(default(), src(1920, 1080, F(60)))
    assert [(r.name, r.width, r.height, r.bitrate_bps, r.fps, r.fps_capped) for r in rungs] == [
        ("234p", 416, 234, 145_000, 30, True),
        ("360p", 640, 360, 365_000, 30, True),
        ("432p_730k", 768, 432, 730_000, 30, True),
        ("432p_1100k", 768, 432, 1_100_000, 30, True),
        ("540p", 960, 540, 2_000_000, 30, True),
        ("720p_3000k", 1280, 720, 3_000_000, 60, False),
        ("720p_4500k", 1280, 720, 4_500_000, 60, False),
        ("1080p_6000k", 1920, 1080, 6_000_000, 60, False),
        ("1080p_7800k", 1920, 1080, 7_800_000, 60, False),
    ]
    for r in rungs:
        assert r.maxrate_bps == r.bitrate_bps * 11 // 10
        assert r.bufsize_bits == 2 * r.bitrate_bps
        assert r.codec == "h264"
    assert len({r.name for r in rungs}) == len(rungs)


def test_hevc_takes_the_hevc_column():
    rungs = plan_rungs(default("hevc"), src(1280, 720))
    assert [(r.name, r.bitrate_bps) for r in rungs] == [
        ("234p", 145_000), ("360p", 290_000), ("432p_580k", 580_000), ("432p_900k", 900_000),
        ("540p", 1_600_000), ("720p_2400k", 2_400_000), ("720p_3400k", 3_400_000)]
    assert {r.codec for r in rungs} == {"hevc"}


@pytest.mark.parametrize("width,height,expected", [
    # landscape: rungs no taller than the source, width from the aspect ratio, even
    (1280, 720, [(416, 234), (640, 360), (768, 432), (768, 432), (960, 540), (1280, 720),
                 (1280, 720)]),
    (640, 360, [(416, 234), (640, 360)]),
    (642, 362, [(414, 234), (638, 360)]),          # odd aspect ratio: sizes rounded to even
    (641, 361, [(416, 234), (640, 360)]),          # odd sides
    (636, 358, [(416, 234)]),                      # just under 360: the 360p rung would upscale
    (1920, 804, [(558, 234), (860, 360), (1032, 432), (1032, 432), (1290, 540), (1720, 720),
                 (1720, 720)]),                    # 2.39:1 scales by height too
    # portrait: scaled by width, the rung's short side against the source's width
    (1080, 1920, [(234, 416), (360, 640), (432, 768), (432, 768), (540, 960), (720, 1280),
                  (720, 1280), (1080, 1920), (1080, 1920)]),
    (360, 640, [(234, 416), (360, 640)]),
    (362, 642, [(234, 414), (360, 638)]),
    # smaller than the lowest rung: one rung at the source's size
    (320, 180, [(320, 180)]),
    (180, 320, [(180, 320)]),
    (321, 181, [(320, 180)]),                      # rounded down to even sides (yuv420p)
    (643, 360, [(418, 234), (642, 360)]),          # 643 would round up to 644: never upscaled
    # square: compared by height
    (480, 480, [(234, 234), (360, 360), (432, 432), (432, 432)]),
])
def test_sizes_never_upscale_and_keep_the_aspect_ratio(width, height, expected):
    rungs = plan_rungs(default(), src(width, height))
    assert sizes(rungs) == expected
    for r in rungs:
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert abs(r.width / r.height - width / height) < 0.02


@pytest.mark.parametrize("width,height,fps,expected", [
    (320, 180, F(30), ("180p", 145_000)),
    (180, 320, F(30), ("180p", 145_000)),
    (200, 112, F(60), ("112p", 145_000)),
])
def test_source_smaller_than_every_rung_gets_one_rung_at_the_nearest_bitrate(width, height, fps,
                                                                             expected):
    (rung,) = plan_rungs(default(), src(width, height, fps))
    assert (rung.name, rung.bitrate_bps) == expected
    assert rung.fps == min(fps, 30)


@pytest.mark.parametrize("source_fps,expected", [
    (F(60), F(30)),
    (F(50), F(25)),
    (F(60000, 1001), F(30000, 1001)),
    (F(120), F(30)),
    (F(30), F(30)),
    (F(25), F(25)),
    (F(24000, 1001), F(24000, 1001)),
    (F(48), F(24)),
    (F(40), F(30)),     # 40/2 = 20 is too far under the cap: the cap itself
])
def test_capped_fps(source_fps, expected):
    assert capped_fps(source_fps, 30) == expected


def test_capped_fps_without_a_cap_or_a_rate():
    assert capped_fps(F(60), None) == 60
    assert capped_fps(None, 30) is None


@pytest.mark.parametrize("width,height", [(1280, 720), (720, 1280)])
def test_fps_cap_applies_to_the_short_side(width, height):
    rungs = plan_rungs(default(), src(width, height, F(50)))
    assert [(r.name, r.fps) for r in rungs] == [
        ("234p", 25), ("360p", 25), ("432p_730k", 25), ("432p_1100k", 25), ("540p", 25),
        ("720p_3000k", 50), ("720p_4500k", 50)]


def test_unknown_source_fps_leaves_fps_alone():
    rungs = plan_rungs(default(), src(640, 360, None))
    assert [(r.fps, r.fps_capped) for r in rungs] == [(None, False), (None, False)]


def test_custom_ladder_follows_the_same_rules():
    spec = {"type": "dash", "codec": "h264", "ladder": [
        {"height": 2160, "bitrate": "16M"},            # larger than the source: dropped
        {"height": 720, "bitrate": "3M"},
        {"height": 360, "bitrate": 800000, "fps_max": 15},
        {"height": 480, "bitrate": "1.2M", "fps_max": 60},
        {"height": 240, "bitrate": "300k"},
    ]}
    rungs = plan_rungs(spec, src(1280, 720, F(60)))
    assert [(r.name, r.width, r.height, r.bitrate_bps, r.fps) for r in rungs] == [
        ("240p", 426, 240, 300_000, 30),
        ("360p", 640, 360, 800_000, 15),
        ("480p", 854, 480, 1_200_000, 60),             # fps_max replaces the 30 fps cap
        ("720p", 1280, 720, 3_000_000, 60),
    ]


def test_custom_ladder_width_scales_a_portrait_source():
    spec = {"type": "hls", "codec": "h264", "ladder": [
        {"height": 1280, "width": 720, "bitrate": "3M"},
        {"height": 640, "width": 360, "bitrate": "800k"},
        {"height": 432, "bitrate": "1.2M"},            # no width: the short side
    ]}
    rungs = plan_rungs(spec, src(720, 1280))
    assert sizes(rungs) == [(360, 640), (432, 768), (720, 1280)]
    assert sizes(plan_rungs(spec, src(400, 712))) == [(360, 640)]


def test_custom_ladder_larger_than_the_source_gives_the_source_size():
    spec = {"type": "hls", "codec": "hevc", "ladder": [
        {"height": 1080, "bitrate": "5M"}, {"height": 720, "bitrate": "2.5M"}]}
    (rung,) = plan_rungs(spec, src(640, 360))
    assert (rung.name, rung.width, rung.height, rung.bitrate_bps, rung.codec) == (
        "360p", 640, 360, 2_500_000, "hevc")


def test_custom_rungs_collapsing_to_one_size_get_unique_names():
    spec = {"type": "hls", "codec": "h264", "ladder": [
        {"height": 360, "bitrate": "400k"}, {"height": 360, "bitrate": "800k"},
        {"height": 360, "bitrate": "800k"}]}
    rungs = plan_rungs(spec, src(640, 360))
    assert [(r.name, r.bitrate_bps) for r in rungs] == [("360p_400k", 400_000),
                                                        ("360p_800k", 800_000)]


def test_audio_only_source_is_refused_with_a_sentence():
    audio_only = SourceInfo(duration_s=3.0, audio=STEREO)
    with pytest.raises(PermanentJobError) as e:
        plan_rungs(default(), audio_only)
    assert e.value.message == ("the source has no video stream: a ladder (hls/dash) needs video; "
                               "ask only audio outputs for an audio-only source")


def test_a_bitrate_that_does_not_parse_is_a_permanent_error():
    with pytest.raises(PermanentJobError, match="rung 0 of the ladder"):
        plan_rungs({"ladder": [{"height": 360, "bitrate": "fast"}]}, src(640, 360))
