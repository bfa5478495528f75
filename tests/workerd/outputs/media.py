"""Tiny test sources for the output builders, made with ffmpeg's lavfi.

Every maker writes one MP4 (H.264 ``testsrc2``, ultrafast, with a moving
picture so encoders have something to do; AAC audio from ``aevalsrc``) into
the directory it is given and returns its absolute path. Clips are 2-4 s.
subprocess is fine here: this is test set-up, not reactor code.

``make_source`` takes every knob; the named makers below give the sources
issue 11 asks tests to cover (landscape, portrait, odd dimensions, 60 fps,
no audio, audio shorter than video, video smaller than the lowest rung,
5.1 audio, two audio languages). ``probe`` gives a ``SourceInfo``.
"""

import json
import os
import subprocess

from nommer.workerd.outputs.source import from_probe

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: Frequencies of the audio tracks' tones (track i, channel c: BASE_HZ + 110*i + 55*c).
BASE_HZ = 440


def _tone(channels, track, duration_s):
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    exprs = "|".join(f"0.3*sin({BASE_HZ + 110 * track + 55 * c}*2*PI*t)" for c in range(channels))
    return f"aevalsrc={exprs}:c={layout}:s=48000:d={duration_s}"


def make_source(directory, name, *, width=640, height=360, fps=30, duration_s=3,
                audio="stereo", audio_duration_s=None, video=True):
    """Write ``directory/name`` (an MP4) and return its absolute path.

    :param width, height: pixels. Even sizes are H.264 yuv420p; an odd side
        makes the clip yuv444p (High 4:4:4), as 4:2:0 cannot have odd sides.
    :param fps: frames per second (int, or a string such as ``"30000/1001"``).
    :param duration_s: seconds of video.
    :param audio: ``"stereo"``, ``"mono"``, ``"5.1"`` (6 channels), ``None``
        (no audio stream), or ``"two-languages"`` (two stereo tracks tagged
        ``eng`` then ``fra``).
    :param audio_duration_s: seconds of audio (default ``duration_s``); less
        than ``duration_s`` gives audio shorter than the video.
    :param video: False for an audio-only source (width/height/fps ignored).
    Raises subprocess.CalledProcessError if ffmpeg fails.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.abspath(os.path.join(directory, name))
    a_dur = duration_s if audio_duration_s is None else audio_duration_s
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        argv += ["-f", "lavfi", "-i",
                 f"testsrc2=size={width}x{height}:rate={fps}:duration={duration_s}"]
    tracks = []
    if audio in ("stereo", "mono", "5.1"):
        tracks = [({"stereo": 2, "mono": 1, "5.1": 6}[audio], None)]
    elif audio == "two-languages":
        tracks = [(2, "eng"), (2, "fra")]
    elif audio is not None:
        raise ValueError(f"unknown audio kind {audio!r}")
    for i, (channels, _) in enumerate(tracks):
        argv += ["-f", "lavfi", "-i", _tone(channels, i, a_dur)]
    if video:
        argv += ["-map", "0:v"]
    first_audio = 1 if video else 0
    for i, _ in enumerate(tracks):
        argv += ["-map", f"{first_audio + i}:a"]
    if video:
        if width % 2 or height % 2:
            # testsrc2 rounds its size down to even sides: scale to the odd size.
            argv += ["-vf", f"scale={width}:{height},setsar=1", "-pix_fmt", "yuv444p"]
        else:
            argv += ["-pix_fmt", "yuv420p"]
        argv += ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(round(eval_fps(fps) * 2))]
    if tracks:
        argv += ["-c:a", "aac", "-b:a", "96k"]
        for i, (_, lang) in enumerate(tracks):
            if lang:
                argv += [f"-metadata:s:a:{i}", f"language={lang}"]
    argv += [path]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return path


def eval_fps(fps):
    """``fps`` (int, float or ``"num/den"``) as a float."""
    if isinstance(fps, str) and "/" in fps:
        num, den = fps.split("/")
        return float(num) / float(den)
    return float(fps)


def probe(path):
    """``SourceInfo`` of ``path`` (ffprobe ``-show_format -show_streams``)."""
    out = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", "-show_format",
                          "-show_streams", path], check=True, capture_output=True, timeout=60)
    return from_probe(json.loads(out.stdout))


# --- the sources issue 11 names -------------------------------------------------------

def landscape(directory, name="landscape.mp4", **kw):
    """640x360, 30 fps, 3 s, stereo."""
    return make_source(directory, name, **kw)


def portrait(directory, name="portrait.mp4", **kw):
    """360x640 (9:16), 30 fps, 3 s, stereo."""
    kw.setdefault("width", 360)
    kw.setdefault("height", 640)
    return make_source(directory, name, **kw)


def odd_size(directory, name="odd.mp4", **kw):
    """642x362: even sides but no standard aspect ratio (scaled sizes must round)."""
    kw.setdefault("width", 642)
    kw.setdefault("height", 362)
    return make_source(directory, name, **kw)


def truly_odd_size(directory, name="odd-sides.mp4", **kw):
    """641x361: odd sides (yuv444p source), so every scaled size must be made even."""
    kw.setdefault("width", 641)
    kw.setdefault("height", 361)
    return make_source(directory, name, **kw)


def fps60(directory, name="fps60.mp4", **kw):
    """640x360 at 60 fps, 2 s, stereo."""
    kw.setdefault("fps", 60)
    kw.setdefault("duration_s", 2)
    return make_source(directory, name, **kw)


def no_audio(directory, name="silent.mp4", **kw):
    """640x360, 30 fps, 3 s, no audio stream."""
    kw.setdefault("audio", None)
    return make_source(directory, name, **kw)


def short_audio(directory, name="short-audio.mp4", **kw):
    """640x360, 4 s of video, 2.5 s of stereo audio."""
    kw.setdefault("duration_s", 4)
    kw.setdefault("audio_duration_s", 2.5)
    return make_source(directory, name, **kw)


def tiny(directory, name="tiny.mp4", **kw):
    """320x180: smaller than the lowest rung of the default ladder (416x234)."""
    kw.setdefault("width", 320)
    kw.setdefault("height", 180)
    return make_source(directory, name, **kw)


def surround(directory, name="surround.mp4", **kw):
    """640x360 with 5.1 (6-channel) audio."""
    kw.setdefault("audio", "5.1")
    return make_source(directory, name, **kw)


def two_languages(directory, name="two-languages.mp4", **kw):
    """640x360 with two stereo audio tracks tagged eng and fra."""
    kw.setdefault("audio", "two-languages")
    return make_source(directory, name, **kw)


def audio_only(directory, name="audio-only.m4a", **kw):
    """Stereo AAC only, no video stream, 3 s."""
    kw.setdefault("video", False)
    return make_source(directory, name, **kw)
