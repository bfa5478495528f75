"""Cue rules: pauses split, 7 s at most, two lines of 42 characters, 1 s at
least, no overlaps; WebVTT and SRT read back by webvtt-py."""

import pytest
import webvtt

from nommer.workerd.transcribe.cues import Cue, build_cues, low_confidence, timestamp, to_srt, to_vtt, wrap


def words_at(*items):
    """("text", start, end[, confidence]) tuples -> word dicts."""
    return [{"word": t, "start": s, "end": e, "confidence": c[0] if c else 0.9} for t, s, e, *c in items]


def steady(texts, start=0.0, step=0.3, length=0.25):
    """One word every ``step`` seconds from ``start``."""
    return words_at(*[(t, round(start + i * step, 3), round(start + i * step + length, 3)) for i, t in enumerate(texts)])


def check_invariants(cues, words, **rules):
    max_cue_s = rules.get("max_cue_s", 7.0)
    max_chars = rules.get("max_line_chars", 42)
    max_lines = rules.get("max_lines", 2)
    assert [w for c in cues for w in c.words] == sorted(words, key=lambda w: (w["start"], w["end"]))
    for a, b in zip(cues, cues[1:]):
        assert a.end <= b.start, (a, b)
    for c in cues:
        assert 1 <= len(c.lines) <= max_lines
        assert all(len(line) <= max_chars or " " not in line for line in c.lines)
        assert " ".join(c.lines) == " ".join(w["word"] for w in c.words)
        assert c.start == c.words[0]["start"]
        assert c.end >= max(w["end"] for w in c.words) or c is not cues[-1]
        assert c.end - c.start <= max(max_cue_s, 1.0) + 1e-9


@pytest.mark.parametrize("case, items, expected", [
    ("pause over 0.6 s splits",
     [("one", 0.0, 0.4), ("two", 0.5, 0.9), ("three", 1.6, 2.0)], [["one two"], ["three"]]),
    ("pause of exactly 0.6 s does not split",
     [("one", 0.0, 0.4), ("two", 1.0, 1.4)], [["one two"]]),
    ("a single word", [("hello", 2.0, 2.5)], [["hello"]]),
    ("unsorted words are sorted first",
     [("two", 0.5, 0.9), ("one", 0.0, 0.4)], [["one two"]]),
    ("empty words are skipped",
     [("one", 0.0, 0.4), ("  ", 0.45, 0.5), ("two", 0.5, 0.9)], [["one two"]]),
])
def test_grouping_table(case, items, expected):
    words = words_at(*items)
    cues = build_cues(words)
    assert [c.lines for c in cues] == expected, case


def test_seven_seconds_at_most():
    # 40 short words, one every 0.3 s: no pause, few characters, so only the 7 s rule splits.
    words = steady([f"w{i}" for i in range(40)])
    cues = build_cues(words, max_line_chars=1000)
    assert len(cues) == 2
    assert cues[0].words[-1]["end"] - cues[0].start <= 7.0
    assert cues[1].words[0]["end"] - cues[0].start > 7.0  # the word that opened cue 2 would have passed 7 s
    check_invariants(cues, words, max_line_chars=1000)


def test_two_lines_of_42_characters():
    texts = ("the quick brown fox jumps over the lazy dog and then it runs away into the dark "
             "forest where nobody can see it anymore").split()
    words = steady(texts, step=0.1, length=0.08)  # 2.1 s in all: only the text length splits
    cues = build_cues(words)
    check_invariants(cues, words)
    assert len(cues) == 2
    assert cues[0].lines == ["the quick brown fox jumps over the lazy", "dog and then it runs away into the dark"]
    assert all(len(line) <= 42 for c in cues for line in c.lines)
    # one more word would not have fitted the first cue's two lines
    assert len(wrap([*cues[0].lines[0].split(), *cues[0].lines[1].split(), texts[len(cues[0].words)]], 42)) > 2


def test_word_longer_than_a_line_stands_alone():
    long = "x" * 50
    cues = build_cues(words_at(("a", 0.0, 0.2), (long, 0.3, 0.8), ("b", 0.9, 1.0)))
    assert [c.lines for c in cues] == [["a", long], ["b"]]


