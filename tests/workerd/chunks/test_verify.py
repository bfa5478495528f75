"""nommer.workerd.chunks.verify: the checks of a merged track.

A correct chunked encode passes; two classic wrong chunkings whose frame
count is right (a seek 1 ms late on one chunk, the default vsync
duplicating each chunk's first frame) are caught by the alignment check;
the chunked encode matches a single encode in bitrate and PSNR."""

import os
import re
import subprocess
from fractions import Fraction

import attr
import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.chunks import concat, encode, frames, tracks, verify
from nommer.workerd.chunks.model import Chunk, Timeline, VideoTrack
from nommer.workerd.outputs import quality
from tests.workerd.chunks import chunking, sources
from tests.workerd.outputs import media

SPEC = {"type": "mp4", "name": "video.mp4", "codec": "h264", "crf": 23,
        "encoder_preset": "veryfast", "audio_bitrate": "128k"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """An 8 s four-scene source, its timeline, chunks cut at the scene cuts, its mp4 track."""
    d = str(tmp_path_factory.mktemp("verify-sources"))
    src = sources.make_scenes(d, duration_s=8, audio=False)
    tl = chunking.timeline(src)
    track = tracks.mp4_track(SPEC, media.probe(src), "o0", timeline=tl)
    return src, tl, chunking.make_chunks(tl, sources.scene_cut_frames(duration_s=8)), track


def chunked(src, chunks, track_list, work_dir, fps, mangle=None, tl=None):
    """Encode, join and verify-run: ``{key: joined path}``. ``mangle(argv, chunk)``
    changes each chunk's argv (a deliberately wrong chunking)."""
    work_dir = str(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    for c in chunks:
        argv = encode.plan(c, track_list, ffmpeg_bin="ffmpeg", input_path=src, work_dir=work_dir,
                           fps=fps).argv
        chunking.run(mangle(list(argv), c) if mangle else argv)
    joined = {}
    for track in track_list:
        list_path = os.path.join(work_dir, f"{track.key}.list.txt")
        with open(list_path, "w") as f:
            f.write(concat.list_text([(encode.chunk_file_name(c.index, track.key),
                                       _duration(c, track, fps)) for c in chunks]))
        joined[track.key] = os.path.join(work_dir, f"{track.key}.mp4")
        chunking.run(concat.plan(list_path, joined[track.key], ffmpeg_bin="ffmpeg").argv)
        run_verify(joined[track.key], chunks, track, src, work_dir, fps, tl)
    return joined


def run_verify(path, chunks, track, src, work_dir, fps, tl=None, *, fallback=True):
    """Run verify's steps on ``path`` as the merge does (the fallback's too,
    unless ``fallback`` is False); returns ``{step what: frames decoded}``
    (every input stream's, from ffmpeg's verbose final statistics)."""
    tl = tl or chunking.timeline(src)
    args = dict(input_path=src, ffmpeg_bin="ffmpeg", work_dir=str(work_dir), fps=fps, timeline=tl)
    decoded = {}
    steps = verify.plan(path, chunks, track, **args)
    for step in steps:
        decoded[step.what] = _decoded(chunking.run(step.argv[:1] + ["-v", "verbose"] + step.argv[1:]))
    for step in verify.fallback_steps(path, chunks, track, **args) if fallback else ():
        decoded[step.what] = _decoded(chunking.run(step.argv[:1] + ["-v", "verbose"] + step.argv[1:]))
    return decoded


def _decoded(done):
    """Frames decoded by every input stream of a finished ffmpeg run (its
    verbose final statistics: "Input stream #0:0 (video): ... 45 frames decoded")."""
    text = done.stderr.decode(errors="replace")
    found = re.findall(r"Input stream #\d+:\d+ \(video\): .*?(\d+) frames decoded", text)
    return sum(int(n) for n in found)


def _duration(chunk, track, fps):
    """A chunk's length in ``track``: its frames there / the track's rate (CFR)."""
    if track.fps is None:
        return chunk.duration
    return Fraction(tracks.expected_frames(chunk.frames, track, fps)) / track.fps


def shifted(problems):
    return [p for p in problems if "the frames are shifted" in p]


def test_a_correct_chunked_encode_passes(scenes, tmp_path):
    src, tl, chunks, track = scenes
    chunked(src, chunks, [track], tmp_path, tl.fps)
    assert verify.check(chunks, track, work_dir=str(tmp_path), fps=tl.fps) == []
    verify.verify(chunks, track, work_dir=str(tmp_path), fps=tl.fps)
    # Only the frames around the joins were compared, each three ways.
    psnr = verify.read_psnr_log(verify.raw_paths(str(tmp_path), "o0")["psnr"])
    joins = [c.start_frame for c in chunks[1:]]
    assert sorted(psnr) == sorted(i for j in joins for i in range(j - 3, j + 3))
    assert min(psnr.values()) > 35


def test_a_seek_1ms_late_is_caught_though_the_frame_count_is_right(scenes, tmp_path):
    """Chunk 1 seeks 1 ms after its first frame: it loses that frame and takes
    the next chunk's first instead. Frame count and timestamps are right."""
    src, tl, chunks, track = scenes
    a = chunks[1].start_frame
    late = [attr.evolve(c, seek_s=tl.pts_s[a] - tl.start_s + 0.001) if c.index == 1 else c
            for c in chunks]
    chunked(src, late, [track], tmp_path, tl.fps)
    problems = verify.check(late, track, work_dir=str(tmp_path), fps=tl.fps)
    assert shifted(problems) == problems and problems, problems
    # Before the next join, chunk 1 ends with chunk 2's first frame (another scene)...
    join = chunks[2].start_frame
    assert any(p.startswith(f"chunk join at frame {join} ({join / 24:.3f} s): frame {join - 1}: "
                            "PSNR ") for p in problems), problems
    # ... and its own first frame is the source's next one.
    a = chunks[1].start_frame
    assert any(p.startswith(f"chunk join at frame {a} ({a / 24:.3f} s): frame {a} matches the "
                            "source frame after its own") for p in problems), problems
    with pytest.raises(PermanentJobError, match=r"^merged video o0: chunk join at frame"):
        verify.verify(late, track, work_dir=str(tmp_path), fps=tl.fps)


def test_the_default_vsync_duplicating_each_first_frame_is_caught(scenes, tmp_path):
    """Without setpts=PTS-STARTPTS and -fps_mode passthrough, and with
    -frames:v N (the naive recipe), each chunk starts with its first frame
    twice and loses its last: the count is right, the content shifted."""
    src, tl, chunks, track = scenes

    def naive(argv, c):
        i = argv.index("-fps_mode")
        argv[i:i + 2] = ["-frames:v", str(c.frames)]
        return [a.replace(",setpts=PTS-STARTPTS", "") for a in argv]

    chunked(src, chunks, [track], tmp_path, tl.fps, mangle=naive)
    problems = verify.check(chunks, track, work_dir=str(tmp_path), fps=tl.fps)
    assert problems and shifted(problems) == problems, problems
    assert len(problems) == len(chunks) - 1  # every join


def psnr_y(path, src, tl, log):
    info = media.probe(src)
    step = quality.pair_step(path, src, metrics=["psnr"], model=None, subsample=1,
                             ffmpeg_bin="ffmpeg", vmaf_bin=None, log_path=log,
                             ref_width=info.width, ref_height=info.height, fps=tl.fps, what="psnr")
    chunking.run(step.argv)
    return quality.read_log(log, ["psnr"])["psnr_y"]


def test_chunked_matches_a_single_encode_in_bitrate_and_quality(scenes, tmp_path, capsys):
    src, tl, chunks, track = scenes
    joined = chunked(src, chunks, [track], tmp_path / "c", tl.fps)["o0"]
    single = str(tmp_path / "single.mp4")
    chunking.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-filter_complex",
                  f"[0:V:0]{track.chain}[o]", "-map", "[o]", *track.args, "-an", single])
    seconds = float(tl.frames / tl.fps)
    kbps = {k: os.path.getsize(p) * 8 / seconds / 1000 for k, p in
            (("chunked", joined), ("single", single))}
    db = {k: psnr_y(p, src, tl, str(tmp_path / f"{k}.log")) for k, p in
          (("chunked", joined), ("single", single))}
    with capsys.disabled():
        print(f"\n8 s 320x180 24 fps, 4 chunks at scene cuts, x264 veryfast crf 23: "
              f"chunked {kbps['chunked']:.1f} kb/s {db['chunked']:.3f} dB, "
              f"single {kbps['single']:.1f} kb/s {db['single']:.3f} dB")
    assert abs(kbps["chunked"] / kbps["single"] - 1) < 0.03
    assert abs(db["chunked"] - db["single"]) < 0.3


