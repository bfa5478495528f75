"""measure: peak and average bitrates of a representation from its files,
against sums made here from the file sizes."""

import os

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import measure, mpd
from tests.workerd.outputs.cmaf_ladders import ladder_fixture


stereo = ladder_fixture("stereo")
languages = ladder_fixture("languages")


def _independent(directory, rep):
    """(peak, average, total bytes) from the file sizes (media segments only, not
    the init segment), segments of at least 0.5 s for the peak."""
    sizes = [os.path.getsize(os.path.join(directory, s.name)) for s in rep.segments]
    durations = [s.duration_s for s in rep.segments]
    peak = max(b * 8 / d for b, d in zip(sizes, durations) if d >= 0.5)
    return peak, sum(sizes) * 8 / sum(durations), sum(sizes)


@pytest.mark.parametrize("kind", ["stereo", "languages"])
def test_measured_figures_are_the_file_sizes_over_the_timeline(kind, request):
    directory = request.getfixturevalue(kind)
    for rep in mpd.read_timeline(os.path.join(directory, "manifest.mpd")):
        m = measure.measure(rep, directory)
        peak, average, total = _independent(directory, rep)
        assert m.total_bytes == total
        assert peak <= m.peak_bps < peak + 1
        assert average <= m.average_bps < average + 1
        assert m.duration_s == pytest.approx(rep.duration_s)


def test_a_tail_segment_under_half_a_second_does_not_set_the_peak(languages):
    (video, *_) = mpd.read_timeline(os.path.join(languages, "manifest.mpd"))
    durations = [s.duration_s for s in video.segments]
    assert durations[-1] < measure.MIN_PEAK_SEGMENT_S < durations[0]  # 4.2 s: 4 s + 0.2 s
    size = os.path.getsize(os.path.join(languages, video.segments[-1].name))
    tail_rate = size * 8 / durations[-1]
    m = measure.measure(video, languages)
    assert m.peak_bps < tail_rate  # a keyframe over 0.2 s reads as a huge rate
    # ... but its bytes are in the average.
    assert m.total_bytes == sum(os.path.getsize(os.path.join(languages, s.name))
                                for s in video.segments)


def _fake(tmp_path, spans):
    segments = []
    for i, (size, duration) in enumerate(spans, start=1):
        name = f"s{i}.m4s"
        (tmp_path / name).write_bytes(b"x" * size)
        segments.append(mpd.Segment(name, i, sum(d for _, d in spans[:i - 1]), duration))
    return mpd.Representation(rep_id="r", content_type="video", codecs="avc1.64001e",
                              timescale=1000, init="init.m4s", segments=tuple(segments))


def test_peak_average_and_rounding_up(tmp_path):
    rep = _fake(tmp_path, [(1000, 2.0), (3001, 2.0), (500, 0.25)])
    m = measure.measure(rep, str(tmp_path))
    assert m.peak_bps == 12004  # 3001 * 8 / 2
    assert m.average_bps == 8473  # ceil(4501 * 8 / 4.25) = ceil(8472.47)
    assert m.total_bytes == 4501 and m.duration_s == 4.25


def test_only_short_segments_still_give_a_peak(tmp_path):
    rep = _fake(tmp_path, [(100, 0.2), (300, 0.3)])
    assert measure.measure(rep, str(tmp_path)).peak_bps == 8000  # 300 * 8 / 0.3


def test_a_missing_segment_or_an_empty_timeline_is_a_permanent_error(tmp_path):
    rep = _fake(tmp_path, [(100, 2.0), (100, 2.0)])
    os.remove(tmp_path / "s2.m4s")
    with pytest.raises(PermanentJobError, match="s2.m4s"):
        measure.measure(rep, str(tmp_path))
    empty = mpd.Representation(rep_id="e", content_type="audio", codecs="mp4a.40.2")
    with pytest.raises(PermanentJobError, match="no media"):
        measure.measure(empty, str(tmp_path))


def test_bits_per_second_rounds_up_but_not_float_noise():
    assert measure.bits_per_second(8000, 2.0) == 4000
    assert measure.bits_per_second(8001, 2.0) == 4001
    assert measure.bits_per_second(100, 3.0) == 34
    assert measure.bits_per_second(0.1 * 3 * 10, 3.0) == 1  # 3.0000000000000004 / 3
