"""The ``mp4`` output: one MP4 file (H.264 or HEVC video, AAC audio, fast start),
or, with ``image_path``, a still image over the source's audio ("audio merge").

Spec (normalized, ``nommer.core.outputs.schema``)::

    {"type": "mp4", "name": "video.mp4", "codec": "h264" | "hevc",
     "height": 720?, "width": 1280?, "crf": 23, "bitrate": "3M"?, "fps_max": 30?,
     "encoder_preset": "medium", "audio_bitrate": "128k", "image_path": URI?}

A source with video:

* scaled so that its short side is at most ``height`` or its long side at
  most ``width`` (height wins if both), aspect ratio kept, sides even,
  never larger than the source (no upscaling; ``common.bounded_size``). As
  the ladder reads its rungs: on a landscape or square source ``height``
  and ``width`` are the output's height and width; on a portrait source
  (taller than wide) ``height`` bounds the width and ``width`` the height,
  so ``"height": 720`` on a 1080x1920 phone video gives 720x1280 (a
  "720p" portrait file), and 240 on a 360x640 source gives 240x426;
* frame rate kept, or capped at ``fps_max`` (``output_fps``; no cap when
  ffprobe could not tell the source's rate);
* H.264 High profile (libx264; at ``encoder_preset`` ultrafast x264 turns
  off what High adds and writes Constrained Baseline) or HEVC Main (libx265,
  tagged ``hvc1`` as Apple requires), yuv420p, keyframes on the 2 s grid
  (``common.keyframe_args``) so players seek quickly;
* constant quality ``crf``, unless ``bitrate`` is given: then that average
  bitrate with a maxrate of 1.5x and a buffer of 2x it;
* the first audio track, if any, as AAC-LC stereo 48 kHz at
  ``audio_bitrate``; a source without audio gives a video-only file;
* ``-movflags +faststart``: the index (``moov``) before the media (``mdat``),
  so a browser plays it while it downloads.

Audio merge (``image_path`` set): the orchestrator downloads the image into
scratch, probes it (``describe_image_problem`` says why it cannot be used)
and passes its local path to ``plan`` as ``image_input``. The image is
decoded and scaled once (to even sides, halves rounded up; ``height``
bounding its short side and ``width`` its long side as for a video, never
upscaled; at most MAX_IMAGE_SIDE on its long side: ffmpeg expressions, as
the image's size is not known here), then
repeated with ffmpeg's ``loop`` filter at about MERGE_FPS frames per second,
over the source's first audio track. The frame rate is chosen so that the frames
exactly fill the source's duration (``merge_timing``) rather than using
``-shortest``, which in ffmpeg 5.1 overruns by x264's lookahead (seconds at
a low frame rate). Keyframes every MERGE_KEYFRAME_S seconds: a still
picture gains nothing from more, and each costs a whole picture.
"""

import math
import os
import struct
from fractions import Fraction

from nommer.core.errors import PermanentJobError
from nommer.core.storage.content_types import content_type_for_name, extension
from nommer.workerd.outputs import boxes, common
from nommer.workerd.outputs.step import MEDIA, OutputFile, OutputResult, Step

#: Extension of ``name`` -> ffmpeg muxer.
MUXERS = {"mp4": "mp4", "m4v": "mp4", "mov": "mov"}
#: Frames per second of an audio merge's video (about: see ``merge_timing``).
MERGE_FPS = 2
#: Seconds between keyframes of an audio merge's video.
MERGE_KEYFRAME_S = 10
#: Longest side (pixels) of an audio merge's picture.
MAX_IMAGE_SIDE = 1920
#: ffprobe codec names of still-image formats an audio merge accepts.
IMAGE_CODECS = ("mjpeg", "png", "webp", "bmp", "gif", "tiff")
#: ffprobe codec names of text that ffmpeg "decodes" as video (its tty demuxer
#: renders text files as ANSI art).
TEXT_CODECS = ("ansi", "bintext", "xbin", "idf")
#: RFC 6381 string of the audio (ffmpeg's native AAC encoder writes AAC-LC).
AAC_LC = "mp4a.40.2"
#: Relative encode cost (Step.weight) of x265 against x264 at the same preset.
_HEVC_COST = 4.0


# --- pure helpers --------------------------------------------------------------------