def test_an_fps_capped_track_is_compared_through_the_same_fps_filter(tmp_path):
    d = str(tmp_path)
    src = sources.make_scenes(d, "s60.mp4", fps=60, duration_s=3, width=160, height=90,
                              audio=False)
    tl = chunking.timeline(src)
    assert tl.fps == 60
    info = media.probe(src)
    capped = tracks.mp4_track(dict(SPEC, fps_max=30), info, "o1", timeline=tl)
    full = tracks.mp4_track(SPEC, info, "o2", timeline=tl)
    assert capped.fps == 30 and full.fps == 60
    cuts = sources.scene_cut_frames(fps=60, duration_s=3)
    chunks = chunking.make_chunks(tl, [c + c % 2 for c in cuts])  # even: 60 -> 30 keeps frame 0
    chunked(src, chunks, [capped, full], tmp_path / "w", tl.fps)
    for track in (capped, full):
        assert verify.check(chunks, track, work_dir=str(tmp_path / "w"), fps=tl.fps) == []
    steps = verify.plan("/w/o1.mp4", chunks, capped, input_path=src, ffmpeg_bin="ffmpeg",
                        work_dir=str(tmp_path / "x"), fps=tl.fps, timeline=tl)
    graph = steps[1].argv[steps[1].argv.index("-filter_complex") + 1]
    # The source's window through the track's fps filter, then the window's output frames.
    assert ",fps=30/1,select='between(t," in graph
    assert graph.count("scale=64:36,format=gray,settb=1/30") == 6  # both sides, 3 joins
    total, joins = verify.track_frames(chunks, capped, tl.fps)
    assert total == 90 and joins == [c // 2 for c in (chunks[1].start_frame,
                                                      chunks[2].start_frame,
                                                      chunks[3].start_frame)]


