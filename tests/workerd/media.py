"""Test media: tiny clips made with lavfi, and an MP4 box reader.

Clips are generated once per test process (subprocess is fine here: this is
test set-up, not reactor code) and reused; tests must copy them before
changing them.
"""

import atexit
import shutil
import struct
import subprocess
import tempfile
import os

_DIR = None
_CACHE = {}


def _dir():
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="nommer-test-media-")
        atexit.register(shutil.rmtree, _DIR, True)
    return _DIR


def clip(seconds=2, size="1280x720", rate=25, audio=True, video=True, fmt="mp4"):
    """Path of a cached lavfi clip: testsrc2 video (H.264, ultrafast) and/or a
    440 Hz sine (AAC, 48 kHz), ``seconds`` long."""
    key = (seconds, size, rate, audio, video, fmt)
    if key in _CACHE:
        return _CACHE[key]
    path = os.path.join(_dir(), f"clip-{len(_CACHE)}.{fmt}")
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        argv += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    argv += ["-t", str(seconds)]
    if video:
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        argv += ["-c:a", "aac"]
    argv += ["-shortest", path]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    _CACHE[key] = path
    return path


def mp4_boxes(path):
    """``(type, offset, size)`` of the top-level MP4/QuickTime boxes of
    ``path``, in file order, read from the box headers (32-bit size + type;
    size 1 = 64-bit size follows; size 0 = to the end of the file)."""
    boxes = []
    end = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:
                size = end - pos
            boxes.append((kind.decode("latin-1"), pos, size))
            if size < 8:
                break
            pos += size
    return boxes


def top_level_boxes(path):
    """Names of the top-level MP4/QuickTime boxes of ``path``, in file order."""
    return [kind for kind, _, _ in mp4_boxes(path)]


# --- reactor helpers ----------------------------------------------------------



class ClockTimeReactor:
    """Real child processes and threads (the global reactor), fake time (a
    ``twisted.internet.task.Clock`` in ``.clock``): timeouts of real
    processes are driven by ``clock.advance`` instead of waiting."""

    def __init__(self):
        from twisted.internet import reactor
        from twisted.internet.task import Clock

        self._reactor = reactor
        self.clock = Clock()

    def spawnProcess(self, *args, **kwargs):
        return self._reactor.spawnProcess(*args, **kwargs)

    def getThreadPool(self):
        return self._reactor.getThreadPool()

    def callFromThread(self, *args, **kwargs):
        return self._reactor.callFromThread(*args, **kwargs)

    def callLater(self, *args, **kwargs):
        return self.clock.callLater(*args, **kwargs)

    def seconds(self):
        return self.clock.seconds()


def settings(**overrides):
    """Default settings (``nommer.conf.defaults``) with overrides, as an
    object with UPPER_CASE attributes (what nommers read)."""
    import types

    from nommer.conf import defaults

    values = {k: getattr(defaults, k) for k in dir(defaults) if k.isupper()}
    values.update(overrides)
    return types.SimpleNamespace(**values)


def probe_json(path):
    """ffprobe's JSON of ``path`` (format and streams), run with subprocess:
    an independent check of files the code under test wrote."""
    import json

    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams", path], check=True, capture_output=True, timeout=60)
    return json.loads(out.stdout)
