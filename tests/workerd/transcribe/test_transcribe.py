"""Each installed engine end to end, through the runner as the worker runs it:
``python -m nommer.workerd.transcribe`` in bubblewrap with an empty
environment, / read-only (so HOME and site-packages too), no network and only
the output's directory writable.

The audio (18 s): two LibriVox clips of Debian's pocketsphinx-testdata
(human speech, 22 words), a sentence spoken by espeak-ng (synthetic, 15
words), 1.2 s of silence between them, and 2.5 s of a synthetic melody at the
end. Thresholds (word error rate after ``speech.normalize``), measured then
set with a margin:

* pocketsphinx on the LibriVox part: measured 8/22 = 36 % (28 % on the whole
  LibriVox set, bench/captions.py) -> at most 50 %. Not tested on the espeak
  sentence: pocketsphinx's acoustic model knows only human voices (47-100 %
  on espeak sentences, measured).
* faster-whisper: LibriVox part measured 0/22 -> at most 10 %; the espeak
  sentence measured 0/15 -> at most 20 %.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import webvtt
from twisted.internet import reactor
from twisted.trial import unittest

from nommer.workerd.process import run_process
from nommer.workerd.transcribe import cues, engines, vad

from tests.helpers import ensure
from tests.workerd.transcribe import speech

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SPOKEN = "My brother bought a new bicycle last summer, but he never rides it to work."
MAX_WER = {
    ("pocketsphinx", "librivox"): 0.50,
    ("faster-whisper", "librivox"): 0.10,
    ("faster-whisper", "espeak"): 0.20,
}


def sandboxed(argv, writable, home=None):
    """``argv`` in bwrap: / read-only, ``writable`` bound read-write, no
    network, an empty environment (HOME set to ``home`` when given)."""
    wrap = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", writable, writable,
            "--unshare-net", "--unshare-pid", "--die-with-parent", "--clearenv"]
    if home:
        wrap += ["--setenv", "HOME", home]
    return wrap + ["--chdir", writable, "--", *argv]


def runner_argv(engine, language, wav, out, *extra):
    return [sys.executable, "-m", "nommer.workerd.transcribe", "--engine", engine, "--language", language,
            "--input", wav, "--output", out, *extra]


def run_runner(engine, language, wav, out_dir, *extra, home=None, timeout=300):
    """Run the runner in the sandbox; (CompletedProcess, result dict or None)."""
    out = os.path.join(out_dir, "result.json")
    proc = subprocess.run(sandboxed(runner_argv(engine, language, wav, out, *extra), out_dir, home=home),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={})
    result = None
    if os.path.exists(out):
        with open(out) as f:
            result = json.load(f)
    return proc, result


def progress_blocks(stdout):
    """ffmpeg -progress blocks, as nommer.workerd.process reads them."""
    blocks, block = [], {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        block[key.strip()] = value.strip()
        if key == "progress":
            blocks.append(block)
            block = {}
    assert block == {}, "trailing lines after the last progress="
    return blocks


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    a, text_a = speech.librivox("0880")
    b, text_b = speech.librivox("0890")
    spoken = speech.espeak(SPOKEN, str(d / "spoken.wav"))
    melody = speech.lavfi(speech.MELODY, str(d / "melody.wav"), 2.5)
    path = str(d / "speech.wav")
    parts = speech.join([a, 1.2, b, 1.2, spoken, 1.2, melody], path)
    os.chmod(d, 0o755)
    return {"path": path, "librivox": (parts[0][0], parts[2][1], f"{text_a} {text_b}"),
            "espeak": (parts[4][0], parts[4][1], SPOKEN), "music": parts[6], "duration": parts[-1][1],
            "pauses": [parts[1], parts[3], parts[5]]}


@pytest.fixture(scope="module", params=["pocketsphinx", "faster-whisper"])
def transcribed(request, audio, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp(f"out-{request.param}"))
    home = str(tmp_path_factory.mktemp("home"))  # read-only inside the sandbox
    proc, result = run_runner(request.param, "en", audio["path"], out_dir,
                              home=home if request.param == "pocketsphinx" else None)
    return {"engine": request.param, "proc": proc, "result": result, "out_dir": out_dir}


def words_between(words, start, end):
    return [w for w in words if start <= w["start"] < end]


def test_runs_in_the_sandbox_and_writes_the_result(transcribed, audio):
    proc, result = transcribed["proc"], transcribed["result"]
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(transcribed["out_dir"])) == ["result.json"]  # its caches went with it
    assert set(result) == {"engine", "model", "language", "duration_s", "speech_s", "speech_ratio",
                           "speech_spans", "too_little_speech", "words"}
    assert result["engine"] == transcribed["engine"]
    assert result["language"] == "en"
    assert result["model"].startswith({"pocketsphinx": "pocketsphinx 5.1.1 en-us",
                                       "faster-whisper": "whisper-base int8"}[transcribed["engine"]])
    assert result["duration_s"] == pytest.approx(audio["duration"], abs=0.001)
    assert result["too_little_speech"] is False
    assert result["speech_ratio"] == pytest.approx(result["speech_s"] / result["duration_s"], abs=0.001)
    assert result["speech_ratio"] > 0.5


def test_progress_speaks_ffmpegs_protocol(transcribed, audio):
    blocks = progress_blocks(transcribed["proc"].stdout)
    assert len(blocks) >= 2
    assert [b["progress"] for b in blocks] == ["continue"] * (len(blocks) - 1) + ["end"]
    times = [int(b["out_time_us"]) for b in blocks]
    assert times == sorted(times)
    assert times[-1] == round(transcribed["result"]["duration_s"] * 1_000_000)


def test_word_error_rate(transcribed, audio):
    words = transcribed["result"]["words"]
    for part in ("librivox", "espeak"):
        limit = MAX_WER.get((transcribed["engine"], part))
        if limit is None:
            continue
        start, end, reference = audio[part]
        hypothesis = speech.text_of(words_between(words, start - 0.3, end + 0.3))
        assert speech.wer(reference, hypothesis) <= limit, (part, hypothesis)


def test_words_lie_in_the_speech_spans_and_not_in_the_music(transcribed, audio):
    result = transcribed["result"]
    spans = result["speech_spans"]
    words = result["words"]
    assert len(words) >= 22
    for s, e in spans:
        assert 0 <= s < e <= result["duration_s"]
    for a, b in zip(spans, spans[1:]):
        assert a[1] <= b[0]
    for w in words:
        assert any(s <= w["start"] <= w["end"] <= e for s, e in spans), w
        assert w["confidence"] is None or 0 <= w["confidence"] <= 1
        assert w["word"] == w["word"].strip() and w["word"]
    assert words == sorted(words, key=lambda w: w["start"])
    assert words_between(words, audio["music"][0], audio["duration"] + 1) == []
    assert not any(s >= audio["music"][0] for s, _ in spans)


def test_cues_from_the_words(transcribed, audio):
    result = transcribed["result"]
    built = cues.build_cues(result["words"], end_s=result["duration_s"])
    assert built
    # the 1.2 s pauses between the recordings split the cues
    for pause_start, pause_end in audio["pauses"]:
        assert not any(c.words[0]["start"] < pause_start and c.words[-1]["start"] > pause_end for c in built)
    for c in built:
        assert any(s <= c.start <= e for s, e in result["speech_spans"])
        assert c.end - c.start <= 7.0 and len(c.lines) <= 2 and all(len(line) <= 42 for line in c.lines)
    for a, b in zip(built, built[1:]):
        assert a.end <= b.start
    parsed = webvtt.from_string(cues.to_vtt(built), strict=True)
    assert [c.text for c in parsed.captions] == ["\n".join(c.lines) for c in built]
    flagged = cues.low_confidence(result["words"], engines.LOW_CONFIDENCE[transcribed["engine"]])
    assert len(flagged) < len(result["words"]) / 2


@pytest.fixture(scope="module")
def gate_audio(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    os.chmod(d, 0o755)
    return {"music": speech.lavfi(speech.MELODY, str(d / "music.wav"), 6),
            "silence": speech.lavfi(speech.SILENCE, str(d / "silence.wav"), 6),
            "noise": speech.lavfi(speech.PINK_NOISE, str(d / "noise.wav"), 6)}


@pytest.mark.parametrize("source, engine", [("music", "auto"), ("silence", "pocketsphinx"),
                                            ("noise", "faster-whisper")])
def test_music_silence_and_noise_give_no_words(gate_audio, tmp_path, source, engine):
    out_dir = str(tmp_path)
    proc, result = run_runner(engine, "en", gate_audio[source], out_dir)
    assert proc.returncode == 0, proc.stderr
    assert result["words"] == [] and result["too_little_speech"] is True
    assert result["speech_ratio"] < vad.MIN_SPEECH_RATIO
    assert result["model"] is None  # no engine was loaded
    assert progress_blocks(proc.stdout)[-1] == {"out_time_us": "6000000", "progress": "end"}
    assert cues.to_vtt(cues.build_cues(result["words"])) == "WEBVTT\n"


@pytest.mark.parametrize("engine, language, make_input, reason", [
    ("pocketsphinx", "fr", "good", "engine pocketsphinx has no 'fr'; it has: en"),
    ("auto", "xx", "good", "no installed transcription engine has 'xx'"),
    ("auto", "en", "text", "is not a readable WAV file"),
    ("auto", "en", "stereo", "has 2 channel(s), 16-bit samples at 44100 Hz"),
    ("auto", "en", "missing", "No such file or directory"),
])
def test_failures_say_why_in_one_line(tmp_path, engine, language, make_input, reason):
    wav = str(tmp_path / "in.wav")
    if make_input == "good":
        shutil.copy(speech.librivox("0880")[0], wav)
    elif make_input == "text":
        (tmp_path / "in.wav").write_text("not audio")
    elif make_input == "stereo":
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1",
                        "-ac", "2", "-ar", "44100", "-c:a", "pcm_s16le", wav], check=True)
    proc, result = run_runner(engine, language, wav, str(tmp_path))
    assert proc.returncode == 1
    assert result is None
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("transcription failed: ") and reason in lines[0], proc.stderr
    assert sorted(os.listdir(tmp_path)) == (["in.wav"] if make_input != "missing" else [])


def test_unwritable_output_directory_fails_in_one_line(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    wav = speech.librivox("0880")[0]
    # only out_dir/inner is writable; the output is asked for in out_dir itself
    inner = out_dir / "inner"
    inner.mkdir()
    argv = runner_argv("pocketsphinx", "en", wav, str(out_dir / "result.json"))
    proc = subprocess.run(sandboxed(argv, str(inner)), capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={})
    assert proc.returncode == 1
    assert proc.stderr.startswith("transcription failed: ") and len(proc.stderr.splitlines()) == 1
    assert "Read-only file system" in proc.stderr


class WorkerProgressParser(unittest.TestCase):
    """The worker's own process runner reads the runner's progress."""

    timeout = 120

    @ensure
    async def test_run_process_reads_the_progress_blocks(self):
        out = os.path.abspath(self.mktemp())
        os.makedirs(out)
        blocks = []
        result = await run_process(
            reactor, runner_argv("pocketsphinx", "en", speech.librivox("0880")[0], os.path.join(out, "r.json")),
            timeout_s=110, kill_grace_s=5, on_progress_line=blocks.append, cwd=ROOT)
        self.assertTrue(result.ok, result.stderr_tail)
        self.assertEqual(blocks[-1], {"out_time_us": "2990000", "progress": "end"})
        self.assertTrue(all(b["progress"] == "continue" for b in blocks[:-1]))
        with open(os.path.join(out, "r.json")) as f:
            words = json.load(f)["words"]
        self.assertGreaterEqual(len(words), 6)
