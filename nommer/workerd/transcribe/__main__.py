"""The transcriber, run as a child process (in the worker's sandbox)::

    python -m nommer.workerd.transcribe --engine NAME --language CODE \\
        --input AUDIO.wav --output RESULT.json [--threads N]

``AUDIO.wav``: 16 kHz mono 16-bit PCM (ffmpeg ``-ac 1 -ar 16000 -c:a
pcm_s16le``). ``NAME``: ``auto``, ``pocketsphinx`` or ``faster-whisper``.
It runs the VAD, then (when there is enough speech) the engine over the
speech spans, and writes ``RESULT.json``::

    {"engine": "pocketsphinx", "model": "pocketsphinx 5.1.1 en-us", "language": "en",
     "duration_s": 9.68, "speech_s": 9.12, "speech_ratio": 0.942,
     "speech_spans": [[0.0, 3.03], [3.3, 9.39]], "too_little_speech": false,
     "words": [{"word": "the", "start": 0.31, "end": 0.45, "confidence": 0.97}, ...]}

``too_little_speech`` is true (and ``words`` empty) when the speech ratio is
under ``vad.MIN_SPEECH_RATIO`` or the speech under ``vad.MIN_TOTAL_SPEECH_S``
seconds: music, noise and silence give no words. Every word lies inside a
speech span.

stdout speaks ffmpeg's ``-progress`` protocol, so the worker reads it as it
reads ffmpeg: ``out_time_us=<microseconds of audio done>`` then
``progress=continue``, and ``progress=end`` (with the whole duration) once
the JSON is written. Two passes go over the audio, so "done" blends them and
never goes back: the VAD pass moves it from 0 to ``VAD_SHARE`` of the
duration (it costs about 3-5 % of real time, the engines 20-80 %), the engine
from there to the end, by the position in the audio it has reached. Exit
status 0 on success; on failure one line on stderr saying why, status 1.

It needs no network, no HOME and nothing writable but the output's
directory: HF_HOME, XDG_CACHE_HOME and TMPDIR point at a temporary directory
made there (removed at exit) and HF_HUB_OFFLINE=1 forbids any download.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

PROGRESS_INTERVAL_S = 0.5  # at most this often on stdout (and always at the end)
VAD_SHARE = 0.05  # the part of the progress the VAD pass moves


def _isolate(output_dir):
    """Point every cache a library may use at a new directory under
    ``output_dir``; returns it (the caller removes it)."""
    scratch = tempfile.mkdtemp(prefix=".transcribe-", dir=output_dir)
    for var, sub in (("HF_HOME", "hf"), ("XDG_CACHE_HOME", "cache"), ("TMPDIR", "tmp"),
                     ("HOME", "home"), ("NUMBA_CACHE_DIR", "cache")):
        path = os.path.join(scratch, sub)
        os.makedirs(path, exist_ok=True)
        os.environ[var] = path
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    tempfile.tempdir = os.environ["TMPDIR"]
    return scratch


class Progress:
    """Writes ffmpeg-style progress blocks to ``out``, at most every
    ``interval_s`` seconds of wall time and never going back."""

    def __init__(self, out, interval_s=PROGRESS_INTERVAL_S, clock=time.monotonic):
        self.out, self.interval_s, self.clock = out, interval_s, clock
        self.done_s, self.last_written = 0.0, None

    def __call__(self, seconds):
        self.done_s = max(self.done_s, float(seconds))
        now = self.clock()
        if self.last_written is None or now - self.last_written >= self.interval_s:
            self._write("continue")
            self.last_written = now

    def _write(self, state):
        self.out.write(f"out_time_us={int(round(self.done_s * 1_000_000))}\nprogress={state}\n")
        self.out.flush()

    def end(self, seconds):
        self.done_s = max(self.done_s, float(seconds))
        self._write("end")


def transcribe(engine, language, input_path, threads=2, progress=lambda seconds: None):
    """Run the VAD and ``engine`` over ``input_path``: the result dict
    written as RESULT.json (see the module docstring). ``progress(seconds)``
    is called as the work goes (see the module docstring for the blend).
    Raises ``ValueError`` for a bad engine, language or input,
    ``RuntimeError`` for a broken model."""
    from nommer.workerd.transcribe import engines, vad
    from nommer.workerd.transcribe.audio import WavAudio

    name = engines.pick(engine, language)
    with WavAudio(input_path) as audio:
        duration = audio.duration_s
        found = vad.detect(audio, lambda seconds: progress(VAD_SHARE * seconds))
        result = {"engine": name, "model": None, "language": language,
                  "duration_s": round(found.duration_s, 3), "speech_s": found.speech_s,
                  "speech_ratio": found.speech_ratio, "speech_spans": [list(s) for s in found.spans],
                  "too_little_speech": found.too_little_speech, "words": []}
        if found.too_little_speech:
            return result
        transcriber = engines.load(name, language, threads)
        result["model"] = transcriber.model
        words = transcriber.transcribe(audio, list(found.spans),
                                       lambda seconds: progress(VAD_SHARE * duration + (1 - VAD_SHARE) * seconds))
        result["words"] = _inside(words, found.spans)
    return result


def _inside(words, spans):
    """Keep each word inside the span its start falls in (clipped), drop
    words outside every span; sorted by start."""
    kept = []
    for w in sorted(words, key=lambda w: (w["start"], w["end"])):
        for start, end in spans:
            if start <= w["start"] <= end:
                kept.append(dict(w, end=round(min(max(w["end"], w["start"]), end), 3)))
                break
    return kept


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nommer.workerd.transcribe",
                                     description="Transcribe a 16 kHz mono WAV file to timed words (JSON).")
    parser.add_argument("--engine", required=True, help="auto, pocketsphinx or faster-whisper")
    parser.add_argument("--language", required=True, help="ISO 639-1 code, e.g. en")
    parser.add_argument("--input", required=True, help="16 kHz mono 16-bit PCM WAV file")
    parser.add_argument("--output", required=True, help="the JSON result file to write")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for faster-whisper (default 2)")
    args = parser.parse_args(argv)
    output = os.path.abspath(args.output)
    scratch = None
    try:
        scratch = _isolate(os.path.dirname(output))
        progress = Progress(sys.stdout)
        result = transcribe(args.engine, args.language, args.input, max(1, args.threads), progress)
        partial = output + ".part"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False)
        os.replace(partial, output)
        progress.end(result["duration_s"])
        return 0
    except Exception as e:  # noqa: BLE001 - the one-line reason is the contract
        reason = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"transcription failed: {reason}\n")
        sys.stderr.flush()
        return 1
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
