"""Tiny test sources for chunked encoding, made with ffmpeg's lavfi.

Every maker writes one file into the directory it is given and returns its
absolute path. subprocess is fine here: this is test set-up.

The content (``make_scenes`` and friends) is four segments from different
lavfi sources, each with moving content (so per-frame PSNR by index is
meaningful), joined by hard cuts at known frames (``scene_cut_frames``,
``scene_cut_times``). The video is H.264 from x264 ``veryfast`` (B-frames on)
with IRREGULAR keyframes (``keyframe_times``: forced at uneven times,
``-g`` huge, no scene-cut keyframes), so a cut almost never lies on a
keyframe. Audio is an AAC sine, optionally shorter than the video.

* ``make_scenes``: that content in MP4 (or MKV/MOV/AVI/TS from the name's
  extension: ``make_mkv``, ``make_avi``);
* ``make_ts``: the same as MPEG-TS (audio and video start_times differ, as
  usual in TS);
* ``make_vfr``: a variable-frame-rate MP4 (24 fps, then 30 fps, then 24 fps
  again; real timestamps kept).

``framemd5s`` gives a file's decoded frame hashes (the comparison of
frame-exact cuts).
"""

import os
import subprocess

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"

#: Where the scene cuts lie, as fractions of the video's frame count (the
#: four segments: testsrc2, mandelbrot, scrolling SMPTE bars, game of life).
SCENE_FRACTIONS = (0.3, 0.55, 0.8)

#: Forced keyframes, as fractions of the video's duration (uneven on
#: purpose, never on a scene cut).
KEYFRAME_FRACTIONS = (0.0, 0.17, 0.41, 0.47, 0.72, 0.93)


def ffmpeg(*args, timeout=180):
    """Run ``ffmpeg -hide_banner -loglevel error -nostdin -y <args>``; return the
    ``CompletedProcess``. Raises CalledProcessError when ffmpeg fails."""
    return subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                          check=True, capture_output=True, timeout=timeout)


def total_frames(fps=24, duration_s=8):
    """Frames in the video of ``make_scenes(fps=fps, duration_s=duration_s)``."""
    return int(round(fps * duration_s))


def scene_cut_frames(fps=24, duration_s=8):
    """Frame indexes where each scene after the first starts (ascending):
    the cuts ``make_scenes`` with the same ``fps`` and ``duration_s`` made."""
    n = total_frames(fps, duration_s)
    return [int(round(f * n)) for f in SCENE_FRACTIONS]


def scene_cut_times(fps=24, duration_s=8):
    """``scene_cut_frames`` as seconds from the first frame (frame / fps)."""
    return [i / fps for i in scene_cut_frames(fps, duration_s)]


def keyframe_times(duration_s=8):
    """The forced keyframe times (seconds from the start) of ``make_scenes``."""
    return [round(f * duration_s, 3) for f in KEYFRAME_FRACTIONS]


def _segments_graph(width, height, fps, duration_s):
    """The filtergraph making the four-segment content into ``[v]``."""
    n = total_frames(fps, duration_s)
    bounds = [0] + scene_cut_frames(fps, duration_s) + [n]
    lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    size = f"{width}x{height}"
    sources = [
        f"testsrc2=s={size}:r={fps}",
        f"mandelbrot=s={size}:r={fps}:start_scale=2:end_scale=0.05",
        f"smptebars=s={size}:r={fps},scroll=h=0.011:v=0.004",
        f"life=s={size}:r={fps}:seed=7:ratio=0.2:mold=8:life_color=#30d030:death_color=#802020:"
        f"mold_color=#202060",
    ]
    parts = []
    for i, (src, count) in enumerate(zip(sources, lengths)):
        parts.append(f"{src},trim=end_frame={count},setpts=PTS-STARTPTS,format=yuv420p,"
                     f"setsar=1[s{i}]")
    pads = "".join(f"[s{i}]" for i in range(len(sources)))
    parts.append(f"{pads}concat=n={len(sources)}:v=1:a=0[v]")
    return ";".join(parts)


