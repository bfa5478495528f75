"""End to end, quality (issue 14): real feederd and workerd, real ffmpeg in the
sandbox. A compare job (the reference is the job's source, the distorted file
another URI) and an mp4 output asking for quality: their job documents show
the pooled figures, the per-frame reports are stored under the prefix. Bad
input: a compare of two files of different durations ends in ERROR saying so;
VMAF asked of a feederd that finds no VMAF-capable ffmpeg is a 400 with the
fix, while PSNR and SSIM go through and run on the system ffmpeg."""

import json
import os

import pytest

from nommer.workerd.outputs.vmaf import HOW_TO_ENABLE
from tests.e2e.harness import Feederd
from tests.e2e.test_e2e_outputs import files_under, run_job, submit
from tests.workerd.outputs.media import ffmpeg, make_source

FIGURES = {"vmaf", "psnr_y", "ssim", "frames"}
POOLS = {"mean", "min", "harmonic_mean", "p1", "p5"}


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


@pytest.fixture
def media(root):
    """A 3 s 640x360 reference, an encode of it in Matroska, and a 4 s clip."""
    ref = make_source(root, "ref.mp4", width=640, height=360, fps=30, duration_s=3)
    encode = os.path.join(root, "encode.mkv")
    ffmpeg("-i", ref, "-vf", "scale=426:240", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
           "-an", encode)
    longer = make_source(root, "longer.mp4", width=640, height=360, fps=30, duration_s=4, audio=None)
    return {"ref": ref, "encode": encode, "longer": longer}


def start(root, **settings):
    daemon = Feederd(root, MAX_NUM_WORKERS=1, **settings)
    daemon.start()
    return daemon


def test_compare_and_quality_jobs_show_their_figures(root, media):
    daemon = start(root)
    try:
        prefix = os.path.join(root, "out", "compare")
        job = run_job(daemon, {"source_path": f"file://{media['ref']}", "dest_path": f"file://{prefix}/",
                               "outputs": [{"type": "compare", "distorted": f"file://{media['encode']}",
                                            "name": "report.json"}]})
        assert job["job_state"] == "FINISHED", job
        (entry,) = job["outputs"]
        assert entry["type"] == "compare" and entry["name"] == "report.json"
        assert FIGURES <= set(entry) and set(entry["vmaf"]) == POOLS
        assert entry["frames"] == 90 and entry["model"] == "vmaf_v0.6.1"
        assert 0 < entry["vmaf"]["min"] <= entry["vmaf"]["mean"] < 100
        assert 20 < entry["psnr_y"] < 60 and 0 < entry["ssim"] < 1
        assert files_under(prefix) == ["report.json"]
        with open(os.path.join(prefix, "report.json")) as f:
            report = json.load(f)
        assert report["pooled"] == {k: entry[k] for k in FIGURES}
        assert len(report["frames"]) == 90

        prefix = os.path.join(root, "out", "title")
        job = run_job(daemon, {"source_path": f"file://{media['ref']}", "dest_path": f"file://{prefix}/",
                               "outputs": [{"type": "mp4", "name": "sd.mp4", "height": 240, "crf": 28,
                                            "encoder_preset": "veryfast",
                                            "quality": {"subsample": 2}}]})
        assert job["job_state"] == "FINISHED", job
        (entry,) = job["outputs"]
        q = entry["quality"]
        assert FIGURES <= set(q) and set(q["vmaf"]) == POOLS and q["log"] == "sd.mp4.quality.json"
        assert q["frames"] == 90  # PSNR and SSIM on every frame, VMAF on every other
        assert files_under(prefix) == ["sd.mp4", "sd.mp4.quality.json"]
        assert {f["path"] for f in entry["files"]} == {"sd.mp4", "sd.mp4.quality.json"}
        with open(os.path.join(prefix, "sd.mp4.quality.json")) as f:
            report = json.load(f)
        assert report["subsample"] == 2
        assert [f["frame"] for f in report["frames"] if "vmaf" in f] == list(range(0, 90, 2))

        # A ladder: hls and dash over one set of segments, each rung measured once, a report per rung.
        prefix = os.path.join(root, "out", "ladder")
        ladder = [{"height": 360, "bitrate": "600k"}, {"height": 180, "bitrate": "150k"}]
        common = {"ladder": ladder, "segment_s": 2, "encoder_preset": "veryfast", "quality": {}}
        job = run_job(daemon, {"source_path": f"file://{media['ref']}", "dest_path": f"file://{prefix}/",
                               "outputs": [{"type": "hls", **common}, {"type": "dash", **common}]})
        assert job["job_state"] == "FINISHED", job
        hls, dash = job["outputs"]
        assert hls["quality"] == dash["quality"]
        rungs = hls["quality"]["rungs"]
        assert [(r["name"], r["height"], r["frames"]) for r in rungs] == [("180p", 180, 90), ("360p", 360, 90)]
        assert rungs[0]["vmaf"]["mean"] < rungs[1]["vmaf"]["mean"]
        reports = ["stream/180p.quality.json", "stream/360p.quality.json"]
        assert all(r in files_under(prefix) for r in reports)
        assert all(r in {f["path"] for f in dash["files"]} for r in reports)

        prefix = os.path.join(root, "out", "bad")
        job = run_job(daemon, {"source_path": f"file://{media['ref']}", "dest_path": f"file://{prefix}/",
                               "outputs": [{"type": "compare", "distorted": f"file://{media['longer']}",
                                            "metrics": ["psnr"]}]})
        assert job["job_state"] == "ERROR", job
        assert ("the distorted file lasts 4.00 s and the reference 3.00 s: a compare needs the same "
                "duration") in job["job_state_details"], job
        assert not os.path.exists(prefix) or files_under(prefix) == []
    finally:
        daemon.stop()


def test_vmaf_without_the_binary_is_refused_at_submit(root, media):
    daemon = start(root, VMAF_FFMPEG_BIN="/usr/bin/ffmpeg")
    try:
        body = {"source_path": f"file://{media['ref']}", "dest_path": f"file://{root}/out/",
                "outputs": [{"type": "compare", "distorted": f"file://{media['encode']}"}]}
        status, answer = submit(daemon, body)
        assert status == 400, answer
        assert answer["error_code"] == "BADINPUT", answer
        assert answer["message"].startswith("outputs[0].metrics: asks for VMAF"), answer
        assert "VMAF_FFMPEG_BIN (/usr/bin/ffmpeg) has no libvmaf filter" in answer["message"]
        assert HOW_TO_ENABLE in answer["message"]

        body["outputs"] = [{"type": "mp4", "quality": {"metrics": ["vmaf"]}}]
        status, answer = submit(daemon, body)
        assert status == 400 and answer["message"].startswith("outputs[0].quality.metrics: "), answer

        # PSNR and SSIM need no VMAF: accepted, and measured by the system ffmpeg.
        body["outputs"] = [{"type": "compare", "distorted": f"file://{media['encode']}",
                            "metrics": ["psnr", "ssim"]}]
        job = run_job(daemon, body)
        assert job["job_state"] == "FINISHED", job
        (entry,) = job["outputs"]
        assert set(entry) >= {"psnr_y", "ssim", "frames"} and "vmaf" not in entry
    finally:
        daemon.stop()
