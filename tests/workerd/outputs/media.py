"""Tiny test sources for the output builders, made with ffmpeg's lavfi.

Every maker writes one MP4 (H.264 ``testsrc2``, ultrafast, with a moving
picture so encoders have something to do; AAC audio from ``aevalsrc``) into
the directory it is given and returns its absolute path. Clips are 2-4 s.
subprocess is fine here: this is test set-up, not reactor code.

``make_source`` takes every knob; the named makers below give the sources
issue 11 asks tests to cover (landscape, portrait, odd dimensions, 60 fps,
no audio, audio shorter than video, video smaller than the lowest rung,
5.1 audio, two audio languages). ``probe`` gives a ``SourceInfo``.

The helpers every builder's tests share are here too: ``ffmpeg`` and
``ffprobe_json`` (quiet runs), ``run_steps`` (a plan's argvs run as
OutputsNommer runs them) and ``build`` (plan, run, finish); the
top-level box reader is ``tests.workerd.media.top_level_boxes``.
"""

import json
import os
import subprocess

import pytest

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
    argv = []
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
    ffmpeg(*argv, path)
    return path


def eval_fps(fps):
    """``fps`` (int, float or ``"num/den"``) as a float."""
    if isinstance(fps, str) and "/" in fps:
        num, den = fps.split("/")
        return float(num) / float(den)
    return float(fps)


# --- running ffmpeg and ffprobe, and the builders -----------------------------------------

#: The output duration cap OutputsNommer puts before each argv's last
#: element (``-t`` seconds); the tests run the argvs the same way.
CAP_S = 60


def ffmpeg(*args, timeout=120):
    """Run ``ffmpeg -hide_banner -loglevel error -nostdin -y <args>``; return the
    ``CompletedProcess`` (``.stdout`` bytes). Raises CalledProcessError if it fails."""
    return subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                          check=True, capture_output=True, timeout=timeout)


def ffprobe_json(path, *args, check=True):
    """ffprobe's JSON (``-print_format json``) of ``path`` with extra ``args``
    (``"-show_streams"``, ``"-show_entries", "packet=pts_time,flags"``).
    When ffprobe cannot read the file: CalledProcessError, or None with
    ``check=False``."""
    out = subprocess.run([FFPROBE, "-v", "error", "-print_format", "json", *args, path],
                         capture_output=True, timeout=60)
    if out.returncode != 0:
        if check:
            raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
        return None
    return json.loads(out.stdout)


def probe_json(path):
    """ffprobe's ``-show_format -show_streams`` JSON (dict) of ``path``, or
    None when ffprobe cannot read it."""
    return ffprobe_json(path, "-show_format", "-show_streams", check=False)


def probe(path):
    """``SourceInfo`` of ``path`` (ffprobe ``-show_format -show_streams``)."""
    return from_probe(ffprobe_json(path, "-show_format", "-show_streams"))


def streams(probed, kind):
    """The streams of ``probed`` (ffprobe JSON) whose codec_type is ``kind``."""
    return [s for s in probed["streams"] if s["codec_type"] == kind]


def run_steps(steps):
    """Run each ``Step``'s argv as OutputsNommer does (``-t CAP_S`` before
    its last element, the output); fail with ffmpeg's stderr tail."""
    for step in steps:
        argv = step.argv[:-1] + ["-t", f"{CAP_S:.3f}"] + step.argv[-1:]
        done = subprocess.run(argv, capture_output=True, timeout=300)
        assert done.returncode == 0, (step.what, done.stderr[-3000:].decode(errors="replace"))


def build(builder, spec, path, work_dir, *, source=None, **extra):
    """``builder.plan`` (a module of nommer.workerd.outputs) of ``spec`` on
    the source file ``path``, its steps run (``run_steps``), then
    ``builder.finish``: ``(SourceInfo, steps, OutputResult)``. ``source``:
    the ``SourceInfo`` when already probed; ``extra``: more keywords of
    ``plan`` (``image_input``)."""
    source = probe(path) if source is None else source
    os.makedirs(work_dir, exist_ok=True)
    steps = builder.plan(spec, source, ffmpeg_bin=FFMPEG, input_path=path, work_dir=str(work_dir),
                         **extra)
    run_steps(steps)
    return source, steps, builder.finish(spec, source, steps, str(work_dir))


def sources_fixture(makers):
    """A module-scoped fixture giving ``{key: path}``: each of ``makers``
    (``{key: maker(directory) -> path}``) run once, in one temp directory."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        directory = str(tmp_path_factory.mktemp("sources"))
        return {key: maker(directory) for key, maker in makers.items()}
    return fixture


# --- the sources issue 11 names -------------------------------------------------------

def _maker(default_name, doc, **defaults):
    """A maker ``(directory, name=default_name, **kw) -> path``: ``make_source``
    with ``defaults`` under ``kw``."""
    def maker(directory, name=default_name, **kw):
        return make_source(directory, name, **{**defaults, **kw})
    maker.__doc__ = doc
    return maker


landscape = _maker("landscape.mp4", "640x360, 30 fps, 3 s, stereo.")
portrait = _maker("portrait.mp4", "360x640 (9:16), 30 fps, 3 s, stereo.", width=360, height=640)
odd_size = _maker("odd.mp4", "642x362: even sides but no standard aspect ratio (scaled sizes "
                  "must round).", width=642, height=362)
truly_odd_size = _maker("odd-sides.mp4", "641x361: odd sides (yuv444p source), so every "
                        "scaled size must be made even.", width=641, height=361)
fps60 = _maker("fps60.mp4", "640x360 at 60 fps, 2 s, stereo.", fps=60, duration_s=2)
no_audio = _maker("silent.mp4", "640x360, 30 fps, 3 s, no audio stream.", audio=None)
short_audio = _maker("short-audio.mp4", "640x360, 4 s of video, 2.5 s of stereo audio.",
                     duration_s=4, audio_duration_s=2.5)
short_video = _maker("short-video.mp4", "640x360, 2 s of video in a 4 s file (the stereo audio "
                     "runs on).", duration_s=2, audio_duration_s=4)
tiny = _maker("tiny.mp4", "320x180: smaller than the lowest rung of the default ladder "
              "(416x234).", width=320, height=180)
surround = _maker("surround.mp4", "640x360 with 5.1 (6-channel) audio.", audio="5.1")
two_languages = _maker("two-languages.mp4", "640x360 with two stereo audio tracks tagged eng "
                       "and fra.", audio="two-languages")
audio_only = _maker("audio-only.m4a", "Stereo AAC only, no video stream, 3 s.", video=False)
