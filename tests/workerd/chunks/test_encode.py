"""nommer.workerd.chunks.encode: one ffmpeg run per chunk, frame-exact.

Frame-exactness is shown with a lossless track (x264 -qp 0): the decoded
frames of each chunk file are bit-identical (framemd5) to the source's
frames [a, b), on an MP4, an MKV and a TS remuxed to MKV (its audio
starting before its video), all with B-frames and irregular keyframes, and
on a VFR MP4 (whose timestamps are kept)."""

import os
from fractions import Fraction

import attr
import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import concat, encode, frames, tracks
from nommer.workerd.chunks.model import Chunk, VideoTrack
from tests.workerd.chunks import chunking, sources
from tests.workerd.outputs import media

LOSSLESS = VideoTrack(key="o0", chain="format=yuv420p",
                      args=("-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"), fps=Fraction(24))
SMALL = VideoTrack(key="p0r0", chain="scale=160:90,setsar=1",
                   args=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "30",
                         "-pix_fmt", "yuv420p"), fps=Fraction(24))


def remuxed(path, out):
    """``path`` (a TS) copied into Matroska as the worker does before cutting."""
    chunking.run(frames.remux_step(path, out, "ffmpeg").argv)
    return out


@pytest.fixture(scope="module")
def srcs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("encode-sources"))
    return {"mp4": sources.make_scenes(d, duration_s=4, audio=False),
            "mkv": sources.make_mkv(d, duration_s=4),
            "vfr": sources.make_vfr(d),
            "ts": remuxed(sources.make_ts(d, duration_s=4), os.path.join(d, "ts.mkv")),
            "fps60": media.make_source(d, "fps60.mp4", width=160, height=90, fps=60,
                                       duration_s=2, audio=None)}


def chunk(index, frames=24, seek_s=1.5, start_frame=36):
    return Chunk(index=index, start_frame=start_frame, frames=frames, start_s=1.5, end_s=2.5,
                 seek_s=seek_s, duration=Fraction(frames, 24))


def test_chunk_file_name_is_zero_padded_and_checked():
    assert encode.chunk_file_name(3, "p0r1") == "chunk_00003_p0r1.mp4"
    assert encode.chunk_file_name(12345, "o2") == "chunk_12345_o2.mp4"
    assert encode.parse_chunk_file_name("chunk_00003_p0r1.mp4") == (3, "p0r1")
    assert encode.parse_chunk_file_name("chunk_3_p0r1.mp4") is None
    names = [encode.chunk_file_name(i, "o0") for i in (10, 9, 100, 0)]
    assert sorted(names) == [encode.chunk_file_name(i, "o0") for i in (0, 9, 10, 100)]
    for index, key in ((-1, "o0"), (100000, "o0"), (1, "../x"), (1, "a/b"), (1, "")):
        with pytest.raises(ValueError):
            encode.chunk_file_name(index, key)


def test_plan_is_one_run_seeking_at_the_midpoint_with_every_track(tmp_path):
    step = encode.plan(chunk(2, seek_s=1.4791665), [LOSSLESS, SMALL], ffmpeg_bin="ffmpeg",
                       input_path="/src.mp4", work_dir=str(tmp_path), fps=Fraction(24))
    argv = step.argv
    assert argv[argv.index("-ss") + 1] == "1.479167"
    assert argv.index("-ss") < argv.index("-i")
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph == ("[0:V:0]trim=end_frame=24,setpts=PTS-STARTPTS,split=2[s0][s1];"
                     "[s0]format=yuv420p[o0];[s1]scale=160:90,setsar=1[o1]")
    out0 = os.path.join(str(tmp_path), "chunk_00002_o0.mp4")
    out1 = os.path.join(str(tmp_path), "chunk_00002_p0r0.mp4")
    first = argv.index("[o0]")
    assert argv[first + 1:argv.index(out0)] == list(LOSSLESS.args) + [
        "-fps_mode", "passthrough", "-an", "-sn", "-dn", "-f", "mp4"]
    assert argv[-4:] == ["-progress", "pipe:1", "-nostats", out1]
    assert "-enc_time_base" not in argv  # CFR tracks: time base 1/fps
    assert step.expected_s == 1.0 and step.capped
    assert step.weight == pytest.approx(1.0 * (1e6 + 160 * 90) / 1e6)


