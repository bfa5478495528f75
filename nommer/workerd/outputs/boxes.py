"""ISO BMFF (ISO/IEC 14496-12) boxes: the header walk every reader of MP4
files in the output builders shares, and RFC 6381 codec strings read from
a track's sample entry.

A *box source* is either bytes-like (``bytes``, ``bytearray``,
``memoryview``: a segment already read into memory) or a binary file object
open for reading. A file is read by seeking: only the box headers and the
few payload bytes asked for, so a multi-gigabyte MP4 costs a few small
reads. Only what the builders need is parsed; a general MP4 library
(pymp4 and its pinned ``construct``) would parse every box for nothing.
Pure functions; no reactor.
"""

import os
import struct
from typing import NamedTuple

#: Bytes of a VisualSampleEntry before its child boxes (after the box
#: header): 8 of SampleEntry and 70 of visual fields.
VISUAL_SAMPLE_ENTRY = 78
#: Sample entry types whose decoder configuration gives a full codec string.
VIDEO_SAMPLE_ENTRIES = (b"avc1", b"avc3", b"hvc1", b"hev1")
#: Bytes of an ``avcC``/``hvcC`` payload read for the codec string (it needs 13).
_CONFIG_BYTES = 64


class Box(NamedTuple):
    """One box: ``type`` (4 bytes, ``b"moof"``), ``offset`` of its first byte
    in the source, ``size`` in bytes (header included), ``header`` size in
    bytes (8, 16 with a 64-bit size, +16 for ``uuid``). Unpacks as the
    4-tuple ``(type, offset, size, header)``."""

    type: bytes
    offset: int
    size: int
    header: int

    @property
    def payload(self):
        """Offset of the first byte after the header."""
        return self.offset + self.header

    @property
    def end(self):
        """Offset of the first byte after the box."""
        return self.offset + self.size


def _is_bytes(src):
    return isinstance(src, (bytes, bytearray, memoryview))


def source_size(src):
    """Bytes in the box source ``src`` (bytes-like or an open binary file)."""
    if _is_bytes(src):
        return len(src)
    try:
        return os.fstat(src.fileno()).st_size
    except (AttributeError, OSError):
        return src.seek(0, os.SEEK_END)


def read_at(src, offset, n):
    """Up to ``n`` bytes of ``src`` from ``offset`` (fewer at its end)."""
    if _is_bytes(src):
        return bytes(src[offset:offset + n])
    src.seek(offset)
    return src.read(n)


def iter_boxes(src, start=0, end=None):
    """Yield a ``Box`` for each box of ``src`` between the offsets ``start``
    and ``end`` (default: the end of the source), one level deep.

    :raises ValueError: a truncated or malformed box header, or a box that
        runs past ``end``.
    """
    end = source_size(src) if end is None else end
    offset = start
    while offset < end:
        if end - offset < 8:
            raise ValueError(f"truncated box header at byte {offset}")
        size, kind = struct.unpack(">I4s", read_at(src, offset, 8))
        header = 8
        if size == 1:
            if end - offset < 16:
                raise ValueError(f"truncated large box header at byte {offset}")
            size = struct.unpack(">Q", read_at(src, offset + 8, 8))[0]
            header = 16
        elif size == 0:
            size = end - offset
        if kind == b"uuid":
            header += 16
        if size < header or offset + size > end:
            raise ValueError(f"box {kind!r} at byte {offset} has a bad size {size}")
        yield Box(kind, offset, size, header)
        offset += size


def _path(path):
    if isinstance(path, str):
        return [part.encode("latin-1") for part in path.split("/")]
    return list(path)


def find_all(src, path, within=None):
    """Every ``Box`` at ``path`` (``"moov/trak"``, or a list of 4-byte types)
    inside the box ``within`` (default: the top level of ``src``), in order.

    :raises ValueError: as ``iter_boxes``, for the boxes walked.
    """
    path = _path(path)
    start, end = (within.payload, within.end) if within is not None else (0, None)
    found = []
    for box in iter_boxes(src, start, end):
        if box.type != path[0]:
            continue
        if len(path) == 1:
            found.append(box)
        else:
            found += find_all(src, path[1:], box)
    return found


def find(src, path, within=None):
    """The first ``Box`` at ``path`` inside ``within`` (see ``find_all``), or
    None. Stops at the first match."""
    path = _path(path)
    start, end = (within.payload, within.end) if within is not None else (0, None)
    for box in iter_boxes(src, start, end):
        if box.type == path[0]:
            found = box if len(path) == 1 else find(src, path[1:], box)
            if found is not None:
                return found
    return None


def full_box(src, box):
    """``(version, flags, offset)`` of a FullBox: its version (int), its
    24-bit flags and the offset of the payload after them."""
    version_flags = struct.unpack(">I", read_at(src, box.payload, 4))[0]
    return version_flags >> 24, version_flags & 0xFFFFFF, box.payload + 4


