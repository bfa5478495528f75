"""boxes: the ISO BMFF header walk over bytes and over a file read by
seeking, and RFC 6381 codec strings from decoder configurations."""

import io
import struct

import pytest

from nommer.workerd.outputs import boxes


def box(kind, payload=b""):
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_box_walk_reads_64_bit_sizes_and_refuses_bad_ones():
    large = struct.pack(">I4sQ", 1, b"mdat", 20) + b"abcd"
    small = struct.pack(">I4s", 12, b"free") + b"wxyz"
    assert list(boxes.iter_boxes(large + small)) == [(b"mdat", 0, 20, 16),
                                                     (b"free", 20, 12, 8)]
    with pytest.raises(ValueError):
        list(boxes.iter_boxes(struct.pack(">I4s", 100, b"moof")))
    with pytest.raises(ValueError):
        list(boxes.iter_boxes(struct.pack(">I4s", 4, b"moof")))


def test_a_file_is_walked_by_seeking_as_bytes_are(tmp_path):
    """The same boxes from bytes and from an open file; the file walk reads
    only headers (a 1 MB mdat payload is skipped, never read)."""
    data = (box(b"ftyp", b"isom") + box(b"moov", box(b"trak", box(b"tkhd", b"\0" * 4)))
            + struct.pack(">I4s", 8 + 1_000_000, b"mdat") + b"\0" * 1_000_000)
    path = tmp_path / "f.mp4"
    path.write_bytes(data)

    class Counting(io.FileIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    with Counting(str(path), "rb") as f:
        from_file = list(boxes.iter_boxes(f))
        tkhd = boxes.find(f, "moov/trak/tkhd")
    assert from_file == list(boxes.iter_boxes(data)) == [
        (b"ftyp", 0, 12, 8), (b"moov", 12, 28, 8), (b"mdat", 40, 1_000_008, 8)]
    assert tkhd == (b"tkhd", 28, 12, 8) and (tkhd.payload, tkhd.end) == (36, 40)
    assert Counting.read_bytes < 100
    assert boxes.find(data, "moov/mdia") is None
    assert boxes.find_all(data, [b"moov", b"trak"]) == [(b"trak", 20, 20, 8)]


def test_rfc6381_strings():
    assert boxes.rfc6381(b"avc1", bytes([1, 0x64, 0x00, 0x1F])) == "avc1.64001f"
    assert boxes.rfc6381(b"avc1", bytes([1, 0x42, 0xC0, 0x1E])) == "avc1.42c01e"
    # ISO/IEC 14496-15 annex E examples: Main 10, tier High, level 5.1 (153)...
    main10 = bytes([1, 0x22, 0x20, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 153])
    assert boxes.rfc6381(b"hvc1", main10) == "hvc1.2.4.H153.B0"
    main = bytes([1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93])
    assert boxes.rfc6381(b"hev1", main) == "hev1.1.6.L93.90"
    assert boxes.rfc6381(b"mp4v", b"") == "mp4v"


def test_sample_entry_codecs_of_a_file_that_is_not_mp4_is_none(tmp_path):
    path = tmp_path / "text.mp4"
    path.write_bytes(b"this is not an MP4 file at all\n")
    assert boxes.sample_entry_codecs(str(path)) is None
    assert boxes.sample_entry_codecs(str(tmp_path / "missing.mp4")) is None
