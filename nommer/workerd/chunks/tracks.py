"""The ``VideoTrack`` s a job's outputs need, each chunk encoding every one of them.

A chunk is encoded once per track (``encode.plan``: one decode of the chunk,
a ``split`` into every track). The tracks are built from the same code the
one-piece builders use, so a chunked output is encoded as its single-run
twin would be:

* ``mp4_track``: an mp4 output's video, as ``nommer.workerd.outputs.mp4.plan``
  makes it (``common.bounded_size`` scaling, the ``fps_max`` cap of
  ``mp4.output_fps``, ``mp4._video_codec_args``, keyframes on the 2 s grid);
* ``package_tracks``: one track per rung of a ladder package (hls and/or
  dash sharing segments), as ``nommer.workerd.outputs.package`` makes them
  (``ladder.plan_rungs``, the rung's fps cap, scale and ``setsar=1``,
  ``package._video_args`` without the stream qualifiers, keyframes on the
  2 s grid: chunk starts lie on that grid for ladders, so the chunk-local
  ``expr:gte(t,n_forced*2)`` lines up with the whole title's).

``expected_frames`` says how many frames a track's chunk holds after the
track's fps filter.
"""

import math
import re
from fractions import Fraction

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks.model import VideoTrack
from nommer.workerd.outputs import common, mp4
from nommer.workerd.outputs import ladder as ladder_mod
from nommer.workerd.outputs import package as package_mod

#: A track key: letters and digits only (it goes into file names).
KEY_PATTERN = re.compile(r"^[A-Za-z0-9]{1,32}$")


def _check_key(key):
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"a track key is 1 to 32 letters or digits, not {key!r}")
    return key


def _fps_text(fps):
    return f"fps={fps.numerator}/{fps.denominator}"


def _track_fps(fps, filtered, timeline):
    """The track's frame rate: ``fps``, or None when the source is VFR
    (``timeline`` given and not CFR) and no fps filter makes it CFR."""
    if timeline is not None and not timeline.cfr and not filtered:
        return None
    return fps


def mp4_track(spec, source, key, *, timeline=None):
    """The ``VideoTrack`` of an mp4 output's video.

    :param spec: the normalized mp4 output (``nommer.core.outputs.schema``;
        ``codec``, ``height``/``width``, ``crf`` or ``bitrate``, ``fps_max``,
        ``encoder_preset``). An audio merge (``image_path``) is not chunked:
        ValueError.
    :param source: ``SourceInfo`` of the source.
    :param key: the track's key (letters and digits, e.g. ``"o2"``).
    :param timeline: the source's ``Timeline`` when known: a VFR source
        whose frame rate no ``fps_max`` changes keeps its timestamps, and the
        track's ``fps`` is then None.
    :returns: ``VideoTrack``: chain ``[fps=R,]scale=W:H,setsar=1,format=yuv420p``,
        args ``mp4._video_codec_args(spec) + common.keyframe_args(fps)``, fps
        the output rate (``mp4.output_fps``).
    :raises PermanentJobError: the source has no video.
    """
    _check_key(key)
    if spec.get("image_path"):
        raise ValueError("an audio merge (image_path) is not encoded in chunks")
    if not source.has_video:
        raise PermanentJobError("the source has no video stream: an mp4 output needs video")
    width, height = common.bounded_size(source.width, source.height,
                                        height=spec.get("height"), width=spec.get("width"))
    fps = mp4.output_fps(source.fps, spec.get("fps_max"))
    filters = []
    filtered = fps is not None and source.fps is not None and fps != Fraction(source.fps)
    if filtered:
        filters.append(_fps_text(fps))
    filters += [f"scale={width}:{height}", "setsar=1", "format=yuv420p"]
    args = mp4._video_codec_args(spec) + common.keyframe_args(fps)
    return VideoTrack(key=key, chain=",".join(filters), args=tuple(args),
                      fps=_track_fps(fps, filtered, timeline))