def test_one_second_at_least_unless_the_next_cue_starts():
    cues = build_cues(words_at(("short", 0.0, 0.2), ("gap", 5.0, 5.1), ("near", 5.8, 5.9)))
    assert [(c.start, c.end) for c in cues] == [(0.0, 1.0), (5.0, 5.8), (5.8, 6.8)]


def test_end_s_clips_the_last_cue():
    cues = build_cues(words_at(("last", 9.5, 9.7)), end_s=10.0)
    assert (cues[0].start, cues[0].end) == (9.5, 10.0)


def test_overlapping_word_times_never_make_overlapping_cues():
    # engines can give a word that ends after the next one starts
    words = words_at(("a", 0.0, 2.5), ("b", 0.5, 1.0), ("c", 3.2, 3.4), ("d", 3.3, 9.0), ("e", 9.1, 9.2))
    cues = build_cues(words)
    check_invariants(cues, words)


def test_custom_rules():
    words = steady(["alpha", "beta", "gamma", "delta", "epsilon"], step=0.5, length=0.3)
    cues = build_cues(words, max_cue_s=1.2, max_line_chars=11, max_lines=1, min_cue_s=0.5, pause_s=0.1)
    assert [c.lines for c in cues] == [["alpha"], ["beta"], ["gamma"], ["delta"], ["epsilon"]]
    cues = build_cues(words, max_cue_s=1.2, max_line_chars=11, max_lines=2, min_cue_s=0.5, pause_s=0.3)
    assert [c.lines for c in cues] == [["alpha beta"], ["gamma delta"], ["epsilon"]]


def test_timestamps():
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3.4567) == "00:00:03.457"
    assert timestamp(3723.5) == "01:02:03.500"
    assert timestamp(360000.25, ",") == "100:00:00,250"
    assert timestamp(-0.2) == "00:00:00.000"


def test_vtt_parsed_by_webvtt_py():
    texts = "she said <hello> & goodbye to the people of the town before the long night fell".split()
    words = steady(texts, step=0.4) + words_at(("later", 20.0, 20.4), ("&", 20.5, 20.6))
    cues = build_cues(words)
    text = to_vtt(cues)
    assert text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    parsed = webvtt.from_string(text, strict=True)
    assert len(parsed.captions) == len(cues) == 2
    for caption, cue in zip(parsed.captions, cues):
        assert (caption.start, caption.end) == (timestamp(cue.start), timestamp(cue.end))
        assert caption.start_in_seconds == int(cue.start)  # webvtt-py's seconds are whole
        assert caption.text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == "\n".join(cue.lines)
    assert "&lt;hello&gt; &amp; goodbye" in text


def test_srt_parsed_by_webvtt_py(tmp_path):
    cues = build_cues(steady("one two three".split()) + words_at(("four", 3.0, 3.5)))
    path = tmp_path / "c.srt"
    path.write_text(to_srt(cues))
    assert path.read_text().startswith("1\n00:00:00,000 --> 00:00:01,000\none two three\n\n2\n")
    parsed = webvtt.from_srt(str(path))
    assert [(c.start, c.end, c.text) for c in parsed.captions] == \
        [("00:00:00.000", "00:00:01.000", "one two three"), ("00:00:03.000", "00:00:04.000", "four")]


def test_no_cues():
    assert build_cues([]) == []
    assert to_vtt([]) == "WEBVTT\n"
    assert webvtt.from_string(to_vtt([])).captions == []
    assert to_srt([]) == ""


def test_low_confidence():
    words = words_at(("a", 0, 1, 0.9), ("b", 1, 2, 0.2), ("c", 2, 3, None), ("d", 3, 4, 0.39), ("e", 4, 5, 0.4))
    assert [w["word"] for w in low_confidence(words, 0.4)] == ["b", "d"]
    assert low_confidence(words, 0.0) == []


def test_cue_is_a_value():
    c = build_cues(words_at(("a", 0.0, 0.5)))[0]
    assert c == Cue(start=0.0, end=1.0, lines=["a"], words=words_at(("a", 0.0, 0.5)))
