"""End to end, chunked encoding: real feederd and workerd subprocesses (two
workers), real ffmpeg in the sandbox, sources with scene cuts, B-frames,
irregular keyframes and audio shorter than the video (tests/workerd/chunks/sources.py).

Each chunked output is checked as the issue asks: frame count and duration,
constant timestamps, content aligned at every cut (PSNR by index against the
source), and against a single encode of the same output: bitrate within 3 %,
PSNR within 0.3 dB. Then the failure paths: a worker SIGKILLed in the middle
of a chunk (only that chunk is redone), feederd restarted between the last
chunk and the merge, a cancel during the chunk encodes."""

import json
import os
import signal
import subprocess
import time

from types import SimpleNamespace

import m3u8
import pytest

from nommer.workerd.chunks.tracks import mp4_track
from nommer.workerd.outputs.source import from_probe

from tests.e2e.harness import Feederd
from tests.e2e.test_e2e_outputs import FINAL, submit
from tests.workerd.chunks import sources

FFPROBE = "ffprobe"


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


def probe_video(path):
    """``(frames, duration_s, pts list)`` of the first video stream (packets counted)."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time", "-of", "csv=p=0", path], check=True, capture_output=True,
                         text=True).stdout
    pts = sorted(float(x.strip().rstrip(",")) for x in out.split() if x.strip().rstrip(","))
    info = json.loads(subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-of", "json", path],
                                     check=True, capture_output=True, text=True).stdout)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return len(pts), float(video.get("duration") or 0), pts


def audio_duration(path):
    info = json.loads(subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-of", "json", path],
                                     check=True, capture_output=True, text=True).stdout)
    audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
    return float(audio[0]["duration"]) if audio else None


def psnr_y(distorted, reference, fps):
    """Mean and per-frame luma PSNR of ``distorted`` against ``reference``, frames paired by index."""
    tb = f"1/{fps}"
    graph = (f"[0:v]settb={tb},setpts=N,format=yuv420p[a];[1:v]settb={tb},setpts=N,format=yuv420p[b];"
             f"[a][b]psnr=stats_file=-")
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-i", distorted, "-i", reference,
                          "-filter_complex", graph, "-f", "null", "-"], check=True, capture_output=True,
                         text=True).stdout
    frames = [float(part.split(":")[1]) for line in out.splitlines() for part in line.split()
              if part.startswith("psnr_y:")]
    return sum(frames) / len(frames), frames


def run(feederd, body, timeout_s=300):
    status, answer = submit(feederd, body)
    assert status == 200, answer
    return answer["job_id"], feederd.wait_for(answer["job_id"], lambda j: j["job_state"] in FINAL,
                                              timeout_s=timeout_s, what="a final state")


def video_bytes(path):
    """Bytes of the first video stream's packets."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", path], check=True, capture_output=True, text=True).stdout
    return sum(int(x.strip().rstrip(",")) for x in out.split() if x.strip().rstrip(","))


def assert_matches_a_single_encode(root, src, out, spec, fps, vfr=False):
    """The chunked ``out``'s video against the same output encoded whole: bitrate within 3 %,
    PSNR against the source within 0.3 dB. Returns the chunked one's per-frame PSNR."""
    single = os.path.join(root, "single.mp4")
    single_encode(src, single, spec, vfr=vfr)
    chunked_mean, per_frame = psnr_y(out, src, fps)
    single_mean, _ = psnr_y(single, src, fps)
    assert abs(chunked_mean - single_mean) < 0.3, (chunked_mean, single_mean)
    ratio = video_bytes(out) / video_bytes(single)
    assert abs(ratio - 1) < 0.03, ratio
    return per_frame


def single_encode(src, out, spec, vfr=False):
    """The same output's video encoded whole, with the encoder options its chunks use
    (``chunks.tracks.mp4_track``: the reference a chunked encode must match)."""
    probed = json.loads(subprocess.run([FFPROBE, "-v", "error", "-of", "json", "-show_format", "-show_streams",
                                        src], check=True, capture_output=True, text=True).stdout)
    normalized = dict({"codec": "h264", "height": None, "width": None, "fps_max": None}, **spec)
    track = mp4_track(normalized, from_probe(probed), "ref", timeline=SimpleNamespace(cfr=not vfr))
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", src, "-map", "0:v:0",
            "-vf", track.chain, *track.args, "-fps_mode", "passthrough"]
    argv += ["-enc_time_base", "-1"] if vfr else []
    subprocess.run(argv + ["-an", out], check=True)


MP4 = {"type": "mp4", "name": "video.mp4", "crf": 23, "encoder_preset": "veryfast"}


