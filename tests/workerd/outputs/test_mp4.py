"""nommer.workerd.outputs.mp4: MP4 files and audio merges made by real ffmpeg
from tiny sources, probed afterwards (and two played in headless chromium)."""

import os
from fractions import Fraction

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import mp4
from nommer.workerd.outputs.source import AudioTrack, SourceInfo
from nommer.workerd.outputs.step import MEDIA
from tests.workerd.outputs import media
from tests.workerd.media import top_level_boxes
from tests.workerd.outputs.media import ffmpeg, ffprobe_json, probe_json, streams


def spec(**fields):
    """A normalized mp4 spec: the schema's defaults, then ``fields``. Preset
    superfast: the fastest at which x264 still writes High profile (ultrafast
    turns CABAC and 8x8 transforms off: Constrained Baseline)."""
    s = {"type": "mp4", "name": "video.mp4", "codec": "h264", "crf": 28,
         "encoder_preset": "superfast", "audio_bitrate": "128k"}
    s.update(fields)
    return s


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mp4-sources"))
    paths = {"landscape": media.landscape(d, duration_s=3),
             "tiny": media.tiny(d, duration_s=1),
             "portrait": media.portrait(d, duration_s=1),
             "fps60": media.fps60(d),
             "silent": media.no_audio(d, duration_s=1),
             "odd": media.truly_odd_size(d, duration_s=1),
             "surround": media.surround(d, duration_s=1),
             "audio_only": media.audio_only(d, duration_s=3),
             "short_audio": media.audio_only(d, "short.m4a", duration_s=1.37)}
    return {k: (p, media.probe(p)) for k, p in paths.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    made = {}

    def picture(name, size, *extra):
        made[name] = str(d / name)
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}", "-frames:v", "1", *extra, made[name])

    picture("odd.png", "800x450", "-vf", "scale=801:451")  # testsrc2 itself rounds down to even
    picture("photo.jpg", "800x450")
    picture("huge.png", "2400x1200")
    picture("portrait.webp", "450x800")
    picture("still.gif", "320x180")
    picture("picture.bmp", "320x180")
    picture("picture.tiff", "320x180")
    made["animated.gif"] = str(d / "animated.gif")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10", "-t", "1", made["animated.gif"])
    made["video.mp4"] = str(d / "video.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10", "-t", "1", "-c:v", "libx264",
           "-preset", "ultrafast", made["video.mp4"])
    made["sound.m4a"] = str(d / "sound.m4a")
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", made["sound.m4a"])
    for name, lines in (("notes.txt", 20), ("short.txt", 1), ("fake.jpg", 20), ("fake.png", 20)):
        made[name] = str(d / name)
        with open(made[name], "w") as f:
            f.write("this is a text file, not a picture\n" * lines)
    return made


def run(s, source_key, sources, work_dir, **extra):
    """plan, run every step's argv with ffmpeg, finish: ``(steps, OutputResult)``."""
    path, info = sources[source_key]
    _, steps, result = media.build(mp4, s, path, work_dir, source=info, **extra)
    return steps, result


def keyframe_times(path):
    packets = ffprobe_json(path, "-select_streams", "v:0",
                           "-show_entries", "packet=pts_time,flags")["packets"]
    return sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])


# --- video sources ----------------------------------------------------------------------

