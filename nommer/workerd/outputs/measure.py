"""Measured bitrates of a representation, from the sizes of its segment files.

What a manifest declares must be what was produced (Apple's HLS authoring
spec: ``BANDWIDTH`` at least the peak segment bitrate; DASH ``bandwidth``
likewise), so we measure the segments rather than trust the encoder's
target. Pure function of the files.
"""

import os

import attr

from nommer.core.errors import PermanentJobError

#: Segments shorter than this (seconds) are left out of the peak: a tail
#: segment of a few frames has a bytes/duration ratio that says nothing of
#: the stream's bitrate (one keyframe over 0.03 s reads as tens of Mb/s).
MIN_PEAK_SEGMENT_S = 0.5


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Measured:
    """Measured figures of one representation.

    :ivar peak_bps: bits per second, the largest of ``bytes * 8 / duration``
        over its segments of at least ``MIN_PEAK_SEGMENT_S`` (over all of
        them when every one is shorter), rounded up.
    :ivar average_bps: bits per second, total media bytes * 8 / total
        duration, rounded up.
    :ivar total_bytes: bytes of all media segments (the init segment is
        not counted: it is fetched once, not per second of playback).
    :ivar duration_s: seconds, the sum of the segment durations.
    """

    peak_bps: int
    average_bps: int
    total_bytes: int
    duration_s: float


def bits_per_second(bits, seconds):
    """``bits / seconds`` rounded up to an int (so a declared figure is never
    under the measured one); a quotient within 1e-9 of an integer is not
    rounded up (float noise)."""
    value = bits / seconds
    return int(value) if value - int(value) < 1e-9 else int(value) + 1


def measure(rep, base_dir):
    """Measure ``rep`` (an ``mpd.Representation``) whose files are in ``base_dir``.

    :returns: ``Measured``.
    :raises PermanentJobError: a segment file is missing, or the
        representation has no segment or a zero total duration.
    """
    sizes = []
    for segment in rep.segments:
        path = os.path.join(base_dir, segment.name)
        try:
            sizes.append(os.path.getsize(path))
        except OSError:
            raise PermanentJobError(f"the segment {segment.name} of representation "
                                    f"{rep.rep_id} was not written") from None
    duration = sum(s.duration_s for s in rep.segments)
    if not sizes or duration <= 0:
        raise PermanentJobError(f"representation {rep.rep_id} has no media "
                                "(no segment, or zero duration)")
    pairs = [(size, s.duration_s) for size, s in zip(sizes, rep.segments) if s.duration_s > 0]
    long_enough = [p for p in pairs if p[1] >= MIN_PEAK_SEGMENT_S] or pairs
    peak = max(bits_per_second(size * 8, d) for size, d in long_enough)
    total = sum(sizes)
    return Measured(peak_bps=peak, average_bps=bits_per_second(total * 8, duration),
                    total_bytes=total, duration_s=duration)