def output_fps(src_fps, fps_max):
    """The output frame rate (``Fraction``) of a ``src_fps`` source (Fraction,
    float, or None when unknown) capped at ``fps_max`` (number or None).

    Under the cap, or no cap: the source's rate (None if unknown). Over it:
    the source rate divided by the smallest integer that brings it under
    ``fps_max`` (60 -> 30, 59.94 -> 29.97, 50 -> 25, 120 -> 30 with a cap
    of 30), so frames are dropped evenly; but ``fps_max`` itself when that
    division would lose more than a quarter of it (24 with a cap of 20 gives
    20, not 12; 60 with a cap of 29.97 gives 29.97, not 20)."""
    if src_fps is None:
        return None
    src = Fraction(src_fps).limit_denominator(1001000)
    if fps_max is None:
        return src
    cap = Fraction(fps_max).limit_denominator(1001)
    if src <= cap:
        return src
    divided = src / math.ceil(src / cap)
    return divided if divided >= cap * 3 / 4 else cap


def merge_timing(duration_s, fps=MERGE_FPS):
    """``(frames, rate)`` of an audio merge's video lasting ``duration_s``
    seconds: ``frames = ceil(duration_s x fps)`` (at least 1) and ``rate`` a
    ``Fraction`` (frames per second, near ``fps``) such that ``frames / rate``
    is ``duration_s`` to the millisecond. The video then ends with the audio
    instead of up to a frame later."""
    millis = max(1, int(round(duration_s * 1000)))
    frames = max(1, math.ceil(millis * fps / 1000))
    return frames, Fraction(frames * 1000, millis)


def _image_scale_expr(spec):
    """ffmpeg ``scale`` options (w and h expressions of the input size
    ``iw``/``ih``) for a merge picture: factor ``min(1, height/min(iw,ih)
    or width/max(iw,ih), MAX_IMAGE_SIDE/max(iw,ih))`` (``height`` bounds the
    short side, ``width`` the long one, as ``common.bounded_size``), sides
    rounded to even."""
    caps = ["1", f"{MAX_IMAGE_SIDE}/max(iw,ih)"]
    if spec.get("height") is not None:
        caps.append(f"{int(spec['height'])}/min(iw,ih)")
    elif spec.get("width") is not None:
        caps.append(f"{int(spec['width'])}/max(iw,ih)")
    factor = caps[0]
    for cap in caps[1:]:
        factor = f"min({factor},{cap})"
    return (f"w='max(2,round(iw*{factor}/2)*2)'"
            f":h='max(2,round(ih*{factor}/2)*2)'")


