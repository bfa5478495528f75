"""The ABR ladder: which rungs (size, bitrate, fps) a source gets. Pure.

``plan_rungs(spec, source)`` turns an hls/dash output's ``ladder`` and
``codec`` (``"default"``, Apple's table below, or a custom list of rungs) and
a probed source into ``Rung`` values, by the rules of issue 11:

* never upscale: a rung is kept only if it is no larger than the source
  (landscape and square sources compare heights; portrait sources scale by
  width, the rung's short side against the source's width);
* always at least one rung: if no rung fits, the source's own size (rounded
  down to even sides), capped at the top rung, at the bitrate of the nearest rung;
* sizes even, the source's aspect ratio kept (``common.scaled_size``);
* fps: the source's, capped at 30 for rungs whose short side is 540 or less
  (a custom rung's ``fps_max`` replaces that cap), by dropping every n-th
  frame when that gives a rate close to the cap (60 -> 30, 50 -> 25,
  59.94 -> 29.97), else at the cap itself;
* VBV: maxrate 1.1 x bitrate, buffer 2 x bitrate (Apple: VOD peak within
  200 % of the average).
"""

import math
from fractions import Fraction

import attr

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs.common import parse_bitrate, scaled_size

#: The fps cap of rungs whose short side is at most SMALL_RUNG_MAX (Apple: <= 30 fps up to 432p;
#: issue 11 extends it to 540p).
SMALL_RUNG_FPS_MAX = Fraction(30)
SMALL_RUNG_MAX = 540
MAXRATE_FACTOR = Fraction(11, 10)
BUFSIZE_FACTOR = 2


@attr.s(frozen=True, auto_attribs=True)
class LadderEntry:
    """One row of a ladder table: ``width`` x ``height`` (16:9, landscape),
    bits per second for H.264 and for HEVC."""

    width: int
    height: int
    h264_bps: int
    hevc_bps: int


#: Apple's HLS Authoring Specification, "Recommended 16:9 variants" (H.264 column as read in the
#: spec; the HEVC column as media-notes §1.3 gives it, quoted there from memory of the current
#: edition). Low to high.
DEFAULT_LADDER = (
    LadderEntry(416, 234, 145_000, 145_000),
    LadderEntry(640, 360, 365_000, 290_000),
    LadderEntry(768, 432, 730_000, 580_000),
    LadderEntry(768, 432, 1_100_000, 900_000),
    LadderEntry(960, 540, 2_000_000, 1_600_000),
    LadderEntry(1280, 720, 3_000_000, 2_400_000),
    LadderEntry(1280, 720, 4_500_000, 3_400_000),
    LadderEntry(1920, 1080, 6_000_000, 4_500_000),
    LadderEntry(1920, 1080, 7_800_000, 5_800_000),
)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Rung:
    """One planned rung.

    :ivar name: unique in the ladder: ``"720p"``, or ``"720p_4500k"`` when
        several rungs have that size (the number is the rung's short side).
    :ivar width, height: output pixels, even.
    :ivar bitrate_bps: target video bitrate, bits per second (``-b:v``).
    :ivar maxrate_bps: 1.1 x bitrate_bps (``-maxrate``).
    :ivar bufsize_bits: 2 x bitrate_bps, bits (``-bufsize``).
    :ivar fps: output frames per second (``Fraction``), or None if the
        source's is unknown (then no fps filter).
    :ivar fps_capped: True if fps is below the source's (the rung needs an
        ``fps`` filter).
    :ivar codec: ``"h264"`` or ``"hevc"``.
    """

    name: str
    width: int
    height: int
    bitrate_bps: int
    maxrate_bps: int
    bufsize_bits: int
    fps: Fraction = None
    fps_capped: bool = False
    codec: str = "h264"

    @property
    def pixels(self):
        return self.width * self.height


