"""Pools (``nommer.core.pools``): the POOLS setting and its checks, queue names, each pool's fleet
and worker settings, a preset naming a pool, submit-time validation."""

import pytest

from nommer.conf import ConfigErrors, load_settings
from nommer.core.errors import InvalidJobSpec
from nommer.core.outputs.presets import PresetError, load_presets
from nommer.core.pools import (UnknownPool, all_job_queues, check_pool, fleet_settings, parse_pools, pool_names,
                               pool_queue, pool_queues, worker_settings)
from nommer.core.spec import validate_submission
from nommer.core.workqueue import redrive_policies

GPU = {"max_workers": 2, "fleet": {"EC2_INSTANCE_TYPES": ["g5.xlarge"], "EC2_MARKET": "on-demand"},
       "worker": {"MAX_ENCODING_JOBS_PER_WORKER": 3, "FFMPEG_TIMEOUT_S": 7200}}


def settings(**overrides):
    return load_settings(None, overrides=overrides)


def test_no_pools_is_todays_single_queue():
    s = settings()
    assert pool_names(s) == ["default"]
    assert pool_queues(s) == {"default": "media_nommer"}
    assert fleet_settings(s, "default") is s and worker_settings(s, ["default"]) is s
    assert all_job_queues(s) == ["media_nommer_high", "media_nommer", "media_nommer_low"]
    assert {p.dead_letter_queue for p in redrive_policies(s).values()} == {"media_nommer_dlq"}


def test_pools_queues_and_settings():
    s = settings(POOLS={"gpu": GPU, "large": {}}, MAX_NUM_WORKERS=8, EC2_FLEET_NAME="farm")
    assert pool_names(s) == ["default", "gpu", "large"]
    assert pool_queue(s, "gpu") == "media_nommer_gpu" and pool_queue(s) == "media_nommer"
    gpu = fleet_settings(s, "gpu")
    assert (gpu.MAX_NUM_WORKERS, gpu.MAX_NUM_EC2_INSTANCES, gpu.EC2_INSTANCE_TYPES, gpu.EC2_MARKET) == (
        2, 2, ["g5.xlarge"], "on-demand")
    assert gpu.EC2_FLEET_NAME == "farm-gpu" and gpu.MAX_ENCODING_JOBS_PER_WORKER == 3
    large = fleet_settings(s, "large")
    assert (large.MAX_NUM_WORKERS, large.EC2_FLEET_NAME) == (8, "farm-large")
    w = worker_settings(s, ["large", "gpu"])
    assert (w.MAX_ENCODING_JOBS_PER_WORKER, w.FFMPEG_TIMEOUT_S) == (3, 7200.0)
    assert s.MAX_ENCODING_JOBS_PER_WORKER == 1  # the global settings are untouched
    assert "media_nommer_gpu_low" in redrive_policies(s)
    with pytest.raises(UnknownPool, match="default, gpu, large"):
        check_pool(s, "tpu")
    assert parse_pools(" gpu, large,gpu ", s) == ["gpu", "large"]
    assert parse_pools("", s) == ["default"]


@pytest.mark.parametrize("pools, words", [
    ({"GPU": {}}, "expected a pool name"),
    ({"high": {}}, "reserved"),
    ({"gpu": {"fleet": {"API_PORT": 1}}}, "not a setting a pool's fleet may set"),
    ({"gpu": {"worker": {"MAX_ENCODING_JOBS_PER_WORKER": 0}}}, "expected an integer >= 1"),
    ({"gpu": {"max_workers": True}}, "expected an integer >= 1"),
    ({"gpu": {"cpus": 4}}, "unknown key"),
    ({"gpu": {"fleet": {"FLEET_BACKEND": "ec2"}}}, "needs EC2_AMI_ID"),
    ({"g" * 30: {}}, "longer than 80 characters"),
])
def test_bad_pools_refused(pools, words):
    overrides = {"POOLS": pools}
    if "g" * 30 in pools:
        overrides["NEW_JOB_QUEUE_NAME"] = "q" * 48
    with pytest.raises(ConfigErrors, match=words):
        settings(**overrides)


def test_pool_at_submit_and_from_a_preset(tmp_path):
    (tmp_path / "in.mp4").write_bytes(b"")
    s = settings(FILE_STORAGE_ROOTS=[str(tmp_path)], POOLS={"gpu": {}},
                 PRESETS={"gpu-mp4": {"description": "on the gpu", "outputs": [{"type": "mp4"}], "pool": "gpu"}})
    body = {"source_path": f"file://{tmp_path}/in.mp4", "dest_path": f"file://{tmp_path}/o.mp4",
            "outputs": [{"type": "mp4"}]}
    assert (validate_submission(body, s)["pool"], validate_submission(body, s)["priority"]) == ("default", 50)
    assert validate_submission(dict(body, pool="gpu", priority=99), s)["pool"] == "gpu"
    with pytest.raises(InvalidJobSpec, match="no pool named 'tpu'; this server's pools: default, gpu"):
        validate_submission(dict(body, pool="tpu"), s)
    preset = {k: v for k, v in body.items() if k != "outputs"}
    assert validate_submission(dict(preset, preset="gpu-mp4"), s)["pool"] == "gpu"
    assert validate_submission(dict(preset, preset="gpu-mp4", pool="default"), s)["pool"] == "default"
    assert load_presets(s)["gpu-mp4"]["pool"] == "gpu"


def test_preset_naming_an_unknown_pool_stops_feederd():
    s = settings(PRESETS={"tpu-mp4": {"description": "x", "outputs": [{"type": "mp4"}], "pool": "tpu"}})
    with pytest.raises(PresetError, match="tpu-mp4.*no pool named 'tpu'"):
        load_presets(s)
