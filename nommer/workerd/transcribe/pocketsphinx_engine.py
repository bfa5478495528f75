"""The pocketsphinx engine: CMU PocketSphinx 5 with its bundled US English model.

The wheel (``pocketsphinx==5.1.1``, BSD-2-Clause) ships ``model/en-us``: the
acoustic model, ``cmudict-en-us.dict`` and ``en-us.lm.bin`` (37 MB), so
nothing is fetched. Each VAD speech span is decoded as one utterance
(``start_utt``/``process_raw``/``end_utt``), fed a second at a time so
progress moves; words come from the utterance's best path (``seg()``):
frames are 10 ms, a pronunciation variant's suffix (``was(2)``) is dropped
and so are fillers (``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``...). A word's
confidence is its posterior probability from the lattice (0..1).

Measured (bench/captions.py, BENCHMARKS.md): WER 28.2 % (20/71) on the
LibriVox clips of Debian's pocketsphinx-testdata, real-time factor 0.2-0.44
on one core of a shared machine (0.2 in CPU time); load under 1 s; peak RSS
about 145 MB.
Synthetic speech (espeak-ng) is far worse (80-90 % WER): the acoustic model
was trained on human voices only.
"""

import re
from importlib import metadata

from nommer.workerd.transcribe.audio import SAMPLE_RATE

CHUNK_S = 1.0  # seconds of PCM per process_raw call
FRAME_S = 0.01  # pocketsphinx's frame rate
_VARIANT = re.compile(r"\(\d+\)$")


class Transcriber:
    """Loads the decoder (about 0.5-1 s) for ``language`` (``"en"`` only);
    ``threads`` is ignored (the decoder is single-threaded)."""

    name = "pocketsphinx"

    def __init__(self, language, threads=1):
        if language != "en":
            raise ValueError(f"engine pocketsphinx has no {language!r}; it has: en")
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="ERROR")
        self.model = f"pocketsphinx {metadata.version('pocketsphinx')} en-us"

    def transcribe(self, audio, spans, progress=lambda seconds: None):
        """Words spoken in ``spans`` (``[(start_s, end_s), ...]``) of
        ``audio`` (a ``WavAudio``): ``[{"word", "start", "end", "confidence"}]``
        with times in seconds of the file, sorted. ``progress(seconds)`` is
        called with how far into the file decoding has got."""
        words = []
        chunk_bytes = int(CHUNK_S * SAMPLE_RATE) * 2
        for start, end in spans:
            pcm = audio.read(start, end)
            self.decoder.start_utt()
            for i in range(0, len(pcm), chunk_bytes):
                self.decoder.process_raw(pcm[i:i + chunk_bytes], no_search=False, full_utt=False)
                progress(min(end, start + (i + chunk_bytes) / 2 / SAMPLE_RATE))
            self.decoder.end_utt()
            for seg in self.decoder.seg():
                if seg.word.startswith(("<", "[")):
                    continue
                words.append({
                    "word": _VARIANT.sub("", seg.word),
                    "start": round(start + seg.start_frame * FRAME_S, 3),
                    "end": round(min(end, start + (seg.end_frame + 1) * FRAME_S), 3),
                    "confidence": round(min(1.0, max(0.0, seg.prob)), 3),
                })
            progress(end)
        return words