def test_a_vfr_track_keeps_the_source_times(tmp_path):
    src = sources.make_vfr(str(tmp_path), audio=False)
    tl = chunking.timeline(src)
    assert tl.fps is None
    track = VideoTrack(key="o0", chain="format=yuv420p",
                       args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "23"), fps=None)
    chunks = chunking.make_chunks(tl, [40, 70, 100])
    chunked(src, chunks, [track], tmp_path / "w", None)
    assert verify.check(chunks, track, work_dir=str(tmp_path / "w"), timeline=tl) == []
    # The same files against a timeline whose middle part is 1 frame longer: caught.
    moved = attr.evolve(tl, pts_s=tl.pts_s[:60] + tuple(t + 0.01 for t in tl.pts_s[60:]))
    problems = verify.check(chunks, track, work_dir=str(tmp_path / "w"), timeline=moved)
    at = tl.pts_s[60] - tl.pts_s[0]
    assert problems == [f"frame 60 is at {at:.6f} s, the source's at {at + 0.01:.6f} s"]


# --- the pure checks ---------------------------------------------------------------------

TB = Fraction(1, 12288)


def cfr(n, step=512):
    return [i * step for i in range(n)], [step] * n


def test_check_timestamps_good_cfr():
    pts, durs = cfr(48)
    assert verify.check_timestamps(pts, durs, TB, expected=48, fps=Fraction(24)) == []


def test_check_timestamps_finds_count_gap_overlap_duration_and_start():
    pts, durs = cfr(48)
    assert verify.check_timestamps(pts, durs, TB, expected=49, fps=Fraction(24)) == [
        "the video has 48 frames, 49 expected"]
    gap = pts[:20] + [p + 512 for p in pts[20:]]
    problems = verify.check_timestamps(gap, durs, TB, expected=48, fps=Fraction(24))
    assert problems[0] == ("a gap before frame 20 (0.791667 s to 0.875000 s: 83.333 ms, "
                           "not 41.667 ms)")
    assert problems[1].startswith("the video lasts 2.041667 s, not 2.000000 s")
    overlap = pts[:20] + [p - 100 for p in pts[20:]]
    assert verify.check_timestamps(overlap, durs, TB, expected=48, fps=Fraction(24))[0] == (
        "an overlap before frame 20 (0.791667 s to 0.825195 s: 33.529 ms, not 41.667 ms)")
    same = pts[:20] + [pts[19]] + pts[21:]
    assert "same time" in verify.check_timestamps(same, durs, TB, expected=48,
                                                  fps=Fraction(24))[0]
    late = [p + 100 for p in pts]
    assert verify.check_timestamps(late, durs, TB, expected=48, fps=Fraction(24)) == [
        "the video starts at 0.008138 s, not 0"]


