"""The shapes chunked encoding passes around: ``Timeline``, ``Chunk``, ``VideoTrack``."""

from fractions import Fraction

import attr


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Timeline:
    """The video frames of a source, in presentation order.

    :ivar pts_s: presentation time of each frame (tuple of float seconds,
        ascending, as the container stores them: not shifted to 0).
    :ivar start_s: the format's ``start_time`` (seconds; the earliest start
        of any stream): what ffmpeg's input ``-ss`` counts from (in a TS the
        audio often starts half a frame before the video).
    :ivar end_s: when the last frame ends (its pts plus its duration: the
        packet's, else the typical frame interval), seconds.
    :ivar fps: the nominal frame rate (``Fraction``, e.g. 24000/1001) when
        every frame interval is that rate's (CFR); None for VFR.
    """

    pts_s: tuple
    start_s: float
    end_s: float
    fps: Fraction = None

    @property
    def frames(self):
        return len(self.pts_s)

    @property
    def cfr(self):
        return self.fps is not None

    @property
    def duration_s(self):
        return self.end_s - self.pts_s[0] if self.pts_s else 0.0


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Chunk:
    """One planned piece of the source: frames ``[start_frame, start_frame + frames)``.

    :ivar index: 0, 1, ... in presentation order.
    :ivar start_frame: index of its first frame in the ``Timeline``.
    :ivar frames: how many source frames it holds (>= 1).
    :ivar start_s: its first frame's time from the start of the video
        (seconds, ``pts_s[start_frame] - pts_s[0]``); shown in the job document.
    :ivar end_s: the next chunk's ``start_s`` (the last chunk's: the
        timeline's duration), seconds.
    :ivar seek_s: the input ``-ss`` that lands exactly on its first frame:
        the midpoint between the previous frame's pts and its own, minus the
        timeline's ``start_s`` (the format's start; a seek 1 ms late drops the
        frame); 0 for chunk 0.
    :ivar duration: its exact length for the concat list: ``frames / fps``
        (a ``Fraction``) for CFR, else ``end_s - start_s`` (float seconds).
    """

    index: int
    start_frame: int
    frames: int
    start_s: float
    end_s: float
    seek_s: float
    duration: object

    def to_dict(self):
        """The plan's JSON-able fields (``duration`` as a string "N/D" or a float)."""
        d = attr.asdict(self)
        if isinstance(self.duration, Fraction):
            d["duration"] = f"{self.duration.numerator}/{self.duration.denominator}"
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict`` (unknown keys ignored)."""
        duration = d["duration"]
        if isinstance(duration, str):
            duration = Fraction(duration)
        return cls(index=int(d["index"]), start_frame=int(d["start_frame"]), frames=int(d["frames"]),
                   start_s=float(d["start_s"]), end_s=float(d["end_s"]), seek_s=float(d["seek_s"]),
                   duration=duration)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class VideoTrack:
    """One video stream every chunk encodes (an mp4 output's video, or one
    rung of a ladder), and the merge joins into one file.

    :ivar key: a short name unique in the job, safe in a file name
        (``"o2"`` for output 2's video, ``"p0r3"`` for package 0 rung 3).
    :ivar chain: the filters from the chunk's frames (timestamps already
        starting at 0) to this track's frames, ffmpeg filter syntax without
        pads (``"fps=30/1,scale=640:360,setsar=1"``), or "" for none.
    :ivar args: encoder options, not stream-qualified
        (``["-c:v", "libx264", "-preset", "medium", "-crf", "23", ...]``),
        keyframe options included.
    :ivar fps: the track's frame rate (``Fraction``), None when unknown (VFR kept).
    """

    key: str
    chain: str
    args: tuple
    fps: Fraction = None
