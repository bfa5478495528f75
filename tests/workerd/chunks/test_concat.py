"""nommer.workerd.chunks.concat: the concat list with exact durations and the
stream-copy join: the joined track has every frame, lasts frames/fps to the
millisecond, and its frames are evenly spaced across the joins."""

import os
import subprocess
from fractions import Fraction

import pytest

from nommer.workerd.chunks import concat, encode
from nommer.workerd.outputs.framecrc import read_framecrc
from nommer.workerd.chunks.model import VideoTrack
from tests.workerd.chunks import chunking, sources
from tests.workerd.outputs import media

TRACK = VideoTrack(key="o0", chain="scale=160:90,setsar=1,format=yuv420p",
                   args=("-c:v", "libx264", "-preset", "veryfast", "-crf", "26"))


def test_list_text_names_each_chunk_with_its_duration():
    text = concat.list_text([("chunk_00000_o0.mp4", Fraction(58, 24)),
                             ("chunk_00001_o0.mp4", Fraction(48, 24)),
                             ("chunk_00002_o0.mp4", "1001/30000"),
                             ("chunk_00003_o0.mp4", 0.5)])
    assert text == ("ffconcat version 1.0\n"
                    "file 'chunk_00000_o0.mp4'\nduration 2.416667000\n"
                    "file 'chunk_00001_o0.mp4'\nduration 2.000000000\n"
                    "file 'chunk_00002_o0.mp4'\nduration 0.033366000\n"
                    "file 'chunk_00003_o0.mp4'\nduration 0.500000000\n")


def test_list_text_durations_add_up_exactly_over_many_chunks():
    """Each duration is within 1 us of the chunk's, and every running sum
    (where ffmpeg starts the next chunk) within 0.5 us of the exact one:
    no drift however many chunks."""
    lengths = [Fraction(n * 1001, 30000) for n in (317, 299, 1201, 33, 450) * 200]
    text = concat.list_text([(f"chunk_{i:05d}_o0.mp4", d) for i, d in enumerate(lengths)])
    written = [line.split()[1] for line in text.splitlines() if line.startswith("duration ")]
    assert len(written) == len(lengths)
    running_us, exact = 0, Fraction(0)
    for got, want in zip(written, lengths):
        assert got.endswith("000") and len(got.split(".")[1]) == 9
        us = int(got.replace(".", "")) // 1000  # ffmpeg reads microseconds
        assert abs(Fraction(us, 10 ** 6) - want) <= Fraction(1, 10 ** 6)
        running_us += us
        exact += want
        assert abs(Fraction(running_us, 10 ** 6) - exact) <= Fraction(1, 2 * 10 ** 6)


@pytest.mark.parametrize("name", ["../chunk.mp4", "/tmp/chunk.mp4", "a/b.mp4", "a b.mp4",
                                  "it's.mp4", "x.mp4\nfile '/etc/passwd'", "", ".hidden", None,
                                  "a..mp4"])
def test_list_text_refuses_anything_but_a_plain_base_name(name):
    with pytest.raises(ValueError):
        concat.list_text([(name, Fraction(1))])


@pytest.mark.parametrize("duration", [0, -1, Fraction(0), "0/1"])
def test_list_text_refuses_a_duration_that_is_not_positive(duration):
    with pytest.raises(ValueError):
        concat.list_text([("chunk_00000_o0.mp4", duration)])


def test_list_text_refuses_an_empty_list():
    with pytest.raises(ValueError):
        concat.list_text([])


def test_plan_argv(tmp_path):
    step = concat.plan("/w/list.txt", "/w/video.mp4", ffmpeg_bin="ffmpeg", expected_s=8.0)
    assert step.argv == ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-f", "concat", "-safe", "0",
                         "-i", "/w/list.txt", "-map", "0:v", "-c", "copy", "-f", "mp4",
                         "-progress", "pipe:1", "-nostats", "/w/video.mp4"]
    assert step.readable == ("/w/list.txt",) and step.expected_s == 8.0
    with_audio = concat.plan("/w/list.txt", "/w/out.mp4", ffmpeg_bin="ffmpeg",
                             audio_path="/w/audio.m4a", faststart=True).argv
    assert with_audio[with_audio.index("-map"):with_audio.index("-progress")] == [
        "-map", "0:v", "-map", "1:a", "-c", "copy", "-movflags", "+faststart", "-f", "mp4"]


