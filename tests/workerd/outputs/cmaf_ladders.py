"""Tiny CMAF ladders written by ffmpeg's dash muxer, for the manifest tests
(test_mpd, test_measure, test_hls, test_iframes).

Each ladder is one directory holding ``manifest.mpd``, ``init-<rep>.m4s``
and ``chunk-<rep>-<NNNNN>.m4s``, made the way the ladder output does it
(keyframes on a 2 s grid, 4 s segments of 2 s fragments). ``ladder(factory,
kind)`` builds one kind once per test session (``factory`` is pytest's
``tmp_path_factory``) and returns its directory; ``ladder_fixture(kind)``
is a module-scoped fixture giving that directory.

Kinds:

* ``"stereo"``: 640x360 and 416x234 H.264 rungs, one stereo AAC rendition,
  5 s (segments of 4 s + 1 s; keyframes at 0, 2, 4 s).
* ``"languages"``: one 640x360 H.264 rung, two AAC renditions tagged eng and
  fra (each in its own adaptation set), 4.2 s (a 0.2 s tail segment).
* ``"silent"``: one 640x360 H.264 rung, no audio, 3 s.
* ``"hevc"``: one 640x360 HEVC rung tagged hvc1, one stereo AAC rendition, 3 s.
"""

import os

import pytest

from tests.workerd.outputs.media import ffmpeg

_DASH = ["-f", "dash", "-seg_duration", "4", "-use_template", "1", "-use_timeline", "1",
         "-frag_type", "duration", "-frag_duration", "2",
         "-init_seg_name", "init-$RepresentationID$.m4s",
         "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s"]
_KEYFRAMES = ["-sc_threshold", "0", "-g", "60", "-keyint_min", "60",
              "-force_key_frames", "expr:gte(t,n_forced*2)"]
_AUDIO = ["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000"]

_cache = {}


def _source(directory, duration_s, languages):
    path = os.path.join(directory, "src.mp4")
    argv = ["-f", "lavfi", "-i", f"testsrc2=s=640x360:r=30:d={duration_s}"]
    for i, _ in enumerate(languages):
        argv += ["-f", "lavfi", "-i", f"sine=f={440 + 220 * i}:d={duration_s}"]
    argv += ["-map", "0:v"] + [x for i, _ in enumerate(languages) for x in ("-map", f"{i + 1}:a")]
    argv += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if languages:
        argv += ["-c:a", "aac"]
    for i, lang in enumerate(languages):
        if lang:
            argv += [f"-metadata:s:a:{i}", f"language={lang}"]
    ffmpeg(*argv, path, timeout=300)
    return path


def _build(out, kind):
    os.makedirs(out)
    if kind == "stereo":
        src = _source(out, 5, [None])
        argv = ["-i", src, "-filter_complex", "[0:v]split=2[a][b];[b]scale=-2:234,fps=30[b1]",
                "-map", "[a]", "-map", "[b1]", "-map", "0:a:0", "-c:v", "libx264",
                "-b:v:0", "800k", "-maxrate:v:0", "880k", "-bufsize:v:0", "1600k",
                "-b:v:1", "145k", "-maxrate:v:1", "160k", "-bufsize:v:1", "290k",
                "-preset", "veryfast", "-pix_fmt", "yuv420p"] + _KEYFRAMES + _AUDIO
        argv += ["-adaptation_sets", "id=0,streams=v id=1,streams=a"]
    elif kind == "languages":
        src = _source(out, 4.2, ["eng", "fra"])
        argv = ["-i", src, "-map", "0:v", "-map", "0:a:0", "-map", "0:a:1",
                "-c:v", "libx264", "-b:v", "400k", "-preset", "veryfast",
                "-pix_fmt", "yuv420p"] + _KEYFRAMES + _AUDIO
        argv += ["-adaptation_sets", "id=0,streams=v id=1,streams=1 id=2,streams=2"]
    elif kind == "silent":
        src = _source(out, 3, [])
        argv = ["-i", src, "-map", "0:v", "-c:v", "libx264", "-b:v", "400k",
                "-preset", "veryfast", "-pix_fmt", "yuv420p"] + _KEYFRAMES
        argv += ["-adaptation_sets", "id=0,streams=v"]
    elif kind == "hevc":
        src = _source(out, 3, [None])
        argv = ["-i", src, "-map", "0:v", "-map", "0:a:0", "-c:v", "libx265",
                "-tag:v", "hvc1", "-b:v", "300k", "-preset", "veryfast",
                "-x265-params", "log-level=error", "-forced-idr", "1",
                "-pix_fmt", "yuv420p"] + _KEYFRAMES + _AUDIO
        argv += ["-adaptation_sets", "id=0,streams=v id=1,streams=a"]
    else:
        raise ValueError(f"unknown ladder kind {kind!r}")
    ffmpeg(*argv, *_DASH, os.path.join(out, "manifest.mpd"), timeout=300)
    os.remove(src)
    return out


def ladder(tmp_path_factory, kind):
    """The directory of the ladder ``kind`` (built on first use in this session)."""
    if kind not in _cache:
        _cache[kind] = _build(str(tmp_path_factory.mktemp("cmaf") / kind), kind)
    return _cache[kind]


def ladder_fixture(kind):
    """A module-scoped pytest fixture giving the directory of the ladder
    ``kind``: ``stereo = ladder_fixture("stereo")`` in a test module."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        return ladder(tmp_path_factory, kind)
    return fixture


def concatenated(directory, init, segments, dest):
    """Write ``init`` + ``segments`` (file names in ``directory``) into ``dest``: a
    playable fragmented MP4 of the whole track. Returns ``dest``."""
    with open(dest, "wb") as out:
        for name in [init] + list(segments):
            with open(os.path.join(directory, name), "rb") as f:
                out.write(f.read())
    return dest