def test_height_240_from_360p(sources, tmp_path):
    """640x360 asked at height 240: 426x240 H.264 High yuv420p, AAC-LC stereo
    48 kHz, fast start, keyframes every 2 s; finish's info is what ffprobe sees."""
    s = spec(name="out/download.mp4", height=240)
    steps, result = run(s, "landscape", sources, tmp_path)
    [step] = steps
    assert step.expected_s == pytest.approx(3.0, abs=0.05)
    assert step.weight == pytest.approx(3.0 * 426 * 240 / 1e6, rel=0.05)
    [f] = result.files
    assert (f.path, f.role, f.content_type) == ("out/download.mp4", MEDIA, "video/mp4")
    assert f.local == os.path.join(str(tmp_path), "out", "download.mp4")
    assert f.bytes == os.path.getsize(f.local)
    probed = probe_json(f.local)
    [v] = streams(probed, "video")
    [a] = streams(probed, "audio")
    assert (v["width"], v["height"]) == (426, 240)
    assert v["codec_name"] == "h264" and v["profile"] == "High" and v["pix_fmt"] == "yuv420p"
    assert v["r_frame_rate"] == "30/1"
    assert a["codec_name"] == "aac" and a["profile"] == "LC"
    assert (a["channels"], int(a["sample_rate"])) == (2, 48000)
    assert int(a["bit_rate"]) == pytest.approx(128000, rel=0.25)
    duration = float(probed["format"]["duration"])
    assert duration == pytest.approx(3.0, abs=0.1)
    boxes = top_level_boxes(f.local)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    info = result.info
    assert (info["width"], info["height"], info["fps"]) == (426, 240, 30.0)
    level = int(v["level"])
    assert info["codec"] == f"avc1.64{0:02x}{level:02x}"
    assert info["codecs"] == info["codec"] + ",mp4a.40.2"
    assert info["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert info["bitrate_average"] == pytest.approx(f.bytes * 8 / duration, rel=0.05)
    assert keyframe_times(f.local) == [0.0, 2.0]


def test_no_upscale(sources, tmp_path):
    """A 320x180 source asked at height 720 stays 320x180."""
    _, result = run(spec(height=720), "tiny", sources, tmp_path)
    [v] = streams(probe_json(result.files[0].local), "video")
    assert (v["width"], v["height"]) == (320, 180)
    assert (result.info["width"], result.info["height"]) == (320, 180)


@pytest.mark.parametrize("fields,size", [({"height": 240}, (240, 426)),
                                         ({"height": 320}, (320, 568)),
                                         ({"height": 720}, (360, 640)),
                                         ({"width": 180}, (102, 180)),
                                         ({"width": 1080}, (360, 640)),
                                         ({"height": 240, "width": 180}, (240, 426)),
                                         ({}, (360, 640))])
def test_portrait(fields, size, sources, tmp_path):
    """A 360x640 portrait source keeps its aspect ratio and is read as the ladder
    reads it: height bounds the short side (the width), width the long side
    (the height), never more than the source's."""
    _, result = run(spec(**fields), "portrait", sources, tmp_path)
    [v] = streams(probe_json(result.files[0].local), "video")
    assert (v["width"], v["height"]) == size
    assert (result.info["width"], result.info["height"]) == size


@pytest.mark.parametrize("src,fields,size", [
    ((1080, 1920), {"height": 720}, (720, 1280)),    # web-mp4-720 on a phone video
    ((1080, 1920), {"width": 1280}, (720, 1280)),
    ((1080, 1920), {"height": 1080}, (1080, 1920)),
    ((1080, 1920), {"height": 2160}, (1080, 1920)),  # never upscaled
    ((1920, 1080), {"height": 720}, (1280, 720)),
    ((1920, 1080), {"width": 1280}, (1280, 720)),
    ((1080, 1080), {"height": 720}, (720, 720)),
])
def test_planned_size_reads_height_as_the_short_side(src, fields, size, tmp_path):
    """The scale the plan asks of ffmpeg, on full-HD sources (not encoded here)."""
    source = SourceInfo(duration_s=10.0, width=src[0], height=src[1], fps=Fraction(30))
    [step] = mp4.plan(spec(**fields), source, ffmpeg_bin="ffmpeg", input_path="/in.mp4",
                      work_dir=str(tmp_path))
    assert f"scale={size[0]}:{size[1]}" in step.argv[step.argv.index("-vf") + 1].split(",")


def test_odd_source_gives_even_sides(sources, tmp_path):
    """A 641x361 yuv444p source gives even sides in yuv420p."""
    _, result = run(spec(), "odd", sources, tmp_path)
    [v] = streams(probe_json(result.files[0].local), "video")
    assert v["width"] % 2 == 0 and v["height"] % 2 == 0
    assert abs(v["width"] - 641) <= 1 and abs(v["height"] - 361) <= 1
    assert v["pix_fmt"] == "yuv420p"


def test_fps_capped_60_to_30(sources, tmp_path):
    """A 60 fps source with fps_max 30 gives 30 fps, every other frame."""
    steps, result = run(spec(fps_max=30), "fps60", sources, tmp_path)
    assert "fps=30/1" in steps[0].argv[steps[0].argv.index("-vf") + 1]
    probed = probe_json(result.files[0].local)
    [v] = streams(probed, "video")
    assert v["r_frame_rate"] == "30/1" and int(v["nb_frames"]) == 60
    assert result.info["fps"] == 30.0
    assert keyframe_times(result.files[0].local) == [0.0]  # 2 s clip: one 2 s keyframe interval
    # without a cap, the 60 fps stay
    _, result = run(spec(), "fps60", sources, tmp_path / "uncapped")
    [v] = streams(probe_json(result.files[0].local), "video")
    assert v["r_frame_rate"] == "60/1" and result.info["fps"] == 60.0


def test_output_fps():
    assert mp4.output_fps(Fraction(60), 30) == 30
    assert mp4.output_fps(Fraction(60000, 1001), 30) == Fraction(30000, 1001)
    assert mp4.output_fps(Fraction(50), 30) == 25
    assert mp4.output_fps(Fraction(120), 30) == 30
    assert mp4.output_fps(Fraction(24), 20) == 20        # 12 would lose too much
    assert mp4.output_fps(Fraction(25), 30) == 25
    assert mp4.output_fps(Fraction(30), None) == 30
    assert mp4.output_fps(None, 30) is None
    assert mp4.output_fps(Fraction(60), 29.97) == Fraction(2997, 100)   # not 20
    assert mp4.output_fps(Fraction(120), 50) == 40


def test_hevc_tagged_hvc1(sources, tmp_path):
    """HEVC is tagged hvc1 (Apple refuses hev1), Main profile, with its RFC 6381 string."""
    _, result = run(spec(codec="hevc", height=180), "landscape", sources, tmp_path)
    [v] = streams(probe_json(result.files[0].local), "video")
    assert v["codec_name"] == "hevc" and v["codec_tag_string"] == "hvc1"
    assert v["profile"] == "Main" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (320, 180)
    assert result.info["codec"] == f"hvc1.1.6.L{int(v['level'])}.90"
    boxes = top_level_boxes(result.files[0].local)
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_bitrate_instead_of_crf(sources, tmp_path):
    """With bitrate: -b:v, maxrate 1.5x, bufsize 2x and no -crf; the file is near it."""
    s = spec(bitrate="300k", height=240)
    steps, result = run(s, "landscape", sources, tmp_path)
    argv = steps[0].argv
    assert "-crf" not in argv
    assert argv[argv.index("-b:v") + 1] == "300000"
    assert argv[argv.index("-maxrate") + 1] == "450000"
    assert argv[argv.index("-bufsize") + 1] == "600000"
    [v] = streams(probe_json(result.files[0].local), "video")
    assert int(v["bit_rate"]) == pytest.approx(300000, rel=0.35)


def test_source_without_audio(sources, tmp_path):
    """No audio in the source: a video-only MP4."""
    steps, result = run(spec(), "silent", sources, tmp_path)
    assert "0:a:0" not in steps[0].argv
    probed = probe_json(result.files[0].local)
    assert streams(probed, "audio") == [] and len(streams(probed, "video")) == 1
    assert "mp4a" not in result.info["codecs"]


def test_surround_audio_becomes_stereo(sources, tmp_path):
    _, result = run(spec(), "surround", sources, tmp_path)
    [a] = streams(probe_json(result.files[0].local), "audio")
    assert a["channels"] == 2 and int(a["sample_rate"]) == 48000


def test_mov_container(sources, tmp_path):
    _, result = run(spec(name="clip.mov"), "tiny", sources, tmp_path)
    probed = probe_json(result.files[0].local)
    assert probed["format"]["tags"]["major_brand"].strip() == "qt"
    assert result.files[0].content_type == "video/quicktime"


def test_audio_only_source_without_image_refused(sources):
    path, info = sources["audio_only"]
    with pytest.raises(PermanentJobError) as e:
        mp4.plan(spec(), info, ffmpeg_bin="ffmpeg", input_path=path, work_dir="/nonexistent")
    assert e.value.message == ("the source has no video stream: an mp4 output needs video, "
                               "or an image_path to put over the audio")


# --- audio merge -------------------------------------------------------------------------

def audio_duration(path):
    [a] = streams(probe_json(path), "audio")
    return float(a["duration"])


@pytest.mark.parametrize("source_key", ["audio_only", "short_audio"])
def test_merge_lasts_as_long_as_the_audio(source_key, sources, images, tmp_path):
    """An odd-sized PNG over 3 s (and 1.37 s) of audio: the video has the
    image's size made even, and the file ends with the audio (within 0.1 s)."""
    s = spec(name="merged.mp4", image_path="s3://bucket/cover.png")
    steps, result = run(s, source_key, sources, tmp_path, image_input=images["odd.png"])
    [step] = steps
    assert step.readable == (images["odd.png"],)
    source_path, info = sources[source_key]
    expected = audio_duration(source_path)
    assert step.expected_s == pytest.approx(expected, abs=0.05)
    local = result.files[0].local
    probed = probe_json(local)
    [v] = streams(probed, "video")
    [a] = streams(probed, "audio")
    size = (v["width"], v["height"])  # 801x451 made even (ffmpeg rounds halves up: 802x452)
    assert size[0] % 2 == 0 and size[1] % 2 == 0
    assert abs(size[0] - 801) == 1 and abs(size[1] - 451) == 1
    assert v["codec_name"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert float(probed["format"]["duration"]) == pytest.approx(expected, abs=0.1)
    assert float(v["duration"]) == pytest.approx(expected, abs=0.1)
    assert float(a["duration"]) == pytest.approx(expected, abs=0.1)
    assert (a["codec_name"], a["channels"], int(a["sample_rate"])) == ("aac", 2, 48000)
    boxes = top_level_boxes(local)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    info = result.info
    assert (info["width"], info["height"]) == size
    assert info["codec"].startswith("avc1.64")
    assert 1.5 < info["fps"] < 2.6
    assert info["duration_s"] == pytest.approx(expected, abs=0.05)
    # a still picture costs little: the whole file stays near the audio's bitrate
    assert info["bitrate_average"] < 128000 + 150000


@pytest.mark.parametrize("image,fields,size", [
    ("photo.jpg", {}, (800, 450)),
    ("photo.jpg", {"height": 240}, (426, 240)),
    ("photo.jpg", {"height": 720}, (800, 450)),        # never upscaled
    ("photo.jpg", {"width": 320}, (320, 180)),
    ("huge.png", {}, (1920, 960)),                     # at most 1920 on the long side
    ("portrait.webp", {}, (450, 800)),
    ("portrait.webp", {"height": 240}, (240, 426)),  # height bounds the short side
    ("portrait.webp", {"width": 400}, (226, 400)),   # width bounds the long side
    ("portrait.webp", {"height": 720}, (450, 800)),  # never upscaled
    ("still.gif", {}, (320, 180)),
    ("picture.bmp", {}, (320, 180)),
    ("picture.tiff", {}, (320, 180)),
])
def test_merge_picture_size(image, fields, size, sources, images, tmp_path):
    s = spec(name="m.mp4", image_path="file:///x", **fields)
    _, result = run(s, "short_audio", sources, tmp_path, image_input=images[image])
    [v] = streams(probe_json(result.files[0].local), "video")
    assert (v["width"], v["height"]) == size
    assert (result.info["width"], result.info["height"]) == size


def test_merge_hevc(sources, images, tmp_path):
    s = spec(name="m.mp4", image_path="file:///x", codec="hevc")
    _, result = run(s, "short_audio", sources, tmp_path, image_input=images["photo.jpg"])
    probed = probe_json(result.files[0].local)
    [v] = streams(probed, "video")
    assert v["codec_tag_string"] == "hvc1"
    assert float(probed["format"]["duration"]) == pytest.approx(
        audio_duration(sources["short_audio"][0]), abs=0.1)


def test_merge_over_a_video_source_uses_its_audio(sources, images, tmp_path):
    """image_path on a source that has video: the picture replaces the video."""
    _, result = run(spec(image_path="file:///x"), "landscape", sources, tmp_path,
                    image_input=images["photo.jpg"])
    [v] = streams(probe_json(result.files[0].local), "video")
    assert (v["width"], v["height"]) == (800, 450)


def test_merge_needs_audio(sources, images):
    path, info = sources["silent"]
    with pytest.raises(PermanentJobError) as e:
        mp4.plan(spec(image_path="file:///x"), info, ffmpeg_bin="ffmpeg", input_path=path,
                 work_dir="/nonexistent", image_input=images["photo.jpg"])
    assert "no audio stream" in e.value.message and "image_path" in e.value.message


def test_merge_needs_a_known_duration(images):
    info = SourceInfo(duration_s=None, audio=(AudioTrack(index=0, channels=2),))
    with pytest.raises(PermanentJobError, match="how long"):
        mp4.plan(spec(image_path="file:///x"), info, ffmpeg_bin="ffmpeg", input_path="/a",
                 work_dir="/nonexistent", image_input=images["photo.jpg"])


def test_merge_without_image_input_is_a_caller_bug(sources):
    with pytest.raises(ValueError, match="image_input"):
        mp4.plan(spec(image_path="file:///x"), sources["audio_only"][1], ffmpeg_bin="ffmpeg",
                 input_path="/a", work_dir="/nonexistent")


def test_merge_timing():
    """frames / rate is the duration to the millisecond, the rate near 2 fps."""
    for duration in (0.001, 0.3, 1.37, 3.3, 59.999, 3600.123, 36000.5):
        frames, rate = mp4.merge_timing(duration)
        assert frames >= 1 and isinstance(rate, Fraction)
        assert float(frames / rate) == pytest.approx(duration, abs=0.0005)
        if duration >= 1:
            assert 1.9 <= rate <= 2.6
    assert mp4.merge_timing(3.3) == (7, Fraction(70, 33))


# --- describe_image_problem --------------------------------------------------------------

@pytest.mark.parametrize("name", ["odd.png", "photo.jpg", "huge.png", "portrait.webp",
                                  "still.gif", "picture.bmp", "picture.tiff"])
def test_pictures_are_usable(name, images):
    assert mp4.describe_image_problem(probe_json(images[name])) is None


def test_text_file_is_not_an_image(images):
    """A text file: ffprobe reads it as ANSI art (its tty demuxer), or cannot
    read it at all (None: a one-line file), or, named .jpg/.png, reads a
    picture of no size; each time the reason says so."""
    assert mp4.describe_image_problem(probe_json(images["notes.txt"])) == \
        "it is a text file, not a picture"
    assert probe_json(images["short.txt"]) is None
    assert "cannot read it as a picture" in mp4.describe_image_problem(None)
    assert "cannot read it as a picture" in mp4.describe_image_problem({})
    for name, codec in (("fake.jpg", "mjpeg"), ("fake.png", "png")):
        problem = mp4.describe_image_problem(probe_json(images[name]))
        assert problem == f"ffmpeg finds no picture in it (its {codec} data cannot be decoded)"


def test_video_is_not_an_image(images):
    problem = mp4.describe_image_problem(probe_json(images["video.mp4"]))
    assert problem.startswith("it is a video (h264), not a picture")


def test_animation_is_not_an_image(images):
    problem = mp4.describe_image_problem(probe_json(images["animated.gif"]))
    assert problem == "it is an animation of 10 frames, not one picture"
    # without a frame count, the duration tells
    probe = probe_json(images["animated.gif"])
    del probe["streams"][0]["nb_frames"]
    assert "1.00 s long" in mp4.describe_image_problem(probe)


def test_audio_is_not_an_image(images):
    assert mp4.describe_image_problem(probe_json(images["sound.m4a"])) == \
        "it has no picture in it, only audio"


# --- reading the file --------------------------------------------------------------------

def test_read_video_track_of_audio_file(sources):
    assert mp4.read_video_track(sources["audio_only"][0]) is None


# --- playback in a real browser -----------------------------------------------------------

def test_browser_plays_mp4_and_merge(sources, images, tmp_path):
    """Headless chromium plays the H.264 MP4 and the audio merge from a plain
    <video src>: videoWidth is the file's, currentTime advances, and the
    merge's duration is the audio's."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser.harness import MediaServer, chromium_session

    _, plain = run(spec(name="plain.mp4", height=240), "landscape", sources, tmp_path)
    _, merged = run(spec(name="merged.mp4", image_path="file:///x"), "audio_only", sources,
                    tmp_path, image_input=images["photo.jpg"])
    expected_merge_s = audio_duration(sources["audio_only"][0])
    script = """
        var v = window.__mp4test;
        if (!v) {
          v = window.__mp4test = document.createElement('video');
          v.muted = true; v.src = arguments[0]; document.body.appendChild(v); v.play();
        }
        return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, d: v.duration,
                error: v.error ? v.error.code + ' ' + v.error.message : null};
    """
    with MediaServer(str(tmp_path)) as server, chromium_session() as driver:
        for result, size, duration in ((plain, (426, 240), 3.0),
                                       (merged, (800, 450), expected_merge_s)):
            driver.get(server.url("__player/player.html"))
            url = server.url(result.files[0].path)
            state = {}

            def playing(_driver, url=url, size=size):
                state.update(driver.execute_script(script, url))
                assert state["error"] is None, state
                return state["t"] > 1.0 and (state["w"], state["h"]) == size

            WebDriverWait(driver, 20, poll_frequency=0.1).until(playing)
            assert state["d"] == pytest.approx(duration, abs=0.1), state
