"""Poster builder (nommer.workerd.outputs.poster) on real ffmpeg: a JPEG (or
PNG) of the right size, aspect ratio kept, never upscaled; the thumbnail
filter passes over a black opening; at_s gives the frame at that time; the
reported time_s is the time of the frame shown."""

import functools

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import poster
from nommer.workerd.outputs.source import SourceInfo
from nommer.workerd.outputs.step import MEDIA

from tests.workerd.outputs import media
from tests.workerd.outputs.pictures import (
    best_match, gray_frames, gray_image, image_info, mean)


def spec(**fields):
    out = {"type": "poster", "name": "poster.jpg"}
    out.update(fields)
    return out


def black_opening(directory):
    """640x360, 30 fps, 3 s of testsrc2 whose first second is black (a fade-in)."""
    path = f"{directory}/black-opening.mp4"
    media.ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=3,"
                 "drawbox=color=black:t=fill:enable='lt(t,1)'",
                 "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", path)
    return path


sources = media.sources_fixture({
    "landscape": media.landscape,                  # 640x360, 30 fps, 3 s
    "portrait": media.portrait,                    # 360x640
    "odd": media.truly_odd_size,                   # 641x361
    "black-opening": black_opening,
    "short-video": media.short_video,              # 2 s of video in a 4 s file
})


#: (source, steps, result) of the poster output ``spec_`` on ``path``, run in ``work_dir``.
make = functools.partial(media.build, poster)


def test_default_poster_is_a_jpeg_of_the_source_size_showing_the_frame_at_time_s(sources, tmp_path):
    source, (step,), result = make(spec(), sources["landscape"], tmp_path)
    (f,) = result.files
    assert (f.path, f.content_type, f.role) == ("poster.jpg", "image/jpeg", MEDIA)
    assert f.local == str(tmp_path / "poster.jpg") and f.bytes > 1000
    with open(f.local, "rb") as fh:
        assert fh.read(3) == b"\xff\xd8\xff"
    assert image_info(f.local) == ("mjpeg", 640, 360)
    assert set(result.info) == {"width", "height", "time_s"}
    assert (result.info["width"], result.info["height"]) == (640, 360)
    assert 0 <= result.info["time_s"] < 3
    assert step.expected_s == pytest.approx(3.0)
    # time_s is the time of the frame the poster shows.
    frames = gray_frames(sources["landscape"], 640, 360)
    pixels, _, _ = gray_image(f.local)
    at = round(result.info["time_s"] * 30)
    best, scores = best_match(pixels, frames, range(at - 15, at + 16))
    assert best == at and scores[at] > 35, (at, scores)


@pytest.mark.parametrize("name, width, size", [
    ("landscape", 320, (320, 180)),
    ("portrait", 180, (180, 320)),      # portrait: the height follows
    ("landscape", 1280, (640, 360)),    # never upscaled
    ("portrait", 720, (360, 640)),
    ("odd", 321, (320, 180)),           # 641x361: even sides, aspect kept
    ("odd", None, (640, 360)),          # the source size, made even
])
def test_size_keeps_the_aspect_ratio_and_never_upscales(sources, tmp_path, name, width, size):
    fields = {} if width is None else {"width": width}
    _, _, result = make(spec(**fields), sources[name], tmp_path)
    assert image_info(result.files[0].local) == ("mjpeg", *size)
    assert (result.info["width"], result.info["height"]) == size


def test_the_most_representative_frame_is_not_the_black_opening(sources, tmp_path):
    _, _, result = make(spec(), sources["black-opening"], tmp_path)
    pixels, _, _ = gray_image(result.files[0].local)
    assert mean(pixels) > 60, mean(pixels)          # testsrc2, not black (about 16)
    assert result.info["time_s"] >= 1.0


def test_at_s_gives_the_frame_at_that_time_as_png_in_a_subdirectory(sources, tmp_path):
    _, (step,), result = make(spec(name="stills/at.png", at_s=1.5, width=320), sources["landscape"],
                              tmp_path)
    (f,) = result.files
    assert (f.path, f.content_type) == ("stills/at.png", "image/png")
    assert f.local == str(tmp_path / "stills" / "at.png")
    with open(f.local, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert image_info(f.local) == ("png", 320, 180)
    assert result.info == {"width": 320, "height": 180, "time_s": 1.5}
    frames = gray_frames(sources["landscape"], 320, 180)
    pixels, _, _ = gray_image(f.local)
    best, scores = best_match(pixels, frames, range(30, 61))
    assert best == 45 and scores[45] > 35, scores
    assert step.argv.index("-ss") < step.argv.index("-i")          # an input seek


@pytest.mark.parametrize("at_s", [3.0, 5.0])
def test_at_s_at_or_beyond_the_duration_is_refused(sources, tmp_path, at_s):
    source = media.probe(sources["landscape"])
    with pytest.raises(PermanentJobError, match=r"at_s=.* beyond the source's duration \(3\.000 s\)"):
        poster.plan(spec(at_s=at_s), source, ffmpeg_bin="ffmpeg", input_path=sources["landscape"],
                    work_dir=str(tmp_path))


def test_at_s_after_the_video_ends_but_within_the_file_says_so(sources, tmp_path):
    with pytest.raises(PermanentJobError, match=r"no video frame at poster at_s=3 s"):
        make(spec(at_s=3), sources["short-video"], tmp_path)


def test_plan_reads_only_the_first_two_minutes(tmp_path):
    source = SourceInfo(duration_s=3600.0, width=1920, height=1080, fps=30)
    (step,) = poster.plan(spec(name="p/poster.jpeg"), source, ffmpeg_bin="/usr/bin/ffmpeg",
                          input_path="/in/film.mov", work_dir=str(tmp_path))
    argv = step.argv
    i = argv.index("-i")
    assert argv[argv.index("-t") + 1] == "120" and argv.index("-t") < i and argv[i + 1] == "/in/film.mov"
    assert argv[-1] == str(tmp_path / "p" / "poster.jpeg")
    assert (tmp_path / "p").is_dir()
    graph = argv[argv.index("-filter_complex") + 1]
    # 43 frames of 1080p fit the memory budget, spread over the 120 s.
    assert "thumbnail=43," in graph and "selected_n*2.790698-" in graph
    assert argv[argv.index("-q:v") + 1] == "2"
    assert step.expected_s == 120
    assert 0 < step.weight <= 120 * 0.05


def test_the_thumbnail_batch_stays_within_its_memory_budget():
    assert poster.frames_to_analyze(1920, 1080) == 43
    for w, h in [(640, 360), (1920, 1080), (3840, 2160), (7680, 4320)]:
        n = poster.frames_to_analyze(w, h)
        assert poster.MIN_FRAMES_TO_ANALYZE <= n <= poster.FRAMES_TO_ANALYZE
        assert n == poster.MIN_FRAMES_TO_ANALYZE or n * w * h * 3 <= poster.BATCH_MEMORY_BYTES
    assert poster.frames_to_analyze(640, 360) == poster.FRAMES_TO_ANALYZE


def test_a_source_without_video_is_refused(tmp_path):
    with pytest.raises(PermanentJobError, match="no video"):
        poster.plan(spec(), SourceInfo(duration_s=3.0), ffmpeg_bin="ffmpeg", input_path="/in/a.m4a",
                    work_dir=str(tmp_path))
