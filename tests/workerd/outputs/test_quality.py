"""Quality metrics (nommer.workerd.outputs.quality) on real ffmpeg runs.

Accuracy (issue 14): nommer's VMAF of a pair equals a direct libvmaf run of the
same binary on the same pair within 0.05; its PSNR equals ffmpeg's ``psnr``
filter within 0.01 dB (and SSIM the ``ssim`` filter's); frames pair by index
across time bases and start offsets (mp4 against mkv) and when the distorted
one is a rung whose frame rate was lowered. Then an mp4 output's and a
ladder's measurement as the outputs nommer runs it (plan, steps, finish).
"""

import json
import os
import re
import subprocess

import imageio_ffmpeg
import pytest

from nommer.core.errors import PermanentJobError
from nommer.core.outputs.normalize import normalize_output
from nommer.core.outputs.validate import validate_outputs
from nommer.workerd.outputs import mp4, package, quality
from nommer.workerd.outputs.vmaf import HOW_TO_ENABLE
from tests.workerd.outputs.media import build, ffmpeg, make_source, probe, run_steps

VMAF_BIN = os.path.realpath(imageio_ffmpeg.get_ffmpeg_exe())
ALL = ["vmaf", "psnr", "ssim"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 640x360 30 fps 3 s reference (mp4) and distorted versions of it."""
    d = str(tmp_path_factory.mktemp("quality"))
    ref = make_source(d, "ref.mp4", width=640, height=360, fps=30, duration_s=3, audio="stereo")
    out = {"dir": d, "ref": ref}
    # A lower-resolution encode in mp4 (time base 1/15360): scaled up to be measured.
    out["small"] = os.path.join(d, "small.mp4")
    ffmpeg("-i", ref, "-vf", "scale=320:180", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
           "-an", out["small"])
    # The same frames as the reference in Matroska (time base 1/1000), starting at 0.5 s.
    out["remux"] = os.path.join(d, "remux.mkv")
    ffmpeg("-i", ref, "-map", "0:v", "-c", "copy", "-output_ts_offset", "0.5", out["remux"])
    # The reference without its first frame, losslessly: a pairing off by one frame.
    out["shifted"] = os.path.join(d, "shifted.mkv")
    ffmpeg("-i", ref, "-vf", "trim=start_frame=1,setpts=PTS-STARTPTS", "-c:v", "libx264", "-qp", "0",
           "-an", out["shifted"])
    return out


def pair(tmp_path, distorted, reference, metrics=ALL, *, model="vmaf_v0.6.1", subsample=1, size=(640, 360),
         fps=30, vmaf_bin=VMAF_BIN, name="pair"):
    """Run ``quality.pair_step`` and return ``(pooled, frames, step)``."""
    log = str(tmp_path / name / "log.json")
    step = quality.pair_step(distorted, reference, metrics=metrics, model=model, subsample=subsample,
                             ffmpeg_bin="ffmpeg", vmaf_bin=vmaf_bin, log_path=log, ref_width=size[0],
                             ref_height=size[1], fps=fps, what=name)
    run_steps([step])
    pooled, frames = quality.read_report(log, metrics)
    return pooled, frames, step


def direct_libvmaf(tmp_path, distorted, reference, model="vmaf_v0.6.1"):
    """libvmaf run by hand with the same binary (the textbook command: the
    distorted scaled up with bicubic, no re-timing): its JSON log."""
    log = str(tmp_path / f"direct-{model}.json")
    subprocess.run([VMAF_BIN, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", distorted, "-i", reference,
                    "-lavfi", f"[0:v]scale=640:360:flags=bicubic[d];[d][1:v]libvmaf=model=version={model}:"
                              f"log_fmt=json:log_path={log}", "-f", "null", "-"], check=True, timeout=300)
    with open(log) as f:
        return json.load(f)


def direct_filter(binary, distorted, reference, name):
    """ffmpeg's ``psnr`` or ``ssim`` filter run by hand: the summary line it logs."""
    done = subprocess.run([binary, "-hide_banner", "-nostdin", "-i", distorted, "-i", reference, "-lavfi",
                           f"[0:v]scale=640:360:flags=bicubic[d];[d][1:v]{name}", "-f", "null", "-"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if f"{name.upper()} " in line][-1]


# --- accuracy -------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["vmaf_v0.6.1", "vmaf_v0.6.1neg"])
def test_vmaf_equals_a_direct_libvmaf_run(clips, tmp_path, model):
    pooled, frames, step = pair(tmp_path, clips["small"], clips["ref"], ["vmaf"], model=model)
    assert step.argv[0] == VMAF_BIN
    direct = direct_libvmaf(tmp_path, clips["small"], clips["ref"], model)
    scores = [f["metrics"]["vmaf"] for f in direct["frames"]]
    assert pooled["frames"] == len(scores) == 90
    for key in ("mean", "min", "harmonic_mean"):
        assert abs(pooled["vmaf"][key] - direct["pooled_metrics"]["vmaf"][key]) <= 0.05, key
    ordered = sorted(scores)
    assert abs(pooled["vmaf"]["p1"] - (ordered[0] + (ordered[1] - ordered[0]) * 0.89)) <= 0.05
    assert abs(pooled["vmaf"]["p5"] - (ordered[4] + (ordered[5] - ordered[4]) * 0.45)) <= 0.05
    assert [f["vmaf"] for f in frames] == pytest.approx(scores, abs=0.0001)
    assert 20 < pooled["vmaf"]["mean"] < 95  # a real, lossy score


@pytest.mark.parametrize("binary", ["system", "vmaf"])
def test_psnr_and_ssim_equal_ffmpegs_filters(clips, tmp_path, binary):
    """Whichever ffmpeg runs the step (the system's when VMAF is not asked, the
    VMAF binary's when it is), PSNR-Y is the psnr filter's ``y`` within 0.01 dB and
    SSIM the ssim filter's ``Y`` within 0.0001."""
    metrics = ["psnr", "ssim"] if binary == "system" else ALL
    pooled, frames, step = pair(tmp_path, clips["small"], clips["ref"], metrics)
    assert step.argv[0] == ("ffmpeg" if binary == "system" else VMAF_BIN)
    psnr_line = direct_filter("ffmpeg", clips["small"], clips["ref"], "psnr")
    ssim_line = direct_filter("ffmpeg", clips["small"], clips["ref"], "ssim")
    assert abs(pooled["psnr_y"] - float(re.search(r" y:([0-9.]+)", psnr_line).group(1))) <= 0.01
    assert abs(pooled["ssim"] - float(re.search(r" Y:([0-9.]+)", ssim_line).group(1))) <= 0.0001
    assert pooled["frames"] == len(frames) == 90
    assert 20 < pooled["psnr_y"] < 50 and 0.5 < pooled["ssim"] < 1


def test_frames_pair_across_time_bases_and_offsets(clips, tmp_path):
    """The reference's own frames in Matroska (time base 1/1000, starting at
    0.5 s) against the mp4 (1/15360, starting at 0): every frame pairs with
    itself (identical: PSNR_MAX_DB, SSIM 1). The control, the same frames
    shifted by one, scores far lower, so the check can fail."""
    pooled, frames, _ = pair(tmp_path, clips["remux"], clips["ref"], name="remux")
    assert pooled["frames"] == 90
    assert pooled["psnr_y"] == quality.PSNR_MAX_DB
    assert all(f["psnr_y"] == quality.PSNR_MAX_DB for f in frames)
    assert pooled["ssim"] == 1.0
    assert pooled["vmaf"]["min"] > 97
    shifted, _, _ = pair(tmp_path, clips["shifted"], clips["ref"], name="shifted")
    assert shifted["psnr_y"] < 40 and shifted["vmaf"]["mean"] < pooled["vmaf"]["mean"] - 3


def test_a_rung_with_its_frame_rate_lowered_pairs_frame_for_frame(tmp_path):
    """A 60 fps source and a lossless 30 fps rung of it: the rung's frame k is
    shown for source frames 2k and 2k+1, so every even frame is identical and
    all 120 source frames are measured."""
    d = str(tmp_path)
    src = make_source(d, "src60.mp4", fps=60, duration_s=2, audio=None)
    rung = os.path.join(d, "rung30.mp4")
    ffmpeg("-i", src, "-vf", "fps=30", "-c:v", "libx264", "-qp", "0", rung)
    pooled, frames, _ = pair(tmp_path, rung, src, ["psnr"], fps=60)
    assert pooled["frames"] == len(frames) == 120
    assert all(f["psnr_y"] == quality.PSNR_MAX_DB for f in frames if f["frame"] % 2 == 0)
    assert all(f["psnr_y"] < 60 for f in frames if f["frame"] % 2 == 1)


def test_subsampling_scores_every_nth_frame(clips, tmp_path):
    full, _, _ = pair(tmp_path, clips["small"], clips["ref"], ["vmaf"], name="full")
    sub, frames, step = pair(tmp_path, clips["small"], clips["ref"], ["vmaf"], subsample=3, name="sub")
    assert "n_subsample=3" in step.argv[step.argv.index("-filter_complex") + 1]
    assert [f["frame"] for f in frames] == list(range(0, 90, 3))
    assert sub["frames"] == 30
    assert abs(sub["vmaf"]["mean"] - full["vmaf"]["mean"]) < 1.0


def test_log_paths_with_graph_syntax_are_escaped(clips, tmp_path):
    """The logs' directory holds the characters a filter graph gives meaning to."""
    odd = tmp_path / "a:b,c'd [e];f"
    pooled, _, _ = pair(odd, clips["small"], clips["ref"], name="x")
    assert pooled["frames"] == 90
    assert sorted(os.listdir(odd / "x")) == ["log.json", "log.json.psnr.txt", "log.json.ssim.txt"]


def test_vmaf_without_the_binary_is_refused_with_the_fix(clips, tmp_path):
    with pytest.raises(PermanentJobError) as e:
        quality.pair_step(clips["small"], clips["ref"], metrics=ALL, model="vmaf_v0.6.1", subsample=1,
                          ffmpeg_bin="ffmpeg", vmaf_bin=None, log_path=str(tmp_path / "l.json"),
                          ref_width=640, ref_height=360, fps=30, what="a pair")
    assert HOW_TO_ENABLE in str(e.value)


def test_percentile_interpolates_between_ranks():
    assert quality.percentile([4, 1, 3, 2], 0) == 1
    assert quality.percentile([4, 1, 3, 2], 100) == 4
    assert quality.percentile(list(range(101)), 5) == 5
    assert quality.percentile([10, 20], 5) == pytest.approx(10.5)
    assert quality.percentile([7], 1) == 7


# --- an output's measurement --------------------------------------------------------------

def measure(spec, source, result, path, work_dir, vmaf_bin=VMAF_BIN):
    steps = quality.plan(spec, source, result, ffmpeg_bin="ffmpeg", vmaf_bin=vmaf_bin, input_path=path,
                         work_dir=work_dir)
    run_steps(steps)
    return steps, quality.finish(spec, source, result, steps, work_dir)


def test_an_mp4_output_gets_its_report_and_figures(clips, tmp_path):
    spec = validate_outputs([{"type": "mp4", "name": "sd/video.mp4", "height": 180, "crf": 30,
                              "encoder_preset": "veryfast", "quality": {}}])[0]
    work = str(tmp_path / "out")
    source, _, result = build(mp4, spec, clips["ref"], work)
    steps, measured = measure(spec, source, result, clips["ref"], work)
    assert len(steps) == 1
    assert [f.path for f in measured.files] == ["sd/video.mp4", "sd/video.mp4.quality.json"]
    report_file = measured.files[1]
    assert report_file.content_type == "application/json"
    assert report_file.bytes == os.path.getsize(report_file.local) > 0
    info = measured.info["quality"]
    assert set(info) == {"vmaf", "psnr_y", "ssim", "frames", "log"}
    assert set(info["vmaf"]) == {"mean", "min", "harmonic_mean", "p1", "p5"}
    assert info["log"] == "sd/video.mp4.quality.json" and info["frames"] == 90
    assert measured.info["width"] == 320  # the builder's info kept
    with open(report_file.local) as f:
        report = json.load(f)
    assert report["metrics"] == ALL and report["model"] == "vmaf_v0.6.1" and report["subsample"] == 1
    assert {k: v for k, v in report["pooled"].items()} == {k: v for k, v in info.items() if k != "log"}
    assert len(report["frames"]) == 90 and set(report["frames"][0]) == {"frame", "vmaf", "psnr_y", "ssim"}
    mean = sum(f["vmaf"] for f in report["frames"]) / 90
    assert abs(mean - info["vmaf"]["mean"]) < 0.01


def test_psnr_and_ssim_need_no_vmaf_binary(clips, tmp_path):
    spec = validate_outputs([{"type": "mp4", "height": 180, "encoder_preset": "ultrafast",
                              "quality": {"metrics": ["psnr", "ssim"]}}])[0]
    work = str(tmp_path / "out")
    source, _, result = build(mp4, spec, clips["ref"], work)
    steps, measured = measure(spec, source, result, clips["ref"], work, vmaf_bin=None)
    assert steps[0].argv[0] == "ffmpeg"
    assert set(measured.info["quality"]) == {"psnr_y", "ssim", "frames", "log"}


def test_vmaf_asked_on_a_worker_without_it_fails_with_the_fix(clips, tmp_path):
    spec = validate_outputs([{"type": "mp4", "height": 180, "encoder_preset": "ultrafast", "quality": {}}])[0]
    work = str(tmp_path / "out")
    source, _, result = build(mp4, spec, clips["ref"], work)
    with pytest.raises(PermanentJobError) as e:
        quality.plan(spec, source, result, ffmpeg_bin="ffmpeg", vmaf_bin=None, input_path=clips["ref"],
                     work_dir=work)
    assert HOW_TO_ENABLE in str(e.value)


def test_an_audio_merge_has_nothing_to_measure(clips, tmp_path):
    """Refused at submit (tests/core/test_outputs_validate.py); the worker refuses it too, for a
    job stored before that rule: normalized without validation here."""
    spec = normalize_output({"type": "mp4", "image_path": "file:///x.png", "quality": {}})
    with pytest.raises(PermanentJobError, match="audio merge"):
        quality.plan(spec, probe(clips["ref"]), None, ffmpeg_bin="ffmpeg", vmaf_bin=VMAF_BIN,
                     input_path=clips["ref"], work_dir=str(tmp_path))


LADDER = [{"height": 360, "bitrate": "800k"}, {"height": 180, "bitrate": "150k"}]


def test_a_ladder_is_measured_rung_by_rung_once_for_hls_and_dash(tmp_path):
    """A 60 fps source, an hls and a dash output over one set of segments, both
    asking the same quality: each rung (scaled up, its 30 fps brought back to
    60) is measured once, and both outputs list one report per rung and the
    same figures."""
    d = str(tmp_path)
    src = make_source(d, "src.mp4", fps=60, duration_s=2)
    hls, dash = validate_outputs([
        {"type": "hls", "ladder": LADDER, "encoder_preset": "veryfast", "quality": {}},
        {"type": "dash", "ladder": LADDER, "encoder_preset": "veryfast", "quality": {}}])
    work = os.path.join(d, "out")
    source, _, made = build(package, {"hls": hls, "dash": dash}, src, work)
    hls_steps, hls_result = measure(hls, source, made["hls"], src, work)
    dash_steps, dash_result = measure(dash, source, made["dash"], src, work)
    assert [s.what for s in hls_steps] == ["quality hls stream/ rung 180p", "quality hls stream/ rung 360p"]
    assert dash_steps == []
    rungs = hls_result.info["quality"]["rungs"]
    assert [(r["name"], r["width"], r["height"]) for r in rungs] == [("180p", 320, 180), ("360p", 640, 360)]
    for rung in rungs:
        assert rung["frames"] == 120 and rung["log"] == f"stream/{rung['name']}.quality.json"
        assert set(rung["vmaf"]) == {"mean", "min", "harmonic_mean", "p1", "p5"}
    assert rungs[1]["vmaf"]["mean"] > rungs[0]["vmaf"]["mean"] and rungs[1]["psnr_y"] > rungs[0]["psnr_y"]
    assert dash_result.info["quality"] == hls_result.info["quality"]
    for result in (hls_result, dash_result):
        reports = [f.path for f in result.files if f.path.endswith(quality.REPORT_SUFFIX)]
        assert reports == ["stream/180p.quality.json", "stream/360p.quality.json"]
    assert hls_result.info["rungs"] == made["hls"].info["rungs"]  # the builder's info kept

    # The dash output asking otherwise gets its own measurement and reports.
    other = dict(dash, quality={"metrics": ["psnr"], "model": "vmaf_v0.6.1", "subsample": 1})
    steps, result = measure(other, source, made["dash"], src, work)
    assert len(steps) == 2 and steps[0].argv[0] == "ffmpeg"
    assert [f.path for f in result.files if f.path.endswith(quality.REPORT_SUFFIX)] == [
        "stream/180p.dash.quality.json", "stream/360p.dash.quality.json"]
    assert set(result.info["quality"]["rungs"][0]) == {"name", "width", "height", "psnr_y", "frames", "log"}