def test_check_timestamps_ntsc_ticks():
    tb = Fraction(1, 30000)
    pts, durs = cfr(300, 1001)
    assert verify.check_timestamps(pts, durs, tb, expected=300, fps=Fraction(30000, 1001)) == []
    pts[150:] = [p + 1 for p in pts[150:]]  # one tick (33 us) late from the join on
    assert "gap before frame 150" in verify.check_timestamps(
        pts, durs, tb, expected=300, fps=Fraction(30000, 1001))[0]


def test_check_timestamps_vfr_against_the_timeline():
    times = (0.0, 1 / 24, 2 / 24, 2 / 24 + 1 / 30, 2 / 24 + 2 / 30)
    tl = Timeline(pts_s=tuple(t + 1.4 for t in times), start_s=1.4, end_s=1.4 + 2 / 24 + 3 / 30)
    tb = Fraction(1, 120)
    pts = [0, 5, 10, 14, 18]
    assert verify.check_timestamps(pts, [1] * 5, tb, expected=5, fps=None, timeline=tl) == []
    assert verify.check_timestamps([0, 5, 10, 15, 19], [1] * 5, tb, expected=5, fps=None,
                                   timeline=tl) == [
        "frame 3 is at 0.125000 s, the source's at 0.116667 s"]


def window(values, start):
    return {start + i: v for i, v in enumerate(values)}


def test_check_alignment_flags_a_drop_against_its_own_side():
    psnr = window([40, 41, 12, 45, 44, 46], 97)  # join at 100: frame 99 is the next scene's
    assert verify.check_alignment(psnr, [100], 200, fps=Fraction(24)) == [
        "chunk join at frame 100 (4.167 s): frame 99: PSNR 12.0 dB against 40.5 dB around it: "
        "the frames are shifted"]
    # Scenes differing by more than 10 dB on either side of the join are not a shift.
    assert verify.check_alignment(window([52, 53, 52, 30, 31, 29], 97), [100], 200) == []
    # Identical pictures (100 dB) beside a merely good one are not a shift either.
    assert verify.check_alignment(window([100, 100, 60, 100, 100, 100], 97), [100], 200) == []


def test_check_alignment_flags_a_frame_matching_its_neighbour_better():
    psnr = window([44, 45, 44, 50, 37, 36], 97)
    prev = window([30, 31, 30, 10, 49, 48], 97)
    nxt = window([31, 30, 10, 37, 36, 35], 97)
    assert verify.check_alignment(psnr, [100], 200, prev=prev, next_=nxt) == [
        "chunk join at frame 100: frame 101 matches the source frame before its own (PSNR 49.0 dB "
        "against 37.0 dB): the frames are shifted by one"]
    # Above SHIFT_FLOOR_DB nothing is called shifted.
    calm = {i: v + 10 for i, v in psnr.items()}
    assert verify.check_alignment(calm, [100], 200, prev={i: v + 20 for i, v in prev.items()},
                                  next_=nxt) == []


def test_check_alignment_missing_frames_and_short_sides():
    assert verify.check_alignment(window([40, 41, 40], 97), [100], 200) == [
        "chunk join at frame 100: frame 100 has no source frame to compare with (the video is "
        "shorter than the source)"]
    # A one-frame chunk has no neighbour on its side: nothing to compare, no problem.
    assert verify.check_alignment(window([40, 41, 40, 12, 40, 41, 40], 97), [100, 101], 200) == []


def test_check_reads_missing_lists_as_a_sentence(tmp_path):
    c = Chunk(index=0, start_frame=0, frames=24, start_s=0.0, end_s=1.0, seek_s=0.0,
              duration=Fraction(1))
    track = VideoTrack(key="o0", chain="", args=(), fps=Fraction(24))
    with pytest.raises(PermanentJobError, match="the merged video o0 could not be checked"):
        verify.check([c], track, work_dir=str(tmp_path), fps=Fraction(24))


