"""The ``audio`` output: one audio-only file, AAC, Opus or MP3.

Spec (normalized, ``nommer.core.outputs.schema``)::

    {"type": "audio", "name": "audio.m4a", "codec": "aac" | "opus" | "mp3",
     "bitrate": "128k", "channels": 1 | 2, "sample_rate": 44100 | 48000, "track": 0}

What each codec is written as, by the name's extension:

* ``aac`` (ffmpeg's native AAC-LC encoder): ``.m4a`` (the ``ipod`` muxer,
  brand M4A), ``.mp4`` (``mp4``), both with ``-movflags +faststart``; ``.aac``
  (raw ADTS stream).
* ``opus`` (libopus): ``.opus`` / ``.ogg`` (Ogg), ``.webm`` (WebM). libopus
  only encodes at 48000 Hz (or 24/16/12/8 kHz), never 44100: an Opus output
  is **always 48000 Hz**, whatever ``sample_rate`` says (the result's info
  states the rate used and a note when it differs from the spec's).
* ``mp3`` (libmp3lame, constant bitrate): ``.mp3``.

The source's audio track ``track`` (``-map 0:a:<track>``) is downmixed or
upmixed to ``channels`` and resampled to ``sample_rate``.

``check_spec`` is pure and imports nothing of Twisted, so feederd's
submit-time validation can call it.
"""

import os

from nommer.core.errors import PermanentJobError
from nommer.core.storage.content_types import content_type_for_name, extension
from nommer.workerd.outputs import common
from nommer.workerd.outputs.step import MEDIA, OutputFile, OutputResult, Step

#: codec -> {extension: ffmpeg muxer}.
CONTAINERS = {
    "aac": {"m4a": "ipod", "mp4": "mp4", "aac": "adts"},
    "opus": {"opus": "ogg", "ogg": "ogg", "webm": "webm"},
    "mp3": {"mp3": "mp3"},
}
#: codec -> ffmpeg encoder.
ENCODERS = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame"}
#: Highest bitrate (bits per second) an encoder takes: libopus refuses more
#: than 512 kb/s, libmp3lame silently clamps to 320 kb/s.
MAX_BITRATES = {"opus": 512000, "mp3": 320000}
#: The one sample rate (Hz) Opus outputs get (libopus cannot do 44100).
OPUS_SAMPLE_RATE = 48000
#: Muxers that take ``-movflags +faststart`` (index before the media data).
_MP4_MUXERS = ("ipod", "mp4")
#: Content-Type of an audio-only file where the shared table says "video/...".
_AUDIO_CONTENT_TYPES = {"mp4": "audio/mp4", "webm": "audio/webm"}
#: Relative encode cost of one second of audio against one second of one
#: megapixel of video (Step.weight): audio encoding is cheap.
_WEIGHT_PER_SECOND = 0.05


def check_spec(spec):
    """Check what the schema cannot: that the ``name``'s extension suits the
    ``codec`` (aac: .m4a/.mp4/.aac; opus: .opus/.ogg/.webm; mp3: .mp3) and
    that ``bitrate`` is one the encoder takes (opus at most 512k, mp3 at most
    320k). ``spec`` is an audio output dict (missing fields take the
    schema's defaults). Returns None; raises ValueError(sentence) naming
    the field. Pure: no I/O."""
    name = spec.get("name", "audio.m4a")
    codec = spec.get("codec", "aac")
    if codec not in CONTAINERS:
        raise ValueError(f"codec {codec!r} is not one of {', '.join(sorted(CONTAINERS))}")
    ext = extension(name)
    allowed = CONTAINERS[codec]
    if ext not in allowed:
        choices = ", ".join("." + e for e in allowed)
        raise ValueError(f"name {name!r}: a .{ext} file cannot hold {codec}; "
                         f"for codec {codec} use {choices}")
    bitrate = common.parse_bitrate(spec.get("bitrate", "128k"))
    most = MAX_BITRATES.get(codec)
    if most is not None and bitrate > most:
        raise ValueError(f"bitrate {spec.get('bitrate')!r}: {codec} takes at most "
                         f"{most // 1000}k")


