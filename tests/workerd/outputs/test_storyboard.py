"""Storyboard builder (nommer.workerd.outputs.storyboard) on real ffmpeg: the
VTT (read with webvtt-py) has one cue per real tile, each pointing at the
crop of a sheet that is the source frame at the cue's start (PSNR against
every decoded frame around it); the JSON states each sheet's real tile
count; tiles keep the aspect ratio of portrait and odd-sized sources."""

import functools
import json
import os
import re

import pytest
import webvtt

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import storyboard
from nommer.workerd.outputs.source import SourceInfo
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST

from tests.workerd.outputs import media
from tests.workerd.outputs.pictures import (
    best_match, crop, gray_frames, gray_image, image_info, mean)

XYWH = re.compile(r"^(sheet_\d{3}\.jpg)#xywh=(\d+),(\d+),(\d+),(\d+)$")


def spec(**fields):
    out = {"type": "storyboard", "interval_s": 2, "tile_width": 160, "columns": 5, "rows": 5,
           "dir": "storyboard"}
    out.update(fields)
    return out


sources = media.sources_fixture({
    "landscape": media.landscape,                  # 640x360, 30 fps, 3 s
    "portrait": media.portrait,                    # 360x640
    "odd": media.odd_size,                         # 642x362
    "odd-sides": media.truly_odd_size,             # 641x361
    "tiny": media.tiny,                            # 320x180
    "short-video": media.short_video,              # 2 s of video in a 4 s file
})


#: (source, steps, result) of the storyboard output ``spec_`` on ``path``, run in ``work_dir``.
make = functools.partial(media.build, storyboard)


def seconds(timestamp):
    return timestamp.in_milliseconds() / 1000.0


def read_cues(vtt_path):
    """``[(start_s, end_s, sheet file, x, y, w, h)]`` of the VTT, read by webvtt-py."""
    cues = []
    for caption in webvtt.read(vtt_path).captions:
        m = XYWH.match(caption.text.strip())
        assert m, caption.text
        cues.append((seconds(caption.start_time), seconds(caption.end_time), m.group(1),
                     *(int(v) for v in m.groups()[1:])))
    return cues


def assert_tiles_match_frames(source_path, vtt_path, fps, tile_w, tile_h, interval_s):
    """Each cue's tile is the source frame at the cue's start, clearly not
    the frames one interval earlier or later."""
    frames = gray_frames(source_path, tile_w, tile_h)
    step = round(interval_s * fps)
    sheets = {}
    for i, (start, _, sheet, x, y, w, h) in enumerate(read_cues(vtt_path)):
        path = os.path.join(os.path.dirname(vtt_path), sheet)      # relative to the VTT
        if sheet not in sheets:
            sheets[sheet] = gray_image(path)
        pixels, sheet_w, _ = sheets[sheet]
        tile = crop(pixels, sheet_w, x, y, w, h)
        expected = round(start * fps)
        best, scores = best_match(tile, frames, range(expected - step, expected + step + 1))
        assert best == expected, (i, sheet, (x, y), best, expected, scores)
        assert scores[expected] > 33, (i, scores[expected])
        for other in (expected - step, expected + step):
            if other in scores:
                assert scores[expected] > scores[other] + 10, (i, other, scores)


def test_sheets_vtt_and_json_of_a_landscape_source(sources, tmp_path):
    source, _, result = make(spec(interval_s=0.5, columns=2, rows=2), sources["landscape"], tmp_path)
    d = tmp_path / "storyboard"

    # 3 s / 0.5 s = 6 tiles: a full sheet of 4 and a last sheet of 2.
    assert result.info == {"sheets": 2, "tiles": 6, "tile_width": 160, "tile_height": 90, "columns": 2,
                           "rows": 2, "interval_s": 0.5, "vtt": "storyboard/storyboard.vtt"}
    assert [(f.path, f.role, f.content_type) for f in result.files] == [
        ("storyboard/sheet_000.jpg", MEDIA, "image/jpeg"),
        ("storyboard/sheet_001.jpg", MEDIA, "image/jpeg"),
        ("storyboard/storyboard.vtt", PLAYLIST, "text/vtt"),
        ("storyboard/storyboard.json", MANIFEST, "application/json")]
    for f in result.files:
        assert f.local == str(tmp_path.joinpath(*f.path.split("/"))) and f.bytes == os.path.getsize(f.local)
    for sheet in ("sheet_000.jpg", "sheet_001.jpg"):
        assert image_info(str(d / sheet)) == ("mjpeg", 320, 180)      # the full grid, even the last

    cues = read_cues(str(d / "storyboard.vtt"))
    assert [(start, end) for start, end, *_ in cues] == [
        (0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 3.0)]
    assert [c[2:] for c in cues] == [
        ("sheet_000.jpg", 0, 0, 160, 90), ("sheet_000.jpg", 160, 0, 160, 90),
        ("sheet_000.jpg", 0, 90, 160, 90), ("sheet_000.jpg", 160, 90, 160, 90),
        ("sheet_001.jpg", 0, 0, 160, 90), ("sheet_001.jpg", 160, 0, 160, 90)]
    assert_tiles_match_frames(sources["landscape"], str(d / "storyboard.vtt"), 30, 160, 90, 0.5)

    # The padded half of the last sheet is black: no cue points there.
    pixels, width, _ = gray_image(str(d / "sheet_001.jpg"))
    assert mean(crop(pixels, width, 0, 90, 320, 90)) < 24
    assert mean(crop(pixels, width, 0, 0, 320, 90)) > 60

    with open(d / "storyboard.json") as f:
        description = json.load(f)
    assert description == {
        "spriteWidth": 160, "spriteHeight": 90, "spriteDuration": 0.5, "totalWidth": 320,
        "totalHeight": 180, "columns": 2, "rows": 2, "interval_s": 0.5, "tiles": 6,
        "duration_s": source.duration_s, "vtt": "storyboard.vtt",
        "sheets": [{"path": "sheet_000.jpg", "tiles": 4}, {"path": "sheet_001.jpg", "tiles": 2}]}
    assert not any(name.endswith(".frames") for name in (f.path for f in result.files))