def test_plan_steps_read_only_what_they_need(tmp_path):
    c = [Chunk(index=i, start_frame=24 * i, frames=24, start_s=float(i), end_s=float(i + 1),
               seek_s=i - 1 / 48 if i else 0.0, duration=Fraction(1)) for i in range(3)]
    tl = Timeline(pts_s=tuple(i / 24 for i in range(72)), start_s=0.0, end_s=3.0, fps=Fraction(24))
    track = VideoTrack(key="p0r2", chain="scale=64:36", args=(), fps=Fraction(24))
    steps = verify.plan("/w/p0r2.mp4", c, track, input_path="/src.mkv", ffmpeg_bin="ffmpeg",
                        work_dir=str(tmp_path), fps=Fraction(24), timeline=tl)
    assert [s.readable for s in steps] == [("/w/p0r2.mp4",), ("/w/p0r2.mp4", "/src.mkv")]
    assert not any(s.capped for s in steps)
    argv = steps[1].argv
    graph = argv[argv.index("-filter_complex") + 1]
    assert "between(pts,21,26)+between(pts,45,50)" in graph
    # Each window: the track's frames 21..26 and the source's 20..27, picked by time.
    assert "[0:v:0]select='between(t,0.854167,1.104167)'" in graph
    assert "[1:V:0]select='between(t,0.812500,1.145833)'" in graph
    assert "setpts=N+21[d0]" in graph and "setpts=N+20[s0]" in graph
    # Two inputs per window, each read for a few seconds only (-t); the video seeked to its
    # window, the source to PREROLL_S before it (not before 0: no -ss).
    assert argv.count("-i") == 4 and argv.count("-t") == 4
    assert argv[5:11] == ["-ss", "0.854167", "-t", "0.500000", "-i", "/w/p0r2.mp4"]
    assert argv[11:15] == ["-t", "1.395833", "-i", "/src.mkv"]
    assert "-copyts" in argv
    assert os.path.isdir(os.path.join(str(tmp_path), verify.RAW_DIR))
    # Windows closer than the source frames they need are one window; 8 joins a run.
    many = [Chunk(index=i, start_frame=24 * i, frames=24, start_s=float(i), end_s=float(i + 1),
                  seek_s=0.0, duration=Fraction(1)) for i in range(20)]
    long_tl = Timeline(pts_s=tuple(i / 24 for i in range(480)), start_s=0.0, end_s=20.0,
                       fps=Fraction(24))
    steps = verify.plan("/w/p0r2.mp4", many, track, input_path="/src.mkv", ffmpeg_bin="ffmpeg",
                        work_dir=str(tmp_path), fps=Fraction(24), timeline=long_tl)
    assert len(steps) == 1 + 3 and steps[-1].argv.count("-i") == 2 * 3
    assert "-ss" in steps[-1].argv
    assert verify.spans([Chunk(index=i, start_frame=s, frames=n, start_s=0.0, end_s=0.0,
                               seek_s=0.0, duration=Fraction(n, 24))
                         for i, (s, n) in enumerate([(0, 10), (10, 5), (15, 30)])],
                        track, Fraction(24)) == [(7, 17)]


def test_frame_count_of_a_real_file_is_checked(scenes, tmp_path):
    """A merged track cut one frame short fails on the count (and the timestamps)."""
    src, tl, chunks, track = scenes
    joined = chunked(src, chunks, [track], tmp_path, tl.fps)["o0"]
    short = str(tmp_path / "short.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", joined, "-map", "0:v", "-c", "copy",
                    "-frames:v", str(tl.frames - 1), short], check=True)
    run_verify(short, chunks, track, src, tmp_path, tl.fps, tl)
    problems = verify.check(chunks, track, work_dir=str(tmp_path), fps=tl.fps)
    assert problems[0] == f"the video has {tl.frames - 1} frames, {tl.frames} expected"


def test_only_the_windows_around_the_joins_are_decoded(tmp_path):
    """A 60 s source (keyframes every 2 s) cut in 4 chunks: the alignment runs
    decode a few seconds around each join of the track and of the source,
    not the 2 x 1440 frames of both files (counted by ffmpeg)."""
    src = sources.make_scenes(str(tmp_path), "long.mp4", width=160, height=90, duration_s=60,
                              audio=False, preset="ultrafast",
                              extra_args=("-force_key_frames", "expr:gte(t,n_forced*2)"))
    tl = chunking.timeline(src)
    assert tl.frames == 1440
    track = tracks.mp4_track(SPEC, media.probe(src), "o0", timeline=tl)
    chunks = chunking.make_chunks(tl, sources.scene_cut_frames(duration_s=60))
    work = tmp_path / "w"
    joined = chunked(src, chunks, [track], work, tl.fps, tl=tl)["o0"]
    assert verify.check(chunks, track, work_dir=str(work), fps=tl.fps) == []
    decoded = run_verify(joined, chunks, track, src, work, tl.fps, tl)
    aligned = sum(n for what, n in decoded.items() if "alignment" in what)
    assert list(decoded) == ["verify o0 (timestamps)", "verify o0 (alignment)"]
    # Per join: the source from a keyframe (<= 2 s) before the pre-roll, the video from one
    # before its window, each window and its -t slack.
    per_join_s = (2 + verify.PREROLL_S + 0.5) + (2 + verify.TRACK_PREROLL_S + 0.5)
    assert 0 < aligned <= 3 * 24 * per_join_s, decoded
    assert aligned < 0.2 * 2 * tl.frames, decoded


