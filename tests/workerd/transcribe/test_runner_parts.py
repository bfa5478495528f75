"""The runner's and the Whisper engine's pure parts: progress lines, keeping
words inside the spans, joined-span time mapping, grouping."""

import io

import pytest

from nommer.workerd.transcribe.__main__ import Progress, _inside
from nommer.workerd.transcribe.whisper_engine import _groups, _Timeline


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_throttled_monotonic_and_ends():
    out, clock = io.StringIO(), FakeClock()
    p = Progress(out, interval_s=0.5, clock=clock)
    p(0.0)
    p(1.0)  # same instant: not written
    clock.now = 0.6
    p(2.5)
    clock.now = 1.2
    p(1.0)  # never goes back
    p.end(10.0)
    assert out.getvalue() == ("out_time_us=0\nprogress=continue\n"
                              "out_time_us=2500000\nprogress=continue\n"
                              "out_time_us=2500000\nprogress=continue\n"
                              "out_time_us=10000000\nprogress=end\n")


def test_words_kept_inside_their_span():
    spans = [(1.0, 2.0), (3.0, 4.0)]
    words = [{"word": "b", "start": 3.5, "end": 4.4, "confidence": 0.9},
             {"word": "a", "start": 1.2, "end": 1.5, "confidence": 0.9},
             {"word": "outside", "start": 2.5, "end": 2.7, "confidence": 0.9},
             {"word": "backwards", "start": 1.9, "end": 1.8, "confidence": None}]
    assert _inside(words, spans) == [
        {"word": "a", "start": 1.2, "end": 1.5, "confidence": 0.9},
        {"word": "backwards", "start": 1.9, "end": 1.9, "confidence": None},
        {"word": "b", "start": 3.5, "end": 4.0, "confidence": 0.9},
    ]


def test_timeline_maps_joined_times_back():
    # spans 1-3 s and 10-12 s of the file, joined: 0-2 s and 2-4 s
    t = _Timeline([0.0, 2.0], [(1.0, 3.0), (10.0, 12.0)])
    assert t.map(0.5, 1.0) == (1.5, 2.0)
    assert t.map(2.5, 3.0) == (10.5, 11.0)
    assert t.map(1.9, 2.3) == (2.9, 3.0)  # a word across the join ends with its span
    assert t.map(3.9, 4.5) == (11.9, 12.0)
    assert t.map(-0.1, 0.1) == (1.0, 1.1)


@pytest.mark.parametrize("spans, limit, expected", [
    ([], 10, []),
    ([(0, 4), (5, 9), (10, 14)], 10, [[(0, 4), (5, 9)], [(10, 14)]]),
    ([(0, 20), (21, 22)], 10, [[(0, 20)], [(21, 22)]]),
    ([(0, 1), (2, 3)], 10, [[(0, 1), (2, 3)]]),
])
def test_groups(spans, limit, expected):
    assert list(_groups(spans, limit)) == expected


def test_progress_blends_the_vad_pass_and_the_engine():
    from nommer.workerd.transcribe.__main__ import VAD_SHARE, transcribe
    from tests.workerd.transcribe import speech

    seen = []
    result = transcribe("pocketsphinx", "en", speech.librivox("0880")[0], progress=seen.append)
    duration = result["duration_s"]
    vad_part = [s for s in seen if s <= VAD_SHARE * duration + 1e-9]
    assert vad_part and vad_part[-1] == pytest.approx(VAD_SHARE * duration, abs=0.001)
    assert seen == sorted(seen)
    assert len(seen) > len(vad_part)  # the engine moved it further
    assert seen[-1] == pytest.approx(duration, abs=0.001)
    assert result["words"]
