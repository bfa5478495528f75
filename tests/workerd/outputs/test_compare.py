"""The compare output (nommer.workerd.outputs.compare) on real ffmpeg runs: a
distorted file measured against the job's source, the per-frame report, the
duration check."""

import json
import os

import imageio_ffmpeg
import pytest

from nommer.core.errors import PermanentJobError
from nommer.core.outputs.validate import validate_outputs
from nommer.workerd.outputs import compare, quality
from tests.workerd.outputs.media import build, ffmpeg, ffprobe_json, make_source, probe, run_steps

VMAF_BIN = os.path.realpath(imageio_ffmpeg.get_ffmpeg_exe())


def spec_of(**fields):
    return validate_outputs([{"type": "compare", "distorted": "file:///distorted.mkv", **fields}])[0]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("compare"))
    ref = make_source(d, "ref.mp4", width=640, height=360, fps=30, duration_s=3)
    out = {"ref": ref}
    out["mkv"] = os.path.join(d, "distorted.mkv")
    ffmpeg("-i", ref, "-c:v", "libx264", "-preset", "veryfast", "-crf", "32", "-c:a", "copy", out["mkv"])
    out["long"] = make_source(d, "long.mkv", width=640, height=360, fps=30, duration_s=4, audio=None)
    out["frame_short"] = os.path.join(d, "frame-short.mkv")
    ffmpeg("-i", ref, "-vf", "trim=end_frame=89", "-c:v", "libx264", "-preset", "ultrafast", "-an",
           out["frame_short"])
    out["half_fps"] = os.path.join(d, "half-fps.mp4")
    ffmpeg("-i", ref, "-vf", "fps=15,scale=320:180", "-c:v", "libx264", "-preset", "ultrafast", "-an",
           out["half_fps"])
    return out


def run_compare(spec, clips, distorted, tmp_path, vmaf_bin=VMAF_BIN):
    return build(compare, spec, clips["ref"], str(tmp_path / "out"), distorted_input=distorted,
                 vmaf_bin=vmaf_bin)


def test_a_compare_reports_pooled_figures_and_frames(clips, tmp_path):
    spec = spec_of(name="reports/compare.json")
    source, steps, result = run_compare(spec, clips, clips["mkv"], tmp_path)
    assert [s.argv[0] for s in steps] == ["ffmpeg", VMAF_BIN]
    assert [f.path for f in result.files] == ["reports/compare.json"]
    report_file = result.files[0]
    assert report_file.content_type == "application/json"
    info = result.info
    assert set(info) == {"vmaf", "psnr_y", "ssim", "frames", "model", "subsample"}
    assert set(info["vmaf"]) == {"mean", "min", "harmonic_mean", "p1", "p5"}
    assert info["frames"] == 90 and info["model"] == "vmaf_v0.6.1"
    assert info["vmaf"]["min"] <= info["vmaf"]["p1"] <= info["vmaf"]["p5"] <= info["vmaf"]["mean"] < 100
    assert 25 < info["psnr_y"] < 50 and 0.8 < info["ssim"] < 1
    with open(report_file.local) as f:
        report = json.load(f)
    assert report["pooled"] == {k: info[k] for k in ("vmaf", "psnr_y", "ssim", "frames")}
    assert [f["frame"] for f in report["frames"]] == list(range(90))

    # The same pair measured directly by quality.pair_step gives the same figures.
    log = str(tmp_path / "direct" / "log.json")
    run_steps([quality.pair_step(clips["mkv"], clips["ref"], metrics=["vmaf", "psnr", "ssim"],
                                 model="vmaf_v0.6.1", subsample=1, ffmpeg_bin="ffmpeg", vmaf_bin=VMAF_BIN,
                                 log_path=log, ref_width=640, ref_height=360, fps=source.fps,
                                 what="direct")])
    assert quality.read_log(log, ["vmaf", "psnr", "ssim"]) == report["pooled"]


def test_psnr_only_compare_runs_on_the_system_ffmpeg(clips, tmp_path):
    spec = spec_of(metrics=["psnr"])
    _, steps, result = run_compare(spec, clips, clips["mkv"], tmp_path, vmaf_bin=None)
    assert [s.argv[0] for s in steps] == ["ffmpeg", "ffmpeg"]
    assert set(result.info) == {"psnr_y", "frames"}


def test_different_durations_are_refused(clips, tmp_path):
    spec = spec_of(metrics=["psnr"])
    with pytest.raises(PermanentJobError) as e:
        run_compare(spec, clips, clips["long"], tmp_path)
    assert str(e.value) == ("the distorted file lasts 4.00 s and the reference 3.00 s: a compare needs "
                            "the same duration")


def test_one_frame_short_is_accepted(clips, tmp_path):
    _, _, result = run_compare(spec_of(metrics=["psnr"]), clips, clips["frame_short"], tmp_path)
    assert result.info["frames"] == 90  # the last distorted frame stands for the missing one


def test_a_lower_frame_rate_distorted_is_paired_on_the_references_frames(clips, tmp_path):
    _, _, result = run_compare(spec_of(metrics=["psnr", "ssim"]), clips, clips["half_fps"], tmp_path)
    assert result.info["frames"] == 90


def test_packet_durations_read_as_ffprobe_sees_them(clips, tmp_path):
    """The duration step's file gives each video's length: the mkv (1/1000) and the mp4."""
    spec = spec_of()
    work = str(tmp_path / "w")
    os.makedirs(work)
    steps = compare.plan(spec, probe(clips["ref"]), ffmpeg_bin="ffmpeg", input_path=clips["ref"],
                         work_dir=work, distorted_input=clips["long"], vmaf_bin=VMAF_BIN)
    run_steps(steps[:1])
    durations = compare.read_packet_durations(os.path.join(work, compare.RAW_DIR, "compare.json.packets.txt"))
    assert durations == {0: pytest.approx(4.0, abs=0.002), 1: pytest.approx(3.0, abs=0.002)}
    video = [s for s in ffprobe_json(clips["ref"], "-show_streams")["streams"] if s["codec_type"] == "video"][0]
    assert durations[1] == pytest.approx(float(video["duration"]), abs=0.002)


def test_check_durations_tolerates_one_frame():
    compare.check_durations(3.0, 3.0 + 1 / 30, 30)
    with pytest.raises(PermanentJobError):
        compare.check_durations(3.0, 3.0 + 2 / 30, 30)
    compare.check_durations(3.0, 3.09, None)  # unknown rate: 0.1 s
    with pytest.raises(PermanentJobError):
        compare.check_durations(3.0, 3.2, None)


def test_a_reference_without_video_is_refused(tmp_path):
    src = make_source(str(tmp_path), "a.m4a", video=False)
    with pytest.raises(PermanentJobError, match="reference .* has no video"):
        compare.plan(spec_of(), probe(src), ffmpeg_bin="ffmpeg", input_path=src, work_dir=str(tmp_path),
                     distorted_input=src, vmaf_bin=VMAF_BIN)