def describe_image_problem(probe):
    """Why the file ffprobe described cannot be an audio merge's picture, or
    None if it can.

    :param probe: ffprobe's ``-show_format -show_streams`` JSON (dict) of the
        downloaded image; None (or ``{}``) when ffprobe could not read it.
    :returns: the reason (str), a clause about the file for the job's error
        to follow "is not a still image: ", e.g. ``"it is a video (h264), not
        a picture (mjpeg, png, webp, bmp, gif or tiff)"``; None for one still
        picture in one of IMAGE_CODECS with a size.
    """
    streams = [s for s in (probe or {}).get("streams") or () if isinstance(s, dict)]
    if not streams:
        return "ffmpeg cannot read it as a picture"
    video = [s for s in streams if s.get("codec_type") == "video"]
    if not video:
        kinds = sorted({str(s.get("codec_type")) for s in streams})
        return f"it has no picture in it, only {' and '.join(kinds)}"
    first = video[0]
    codec = first.get("codec_name") or "an unknown codec"
    if codec in TEXT_CODECS or (probe.get("format") or {}).get("format_name") == "tty":
        return "it is a text file, not a picture"
    if codec not in IMAGE_CODECS:
        return (f"it is a video ({codec}), not a picture "
                f"({', '.join(IMAGE_CODECS[:-1])} or {IMAGE_CODECS[-1]})")
    if len(video) > 1 or any(s.get("codec_type") == "audio" for s in streams):
        return "it is a video (it has several streams), not a picture"
    try:
        width, height = int(first.get("width") or 0), int(first.get("height") or 0)
    except (TypeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        return f"ffmpeg finds no picture in it (its {codec} data cannot be decoded)"
    frames = common.to_float(first.get("nb_frames"))
    if frames is not None and frames > 1:
        return f"it is an animation of {int(frames)} frames, not one picture"
    duration = common.to_float(first.get("duration"))
    if duration is None:
        duration = common.to_float((probe.get("format") or {}).get("duration"))
    rate = (common.positive_fraction(first.get("r_frame_rate"))
            or common.positive_fraction(first.get("avg_frame_rate")))
    one_frame_s = float(1 / rate) if rate else 0.1
    if duration is not None and duration > one_frame_s * 1.5 + 0.001:
        return f"it is an animation or a video ({duration:.2f} s long), not one picture"
    return None


def _video_codec_args(spec, *, still=False):
    codec = spec.get("codec", "h264")
    preset = spec.get("encoder_preset", "medium")
    if codec == "hevc":
        args = ["-c:v", "libx265", "-preset", preset, "-tag:v", "hvc1", "-profile:v", "main",
                "-x265-params", "log-level=error", "-forced-idr", "1"]
    else:
        args = ["-c:v", "libx264", "-preset", preset, "-profile:v", "high"]
        if still:
            args += ["-tune", "stillimage"]
    args += ["-pix_fmt", "yuv420p"]
    if spec.get("bitrate") is not None:
        bitrate = common.parse_bitrate(spec["bitrate"])
        args += ["-b:v", str(bitrate), "-maxrate", str(bitrate * 3 // 2),
                 "-bufsize", str(bitrate * 2)]
    else:
        args += ["-crf", _num(spec.get("crf", 23))]
    return args


def _num(value):
    """A number as ffmpeg reads it: ``23`` for 23.0, ``23.5`` for 23.5."""
    return str(int(value)) if float(value) == int(value) else str(value)


def _audio_args(spec, track=0, input_index=0):
    return ["-map", f"{input_index}:a:{track}", "-c:a", "aac",
            "-b:a", str(common.parse_bitrate(spec.get("audio_bitrate", "128k"))),
            "-ac", "2", "-ar", "48000"]


def _tail(spec, work_dir):
    muxer = MUXERS.get(extension(spec["name"]), "mp4")
    out = common.make_parent(common.local_path(work_dir, spec["name"]))
    return ["-movflags", "+faststart", "-f", muxer] + common.progress_args(out)


# --- plan / finish -------------------------------------------------------------------

def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, image_input=None, encoded_video=None,
         **extra):
    """One ffmpeg run writing the MP4 at ``spec["name"]`` under ``work_dir``
    (``common.local_path``; its directory is created here).

    :param spec: the normalized mp4 output (see the module docstring).
    :param source: ``SourceInfo`` of the input.
    :param image_input: with ``spec["image_path"]``: the absolute local path
        of the downloaded image (listed in the step's ``readable``). It
        should have been checked with ``describe_image_problem``.
    :param encoded_video: ``(path, offset_s)``: the output's video is
        encoded already (a chunked job's merged track,
        ``nommer.workerd.chunks``): copied from ``path`` (listed in the
        step's ``readable``), placed ``offset_s`` seconds after the source's
        start (its video's own offset from its audio); the source's audio
        is encoded once, alone (``audio_only_path``), then copied in.
    :returns: ``[Step]``; ``expected_s`` is the source's duration (seconds);
        ``weight`` is seconds x output megapixels (x4 for HEVC), or seconds x
        0.1 for an audio merge or a copied video.
    :raises PermanentJobError: no video and no ``image_path``; an audio merge
        of a source with no audio, or of unknown duration.
    :raises ValueError: ``image_path`` set but no ``image_input`` passed (a
        bug of the caller, not of the job).
    """
    if spec.get("image_path"):
        return _plan_merge(spec, source, ffmpeg_bin=ffmpeg_bin, input_path=input_path,
                           work_dir=work_dir, image_input=image_input)
    if not source.has_video:
        raise PermanentJobError("the source has no video stream: an mp4 output needs video, "
                                "or an image_path to put over the audio")
    if encoded_video is not None:
        return _plan_copy(spec, source, ffmpeg_bin=ffmpeg_bin, input_path=input_path, work_dir=work_dir,
                          encoded_video=encoded_video)
    filters, fps = video_filters(spec, source)
    width, height = common.bounded_size(source.width, source.height,
                                        height=spec.get("height"), width=spec.get("width"))
    argv = common.input_args(ffmpeg_bin, input_path)
    # 0:V (capital): video that is not an attached picture (cover art).
    argv += ["-map", "0:V:0", "-vf", ",".join(filters)]
    argv += video_codec_args(spec, fps)
    if source.audio:
        argv += _audio_args(spec)
    argv += _tail(spec, work_dir)
    duration = source.duration_s
    weight = (duration or 60.0) * width * height / 1e6
    if spec.get("codec") == "hevc":
        weight *= _HEVC_COST
    return [Step(what=f"mp4 {spec['name']}", argv=argv, expected_s=duration, weight=weight)]


def video_filters(spec, source):
    """``(filters, fps)``: the ffmpeg filters (list of str) from the source's
    video to the output's (fps cap, scale, ``setsar=1``, ``format=yuv420p``)
    and the output's frame rate (``Fraction``, None if unknown)."""
    width, height = common.bounded_size(source.width, source.height,
                                        height=spec.get("height"), width=spec.get("width"))
    fps = output_fps(source.fps, spec.get("fps_max"))
    filters = []
    if fps is not None and source.fps is not None and fps != Fraction(source.fps):
        filters.append(f"fps={fps.numerator}/{fps.denominator}")
    filters += [f"scale={width}:{height}", "setsar=1", "format=yuv420p"]
    return filters, fps


def video_codec_args(spec, fps):
    """Encoder options of the output's video, keyframes on the 2 s grid."""
    return _video_codec_args(spec) + common.keyframe_args(fps)


def audio_only_path(spec, work_dir):
    """Where ``plan`` with ``encoded_video`` encodes the output's audio alone
    (an M4A in ``work_dir``, not uploaded: the muxed output copies it)."""
    return common.local_path(work_dir, ".audio-" + spec["name"].replace("/", "_") + ".m4a")


def _plan_copy(spec, source, *, ffmpeg_bin, input_path, work_dir, encoded_video):
    """Two runs: the source's first audio track encoded once, alone
    (``audio_only_path``), then the video and that audio muxed, both copied."""
    path, offset_s = encoded_video
    duration = source.duration_s
    steps, audio = [], None
    if source.audio:
        audio = audio_only_path(spec, work_dir)
        argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-i", input_path, "-vn"]
        argv += _audio_args(spec) + ["-f", "mp4"] + common.progress_args(audio)
        steps.append(Step(what=f"mp4 {spec['name']} (audio)", argv=argv, expected_s=duration,
                          weight=(duration or 60.0) * 0.02))
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y"]
    if offset_s:
        argv += ["-itsoffset", f"{offset_s:.6f}"]
    argv += ["-i", path]
    argv += ["-i", audio, "-map", "0:v:0", "-map", "1:a:0"] if audio else ["-map", "0:v:0"]
    argv += ["-c", "copy"] + _tail(spec, work_dir)
    steps.append(Step(what=f"mp4 {spec['name']} (joined chunks)", argv=argv, expected_s=duration,
                      weight=(duration or 60.0) * 0.05, readable=(path,) + ((audio,) if audio else ())))
    return steps


def _plan_merge(spec, source, *, ffmpeg_bin, input_path, work_dir, image_input):
    if not image_input:
        raise ValueError("an mp4 output with image_path needs plan(..., image_input=<local path "
                         "of the downloaded image>)")
    if not source.audio:
        raise PermanentJobError("the source has no audio stream: an mp4 output with image_path "
                                "puts the source's audio under the image, so it needs one")
    duration = source.duration_s
    if not duration or duration <= 0:
        raise PermanentJobError("ffprobe cannot tell how long the source is: an mp4 output with "
                                "image_path needs the audio's duration")
    frames, rate = merge_timing(duration)
    tick = 1 / rate
    graph = (f"[1:v]trim=end_frame=1,scale={_image_scale_expr(spec)},setsar=1,format=yuv420p,"
             f"loop=loop={frames - 1}:size=1,settb={tick.numerator}/{tick.denominator},"
             f"setpts=N[v]")
    gop = str(max(1, int(round(float(rate) * MERGE_KEYFRAME_S))))
    argv = common.input_args(ffmpeg_bin, input_path, image_input)
    argv += ["-filter_complex", graph, "-map", "[v]", "-r", f"{rate.numerator}/{rate.denominator}"]
    argv += _video_codec_args(spec, still=True)
    argv += ["-force_key_frames", f"expr:gte(t,n_forced*{MERGE_KEYFRAME_S})",
             "-g", gop, "-keyint_min", gop, "-sc_threshold", "0"]
    argv += _audio_args(spec) + _tail(spec, work_dir)
    return [Step(what=f"mp4 {spec['name']} (audio merge)", argv=argv, expected_s=duration,
                 weight=duration * 0.1, readable=(image_input,))]


def finish(spec, source, steps, work_dir):
    """Describe the MP4 the step wrote, measured from the file itself.

    :returns: ``OutputResult`` with one MEDIA file (path ``spec["name"]``,
        ``video/mp4`` or ``video/quicktime``) and info ``{"width", "height"``
        (pixels), ``"codec"`` (RFC 6381, e.g. ``"avc1.64001e"`` or
        ``"hvc1.1.6.L60.90"``), ``"codecs"`` (video and audio, for a
        ``type="video/mp4; codecs=..."`` attribute), ``"fps"`` (frames per
        second, 3 decimals), ``"bitrate_average"`` (bits per second: file bytes
        x 8 / duration), ``"duration_s"`` (the source's seconds)``}``.
    :raises FileNotFoundError: the step did not write the file.
    :raises PermanentJobError: the file has no video track, or its boxes
        cannot be read.
    """
    local = common.local_path(work_dir, spec["name"])
    size = os.path.getsize(local)
    try:
        track = read_video_track(local)
    except (ValueError, struct.error) as e:
        raise PermanentJobError(f"ffmpeg wrote {spec['name']}, but it cannot be read as "
                                f"MP4: {e}") from None
    if track is None:
        raise PermanentJobError(f"ffmpeg wrote no video track into {spec['name']}")
    duration = source.duration_s or track["duration_s"]
    codecs = [track["codec"]] + ([AAC_LC] if track["has_audio"] else [])
    info = {
        "width": track["width"],
        "height": track["height"],
        "codec": track["codec"],
        "codecs": ",".join(codecs),
        "fps": (round(track["frames"] / track["duration_s"], 3)
                if track["frames"] and track["duration_s"] else None),
        "bitrate_average": int(round(size * 8 / duration)) if duration else None,
        "duration_s": duration,
    }
    return OutputResult(files=[OutputFile(path=spec["name"], local=local, bytes=size,
                                          content_type=content_type_for_name(spec["name"]),
                                          role=MEDIA)],
                        info=info)


# --- reading the MP4 ffmpeg wrote (ISO/IEC 14496-12 boxes) -------------------------------

def read_video_track(path):
    """What the MP4/MOV at ``path`` holds, read from its boxes by seeking (no
    ffprobe; ``nommer.workerd.outputs.boxes``): ``{"width", "height"``
    (display size from ``tkhd``, pixels), ``"codec"`` (``boxes.rfc6381``),
    ``"frames"`` (sample count), ``"duration_s"`` (the video track's media
    duration, seconds), ``"has_audio"`` (bool)``}`` for the first video
    track; None when there is no video track.

    :raises OSError: the file cannot be read.
    :raises ValueError: a box is malformed.
    """
    with open(path, "rb") as f:
        moov = boxes.find(f, "moov")
        if moov is None:
            return None
        video, has_audio = None, False
        for trak in boxes.find_all(f, "trak", moov):
            hdlr = boxes.find(f, "mdia/hdlr", trak)
            handler = boxes.read_at(f, hdlr.payload + 8, 4) if hdlr else b""
            if handler == b"soun":
                has_audio = True
            elif handler == b"vide" and video is None:
                video = _video_trak(f, trak)
        if video is not None:
            video["has_audio"] = has_audio
        return video


def _video_trak(f, trak):
    tkhd = boxes.find(f, "tkhd", trak)
    dims = boxes.read_at(f, tkhd.end - 8, 8) if tkhd else b""  # 16.16 width, height
    width = int.from_bytes(dims[:4], "big") >> 16 if len(dims) == 8 else None
    height = int.from_bytes(dims[4:], "big") >> 16 if len(dims) == 8 else None
    duration_s = None
    mdhd = boxes.find(f, "mdia/mdhd", trak)
    if mdhd is not None:
        timescale, units = boxes.media_header(f, mdhd)
        duration_s = units / timescale if timescale else None
    stsd = boxes.find(f, "mdia/minf/stbl/stsd", trak)
    entry = boxes.stsd_codec(f, stsd) if stsd is not None else None
    stsz = boxes.find(f, "mdia/minf/stbl/stsz", trak)
    frames = boxes.Fields(f, boxes.full_box(f, stsz)[2] + 4).take(">I") if stsz else None
    return {"width": width, "height": height, "codec": entry[1] if entry else None,
            "frames": frames, "duration_s": duration_s}
