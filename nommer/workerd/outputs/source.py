"""``SourceInfo``: what the output builders need to know of a source, from ffprobe's JSON."""

from fractions import Fraction

import attr

from nommer.workerd.outputs.common import positive_fraction, to_float, to_int


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class AudioTrack:
    """One audio stream.

    :ivar index: the stream's position among the source's audio streams
        (``-map 0:a:<index>``).
    :ivar channels: channel count (6 for 5.1), or None.
    :ivar sample_rate: Hz, or None.
    :ivar language: ISO 639 code from the stream's tags (``"eng"``), or None.
    :ivar codec: ffprobe's codec_name.
    """

    index: int
    channels: int = None
    sample_rate: int = None
    language: str = None
    codec: str = None


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class SourceInfo:
    """A probed source.

    :ivar duration_s: seconds (float), or None if ffprobe could not tell.
    :ivar width, height: display size in pixels (rotation applied, square
        pixels: the stored width scaled by the sample aspect ratio), or None
        when there is no video (cover art is not video).
    :ivar fps: frames per second as a ``Fraction`` (avg_frame_rate, else
        r_frame_rate), or None.
    :ivar video_codec: ffprobe's codec_name of the video, or None.
    :ivar audio: ``AudioTrack`` list (empty when silent).
    """

    duration_s: float = None
    width: int = None
    height: int = None
    fps: Fraction = None
    video_codec: str = None
    audio: tuple = ()

    @property
    def has_video(self):
        return self.width is not None and self.height is not None

    @property
    def is_portrait(self):
        return self.has_video and self.height > self.width


def _rotation(stream):
    rotation = to_int((stream.get("tags") or {}).get("rotate"))
    for side in stream.get("side_data_list") or ():
        if isinstance(side, dict) and "rotation" in side:
            rotation = to_int(side.get("rotation"))
    return (rotation or 0) % 180


def from_probe(probe):
    """``SourceInfo`` of ffprobe's ``-show_format -show_streams`` JSON (dict).
    Never raises on odd input: what cannot be read is None."""
    probe = probe if isinstance(probe, dict) else {}
    streams = [s for s in probe.get("streams") or () if isinstance(s, dict)]
    width = height = fps = codec = None
    durations = []
    for s in streams:
        if s.get("codec_type") != "video" or (s.get("disposition") or {}).get("attached_pic"):
            continue
        w, h = to_int(s.get("width")), to_int(s.get("height"))
        if not w or not h:
            continue
        sar = positive_fraction((s.get("sample_aspect_ratio") or "").replace(":", "/"))
        if sar and sar != 1:
            w = int(round(w * sar / 2)) * 2
        if _rotation(s) == 90:
            w, h = h, w
        width, height, codec = w, h, s.get("codec_name")
        fps = positive_fraction(s.get("avg_frame_rate")) or positive_fraction(s.get("r_frame_rate"))
        durations.append(to_float(s.get("duration")))
        break
    audio = []
    for s in streams:
        if s.get("codec_type") != "audio":
            continue
        language = (s.get("tags") or {}).get("language")
        audio.append(AudioTrack(index=len(audio), channels=to_int(s.get("channels")),
                                sample_rate=to_int(s.get("sample_rate")),
                                language=language if language and language != "und" else None,
                                codec=s.get("codec_name")))
        durations.append(to_float(s.get("duration")))
    duration = to_float((probe.get("format") or {}).get("duration"))
    if duration is None:
        known = [d for d in durations if d is not None]
        duration = max(known) if known else None
    return SourceInfo(duration_s=duration, width=width, height=height, fps=fps,
                      video_codec=codec, audio=tuple(audio))
