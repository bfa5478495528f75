"""Keyframes of fragmented MP4 (CMAF) segments, for HLS I-frame playlists.

ffmpeg 5.1 writes no I-frame playlist (``EXT-X-I-FRAMES-ONLY``), so we find
the keyframes ourselves by reading the boxes of the segments it wrote. Only
the few boxes needed are parsed (ISO/IEC 14496-12): in the init segment
``moov > trak > tkhd, mdia > mdhd`` (track id, timescale) and
``moov > mvex > trex`` (per-track sample defaults); in each media segment the
top-level ``moof`` boxes, ``moof > traf > tfhd, tfdt, trun``. That is a
header walk and a handful of ``struct`` reads; a general MP4 library
(pymp4 and its pinned ``construct``) would parse every box for nothing.

A keyframe entry covers the ``moof`` box that starts the keyframe's
fragment up to the end of the keyframe sample in the ``mdat``: the byte
range a player fetches to decode that one picture (with the init segment).
Only sync samples that begin their fragment are listed: the DASH/CMAF
packaging makes every keyframe begin a fragment (``frag_duration`` equal to
the keyframe interval, IDRs forced on the grid), and a sync sample in the
middle of a fragment could not be fetched without the samples before it.
Pure functions of the files; no reactor.
"""

import struct

import attr

from nommer.core.errors import PermanentJobError

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf",
               b"edts", b"dinf"}


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class TrackInfo:
    """What the init segment says of its one track.

    :ivar track_id: the ``tkhd`` track id.
    :ivar timescale: ticks per second (``mdhd``).
    :ivar default_duration, default_size, default_flags: the ``trex``
        sample defaults (ticks, bytes, ISO sample flags), 0 when absent.
    :ivar media_time: ticks the edit list (``edts > elst``) cuts from the
        start of the media (B-frame delay, AAC priming): presentation time =
        decode + cto - media_time. 0 without an edit list.
    """

    track_id: int
    timescale: int
    media_time: int = 0
    default_duration: int = 0
    default_size: int = 0
    default_flags: int = 0


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Sample:
    """One sample of a fragment.

    :ivar offset: byte offset of its data in the segment file.
    :ivar size: bytes.
    :ivar decode: decode time in track ticks (``tfdt`` + the durations before it).
    :ivar duration: ticks.
    :ivar cto: composition time offset in ticks (presentation = decode + cto).
    :ivar sync: True for a sync sample (keyframe).
    """

    offset: int
    size: int
    decode: int
    duration: int
    cto: int
    sync: bool


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Fragment:
    """One ``moof`` + its samples.

    :ivar moof_offset: byte offset of the ``moof`` box in the segment file.
    :ivar moof_size: its size in bytes.
    :ivar samples: tuple of ``Sample``, in decode order.
    """

    moof_offset: int
    moof_size: int
    samples: tuple


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Keyframe:
    """One I-frame playlist entry.

    :ivar segment: the media segment's file name (as given).
    :ivar offset: byte offset of the fragment's ``moof`` in that file.
    :ivar length: bytes from ``offset`` to the end of the keyframe sample.
    :ivar decode: decode time of the keyframe in track ticks.
    :ivar presentation: presentation time in track ticks (decode + cto -
        the edit list's media_time): the time on the MPD's timeline.
    :ivar timescale: ticks per second.
    """

    segment: str
    offset: int
    length: int
    decode: int
    presentation: int
    timescale: int

    @property
    def byterange(self):
        """``"<length>@<offset>"`` (``EXT-X-BYTERANGE``)."""
        return f"{self.length}@{self.offset}"


def iter_boxes(data, start=0, end=None):
    """Yield ``(type, offset, size, header_size)`` for each box of ``data``
    (bytes) between ``start`` and ``end`` (default: the end), one level
    deep. ``type`` is 4 bytes (``b"moof"``). Raises ``ValueError`` on a
    truncated or malformed box header."""
    end = len(data) if end is None else end
    offset = start
    while offset < end:
        if end - offset < 8:
            raise ValueError(f"truncated box header at byte {offset}")
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if end - offset < 16:
                raise ValueError(f"truncated large box header at byte {offset}")
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = end - offset
        if kind == b"uuid":
            header += 16
        if size < header or offset + size > end:
            raise ValueError(f"box {kind!r} at byte {offset} has a bad size {size}")
        yield kind, offset, size, header
        offset += size


def _children(data, offset, size, header):
    return iter_boxes(data, offset + header, offset + size)


def _find(data, start, end, path):
    """Offsets ``(offset, size, header)`` of every box at ``path`` (list of types)."""
    found = []
    for kind, off, size, header in iter_boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            found.append((off, size, header))
        else:
            found += _find(data, off + header, off + size, path[1:])
    return found


def _full_box(data, off, header):
    """(version, flags, offset of the payload after version/flags)."""
    version_flags = struct.unpack_from(">I", data, off + header)[0]
    return version_flags >> 24, version_flags & 0xFFFFFF, off + header + 4