def media_header(src, mdhd):
    """``(timescale, duration)`` of an ``mdhd`` box: ticks per second and the
    media's duration in ticks (versions 0 and 1).

    :raises struct.error: the box is too short.
    """
    version, _, p = full_box(src, mdhd)
    if version == 1:  # 64-bit creation and modification times before
        return Fields(src, p + 16).take(">IQ")
    return Fields(src, p + 8).take(">II")


class Fields:
    """Big-endian fields read one after another from a box source, from
    offset ``pos`` (``struct`` formats: ``">I"``, ``">Qq"``)."""

    def __init__(self, src, pos):
        self.src = src
        self.pos = pos

    def take(self, fmt):
        """The next field(s) of ``fmt``: one value, or a tuple for several.

        :raises struct.error: the source ends first.
        """
        size = struct.calcsize(fmt)
        values = struct.unpack(fmt, read_at(self.src, self.pos, size))
        self.pos += size
        return values[0] if len(values) == 1 else values

    def take_if(self, present, fmt, default=None):
        """``take(fmt)`` if ``present`` (an optional field the box's flags
        announce), else ``default`` without moving."""
        return self.take(fmt) if present else default

    def skip(self, n):
        """Move past ``n`` bytes."""
        self.pos += n


def _reverse_bits32(value):
    return int(f"{value:032b}"[::-1], 2)


def rfc6381(sample_entry, config):
    """RFC 6381 codec string of an ``avc1``/``avc3`` sample entry with its
    ``avcC`` payload (``"avc1.64001f"``) or an ``hvc1``/``hev1`` one with its
    ``hvcC`` payload (``"hvc1.1.6.L93.B0"``: ISO/IEC 14496-15 annex E,
    ``<profile space><profile>.<compatibility flags, bit-reversed>.<tier><level>.<constraint bytes>``);
    the bare 4CC for other entries or a short ``config`` (bytes)."""
    kind = sample_entry.decode("latin-1")
    if kind in ("avc1", "avc3") and len(config) >= 4:
        return f"{kind}.{config[1]:02x}{config[2]:02x}{config[3]:02x}"
    if kind in ("hvc1", "hev1") and len(config) >= 13:
        space = "" if config[1] >> 6 == 0 else "ABC"[(config[1] >> 6) - 1]
        tier = "H" if config[1] & 0x20 else "L"
        profile = config[1] & 0x1F
        compat = _reverse_bits32(int.from_bytes(config[2:6], "big"))
        constraints = list(config[6:12])
        while constraints and constraints[-1] == 0:
            constraints.pop()
        parts = [kind, f"{space}{profile}", f"{compat:X}", f"{tier}{config[12]}"]
        parts += [f"{b:X}" for b in constraints]
        return ".".join(parts)
    return kind


def stsd_codec(src, stsd):
    """``(sample entry type, codec string)`` of the first sample entry of
    the ``stsd`` box: ``rfc6381`` of its ``avcC``/``hvcC`` for a video entry
    of VIDEO_SAMPLE_ENTRIES, else the bare 4CC; None when it has no entry.

    :raises ValueError: a malformed box.
    """
    entry = next(iter_boxes(src, stsd.payload + 8, stsd.end), None)  # + version/flags, count
    if entry is None:
        return None
    config = b""
    if entry.type in VIDEO_SAMPLE_ENTRIES:
        for child in iter_boxes(src, entry.payload + VISUAL_SAMPLE_ENTRY, entry.end):
            if child.type in (b"avcC", b"hvcC"):
                config = read_at(src, child.payload, min(child.size - child.header, _CONFIG_BYTES))
                break
    return entry.type, rfc6381(entry.type, config)


def sample_entry_codecs(init_path):
    """The RFC 6381 codecs string of the video sample entry of the (first)
    track of the MP4 or init segment at ``init_path``, read from its
    decoder configuration (``rfc6381``). ffmpeg 5.1's dash muxer writes
    only ``"hvc1"`` for HEVC in the MPD, which players cannot check.

    :returns: the string (``"avc1.64001e"``, ``"hvc1.1.6.L93.B0"``), or None
        when the sample entry is not one of VIDEO_SAMPLE_ENTRIES, has no
        decoder configuration, or the file cannot be read as MP4.
    """
    try:
        with open(init_path, "rb") as f:
            stsd = find(f, "moov/trak/mdia/minf/stbl/stsd")
            found = stsd_codec(f, stsd) if stsd is not None else None
    except (OSError, ValueError, struct.error):
        return None
    if found is None or found[0] not in VIDEO_SAMPLE_ENTRIES or "." not in found[1]:
        return None
    return found[1]