@pytest.mark.parametrize("name, tile_width, tile_size", [
    ("portrait", 160, (160, 284)),        # 640 x 160 / 360 = 284.4 -> 284
    ("odd", 160, (160, 90)),              # 642x362: 90.2 -> 90
    ("odd-sides", 100, (100, 56)),        # 641x361: 56.3 -> 56
    ("tiny", 640, (320, 180)),            # never upscaled
])
def test_tiles_keep_the_aspect_ratio(sources, tmp_path, name, tile_width, tile_size):
    source, _, result = make(spec(interval_s=1, tile_width=tile_width, columns=3, rows=1), sources[name],
                          tmp_path)
    w, h = tile_size
    assert h == round(w * source.height / source.width / 2) * 2
    assert (result.info["tile_width"], result.info["tile_height"]) == tile_size
    assert (result.info["tiles"], result.info["sheets"]) == (3, 1)
    assert image_info(str(tmp_path / "storyboard" / "sheet_000.jpg")) == ("mjpeg", 3 * w, h)
    cues = read_cues(str(tmp_path / "storyboard" / "storyboard.vtt"))
    assert [c[3:] for c in cues] == [(0, 0, w, h), (w, 0, w, h), (2 * w, 0, w, h)]
    assert_tiles_match_frames(sources[name], str(tmp_path / "storyboard" / "storyboard.vtt"),
                              float(source.fps), w, h, 1)


def test_a_file_longer_than_its_video_gets_cues_only_for_real_tiles(sources, tmp_path):
    source, _, result = make(spec(interval_s=0.5, columns=3, rows=2, dir="sb"), sources["short-video"], tmp_path)
    assert source.duration_s == pytest.approx(4.0, abs=0.1)            # the file: the audio runs on
    # 2 s of video: 4 tiles, not the 8 the file's duration would suggest.
    assert (result.info["tiles"], result.info["sheets"]) == (4, 1)
    cues = read_cues(str(tmp_path / "sb" / "storyboard.vtt"))
    assert [(s, e) for s, e, *_ in cues] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
    with open(tmp_path / "sb" / "storyboard.json") as f:
        assert json.load(f)["sheets"] == [{"path": "sheet_000.jpg", "tiles": 4}]
    assert result.info["vtt"] == "sb/storyboard.vtt"
    assert_tiles_match_frames(sources["short-video"], str(tmp_path / "sb" / "storyboard.vtt"),
                              30, 160, 90, 0.5)


def test_cue_times_and_positions():
    assert storyboard.vtt_timestamp(0) == "00:00:00.000"
    assert storyboard.vtt_timestamp(3723.4567) == "01:02:03.457"
    assert storyboard.vtt_timestamp(59.9996) == "00:01:00.000"
    cues = storyboard.cues(27, interval_s=2, tile_width=160, tile_height=90, columns=5, rows=5,
                           duration_s=53.5)
    assert cues[0] == (0, 2, "sheet_000.jpg#xywh=0,0,160,90")
    assert cues[24] == (48, 50, "sheet_000.jpg#xywh=640,360,160,90")
    assert cues[25] == (50, 52, "sheet_001.jpg#xywh=0,0,160,90")
    assert cues[26] == (52, 53.5, "sheet_001.jpg#xywh=160,0,160,90")      # capped at the duration
    text = storyboard.vtt_text(cues)
    parsed = webvtt.from_string(text).captions
    assert len(parsed) == 27 and parsed[26].start == "00:00:52.000" and parsed[26].end == "00:00:53.500"


def test_plan_shape(tmp_path):
    source = SourceInfo(duration_s=600.0, width=1920, height=1080, fps=30)
    (step,) = storyboard.plan(spec(dir="a/sb"), source, ffmpeg_bin="/usr/bin/ffmpeg",
                              input_path="/in/film.mov", work_dir=str(tmp_path))
    argv = step.argv
    assert (tmp_path / "a" / "sb").is_dir()
    assert argv[-1] == str(tmp_path / "a" / "sb" / "sheet_%03d.jpg")     # the -t cap lands on the sheets
    assert argv[argv.index("-start_number") + 1] == "0"
    assert "tile=5x5" in argv[argv.index("-filter_complex") + 1]
    assert step.expected_s == 600.0 and 0 < step.weight <= 600 * 0.05


def test_a_source_without_video_is_refused(tmp_path):
    with pytest.raises(PermanentJobError, match="no video"):
        storyboard.plan(spec(), SourceInfo(duration_s=3.0), ffmpeg_bin="ffmpeg", input_path="/in/a.m4a",
                        work_dir=str(tmp_path))