def floor_even(n):
    """``n`` rounded down to an even integer, at least 2."""
    return max(2, int(n) // 2 * 2)


def capped_fps(source_fps, fps_max):
    """Frames per second of a rung: ``source_fps`` (Fraction) when it is at
    most ``fps_max``; else ``source_fps / n`` for the smallest integer n
    that gets under the cap, when that is at least 3/4 of the cap (keeping
    every n-th frame: no judder); else ``fps_max`` itself. None in, None out."""
    if source_fps is None:
        return None
    source_fps = Fraction(source_fps)
    if fps_max is None:
        return source_fps
    cap = Fraction(fps_max).limit_denominator(1001)
    if source_fps <= cap:
        return source_fps
    n = math.ceil(source_fps / cap)
    decimated = source_fps / n
    return decimated if decimated >= cap * Fraction(3, 4) else cap


def _wanted_rungs(spec):
    """The spec's ladder as (height, width or None, bitrate_bps, fps_max or None) tuples."""
    ladder = spec.get("ladder", "default")
    codec = spec.get("codec", "h264")
    if ladder == "default" or ladder is None:
        return [(e.height, None, e.hevc_bps if codec == "hevc" else e.h264_bps, None)
                for e in DEFAULT_LADDER]
    wanted = []
    for i, r in enumerate(ladder):
        try:
            bitrate = parse_bitrate(r["bitrate"])
        except (KeyError, ValueError) as e:
            raise PermanentJobError(f"rung {i} of the ladder has no usable bitrate ({e})") from None
        wanted.append((int(r["height"]), r.get("width"), bitrate, r.get("fps_max")))
    return wanted


def plan_rungs(spec, source):
    """The rungs of an hls/dash ``spec`` (a normalized output dict: ``ladder``,
    ``codec``) for ``source`` (a ``SourceInfo``), ordered by bitrate, lowest
    first. Sizes in pixels, bitrates in bits per second (see the module doc
    for the rules).

    Raises ``PermanentJobError`` if the source has no video stream.
    """
    if not source.has_video:
        raise PermanentJobError(
            "the source has no video stream: a ladder (hls/dash) needs video; ask only audio "
            "outputs for an audio-only source")
    codec = spec.get("codec", "h264")
    sw, sh = source.width, source.height
    portrait = source.is_portrait
    wanted = _wanted_rungs(spec)

    def side(height, width):
        # The side compared with the source's: the height, or for a portrait source the width
        # (a custom rung's width, else the rung's short side, its height).
        return (width if width is not None else height) if portrait else height

    limit = sw if portrait else sh

    def size_of(height, width):
        if portrait:
            w, h = scaled_size(sw, sh, width=side(height, width))
        else:
            w, h = scaled_size(sw, sh, height=height)
        return min(w, floor_even(sw)), min(h, floor_even(sh))  # rounding never upscales

    kept = [(size_of(h, w), bps, fps_max) for h, w, bps, fps_max in wanted if side(h, w) <= limit]
    if not kept:
        # Smaller than every rung: the source's own size, at the nearest (smallest) rung's bitrate.
        _, _, bps, fps_max = min(wanted, key=lambda r: (side(r[0], r[1]) - limit, r[2]))
        kept = [((floor_even(sw), floor_even(sh)), bps, fps_max)]

    # Same size and bitrate twice (a custom ladder collapsing on a small source): keep one.
    unique = {}
    for (w, h), bps, fps_max in kept:
        unique.setdefault((w, h, bps), fps_max)
    by_size = {}
    for (w, h, bps) in unique:
        by_size[(w, h)] = by_size.get((w, h), 0) + 1

    rungs = []
    for (w, h, bps), fps_max in unique.items():
        short = min(w, h)
        if fps_max is None and short <= SMALL_RUNG_MAX:
            fps_max = SMALL_RUNG_FPS_MAX
        fps = capped_fps(source.fps, fps_max)
        name = f"{short}p" if by_size[(w, h)] == 1 else f"{short}p_{round(bps / 1000)}k"
        rungs.append(Rung(name=name, width=w, height=h, bitrate_bps=bps,
                          maxrate_bps=int(bps * MAXRATE_FACTOR), bufsize_bits=bps * BUFSIZE_FACTOR,
                          fps=fps, fps_capped=fps is not None and source.fps is not None
                          and fps < source.fps, codec=codec))
    rungs.sort(key=lambda r: (r.bitrate_bps, r.pixels))
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):  # e.g. 360x640 and 640x360 rungs of a square source
        rungs = [attr.evolve(r, name=f"{r.width}x{r.height}_{round(r.bitrate_bps / 1000)}k")
                 for r in rungs]
    return rungs