def make_scenes(directory, name="scenes.mp4", *, width=320, height=180, fps=24, duration_s=8,
                audio=True, audio_duration_s=None, preset="veryfast", extra_args=()):
    """Write ``directory/name`` and return its absolute path: ``duration_s`` s
    of four-scene content (cuts at ``scene_cut_frames(fps, duration_s)``),
    H.264 (x264 ``preset``, B-frames, keyframes only at
    ``keyframe_times(duration_s)``), plus an AAC sine of ``audio_duration_s``
    (default: the video's length; shorter gives audio shorter than video)
    when ``audio``. The container follows the name's extension (mp4, mkv,
    mov, avi, ts). ``extra_args``: more output options before the path.
    Raises CalledProcessError when ffmpeg fails."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.abspath(os.path.join(directory, name))
    argv = ["-filter_complex", _segments_graph(width, height, fps, duration_s)]
    if audio:
        a_dur = duration_s if audio_duration_s is None else audio_duration_s
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={a_dur}"]
    argv += ["-map", "[v]"]
    if audio:
        argv += ["-map", "0:a"]
    keys = ",".join(str(t) for t in keyframe_times(duration_s))
    argv += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-g", "10000",
             "-keyint_min", "10000", "-sc_threshold", "0", "-force_key_frames", keys,
             "-r", str(fps)]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k"]
    ffmpeg(*argv, *extra_args, path)
    return path


def make_ts(directory, name="scenes.ts", **kw):
    """``make_scenes`` in MPEG-TS (H.264 + AAC; video and audio start_times
    differ, as they do in TS: ~1.4 s plus the B-frame delay for video)."""
    return make_scenes(directory, name, **kw)


def make_mkv(directory, name="scenes.mkv", **kw):
    """``make_scenes`` in Matroska (1 ms timestamps)."""
    return make_scenes(directory, name, **kw)


def make_avi(directory, name="scenes.avi", **kw):
    """``make_scenes`` in AVI (H.264 with B-frames + AAC)."""
    return make_scenes(directory, name, **kw)


#: The lavfi sources ``make_vfr(scenes=True)`` gives its parts, in turn (hard cuts between them).
VFR_SCENES = ("testsrc2=s={size}:r={fps}",
              "mandelbrot=s={size}:r={fps}:start_scale=2:end_scale=0.05",
              "smptebars=s={size}:r={fps},scroll=h=0.011:v=0.004")


def make_vfr(directory, name="vfr.mp4", *, width=320, height=180, audio=True,
             parts=((24, 48), (30, 45), (24, 36)), scenes=False):
    """Write a variable-frame-rate MP4 and return its absolute path: testsrc2
    in ``parts`` (``(fps, frames)`` each: by default 2 s at 24 fps, 1.5 s at
    30 fps, 1.5 s at 24 fps), each part's real timestamps kept (time base
    1/120, ``-fps_mode passthrough``), H.264 with B-frames; plus an AAC
    sine as long as the video when ``audio``. Frame intervals therefore
    differ (1/24 and 1/30 s). With ``scenes``, each part is another scene
    (``VFR_SCENES`` in turn), so the rate changes at hard cuts, as when
    clips of different rates are edited together. Raises CalledProcessError
    when ffmpeg fails."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.abspath(os.path.join(directory, name))
    graph, offset = [], 0.0
    for i, (fps, frames) in enumerate(parts):
        first = (VFR_SCENES[i % len(VFR_SCENES)] if scenes else VFR_SCENES[0]).format(
            size=f"{width}x{height}", fps=fps)
        graph.append(f"{first},trim=end_frame={frames},"
                     f"settb=1/120,setpts=PTS-STARTPTS,format=yuv420p[s{i}]")
        offset += frames / fps
    pads = "".join(f"[s{i}]" for i in range(len(parts)))
    graph.append(f"{pads}concat=n={len(parts)}:v=1:a=0,settb=1/120[v]")
    argv = ["-filter_complex", ";".join(graph)]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={offset}"]
    argv += ["-map", "[v]"]
    if audio:
        argv += ["-map", "0:a", "-c:a", "aac", "-b:a", "64k"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-g", "48", "-fps_mode", "passthrough",
             "-video_track_timescale", "120"]
    ffmpeg(*argv, path)
    return path


def vfr_duration_s(parts=((24, 48), (30, 45), (24, 36))):
    """The video length of ``make_vfr(parts=parts)``, seconds."""
    return sum(frames / fps for fps, frames in parts)


def framemd5s(*args):
    """The decoded video frames' md5s (list of str, in output order) of
    ``ffmpeg <args> -map 0:v:0 -f framemd5 -``, e.g.
    ``framemd5s("-ss", "1.5", "-i", path, "-frames:v", "24")``. Frames are
    passed through as decoded (``-fps_mode passthrough``), so none is
    duplicated or dropped."""
    out = ffmpeg(*args, "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "framemd5", "-")
    hashes = []
    for line in out.stdout.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        hashes.append(line.rsplit(",", 1)[1].strip())
    return hashes