def read_track(init_path):
    """``TrackInfo`` of the one track of the init segment at ``init_path``.

    Raises ``PermanentJobError`` when the file is not an fMP4 init segment
    with exactly one track (the DASH muxer writes one per representation).
    """
    with open(init_path, "rb") as f:
        data = f.read()
    try:
        traks = _find(data, 0, len(data), [b"moov", b"trak"])
        if len(traks) != 1:
            raise ValueError(f"{len(traks)} tracks, expected 1")
        off, size, header = traks[0]
        tkhd = _find(data, off + header, off + size, [b"tkhd"])
        mdhd = _find(data, off + header, off + size, [b"mdia", b"mdhd"])
        if not tkhd or not mdhd:
            raise ValueError("no tkhd/mdhd box")
        version, _, p = _full_box(data, tkhd[0][0], tkhd[0][2])
        track_id = struct.unpack_from(">I", data, p + (16 if version == 1 else 8))[0]
        version, _, p = _full_box(data, mdhd[0][0], mdhd[0][2])
        timescale = struct.unpack_from(">I", data, p + (16 if version == 1 else 8))[0]
        if not timescale:
            raise ValueError("timescale 0")
        media_time = 0
        for e_off, _, e_header in _find(data, off + header, off + size, [b"edts", b"elst"]):
            version, _, p = _full_box(data, e_off, e_header)
            count = struct.unpack_from(">I", data, p)[0]
            p += 4
            for _ in range(count):
                if version == 1:
                    _, entry_time = struct.unpack_from(">Qq", data, p)
                    p += 20
                else:
                    _, entry_time = struct.unpack_from(">Ii", data, p)
                    p += 12
                if entry_time >= 0:  # -1 is an empty edit (a delay), not a cut
                    media_time = entry_time
                    break
        defaults = (0, 0, 0)
        for t_off, _, t_header in _find(data, 0, len(data), [b"moov", b"mvex", b"trex"]):
            _, _, p = _full_box(data, t_off, t_header)
            tid, _, dur, sz, fl = struct.unpack_from(">5I", data, p)
            if tid == track_id:
                defaults = (dur, sz, fl)
    except (ValueError, struct.error) as e:
        raise PermanentJobError(f"the init segment {init_path} cannot be read as "
                                f"fragmented MP4: {e}") from None
    return TrackInfo(track_id=track_id, timescale=timescale, media_time=media_time,
                     default_duration=defaults[0],
                     default_size=defaults[1], default_flags=defaults[2])


#: Bytes of a VisualSampleEntry before its child boxes (after the box header).
_VISUAL_SAMPLE_ENTRY = 78


def _reverse_bits32(value):
    return int(f"{value:032b}"[::-1], 2)