def test_windows_of_a_ts_source_come_from_its_matroska_copy(tmp_path):
    """A TS source is remuxed to Matroska (as the plan does); the chunks and
    the alignment windows are both cut from that copy, seeking in it."""
    ts = sources.make_ts(str(tmp_path), audio=True)
    mkv = str(tmp_path / "source.mkv")
    chunking.run(frames.remux_step(ts, mkv, "ffmpeg").argv)
    tl = chunking.timeline(mkv)
    track = tracks.mp4_track(SPEC, media.probe(ts), "o0", timeline=tl)
    chunks = chunking.make_chunks(tl, sources.scene_cut_frames(duration_s=8))
    work = tmp_path / "w"
    joined = chunked(mkv, chunks, [track], work, tl.fps, tl=tl)["o0"]
    steps = verify.plan(joined, chunks, track, input_path=mkv, ffmpeg_bin="ffmpeg",
                        work_dir=str(tmp_path / "plan"), fps=tl.fps, timeline=tl)
    argv = steps[1].argv
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == [joined, mkv] * 3 and ts not in argv
    # The last window's source input seeks in the copy (the first ones start at 0).
    last = len(argv) - 1 - argv[::-1].index(mkv)
    assert argv[last - 5] == "-ss" and float(argv[last - 4]) > 0
    assert verify.fallback_steps(joined, chunks, track, input_path=mkv, ffmpeg_bin="ffmpeg",
                                 work_dir=str(work), fps=tl.fps, timeline=tl) == []
    assert verify.check(chunks, track, work_dir=str(work), fps=tl.fps) == []
    psnr = verify.read_psnr_log(verify.raw_paths(str(work), "o0")["psnr"])
    assert len(psnr) == 3 * 6 and min(psnr.values()) > 35


def test_a_seek_landing_after_its_window_falls_back_to_decoding_from_the_start(
        scenes, tmp_path, monkeypatch):
    """With a negative pre-roll every seek lands half a second inside its
    window: the windows come out short, which is told apart from a shift;
    the fallback run decodes them from the start and the track passes."""
    src, tl, chunks, track = scenes
    joined = chunked(src, chunks, [track], tmp_path, tl.fps, tl=tl)["o0"]
    monkeypatch.setattr(verify, "PREROLL_S", -0.5)
    decoded = run_verify(joined, chunks, track, src, tmp_path, tl.fps, tl, fallback=False)
    problems = verify.check(chunks, track, work_dir=str(tmp_path), fps=tl.fps)
    a = chunks[1].start_frame
    assert problems[0].startswith(f"chunk join at frame {a} ({a / 24:.3f} s): its frames could "
                                  "not all be decoded ("), problems
    assert not shifted(problems), problems
    decoded = run_verify(joined, chunks, track, src, tmp_path, tl.fps, tl)
    assert "verify o0 (alignment from the start, 3 windows)" in decoded
    assert verify.check(chunks, track, work_dir=str(tmp_path), fps=tl.fps) == []
    # The same late seeks on a wrongly cut track: the fallback still finds the shift.
    late = [attr.evolve(c, seek_s=tl.pts_s[c.start_frame] - tl.start_s + 0.001) if c.index == 1
            else c for c in chunks]
    wrong = chunked(src, late, [track], tmp_path / "late", tl.fps, tl=tl)["o0"]
    run_verify(wrong, late, track, src, tmp_path / "late", tl.fps, tl)
    problems = verify.check(late, track, work_dir=str(tmp_path / "late"), fps=tl.fps)
    assert problems and shifted(problems) == problems, problems
