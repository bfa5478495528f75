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
from nommer.workerd.outputs import boxes
from nommer.workerd.outputs.boxes import Fields


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


#: Re-exported for package.py, which walks an init segment's boxes through this module.
iter_boxes = boxes.iter_boxes


def read_track(init_path):
    """``TrackInfo`` of the one track of the init segment at ``init_path``
    (read by seeking: only the boxes named in the module docstring).

    Raises ``PermanentJobError`` when the file is not an fMP4 init segment
    with exactly one track (the DASH muxer writes one per representation).
    """
    try:
        with open(init_path, "rb") as f:
            return _read_track(f)
    except (ValueError, struct.error) as e:
        raise PermanentJobError(f"the init segment {init_path} cannot be read as "
                                f"fragmented MP4: {e}") from None


def _read_track(f):
    traks = boxes.find_all(f, "moov/trak")
    if len(traks) != 1:
        raise ValueError(f"{len(traks)} tracks, expected 1")
    trak = traks[0]
    tkhd = boxes.find(f, "tkhd", trak)
    mdhd = boxes.find(f, "mdia/mdhd", trak)
    if tkhd is None or mdhd is None:
        raise ValueError("no tkhd/mdhd box")
    version, _, p = boxes.full_box(f, tkhd)
    track_id = Fields(f, p + (16 if version == 1 else 8)).take(">I")
    timescale, _ = boxes.media_header(f, mdhd)
    if not timescale:
        raise ValueError("timescale 0")
    media_time = 0
    for elst in boxes.find_all(f, "edts/elst", trak):
        version, _, p = boxes.full_box(f, elst)
        fields = Fields(f, p)
        for _ in range(fields.take(">I")):
            _, entry_time = fields.take(">Qq" if version == 1 else ">Ii")
            fields.skip(4)  # media_rate
            if entry_time >= 0:  # -1 is an empty edit (a delay), not a cut
                media_time = entry_time
                break
    defaults = (0, 0, 0)
    for trex in boxes.find_all(f, "moov/mvex/trex"):
        tid, _, dur, sz, fl = Fields(f, boxes.full_box(f, trex)[2]).take(">5I")
        if tid == track_id:
            defaults = (dur, sz, fl)
    return TrackInfo(track_id=track_id, timescale=timescale, media_time=media_time,
                     default_duration=defaults[0],
                     default_size=defaults[1], default_flags=defaults[2])


def _is_sync(flags):
    # ISO/IEC 14496-12 sample flags: bit 16 is sample_is_non_sync_sample.
    return not (flags >> 16) & 1


def read_fragments(segment_path, track):
    """The ``Fragment`` list of the media segment at ``segment_path``
    (``track`` a ``TrackInfo`` from its init segment). The segment (one
    segment_s of one rendition) is read into memory: every sample's entry
    is parsed.

    Raises ``PermanentJobError`` when a box is malformed or a fragment
    holds no track fragment of ``track``.
    """
    with open(segment_path, "rb") as f:
        data = f.read()
    fragments = []
    try:
        for moof in boxes.iter_boxes(data):
            if moof.type != b"moof":
                continue
            samples = []
            for traf in boxes.find_all(data, "traf", moof):
                samples += _traf_samples(data, moof, traf, track)
            if not samples:
                raise ValueError(f"the fragment at byte {moof.offset} has no sample of "
                                 f"track {track.track_id}")
            fragments.append(Fragment(moof_offset=moof.offset, moof_size=moof.size,
                                      samples=tuple(samples)))
    except (ValueError, struct.error) as e:
        raise PermanentJobError(f"the media segment {segment_path} cannot be read as "
                                f"fragmented MP4: {e}") from None
    return fragments


def _traf_samples(data, moof, traf, track):
    tfhd = boxes.find(data, "tfhd", traf)
    if tfhd is None:
        raise ValueError("a traf has no tfhd")
    _, flags, p = boxes.full_box(data, tfhd)
    fields = Fields(data, p)
    if fields.take(">I") != track.track_id:
        return []
    # no base_data_offset and one traf: the moof's first byte
    base = fields.take_if(flags & 0x01, ">Q", moof.offset)
    fields.take_if(flags & 0x02, ">I")  # sample_description_index
    def_duration = fields.take_if(flags & 0x08, ">I", track.default_duration)
    def_size = fields.take_if(flags & 0x10, ">I", track.default_size)
    def_flags = fields.take_if(flags & 0x20, ">I", track.default_flags)
    decode = 0
    tfdt = boxes.find(data, "tfdt", traf)
    if tfdt is not None:
        version, _, p = boxes.full_box(data, tfdt)
        decode = Fields(data, p).take(">Q" if version == 1 else ">I")
    samples = []
    data_pos = base
    for trun in boxes.find_all(data, "trun", traf):
        version, tr_flags, p = boxes.full_box(data, trun)
        fields = Fields(data, p)
        count = fields.take(">I")
        if tr_flags & 0x01:
            data_pos = base + fields.take(">i")
        first_flags = fields.take_if(tr_flags & 0x04, ">I")
        for i in range(count):
            duration = fields.take_if(tr_flags & 0x100, ">I", def_duration)
            sample_size = fields.take_if(tr_flags & 0x200, ">I", def_size)
            sample_flags = fields.take_if(tr_flags & 0x400, ">I", def_flags)
            cto = fields.take_if(tr_flags & 0x800, ">i" if version == 1 else ">I", 0)
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