def test_plan_chunk_0_does_not_seek_and_a_vfr_track_keeps_the_source_time_base(tmp_path):
    vfr = attr.evolve(LOSSLESS, fps=None)
    argv = encode.plan(chunk(0, seek_s=0.0, start_frame=0), [vfr], ffmpeg_bin="ffmpeg",
                       input_path="/src.mp4", work_dir=str(tmp_path)).argv
    assert "-ss" not in argv
    assert argv[argv.index("-enc_time_base") + 1] == "-1"
    assert "split" not in argv[argv.index("-filter_complex") + 1]


def test_plan_refuses_no_track_and_duplicate_keys(tmp_path):
    with pytest.raises(ValueError):
        encode.plan(chunk(1), [], ffmpeg_bin="ffmpeg", input_path="/s", work_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unique"):
        encode.plan(chunk(1), [LOSSLESS, LOSSLESS], ffmpeg_bin="ffmpeg", input_path="/s",
                    work_dir=str(tmp_path))


def encode_all(src, chunks, track_list, work_dir, fps):
    for c in chunks:
        chunking.run(encode.plan(c, track_list, ffmpeg_bin="ffmpeg", input_path=src,
                                 work_dir=str(work_dir), fps=fps).argv)
        chunking.run(encode.count_step(c, track_list, ffmpeg_bin="ffmpeg",
                                       work_dir=str(work_dir)).argv)


@pytest.mark.parametrize("kind,cuts", [("mp4", None), ("mkv", None), ("ts", None),
                                       ("vfr", [40, 70, 100])])
def test_chunks_are_frame_exact(kind, cuts, srcs, tmp_path):
    src = srcs[kind]
    tl = chunking.timeline(src)
    cuts = cuts or sources.scene_cut_frames(duration_s=4)
    chunks = chunking.make_chunks(tl, cuts)
    track = attr.evolve(LOSSLESS, fps=tl.fps)
    encode_all(src, chunks, [track, SMALL if tl.fps else attr.evolve(SMALL, fps=None)],
               tmp_path, tl.fps)
    whole = sources.framemd5s("-i", src)
    assert len(whole) == tl.frames
    for c in chunks:
        counts = encode.check_chunk(c, [track, SMALL], work_dir=str(tmp_path), fps=tl.fps)
        assert counts == [c.frames, c.frames]
        path = os.path.join(str(tmp_path), encode.chunk_file_name(c.index, "o0"))
        assert sources.framemd5s("-i", path) == whole[c.start_frame:c.start_frame + c.frames], \
            f"chunk {c.index} is not the source's frames [{c.start_frame}, +{c.frames})"
        pts = [p for p, _ in chunking.packets(path)]
        assert pts[0] == 0.0
        if kind == "vfr":  # the source's intervals, kept
            want = [t - tl.pts_s[c.start_frame] for t in tl.pts_s[c.start_frame:c.start_frame
                                                                  + c.frames]]
            assert max(abs(a - b) for a, b in zip(pts, want)) < 0.001


def test_a_late_seek_drops_the_first_frame(srcs, tmp_path):
    """The trap the midpoint avoids: a seek 1 ms after the frame's own time
    loses it (the chunk then starts one frame late)."""
    src = srcs["mp4"]
    tl = chunking.timeline(src)
    a = sources.scene_cut_frames(duration_s=4)[0]
    good = chunking.make_chunks(tl, [a])[1]
    late = attr.evolve(good, seek_s=tl.pts_s[a] - tl.start_s + 0.001)
    encode_all(src, [late], [LOSSLESS], tmp_path, tl.fps)
    path = os.path.join(str(tmp_path), encode.chunk_file_name(1, "o0"))
    whole = sources.framemd5s("-i", src)
    assert sources.framemd5s("-i", path)[0] == whole[a + 1]


def test_an_fps_capped_track_gets_the_expected_frames(srcs, tmp_path):
    src = srcs["fps60"]
    tl = chunking.timeline(src)
    assert tl.fps == 60
    capped = VideoTrack(key="o1", chain="fps=30/1,scale=160:90,setsar=1",
                        args=("-c:v", "libx264", "-preset", "ultrafast", "-crf", "30"),
                        fps=Fraction(30))
    chunks = chunking.make_chunks(tl, [25, 61])  # 25, 36 and 59 frames
    encode_all(src, chunks, [capped, attr.evolve(SMALL, fps=Fraction(60))], tmp_path, tl.fps)
    for c in chunks:
        counts = encode.check_chunk(c, [capped, SMALL], work_dir=str(tmp_path), fps=tl.fps)
        assert counts == [tracks.expected_frames(c.frames, capped, tl.fps), c.frames]
    assert [tracks.expected_frames(c.frames, capped, tl.fps) for c in chunks] == [13, 18, 30]


def test_check_chunk_finds_a_missing_frame(srcs, tmp_path):
    src = srcs["mp4"]
    tl = chunking.timeline(src)
    c = chunking.make_chunks(tl, sources.scene_cut_frames(duration_s=4))[1]
    short = attr.evolve(c, frames=c.frames - 2)
    encode_all(src, [short], [LOSSLESS, SMALL], tmp_path, tl.fps)
    with pytest.raises(PermanentJobError) as e:
        encode.check_chunk(c, [LOSSLESS, SMALL], work_dir=str(tmp_path), fps=tl.fps)
    assert str(e.value) == (f"chunk 1: {c.frames - 2} frames encoded, {c.frames} expected "
                            "(track o0)")


def test_check_chunk_without_the_files_is_a_sentence(tmp_path):
    with pytest.raises(PermanentJobError, match="chunk 4: its encoded files cannot be read"):
        encode.check_chunk(chunk(4), [LOSSLESS], work_dir=str(tmp_path))
    with pytest.raises(PermanentJobError, match="chunk 4: no video frame encoded"):
        encode.check_counts(chunk(4), [LOSSLESS], [None])


def test_ladder_rungs_chunked_on_the_2s_grid_keep_keyframes_on_the_grid(tmp_path):
    """A ladder's chunks start on the 2 s keyframe grid, so each rung's
    chunk-local forced keyframes fall on the title's grid: the joined rung
    has keyframes at 0, 2, 4 s and nowhere else, and a 60 fps source's
    capped rung gets exactly half the frames."""
    src = media.make_source(str(tmp_path), "s60.mp4", width=320, height=180, fps=60,
                            duration_s=6, audio=None)
    tl = chunking.timeline(src)
    package = {"hls": {"type": "hls", "dir": "stream", "codec": "h264", "segment_s": 2,
                       "encoder_preset": "ultrafast", "audio_bitrate": "128k",
                       "name": "master.m3u8",
                       "ladder": [{"height": 90, "bitrate": "150k"},
                                  {"height": 180, "bitrate": "400k", "fps_max": 60}]}}
    rungs = tracks.package_tracks(package, media.probe(src), "p0", timeline=tl)
    assert [(r.fps, tracks.has_fps_filter(r)) for r in rungs] == [(30, True), (60, False)]
    chunks = chunking.make_chunks(tl, [120, 240])
    work = tmp_path / "w"
    work.mkdir()
    encode_all(src, chunks, rungs, work, tl.fps)
    for c in chunks:
        assert encode.check_chunk(c, rungs, work_dir=str(work), fps=tl.fps) == [60, 120]
    for rung in rungs:
        listing = work / f"{rung.key}.txt"
        listing.write_text(concat.list_text([(encode.chunk_file_name(c.index, rung.key),
                                              c.duration) for c in chunks]))
        out = str(work / f"{rung.key}.mp4")
        chunking.run(concat.plan(str(listing), out, ffmpeg_bin="ffmpeg").argv)
        probed = media.ffprobe_json(out, "-select_streams", "v:0", "-show_entries",
                                    "packet=pts_time,flags")
        keys = sorted(round(float(p["pts_time"]), 3) for p in probed["packets"]
                      if "K" in p["flags"])
        assert keys == [0.0, 2.0, 4.0], (rung.key, keys)
        assert len(probed["packets"]) == 6 * int(rung.fps)


def test_keyframes_stay_on_the_titles_grid():
    """A chunk off the 2 s grid gets the grid's times shifted by its start; one on it keeps the expression."""
    from fractions import Fraction

    from nommer.workerd.chunks.encode import grid_keyframes
    from nommer.workerd.chunks.model import Chunk
    args = ["-c:v", "libx264", "-force_key_frames", "expr:gte(t,n_forced*2)", "-g", "48"]
    off = Chunk(index=1, start_frame=40, frames=120, start_s=40 / 24, end_s=160 / 24, seek_s=1.65,
                duration=Fraction(120, 24))
    got = grid_keyframes(args, off)
    times = [float(t) for t in got[3].split(",")]
    assert times[0] == 0
    assert times[1:] == pytest.approx([2 - 40 / 24, 4 - 40 / 24, 6 - 40 / 24], abs=0.001)
    assert got[:3] == args[:3] and got[4:] == args[4:]
    on = Chunk(index=1, start_frame=48, frames=96, start_s=2.0, end_s=6.0, seek_s=1.98, duration=Fraction(4))
    assert grid_keyframes(args, on) == args