def join(src, cuts, work_dir, audio_path=None):
    """Encode ``src`` in chunks cut at ``cuts``, join them: (timeline, chunks, joined path)."""
    os.makedirs(str(work_dir), exist_ok=True)
    tl = chunking.timeline(src)
    chunks = chunking.make_chunks(tl, cuts)
    track = VideoTrack(key=TRACK.key, chain=TRACK.chain, args=TRACK.args, fps=tl.fps)
    for c in chunks:
        chunking.run(encode.plan(c, [track], ffmpeg_bin="ffmpeg", input_path=src,
                                 work_dir=str(work_dir), fps=tl.fps).argv)
    list_path = os.path.join(str(work_dir), "list.txt")
    with open(list_path, "w") as f:
        f.write(concat.list_text([(encode.chunk_file_name(c.index, "o0"), c.duration)
                                  for c in chunks]))
    out = os.path.join(str(work_dir), "joined.mp4")
    chunking.run(concat.plan(list_path, out, ffmpeg_bin="ffmpeg", audio_path=audio_path,
                             faststart=bool(audio_path)).argv)
    return tl, chunks, out


def packet_ticks(path, work_dir):
    """``(sorted pts, durations, time base)`` of the video of ``path`` (framecrc)."""
    listing = os.path.join(str(work_dir), "packets.txt")
    chunking.run(["ffmpeg", "-v", "error", "-y", "-i", path, "-map", "0:v:0", "-c", "copy",
                  "-f", "framecrc", listing])
    packets, tbs = read_framecrc(listing)
    pts = sorted(p for p, _ in packets[0])
    last = max(packets[0])[1]
    return pts, last, Fraction(*tbs[0])


@pytest.mark.parametrize("fps,cuts", [(24, [58, 106, 154]),
                                      ("30000/1001", [37, 76, 101])])
def test_joined_chunks_are_cfr_with_every_frame(fps, cuts, tmp_path):
    if fps == 24:
        src = sources.make_scenes(str(tmp_path), duration_s=8, audio=False)
    else:
        src = media.make_source(str(tmp_path), "ntsc.mp4", width=320, height=180, fps=fps,
                                duration_s=4, audio=None)
    tl, chunks, out = join(src, cuts, tmp_path / "w")
    assert len(chunks) == 4
    rate = Fraction(fps)
    pts, last, tb = packet_ticks(out, tmp_path)
    n = tl.frames
    assert len(pts) == n
    deltas = {b - a for a, b in zip(pts, pts[1:])}
    assert len(deltas) == 1, f"uneven frame intervals at the joins: {sorted(deltas)}"
    assert deltas.pop() * tb == 1 / rate
    assert pts[0] == 0
    duration = (pts[-1] + last - pts[0]) * tb
    assert abs(duration - n / rate) < Fraction(1, 1000)
    probed = media.ffprobe_json(out, "-show_streams")
    video = media.streams(probed, "video")[0]
    assert abs(float(video["duration"]) - float(n / rate)) < 0.001
    assert int(video["nb_frames"]) == n


def test_the_audio_encoded_once_is_muxed_in(tmp_path):
    src = sources.make_scenes(str(tmp_path), duration_s=4)
    audio = os.path.join(str(tmp_path), "audio.m4a")
    chunking.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-map", "0:a:0", "-c:a", "aac",
                  "-b:a", "64k", audio])
    tl, chunks, out = join(src, sources.scene_cut_frames(duration_s=4), tmp_path / "w",
                           audio_path=audio)
    probed = media.ffprobe_json(out, "-show_streams")
    assert [s["codec_type"] for s in probed["streams"]] == ["video", "audio"]
    a_only = media.ffprobe_json(audio, "-show_streams")["streams"][0]
    assert media.streams(probed, "audio")[0]["duration"] == a_only["duration"]
    assert int(media.streams(probed, "video")[0]["nb_frames"]) == tl.frames
    # faststart: moov before mdat.
    boxes = subprocess.run(["ffprobe", "-v", "trace", out], capture_output=True, text=True).stderr
    assert boxes.index("type:'moov'") < boxes.index("type:'mdat'")