def sample_entry_codecs(init_path):
    """The RFC 6381 codecs string of the init segment's video sample entry,
    from its decoder configuration: ``avc1.PPCCLL`` from ``avcC``, and for
    HEVC ``hvc1.<profile>.<compatibility>.<tier><level>.<constraints>``
    from ``hvcC`` (ISO/IEC 14496-15 annex E), e.g. ``hvc1.1.6.L93.B0``.
    ffmpeg 5.1's dash muxer writes only ``"hvc1"`` for HEVC, which players
    cannot check.

    :returns: the string, or None when the sample entry is neither
        avc1/avc3 nor hvc1/hev1 or the file cannot be read.
    """
    try:
        with open(init_path, "rb") as f:
            data = f.read()
        found = _find(data, 0, len(data), [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
        if not found:
            return None
        off, size, header = found[0]
        for kind, e_off, e_size, e_header in iter_boxes(data, off + header + 8, off + size):
            if kind not in (b"avc1", b"avc3", b"hvc1", b"hev1"):
                continue
            children = e_off + e_header + _VISUAL_SAMPLE_ENTRY
            for child, c_off, c_size, c_header in iter_boxes(data, children, e_off + e_size):
                body = data[c_off + c_header:c_off + c_size]
                if child == b"avcC" and len(body) >= 4:
                    return f"{kind.decode()}.{body[1]:02x}{body[2]:02x}{body[3]:02x}"
                if child == b"hvcC" and len(body) >= 13:
                    space = "ABC"[(body[1] >> 6) - 1] if body[1] >> 6 else ""
                    tier = "H" if body[1] & 0x20 else "L"
                    profile = body[1] & 0x1F
                    compat = _reverse_bits32(struct.unpack_from(">I", body, 2)[0])
                    constraints = list(body[6:12])
                    while constraints and constraints[-1] == 0:
                        constraints.pop()
                    parts = [kind.decode(), f"{space}{profile}", f"{compat:X}",
                             f"{tier}{body[12]}"] + [f"{b:X}" for b in constraints]
                    return ".".join(parts)
            return None
    except (OSError, ValueError, struct.error, IndexError):
        return None
    return None


def _is_sync(flags):
    # ISO/IEC 14496-12 sample flags: bit 16 is sample_is_non_sync_sample.
    return not (flags >> 16) & 1


def read_fragments(segment_path, track):
    """The ``Fragment`` list of the media segment at ``segment_path``
    (``track`` a ``TrackInfo`` from its init segment).

    Raises ``PermanentJobError`` when a box is malformed or a fragment
    holds no track fragment of ``track``.
    """
    with open(segment_path, "rb") as f:
        data = f.read()
    fragments = []
    try:
        for kind, moof_off, moof_size, moof_header in iter_boxes(data):
            if kind != b"moof":
                continue
            samples = []
            for traf_off, traf_size, traf_header in _find(
                    data, moof_off + moof_header, moof_off + moof_size, [b"traf"]):
                samples += _traf_samples(data, moof_off, traf_off, traf_size, traf_header, track)
            if not samples:
                raise ValueError(f"the fragment at byte {moof_off} has no sample of "
                                 f"track {track.track_id}")
            fragments.append(Fragment(moof_offset=moof_off, moof_size=moof_size,
                                      samples=tuple(samples)))
    except (ValueError, struct.error) as e:
        raise PermanentJobError(f"the media segment {segment_path} cannot be read as "
                                f"fragmented MP4: {e}") from None
    return fragments


def _traf_samples(data, moof_off, off, size, header, track):
    tfhd = _find(data, off + header, off + size, [b"tfhd"])
    if not tfhd:
        raise ValueError("a traf has no tfhd")
    _, flags, p = _full_box(data, tfhd[0][0], tfhd[0][2])
    track_id = struct.unpack_from(">I", data, p)[0]
    if track_id != track.track_id:
        return []
    p += 4
    base = moof_off  # no base_data_offset and one traf: the moof's first byte
    if flags & 0x01:
        base = struct.unpack_from(">Q", data, p)[0]
        p += 8
    if flags & 0x02:
        p += 4
    def_duration, def_size, def_flags = (track.default_duration, track.default_size,
                                         track.default_flags)
    if flags & 0x08:
        def_duration = struct.unpack_from(">I", data, p)[0]
        p += 4
    if flags & 0x10:
        def_size = struct.unpack_from(">I", data, p)[0]
        p += 4
    if flags & 0x20:
        def_flags = struct.unpack_from(">I", data, p)[0]
        p += 4
    decode = 0
    tfdt = _find(data, off + header, off + size, [b"tfdt"])
    if tfdt:
        version, _, p = _full_box(data, tfdt[0][0], tfdt[0][2])
        decode = struct.unpack_from(">Q" if version == 1 else ">I", data, p)[0]
    samples = []
    data_pos = base
    for t_off, _, t_header in _find(data, off + header, off + size, [b"trun"]):
        version, tr_flags, p = _full_box(data, t_off, t_header)
        count = struct.unpack_from(">I", data, p)[0]
        p += 4
        if tr_flags & 0x01:
            data_pos = base + struct.unpack_from(">i", data, p)[0]
            p += 4
        first_flags = None
        if tr_flags & 0x04:
            first_flags = struct.unpack_from(">I", data, p)[0]
            p += 4
        for i in range(count):
            duration, sample_size, sample_flags, cto = def_duration, def_size, def_flags, 0
            if tr_flags & 0x100:
                duration = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x200:
                sample_size = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x400:
                sample_flags = struct.unpack_from(">I", data, p)[0]
                p += 4
            if tr_flags & 0x800:
                cto = struct.unpack_from(">i" if version == 1 else ">I", data, p)[0]
                p += 4
            if i == 0 and first_flags is not None:
                sample_flags = first_flags
            if data_pos + sample_size > len(data):
                raise ValueError(f"a sample at byte {data_pos} runs past the end of the file")
            samples.append(Sample(offset=data_pos, size=sample_size, decode=decode,
                                  duration=duration, cto=cto, sync=_is_sync(sample_flags)))
            data_pos += sample_size
            decode += duration
    return samples


def keyframes(init_path, segments):
    """The keyframes of a track, in order.

    :param init_path: path of the init segment.
    :param segments: iterable of ``(name, path)`` of its media segments in
        order (``name`` is what the entries carry, ``path`` where to read).
    :returns: ``Keyframe`` list (one per fragment that begins with a sync
        sample).
    :raises PermanentJobError: a file is not readable fragmented MP4.
    """
    track = read_track(init_path)
    found = []
    for name, path in segments:
        for fragment in read_fragments(path, track):
            first = fragment.samples[0]
            if not first.sync:
                continue
            found.append(Keyframe(segment=name, offset=fragment.moof_offset,
                                  length=first.offset + first.size - fragment.moof_offset,
                                  decode=first.decode,
                                  presentation=first.decode + first.cto - track.media_time,
                                  timescale=track.timescale))
    return found