def _unqualified(args):
    """``package._video_args`` options without their ``:v:i`` stream qualifier."""
    out = []
    for i, arg in enumerate(args):
        if i % 2 == 0 and arg.startswith("-"):
            arg = re.sub(r":v:\d+$", "", arg)
        out.append(arg)
    return out


def package_tracks(package, source, key_prefix, *, timeline=None):
    """One ``VideoTrack`` per rung of a ladder package, lowest bitrate first
    (the rungs' order in ``ladder.plan_rungs``; rung i has key
    ``f"{key_prefix}r{i}"``, e.g. ``"p0r3"``).

    :param package: ``{"hls": spec or None, "dash": spec or None}`` as
        ``nommer.workerd.outputs.package`` takes it.
    :param source: ``SourceInfo`` of the source.
    :param key_prefix: letters and digits (``"p0"``).
    :param timeline: the source's ``Timeline`` when known (see ``mp4_track``).
    :returns: list of ``VideoTrack``: chain ``[fps=R,]scale=W:H,setsar=1``
        (``package.rung_chains``), args ``-preset P -pix_fmt yuv420p`` then
        ``package._video_args`` unqualified (``-c:v``, ``-b:v``, ``-maxrate``,
        ``-bufsize``, the 2 s keyframe grid, ``-profile:v high`` or x265's
        params); fps the rung's.
    :raises PermanentJobError: the source has no video.
    :raises ValueError: a malformed package.
    """
    _check_key(key_prefix)
    spec = package_mod._specs(package)
    rungs = ladder_mod.plan_rungs(spec, source)
    preset = spec.get("encoder_preset", "medium")
    tracks = []
    for i, rung in enumerate(rungs):
        # rung_chains of one rung: "[0:v:0]<filters>[v0]".
        chain = package_mod.rung_chains([rung])[0]
        chain = chain[chain.index("]") + 1:chain.rindex("[")]
        args = ["-preset", preset, "-pix_fmt", "yuv420p"] + _unqualified(
            package_mod._video_args(0, rung))
        tracks.append(VideoTrack(key=_check_key(f"{key_prefix}r{i}"), chain=chain,
                                 args=tuple(args),
                                 fps=_track_fps(rung.fps, rung.fps_capped, timeline)))
    return tracks


def fps_filtered(track, source_fps):
    """True when ``track`` changes the frame rate of a ``source_fps``
    (Fraction or None) source: its chain has an ``fps`` filter, and both
    rates are known."""
    return has_fps_filter(track) and track.fps is not None and source_fps is not None


def expected_frames(frames, track, source_fps):
    """Frames of ``track`` made from ``frames`` consecutive source frames
    (one chunk, timestamps from 0) at ``source_fps`` (Fraction; None for
    VFR): ``frames`` itself, or after the track's ``fps`` filter
    ``floor(frames x track.fps / source_fps + 1/2)`` (what ffmpeg 5.1's fps
    filter gives, measured: 25 frames at 60 -> 30 fps give 13, 25 at
    24 -> 20 give 21). None when it cannot be told: an fps filter over a
    VFR source (the count depends on the timestamps)."""
    if source_fps is None and has_fps_filter(track):
        return None
    if not fps_filtered(track, source_fps):
        return frames
    ratio = Fraction(track.fps) / Fraction(source_fps).limit_denominator(1001000)
    return max(1, math.floor(frames * ratio + Fraction(1, 2)))


def has_fps_filter(track):
    """True when ``track``'s chain has an ``fps`` filter."""
    return any(f.startswith("fps=") for f in (track.chain or "").split(","))


def pixels(track):
    """The output pixels per frame of ``track`` read from its chain's last
    ``scale=W:H``, or None."""
    found = re.findall(r"scale=(\d+):(\d+)", track.chain or "")
    if not found:
        return None
    w, h = found[-1]
    return int(w) * int(h)
