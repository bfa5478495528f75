"""Joining a track's chunk files into one: the concat list with exact durations.

ffmpeg's concat demuxer starts each file where the previous one's
``duration`` line says it ends; without the lines it uses the files' own
lengths and drifts by about 0.4 ms per join (media-notes §3.2). ffmpeg reads
a ``duration`` to the microsecond, truncating the digits beyond, and adds
them up: written naively, a long title drifts by up to 1 us per chunk and a
join can land a tick off. ``list_text`` therefore writes each chunk's
duration as the difference of the exact running end times rounded to the
microsecond: the start ffmpeg computes for every chunk is then its exact
start rounded to the microsecond, whatever the number of chunks (the 9
digits end in ``000``).

The join is a stream copy (``plan``): ``-f concat -safe 0 -i LIST -map 0:v
-c copy`` to an MP4, optionally with the title's audio (encoded once)
muxed in.
"""

import math
import re
from fractions import Fraction

from nommer.workerd.outputs import common
from nommer.workerd.outputs.step import Step

#: What a chunk file's name may be in a list: a plain base name of letters,
#: digits, ``_``, ``-`` and ``.`` (no path, no quote, no newline).
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}$")
#: ffmpeg reads a duration to the microsecond.
_US = 10 ** 6


def _exact(duration):
    """A duration (Fraction, int, float or "num/den" text) -> Fraction > 0 of seconds."""
    if isinstance(duration, str):
        duration = Fraction(duration)
    value = Fraction(duration)
    if value <= 0:
        raise ValueError(f"a chunk's duration must be positive, not {duration!r}")
    return value


def _nine_digits(microseconds):
    """``microseconds`` (int >= 0) as seconds with 9 decimals: ``"2.416667000"``."""
    return f"{microseconds // _US}.{microseconds % _US:06d}000"


def _round_us(seconds):
    """Fraction seconds -> int microseconds, halves up."""
    return math.floor(seconds * _US + Fraction(1, 2))


def list_text(files_and_durations):
    """The concat demuxer script joining chunk files in the given order.

    :param files_and_durations: ``[(name, duration), ...]`` in chunk order:
        ``name`` a plain base name in the list's directory (what
        ``encode.chunk_file_name`` gives), ``duration`` the chunk's exact
        length in seconds (``Chunk.duration``: a ``Fraction`` frames/fps, a
        float for VFR, or ``"num/den"`` text).
    :returns: ``"ffconcat version 1.0\\nfile 'chunk_00000_o0.mp4'\\nduration
        2.416667000\\n..."``: durations are the differences of the running
        end times rounded to the microsecond (module docstring), so each
        is within 1 us of the chunk's and their sum within 0.5 us of the total.
    :raises ValueError: no file, a name that is not a plain base name
        (``SAFE_NAME``: no directory, quote, space or newline), a duration
        that is not a positive number.
    """
    items = list(files_and_durations)
    if not items:
        raise ValueError("a concat list needs at least one file")
    lines = ["ffconcat version 1.0"]
    end = Fraction(0)
    written = 0
    for name, duration in items:
        if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"not a plain chunk file name: {name!r}")
        end += _exact(duration)
        end_us = _round_us(end)
        lines.append(f"file '{name}'")
        lines.append(f"duration {_nine_digits(end_us - written)}")
        written = end_us
    return "\n".join(lines) + "\n"


def plan(list_path, out_path, *, ffmpeg_bin, audio_path=None, faststart=False, expected_s=None):
    """The ``Step`` joining the chunks named in ``list_path`` (written from
    ``list_text``; the chunk files beside it) into the MP4 ``out_path``
    (absolute): the joined video track, stream-copied
    (``-f concat -safe 0 -i LIST -map 0:v -c copy``).

    :param audio_path: the title's audio, encoded once (absolute path, e.g.
        an ``.m4a``): muxed in as-is (``-map 1:a -c copy``). None: video only.
    :param faststart: ``-movflags +faststart`` (the index before the media:
        a second pass over the file; for the final file only).
    :param expected_s: the title's duration (seconds), for progress.
    :returns: ``Step`` (weight: seconds x 0.01: a copy is cheap); the chunk
        files are not listed in ``readable``: the caller adds them
        (``attr.evolve(step, readable=...)``) if its sandbox needs them.
    """
    argv = [ffmpeg_bin, "-hide_banner", "-nostdin", "-y", "-f", "concat", "-safe", "0",
            "-i", list_path]
    readable = (list_path,)
    if audio_path:
        argv += ["-i", audio_path]
        readable += (audio_path,)
    argv += ["-map", "0:v"]
    if audio_path:
        argv += ["-map", "1:a"]
    argv += ["-c", "copy"]
    if faststart:
        argv += ["-movflags", "+faststart"]
    argv += ["-f", "mp4"] + common.progress_args(out_path)
    return Step(what="merge (concat)", argv=argv, expected_s=expected_s,
                weight=(expected_s or 1.0) * 0.01, readable=readable)
