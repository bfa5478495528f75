"""The transcriber's input: a 16 kHz mono 16-bit PCM WAV file, read in pieces.

ffmpeg makes it (``-ac 1 -ar 16000 -c:a pcm_s16le out.wav``). ``WavAudio``
never holds the whole file: the VAD reads it front to back in blocks, the
engines read the speech spans they need by time, so an hour of audio
(115 MB of PCM) costs a few megabytes of memory.
"""

import wave

SAMPLE_RATE = 16000  # samples per second
SAMPLE_BYTES = 2  # 16-bit signed little-endian


class WavAudio:
    """A 16 kHz mono 16-bit PCM WAV file.

    ``WavAudio(path)`` raises ``ValueError`` (a sentence naming what is wrong)
    when the file is not a WAV file of that format. ``duration_s`` is its
    length in seconds, ``n_samples`` in samples. Use as a context manager or
    call ``close()``.
    """

    def __init__(self, path):
        self.path = path
        try:
            self._wav = wave.open(path, "rb")
        except (wave.Error, EOFError) as e:
            raise ValueError(f"{path} is not a readable WAV file ({e})") from None
        channels, width, rate = self._wav.getnchannels(), self._wav.getsampwidth(), self._wav.getframerate()
        if (channels, width, rate) != (1, SAMPLE_BYTES, SAMPLE_RATE):
            self._wav.close()
            raise ValueError(f"{path} has {channels} channel(s), {8 * width}-bit samples at {rate} Hz; "
                             f"the transcriber reads mono 16-bit PCM at {SAMPLE_RATE} Hz "
                             "(ffmpeg -ac 1 -ar 16000 -c:a pcm_s16le)")
        self.n_samples = self._wav.getnframes()
        self.duration_s = self.n_samples / SAMPLE_RATE

    def blocks(self, n_samples):
        """Yield the whole file front to back as ``bytes`` of ``n_samples``
        samples each (the last block may be shorter)."""
        self._wav.rewind()
        while True:
            data = self._wav.readframes(n_samples)
            if not data:
                return
            yield data

    def read(self, start_s, end_s):
        """The PCM (``bytes``, 2 bytes a sample) between ``start_s`` and
        ``end_s`` seconds, clipped to the file."""
        first = max(0, min(self.n_samples, round(start_s * SAMPLE_RATE)))
        last = max(first, min(self.n_samples, round(end_s * SAMPLE_RATE)))
        self._wav.setpos(first)
        return self._wav.readframes(last - first)

    def close(self):
        self._wav.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