def test_chunked_mp4_is_frame_exact_and_matches_a_single_encode(root):
    src = sources.make_scenes(root, width=320, height=180, fps=24, duration_s=8, audio_duration_s=6.5)
    feederd = Feederd(root, MAX_NUM_WORKERS=2).start()
    try:
        job_id, job = run(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                                    "outputs": [MP4], "chunking": {"target_s": 2, "min_s": 2}})
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    chunks = job["chunks"]
    assert len(chunks) >= 3, chunks
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["state"] == "FINISHED" and c["attempts"] == 1 and c["worker_id"] for c in chunks), chunks
    assert sum(c["frames"] for c in chunks) == sources.total_frames(24, 8)
    for a, b in zip(chunks, chunks[1:]):
        assert a["end_s"] == pytest.approx(b["start_s"])
    out = os.path.join(root, "out", "video.mp4")
    frames, duration, pts = probe_video(out)
    assert frames == sources.total_frames(24, 8)
    assert abs(duration - frames / 24) < 0.001, duration
    deltas = [b - a for a, b in zip(pts, pts[1:])]
    assert max(abs(d - 1 / 24) for d in deltas) < 2e-6, sorted(set(deltas))  # pts_time has 6 digits
    # Audio encoded once: as long as an audio-only encode of the source's audio.
    audio_only = os.path.join(root, "audio_only.m4a")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-nostdin", "-y", "-i", src, "-vn", "-c:a", "aac",
                    "-b:a", "128k", "-ac", "2", "-ar", "48000", audio_only], check=True)
    assert audio_duration(out) == pytest.approx(audio_duration(audio_only), abs=0.001)
    # Content aligned at every cut, and as good and as big as a single encode.
    per_frame = assert_matches_a_single_encode(root, src, out, MP4, 24)
    for c in chunks[1:]:
        cut = round(c["start_s"] * 24)
        around = per_frame[max(0, cut - 3):cut + 4]
        assert min(around) > sum(per_frame) / len(per_frame) - 10, (cut, around)
    # The checkpoints are gone after the merge.
    chunk_dir = os.path.join(feederd.data_dir, "chunks")
    assert not os.path.isdir(chunk_dir) or not os.listdir(chunk_dir), os.listdir(chunk_dir)


def test_chunked_hls_ladder_from_a_ts_source(root):
    src = sources.make_ts(root, width=320, height=180, fps=24, duration_s=8)
    ladder = [{"height": 180, "bitrate": "400k"}, {"height": 144, "bitrate": "150k"}]
    feederd = Feederd(root, MAX_NUM_WORKERS=2).start()
    try:
        _, job = run(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                               "outputs": [{"type": "hls", "ladder": ladder, "segment_s": 2,
                                            "encoder_preset": "veryfast"}, MP4],
                               "chunking": {"target_s": 2, "min_s": 2}})
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    chunks = job["chunks"]
    assert len(chunks) >= 2
    # Ladder cuts on the 2 s keyframe grid.
    for c in chunks:
        assert (c["start_s"] / 2) == pytest.approx(round(c["start_s"] / 2), abs=1e-3), c
    master = m3u8.load(os.path.join(root, "out", "stream", "master.m3u8"))
    assert len(master.playlists) == 2
    variant = m3u8.load(os.path.join(root, "out", "stream", master.playlists[0].uri))
    assert sum(s.duration for s in variant.segments) == pytest.approx(8.0, abs=0.05)
    assert all(s.duration == pytest.approx(2.0, abs=0.01) for s in variant.segments[:-1])
    out = os.path.join(root, "out", "video.mp4")
    assert probe_video(out)[0] == sources.total_frames(24, 8)
    assert_matches_a_single_encode(root, src, out, MP4, 24)


def chunk_running(feederd, job_id):
    job = feederd.client.get(job_id)
    return job, [c for c in (job.get("chunks") or []) if c["state"] == "ENCODING"]


def test_worker_killed_mid_chunk_redoes_only_that_chunk(root):
    src = sources.make_scenes(root, width=640, height=360, fps=24, duration_s=8)
    feederd = Feederd(root, MAX_NUM_WORKERS=2, PROGRESS_WRITE_INTERVAL_S=0.2).start()
    slow = dict(MP4, encoder_preset="veryslow", crf=18)
    try:
        status, answer = submit(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                                          "outputs": [slow], "chunking": {"target_s": 2, "min_s": 1}})
        assert status == 200, answer
        job_id = answer["job_id"]
        job = feederd.wait_for(job_id, lambda j: chunk_running(feederd, j["job_id"])[1], timeout_s=120,
                               what="a chunk under way")
        victim = chunk_running(feederd, job_id)[1][0]
        os.kill(feederd.pid_of_worker(victim["worker_id"]), signal.SIGKILL)
        job = feederd.wait_for(job_id, lambda j: j["job_state"] in FINAL, timeout_s=300, what="a final state")
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    attempts = {c["index"]: c["attempts"] for c in job["chunks"]}
    assert attempts[victim["index"]] == 2, attempts
    assert all(n == 1 for i, n in attempts.items() if i != victim["index"]), attempts
    frames, duration, _ = probe_video(os.path.join(root, "out", "video.mp4"))
    assert frames == sources.total_frames(24, 8)


