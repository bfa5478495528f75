"""The VAD: spans from frame scores (table), and real audio: speech found where
it is, music, noise and silence giving nothing."""

import pytest

from nommer.workerd.transcribe import vad
from nommer.workerd.transcribe.audio import WavAudio

from tests.workerd.transcribe import speech

F = vad.FRAME_S  # 0.032 s


def scores(*runs):
    """(probability, frames) runs -> a list of per-frame probabilities."""
    return [p for p, n in runs for _ in range(n)]


def spans_of(probs):
    return vad.speech_spans(probs, len(probs) * F)


def test_no_speech_no_span():
    assert spans_of(scores((0.1, 300))) == []
    assert spans_of([]) == []


def test_one_burst_is_padded():
    probs = scores((0.0, 100), (0.9, 50), (0.0, 100))
    assert spans_of(probs) == [(round(100 * F - 0.2, 3), round(150 * F + 0.2, 3))]


def test_span_clipped_to_the_file():
    probs = scores((0.9, 50), (0.0, 10), (0.9, 30))  # split at the pause, joined again by the padding
    assert spans_of(probs) == [(0.0, round(90 * F, 3))]


def test_bursts_shorter_than_min_speech_are_dropped():
    probs = scores((0.0, 50), (0.9, 7), (0.0, 100))  # 0.224 s < 0.25 s
    assert spans_of(probs) == []
    probs = scores((0.0, 50), (0.9, 8), (0.0, 100))  # 0.256 s
    assert len(spans_of(probs)) == 1


def test_hysteresis_and_short_dips_keep_one_span():
    # between the two thresholds counts as speech once started; a dip shorter than MIN_SILENCE_S too
    probs = scores((0.0, 50), (0.9, 20), (0.4, 40), (0.1, 8), (0.9, 20), (0.0, 100))
    spans = spans_of(probs)
    assert spans == [(round(50 * F - 0.2, 3), round(138 * F + 0.2, 3))]
    # 0.4 never starts speech on its own
    assert spans_of(scores((0.0, 50), (0.45, 100), (0.0, 50))) == []


def test_a_long_pause_splits_and_close_spans_merge_after_padding():
    split = spans_of(scores((0.0, 50), (0.9, 30), (0.0, 40), (0.9, 30), (0.0, 50)))  # 1.28 s apart
    assert len(split) == 2 and split[0][1] < split[1][0]
    merged = spans_of(scores((0.0, 50), (0.9, 30), (0.0, 11), (0.9, 30), (0.0, 50)))  # 0.35 s apart
    assert len(merged) == 1


def test_long_speech_is_cut_at_its_least_speechlike_frame():
    # 70 s of speech with a slightly weaker frame at 20 s and at 45 s
    probs = scores((0.95, 625), (0.6, 1), (0.95, 780), (0.55, 1), (0.95, 780))
    spans = spans_of(probs)
    assert len(spans) == 3
    assert all(e - s <= vad.MAX_SPAN_S + 1e-6 for s, e in spans)
    assert spans[0][0] == 0.0 and spans[-1][1] == round(len(probs) * F, 3)
    cuts = [s[1] for s in spans[:-1]]
    assert cuts[0] == pytest.approx(625 * F, abs=0.05)  # the pieces meet at the weak frame
    assert cuts[1] == pytest.approx((625 + 1 + 780) * F, abs=0.05)
    for a, b in zip(spans, spans[1:]):
        assert a[1] <= b[0]


@pytest.mark.parametrize("ratio, speech_s, too_little", [
    (0.0, 0.0, True),
    (0.019, 10.0, True),
    (0.02, 1.0, False),
    (0.5, 0.99, True),
    (0.9, 9.0, False),
])
def test_the_gate(ratio, speech_s, too_little):
    result = vad.VadResult(duration_s=100.0, spans=(), speech_s=speech_s, speech_ratio=ratio)
    assert result.too_little_speech is too_little


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("vad")
    made = {name: speech.lavfi(graph, str(d / f"{name}.wav"), 8)
            for name, graph in (("melody", speech.MELODY), ("chord", speech.CHORD),
                                ("pink", speech.PINK_NOISE), ("silence", speech.SILENCE))}
    a, _ = speech.librivox("0880")
    b, _ = speech.librivox("0930")
    made["mixed"] = str(d / "mixed.wav")
    made["parts"] = speech.join([a, 2.0, b, made["melody"]], made["mixed"])
    made["spoken"] = speech.espeak("The rain in Spain stays mainly in the plain.", str(d / "spoken.wav"))
    made["over_music"] = speech.ffmpeg_to_wav(
        ["-i", made["spoken"], "-i", made["melody"], "-filter_complex",
         "[1:a]volume=0.3[m];[0:a][m]amix=inputs=2:duration=first:normalize=0"], str(d / "over_music.wav"))
    return made


@pytest.mark.parametrize("name", ["melody", "chord", "pink", "silence"])
def test_music_noise_and_silence_have_too_little_speech(clips, name):
    with WavAudio(clips[name]) as audio:
        found = vad.detect(audio)
    assert found.duration_s == pytest.approx(8.0, abs=0.01)
    assert found.speech_ratio < vad.MIN_SPEECH_RATIO  # measured: 0.0 for all four
    assert found.too_little_speech


def test_speech_found_where_it_is_and_not_in_the_music(clips):
    first, pause, second, music = clips["parts"]
    with WavAudio(clips["mixed"]) as audio:
        found = vad.detect(audio)
    assert not found.too_little_speech
    assert found.speech_ratio > 10 * vad.MIN_SPEECH_RATIO
    assert found.duration_s == pytest.approx(music[1], abs=0.001)
    assert len(found.spans) == 2
    (s1, e1), (s2, e2) = found.spans
    assert s1 <= first[0] + 0.3 and e1 >= first[1] - 0.3 and e1 < pause[1]
    assert s2 <= second[0] + 0.3 and e2 >= second[1] - 0.3
    assert e2 < music[0] + 0.5  # the melody after the speech is not speech


def test_speech_over_music_is_still_speech(clips):
    with WavAudio(clips["over_music"]) as audio:
        found = vad.detect(audio)
    assert not found.too_little_speech
    assert found.speech_ratio > 0.5


def test_wrong_wav_format_is_refused(tmp_path):
    path = str(tmp_path / "stereo.wav")
    speech.ffmpeg_to_wav(["-f", "lavfi", "-i", "sine=d=1"], path)  # fine: mono 16 kHz
    WavAudio(path).close()
    import subprocess
    bad = str(tmp_path / "bad.wav")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=d=1",
                    "-ac", "2", "-ar", "44100", "-c:a", "pcm_s16le", bad], check=True)
    with pytest.raises(ValueError, match="has 2 channel\\(s\\), 16-bit samples at 44100 Hz"):
        WavAudio(bad)
    (tmp_path / "not.wav").write_bytes(b"hello")
    with pytest.raises(ValueError, match="is not a readable WAV file"):
        WavAudio(str(tmp_path / "not.wav"))
