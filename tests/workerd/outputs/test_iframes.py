"""iframes (and boxes' codec strings): keyframes and codec strings read from
the fMP4 boxes ffmpeg's dash muxer wrote, checked against ffprobe/ffmpeg on
the same bytes."""

import os

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import boxes, iframes, mpd
from tests.workerd.outputs.cmaf_ladders import concatenated, ladder_fixture
from tests.workerd.outputs.media import ffmpeg, ffprobe_json

H264_PROFILES = {"Constrained Baseline": 66, "Baseline": 66, "Main": 77, "High": 100}
HEVC_PROFILES = {"Main": 1, "Main 10": 2}


stereo = ladder_fixture("stereo")
hevc = ladder_fixture("hevc")


def _video_reps(directory):
    return [r for r in mpd.read_timeline(os.path.join(directory, "manifest.mpd"))
            if r.content_type == "video"]


def _keyframes(directory, rep):
    return iframes.keyframes(os.path.join(directory, rep.init),
                             [(s.name, os.path.join(directory, s.name)) for s in rep.segments])


def _frame_md5(path, *args):
    out = ffmpeg(*args, "-i", path, "-map", "0:v:0", "-f", "framemd5", "-", timeout=60)
    return [line.split(",")[-1].strip() for line in out.stdout.decode().splitlines()
            if line and not line.startswith("#")]


def test_every_fragment_of_every_rung_begins_with_a_keyframe_on_the_2s_grid(stereo):
    for rep in _video_reps(stereo):
        track = iframes.read_track(os.path.join(stereo, rep.init))
        fragments = [f for s in rep.segments
                     for f in iframes.read_fragments(os.path.join(stereo, s.name), track)]
        assert len(fragments) == 3  # 5 s: fragments at 0, 2, 4 s
        assert all(f.samples[0].sync for f in fragments)
        assert sum(len(f.samples) for f in fragments) == 150  # 5 s at 30 fps
        # Exactly one sync sample per fragment (no scene-cut keyframes).
        assert [sum(s.sync for s in f.samples) for f in fragments] == [1, 1, 1]
        keys = _keyframes(stereo, rep)
        assert [k.presentation / k.timescale for k in keys] == [0.0, 2.0, 4.0]
        # B-frames: decode runs ahead of presentation by the edit list's cut.
        assert track.media_time > 0
        assert [k.decode / k.timescale for k in keys] == [0.0, 2.0, 4.0]


def test_keyframe_sample_sizes_and_offsets_match_ffprobe_packets(stereo):
    # The parser's view of the samples against ffprobe's, over the whole track.
    rep = _video_reps(stereo)[0]
    track = iframes.read_track(os.path.join(stereo, rep.init))
    ours = [(s.size, s.sync) for seg in rep.segments
            for f in iframes.read_fragments(os.path.join(stereo, seg.name), track)
            for s in f.samples]
    whole = concatenated(stereo, rep.init, [s.name for s in rep.segments],
                         os.path.join(stereo, "whole-0.mp4"))
    packets = ffprobe_json(whole, "-show_entries", "packet=size,flags")["packets"]
    assert ours == [(int(p["size"]), p["flags"].startswith("K")) for p in packets]


@pytest.mark.parametrize("kind", ["stereo", "hevc"])
def test_each_byte_range_with_the_init_segment_decodes_to_exactly_its_keyframe(
        kind, request, tmp_path):
    stereo = request.getfixturevalue(kind)
    for rep in _video_reps(stereo):
        whole = concatenated(stereo, rep.init, [s.name for s in rep.segments],
                             str(tmp_path / f"whole-{rep.rep_id}.mp4"))
        whole_frames = _frame_md5(whole)
        with open(os.path.join(stereo, rep.init), "rb") as f:
            init = f.read()
        for k in _keyframes(stereo, rep):
            with open(os.path.join(stereo, k.segment), "rb") as f:
                f.seek(k.offset)
                piece = f.read(k.length)
            assert len(piece) == k.length
            assert piece[4:8] == b"moof"
            path = tmp_path / f"key-{rep.rep_id}-{k.decode}.mp4"
            path.write_bytes(init + piece)
            packets = ffprobe_json(str(path), "-show_entries",
                                   "packet=pts_time,flags")["packets"]
            assert len(packets) == 1
            assert packets[0]["flags"].startswith("K")
            assert float(packets[0]["pts_time"]) == pytest.approx(
                k.presentation / k.timescale, abs=0.001)
            frames = _frame_md5(str(path))
            assert len(frames) == 1
            # The very picture the full stream shows at that time.
            assert frames[0] == whole_frames[round(k.presentation / k.timescale * 30)]


