"""Thumbnails builder (nommer.workerd.outputs.thumbnails) on real ffmpeg: one
JPEG per interval, each the source frame at its time (PSNR against every
decoded frame around it), aspect ratio kept, never upscaled."""

import functools
import math

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import thumbnails
from nommer.workerd.outputs.source import SourceInfo
from nommer.workerd.outputs.step import MEDIA

from tests.workerd.outputs import media
from tests.workerd.outputs.pictures import best_match, gray_image, gray_frames, image_info


def spec(**fields):
    out = {"type": "thumbnails", "interval_s": 10, "width": 320, "dir": "thumbnails"}
    out.update(fields)
    return out


sources = media.sources_fixture({
    "landscape": media.landscape,                                    # 640x360, 30 fps, 3 s
    "fps10": functools.partial(media.no_audio, name="fps10.mp4", fps=10),  # 640x360, 10 fps, 3 s
    "portrait": media.portrait,                                      # 360x640
    "odd": media.truly_odd_size,                                     # 641x361
})


#: (source, steps, result) of the thumbnails output ``spec_`` on ``path``, run in ``work_dir``.
make = functools.partial(media.build, thumbnails)


@pytest.mark.parametrize("name, interval_s, frame_indexes", [
    # 30 fps, 3 s: a thumbnail every 15 frames.
    ("landscape", 0.5, [0, 15, 30, 45, 60, 75]),
    # 30 fps, an interval of 21 frames; ceil(3 / 0.7) = 5.
    ("landscape", 0.7, [0, 21, 42, 63, 84]),
    # 10 fps and 0.55 s, not a whole number of frames: the first frame at or
    # after k x 0.55 s, no drift (spacing each pick from the previous one
    # would give 0, 6, 12, 18, 24: one thumbnail short, each later than due).
    ("fps10", 0.55, [0, 6, 11, 17, 22, 28]),
])
def test_one_thumbnail_per_interval_each_the_frame_at_its_time(sources, tmp_path, name, interval_s,
                                                             frame_indexes):
    source, _, result = make(spec(interval_s=interval_s), sources[name], tmp_path)
    fps = float(source.fps)
    assert len(result.files) == math.ceil(source.duration_s / interval_s) == len(frame_indexes)
    assert result.info == {"count": len(frame_indexes), "width": 320, "height": 180, "interval_s": interval_s}
    assert [f.path for f in result.files] == [f"thumbnails/thumb_{k:05d}.jpg"
                                              for k in range(len(frame_indexes))]
    assert all(f.role == MEDIA and f.content_type == "image/jpeg" and f.bytes > 0 for f in result.files)
    frames = gray_frames(sources[name], 320, 180)
    step = round(interval_s * fps)
    for k, (f, expected) in enumerate(zip(result.files, frame_indexes)):
        assert image_info(f.local) == ("mjpeg", 320, 180)
        with open(f.local, "rb") as fh:
            assert fh.read(3) == b"\xff\xd8\xff"
        pixels, _, _ = gray_image(f.local)
        # The best of every frame within one interval either side.
        best, scores = best_match(pixels, frames, range(expected - step, expected + step + 1))
        assert best == expected, (k, best, expected, scores)
        assert scores[expected] > 35, (k, scores[expected])
        # Clearly not the neighbouring thumbnails' frames.
        for other in (expected - step, expected + step):
            if other in scores:
                assert scores[expected] > scores[other] + 10, (k, other, scores)


@pytest.mark.parametrize("name, width, size", [
    ("portrait", 320, (320, 568)),       # 640 x 320 / 360 = 568.9 -> 568 (even)
    ("portrait", 1000, (360, 640)),      # never upscaled
    ("landscape", 1000, (640, 360)),
    ("odd", 321, (320, 180)),            # 641x361: sides made even, aspect kept
])
def test_aspect_ratio_kept_and_never_upscaled(sources, tmp_path, name, width, size):
    _, _, result = make(spec(interval_s=1, width=width), sources[name], tmp_path)
    assert (result.info["width"], result.info["height"]) == size
    assert result.info["count"] == 3
    for f in result.files:
        assert image_info(f.local) == ("mjpeg", *size)


def test_plan_shape(tmp_path):
    source = SourceInfo(duration_s=600.0, width=1920, height=1080, fps=30)
    (step,) = thumbnails.plan(spec(dir="a/thumbs"), source, ffmpeg_bin="/usr/bin/ffmpeg",
                              input_path="/in/source.mov", work_dir=str(tmp_path))
    assert (tmp_path / "a" / "thumbs").is_dir()
    assert step.argv[0] == "/usr/bin/ffmpeg"
    assert step.argv[-1].endswith("/a/thumbs/thumb_%05d.jpg")
    assert step.argv[step.argv.index("-start_number") + 1] == "0"
    assert step.argv[step.argv.index("-progress") + 1] == "pipe:1"
    assert step.expected_s == 600.0
    assert 0 < step.weight <= 600 * 0.05


def test_a_source_without_video_is_refused(tmp_path):
    with pytest.raises(PermanentJobError, match="no video"):
        thumbnails.plan(spec(), SourceInfo(duration_s=3.0), ffmpeg_bin="ffmpeg", input_path="/in/a.m4a",
                        work_dir=str(tmp_path))