def output_sample_rate(spec):
    """The sample rate (Hz) the output gets: ``spec["sample_rate"]``, except
    Opus, which is always OPUS_SAMPLE_RATE (48000)."""
    if spec.get("codec", "aac") == "opus":
        return OPUS_SAMPLE_RATE
    return int(spec.get("sample_rate", 48000))


def check_track(source, track):
    """Raise PermanentJobError unless ``source`` (SourceInfo) has audio track
    ``track`` (0-based index among its audio streams)."""
    count = len(source.audio)
    if count == 0:
        raise PermanentJobError("the source has no audio stream: an audio output needs one")
    if track >= count:
        tracks = "1 audio track" if count == 1 else f"{count} audio tracks"
        raise PermanentJobError(f"the source has {tracks}; track {track} does not exist")


def plan(spec, source, *, ffmpeg_bin, input_path, work_dir, **extra):
    """One ffmpeg run writing the audio file at ``spec["name"]`` under
    ``work_dir`` (``common.local_path``; its directory is created here).

    :param spec: the normalized audio output (see the module docstring).
    :param source: ``SourceInfo`` of the input.
    :returns: ``[Step]``; ``expected_s`` is the source's duration in seconds,
        ``weight`` 0.05 per second of it.
    :raises PermanentJobError: the source has no audio, or no track
        ``spec["track"]``, or the name's extension does not suit the codec.
    """
    try:
        check_spec(spec)
    except ValueError as e:
        raise PermanentJobError(f"audio output: {e}") from None
    track = int(spec.get("track", 0))
    check_track(source, track)
    codec = spec["codec"]
    muxer = CONTAINERS[codec][extension(spec["name"])]
    bitrate = common.parse_bitrate(spec["bitrate"])
    argv = common.input_args(ffmpeg_bin, input_path)
    argv += ["-map", f"0:a:{track}", "-vn", "-sn", "-dn",
             "-c:a", ENCODERS[codec], "-b:a", str(bitrate),
             "-ac", str(int(spec["channels"])), "-ar", str(output_sample_rate(spec)),
             "-f", muxer]
    if muxer in _MP4_MUXERS:
        argv += ["-movflags", "+faststart"]
    argv += common.progress_args(common.make_parent(common.local_path(work_dir, spec["name"])))
    duration = source.duration_s
    return [Step(what=f"audio {spec['name']}", argv=argv, expected_s=duration,
                 weight=_WEIGHT_PER_SECOND * (duration or 60.0))]


def content_type(name):
    """Content-Type of an audio-only file called ``name``: ``audio/mp4`` for
    .mp4 and ``audio/webm`` for .webm (the shared table says video/...),
    else ``content_type_for_name``."""
    return _AUDIO_CONTENT_TYPES.get(extension(name)) or content_type_for_name(name)


def finish(spec, source, steps, work_dir):
    """Describe the file the step wrote.

    :returns: ``OutputResult`` with one MEDIA file (path ``spec["name"]``) and
        info ``{"codec": "aac"|"opus"|"mp3", "bitrate_average": bits per
        second (file bytes x 8 / source duration; None if the duration is
        unknown), "channels": int, "sample_rate": Hz actually used,
        "duration_s": the source's seconds}``, plus ``"note"`` when Opus
        overrode ``sample_rate``.
    :raises FileNotFoundError: the step did not write the file.
    """
    local = common.local_path(work_dir, spec["name"])
    size = os.path.getsize(local)
    duration = source.duration_s
    rate = output_sample_rate(spec)
    info = {
        "codec": spec["codec"],
        "bitrate_average": int(round(size * 8 / duration)) if duration else None,
        "channels": int(spec["channels"]),
        "sample_rate": rate,
        "duration_s": duration,
    }
    if rate != int(spec.get("sample_rate", rate)):
        info["note"] = (f"Opus is always encoded at {OPUS_SAMPLE_RATE} Hz (libopus cannot do "
                        f"{spec['sample_rate']} Hz)")
    return OutputResult(files=[OutputFile(path=spec["name"], local=local, bytes=size,
                                          content_type=content_type(spec["name"]), role=MEDIA)],
                        info=info)