def test_cancel_during_chunks_stops_them_and_removes_the_checkpoints(root):
    src = sources.make_scenes(root, width=640, height=360, fps=24, duration_s=8)
    feederd = Feederd(root, MAX_NUM_WORKERS=2, PROGRESS_WRITE_INTERVAL_S=0.2).start()
    slow = dict(MP4, encoder_preset="veryslow", crf=18)
    try:
        status, answer = submit(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                                          "outputs": [slow], "chunking": {"target_s": 2, "min_s": 1}})
        job_id = answer["job_id"]
        feederd.wait_for(job_id, lambda j: any(c["state"] == "FINISHED" for c in j.get("chunks") or [])
                         and chunk_running(feederd, job_id)[1], timeout_s=180,
                         what="a chunk done and another under way")
        work_area = os.path.join(feederd.data_dir, "chunks", job_id)
        assert os.listdir(work_area)
        feederd.client.cancel(job_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (os.path.exists(work_area) or _encoding(job_id)):
            time.sleep(0.2)
        assert not os.path.exists(work_area) or not os.listdir(work_area)
        assert not _encoding(job_id)
        job = feederd.client.get(job_id)
    finally:
        feederd.stop()
    assert job["job_state"] == "CANCELED"
    assert not os.path.exists(os.path.join(root, "out", "video.mp4"))


def _encoding(job_id):
    """Whether an ffmpeg of the job's chunks still runs (its scratch dir is in its argv)."""
    out = subprocess.run(["pgrep", "-f", f"{job_id}-c"], capture_output=True, text=True).stdout
    return bool(out.split())


def test_feederd_restarted_between_the_last_chunk_and_the_merge(root):
    src = sources.make_scenes(root, width=320, height=180, fps=24, duration_s=8)
    feederd = Feederd(root, MAX_NUM_WORKERS=2).start()
    try:
        status, answer = submit(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                                          "outputs": [MP4], "chunking": {"target_s": 2, "min_s": 2}})
        job_id = answer["job_id"]
        feederd.wait_for(job_id, lambda j: j.get("chunks") and all(c["state"] == "FINISHED"
                                                                   for c in j["chunks"]),
                         timeout_s=180, what="every chunk done")
        feederd.stop()
        feederd.start()
        job = feederd.wait_for(job_id, lambda j: j["job_state"] in FINAL, timeout_s=180, what="a final state")
        events = list(feederd.client.job_events(job_id))
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    finished = [e for e in events if e["kind"] == "state" and e["state"] == "FINISHED"]
    assert len(finished) == 1
    frames, _, _ = probe_video(os.path.join(root, "out", "video.mp4"))
    assert frames == sources.total_frames(24, 8)


def test_vfr_source_keeps_its_timestamps_and_a_short_one_is_encoded_whole(root):
    parts = ((24, 72), (30, 90), (24, 72))  # 3 s at 24 fps, 3 s at 30, 3 s at 24: three scenes
    src = sources.make_vfr(root, parts=parts, scenes=True)
    short = sources.make_scenes(root, name="short.mp4", duration_s=2)
    # Chunks of at least 3 s: three, cut at the scene (and rate) changes.
    feederd = Feederd(root, MAX_NUM_WORKERS=1).start()
    try:
        job_id, job = run(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/",
                                    "outputs": [MP4], "chunking": {"target_s": 3, "min_s": 3}})
        events = list(feederd.client.job_events(job_id))
        _, whole = run(feederd, {"source_path": f"file://{short}", "dest_path": f"file://{root}/short/",
                                 "outputs": [MP4], "chunking": {"target_s": 2, "min_s": 2}})
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    assert len(job["chunks"]) >= 2
    _, _, source_pts = probe_video(src)
    frames, _, pts = probe_video(os.path.join(root, "out", "video.mp4"))
    assert frames == len(source_pts)
    start = source_pts[0]
    assert max(abs((a - pts[0]) - (b - start)) for a, b in zip(pts, source_pts)) < 0.002
    assert_matches_a_single_encode(root, src, os.path.join(root, "out", "video.mp4"), MP4, 24, vfr=True)
    kinds = [e["kind"] for e in events]
    assert kinds.count("chunk") >= 1 + 2 * len(job["chunks"]), kinds  # planned, then taken and done each
    assert "merge" in kinds
    # Two seconds cannot make two chunks of at least 2 s: encoded whole, no plan.
    assert whole["job_state"] == "FINISHED", whole
    assert whole["chunks"] is None
