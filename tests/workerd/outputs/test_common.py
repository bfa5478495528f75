"""common: sizes bounded as the ladder reads them, work-dir paths, and the
lenient number readers for ffprobe's and the MPD's text."""

import os
from fractions import Fraction

import pytest

from nommer.workerd.outputs import common


@pytest.mark.parametrize("src,fields,size", [
    ((1920, 1080), {"height": 720}, (1280, 720)),
    ((1920, 1080), {"width": 640}, (640, 360)),
    ((1920, 1080), {"height": 720, "width": 100}, (1280, 720)),   # height wins
    ((1080, 1920), {"height": 720}, (720, 1280)),                  # portrait: the short side
    ((1080, 1920), {"width": 1280}, (720, 1280)),                  # portrait: the long side
    ((1080, 1920), {"height": 720, "width": 100}, (720, 1280)),
    ((360, 640), {"height": 240}, (240, 426)),
    ((360, 640), {"height": 1080}, (360, 640)),                    # never upscaled
    ((1080, 1080), {"height": 720}, (720, 720)),
    ((641, 361), {}, (640, 360)),                                  # even sides
])
def test_bounded_size(src, fields, size):
    assert common.bounded_size(*src, **fields) == size


def test_local_path_and_make_parent(tmp_path):
    path = common.local_path(str(tmp_path), "a/b/c.mp4")
    assert path == os.path.join(str(tmp_path), "a", "b", "c.mp4")
    assert common.make_parent(path) == path
    assert os.path.isdir(os.path.join(str(tmp_path), "a", "b"))
    common.make_parent(path)  # twice is fine


@pytest.mark.parametrize("text,value", [
    ("30000/1001", Fraction(30000, 1001)), ("30/1", Fraction(30)), ("30", Fraction(30)),
    ("29.97/1", Fraction("29.97")), ("60/2", Fraction(30)),
    ("0/0", None), ("0/1", None), ("-1/2", None), ("N/A", None), ("", None), ("1/0", None),
    (None, None), (30, None),
])
def test_positive_fraction(text, value):
    assert common.positive_fraction(text) == value


def test_to_int_and_to_float():
    assert (common.to_int("42"), common.to_int(7.9), common.to_int("4.2")) == (42, 7, None)
    assert (common.to_int(None), common.to_int("N/A")) == (None, None)
    assert (common.to_float("4.5"), common.to_float(3), common.to_float("N/A")) == (4.5, 3.0, None)
    assert common.to_float(None) is None