def test_the_last_byte_of_a_range_is_the_end_of_the_keyframe_sample(stereo):
    rep = _video_reps(stereo)[0]
    track = iframes.read_track(os.path.join(stereo, rep.init))
    for k in _keyframes(stereo, rep):
        fragments = iframes.read_fragments(os.path.join(stereo, k.segment), track)
        (fragment,) = [f for f in fragments if f.moof_offset == k.offset]
        key, following = fragment.samples[0], fragment.samples[1]
        assert k.offset + k.length == key.offset + key.size == following.offset
        assert k.byterange == f"{k.length}@{k.offset}"


def _stream(directory, rep, tmp_path):
    first = concatenated(directory, rep.init, [rep.segments[0].name],
                         str(tmp_path / f"first-{rep.rep_id}.mp4"))
    (stream,) = ffprobe_json(first, "-show_streams")["streams"]
    return stream


def test_codec_strings_from_the_init_segments_agree_with_ffprobe(stereo, hevc, tmp_path):
    for rep in _video_reps(stereo):
        codecs = boxes.sample_entry_codecs(os.path.join(stereo, rep.init))
        stream = _stream(stereo, rep, tmp_path)
        assert codecs == "avc1.%02x%02x%02x" % (
            H264_PROFILES[stream["profile"]], int(codecs[7:9], 16), stream["level"])
        assert codecs == rep.codecs  # what ffmpeg itself wrote in the MPD
    (rep,) = _video_reps(hevc)
    codecs = boxes.sample_entry_codecs(os.path.join(hevc, rep.init))
    stream = _stream(hevc, rep, tmp_path)
    four_cc, profile, compat, tier_level, *constraints = codecs.split(".")
    assert four_cc == "hvc1" == stream["codec_tag_string"]
    assert int(profile) == HEVC_PROFILES[stream["profile"]]
    # Main is compatible with itself and Main 10 (flags 1 and 2 -> 0x6 reversed).
    assert int(compat, 16) & (1 << int(profile))
    assert tier_level == f"L{stream['level']}"
    assert all(len(c) <= 2 and int(c, 16) for c in constraints)
    audio = [r for r in mpd.read_timeline(os.path.join(hevc, "manifest.mpd"))
             if r.content_type == "audio"]
    assert boxes.sample_entry_codecs(os.path.join(hevc, audio[0].init)) is None


def test_a_keyframe_only_track_lists_one_entry_per_fragment(stereo):
    # Audio samples are all sync samples: one entry per fragment, never more.
    (rep,) = [r for r in mpd.read_timeline(os.path.join(stereo, "manifest.mpd"))
              if r.content_type == "audio"]
    track = iframes.read_track(os.path.join(stereo, rep.init))
    fragments = [f for s in rep.segments
                 for f in iframes.read_fragments(os.path.join(stereo, s.name), track)]
    assert len(_keyframes(stereo, rep)) == len(fragments) >= 2


def test_a_truncated_segment_is_a_permanent_error_naming_it(stereo, tmp_path):
    rep = _video_reps(stereo)[0]
    track = iframes.read_track(os.path.join(stereo, rep.init))
    with open(os.path.join(stereo, rep.segments[0].name), "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.m4s"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(PermanentJobError, match="cut.m4s"):
        iframes.read_fragments(str(cut), track)
    not_mp4 = tmp_path / "init.m4s"
    not_mp4.write_bytes(b"\x00\x00\x00\x10abcd" + b"\x00" * 8)
    with pytest.raises(PermanentJobError, match="init segment"):
        iframes.read_track(str(not_mp4))
