"""Speech, music and silence for the transcription tests and bench/captions.py.

* ``librivox_clips()``: the five LibriVox recordings of Debian's
  ``pocketsphinx-testdata`` (16 kHz mono, 24.7 s, 71 words) with their
  reference text;
* ``espeak(text, path)``: synthetic speech by espeak-ng (Debian), converted
  by ffmpeg to 16 kHz mono 16-bit PCM;
* ``lavfi(graph, path, seconds)``: music-like and silent sources;
* ``join(parts, path)``: WAV files and silences (a number of seconds) end to end;
* ``normalize`` and ``wer`` (jiwer) for word error rates.
"""

import os
import re
import subprocess
import wave

import jiwer

LIBRIVOX_DIR = "/usr/share/pocketsphinx/test/data/librivox"
SAMPLE_RATE = 16000

#: A synthetic "melody": three notes a second stepping through A3-E5 with two
#: harmonics and a 4 Hz tremolo (sounds like a cheap organ; no voice).
MELODY = ("aevalsrc='0.2*sin(2*PI*(220+110*floor(mod(t*2,4)))*t)*(0.6+0.4*sin(2*PI*4*t))"
          "+0.1*sin(2*PI*3*(220+110*floor(mod(t*2,4)))*t)+0.05*sin(2*PI*5*(220+110*floor(mod(t*2,4)))*t)"
          ":s=16000'")
#: A C major chord (C4 E4 G4).
CHORD = "aevalsrc='0.2*sin(2*PI*261.63*t)+0.2*sin(2*PI*329.63*t)+0.2*sin(2*PI*392*t):s=16000'"
PINK_NOISE = "anoisesrc=c=pink:a=0.2:r=16000"
SILENCE = "anullsrc=r=16000:cl=mono"


def librivox_clips():
    """``[(wav path, reference text)]``, in the test set's order."""
    refs = {}
    with open(os.path.join(LIBRIVOX_DIR, "transcription")) as f:
        for line in f:
            m = re.match(r"<s>(.*)</s>\s*\((\S+)\)", line.strip())
            if m:
                refs[m.group(2)] = m.group(1).strip()
    with open(os.path.join(LIBRIVOX_DIR, "fileids")) as f:
        ids = [line.strip() for line in f if line.strip()]
    return [(os.path.join(LIBRIVOX_DIR, i + ".wav"), refs[i]) for i in ids]


def librivox(name):
    """(path, text) of the clip whose id ends with ``name`` (e.g. "0880")."""
    return next((p, t) for p, t in librivox_clips() if p.endswith(f"-{name}.wav"))


def ffmpeg_to_wav(args, path):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args,
                    "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", path], check=True)
    return path


def espeak(text, path, voice="en", speed=140):
    """``text`` spoken by espeak-ng into ``path`` (16 kHz mono WAV)."""
    raw = path + ".espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
    ffmpeg_to_wav(["-i", raw], path)
    os.unlink(raw)
    return path


def lavfi(graph, path, seconds):
    """``seconds`` of the lavfi source ``graph`` into ``path`` (16 kHz mono WAV)."""
    return ffmpeg_to_wav(["-f", "lavfi", "-i", graph, "-t", str(seconds)], path)


def join(parts, path):
    """WAV files (16 kHz mono 16-bit paths) and silences (seconds, a number)
    end to end into ``path``. Returns ``[(start_s, end_s)]`` of each part."""
    where, t = [], 0.0
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        for part in parts:
            if isinstance(part, (int, float)):
                n = int(round(part * SAMPLE_RATE))
                out.writeframes(b"\0\0" * n)
            else:
                with wave.open(part, "rb") as w:
                    assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
                    n = w.getnframes()
                    out.writeframes(w.readframes(n))
            where.append((t, t + n / SAMPLE_RATE))
            t += n / SAMPLE_RATE
    return where


def normalize(text):
    """Lower case, hyphens as spaces, no punctuation but apostrophes, and
    "mr" spelt "mister" as the LibriVox reference spells it."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = ["mister" if w == "mr" else w for w in text.split()]
    return " ".join(words)


def wer(reference, hypothesis):
    """Word error rate (0..1+) of ``hypothesis`` against ``reference``
    (both normalized first); also ``errors(...)`` for the counts."""
    return jiwer.wer(normalize(reference), normalize(hypothesis) or "")


def errors(reference, hypothesis):
    """(substitutions + deletions + insertions, reference words)."""
    out = jiwer.process_words(normalize(reference), normalize(hypothesis) or "")
    return out.substitutions + out.deletions + out.insertions, len(normalize(reference).split())


def text_of(words):
    """The words' text joined by spaces."""
    return " ".join(w["word"] for w in words)
