"""Priorities, batch submit, retry and pools end to end: real ``twistd feederd`` starting real
``twistd workerd`` children (one local fleet per pool), real ffmpeg on tiny clips, driven through
the client library; on the local backends (SQLite, local queue) and on DynamoDB + SQS (moto)."""

import json
import os
import shutil
import time

import pytest

from nommer.client.api import BadInput, Conflict
from tests.aws_server import moto_endpoint, reset_moto
from tests.e2e.harness import Feederd
from tests.helpers import cli_against
from tests.workerd.media import clip

FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
MP4 = [{"type": "mp4", "height": 144, "encoder_preset": "ultrafast"}]


def put_clip(root, name):
    path = os.path.join(root, name)
    shutil.copy(clip(seconds=1, size="320x180"), path)
    return path


def wait_all(daemon, job_ids, timeout_s=180):
    return {job_id: daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=timeout_s) for job_id in job_ids}


def run_pools(daemon, root):
    """A gpu job and a default job: each FINISHED by a worker of its own pool (local fleet ids name
    the pool); an unknown pool is refused naming the pools."""
    src = put_clip(root, "in.mp4")
    gpu = daemon.client.submit(f"file://{src}", f"file://{root}/gpu.mp4", outputs=MP4, pool="gpu")
    cpu = daemon.client.submit(f"file://{src}", f"file://{root}/cpu.mp4", outputs=MP4)
    jobs = wait_all(daemon, [gpu, cpu])
    assert {j["job_state"] for j in jobs.values()} == {"FINISHED"}, (jobs, daemon.log())
    assert (jobs[gpu]["pool"], jobs[cpu]["pool"]) == ("gpu", "default")
    assert "-gpu-w" in jobs[gpu]["worker_id"], jobs[gpu]
    assert "-gpu-" not in jobs[cpu]["worker_id"], jobs[cpu]
    assert os.path.getsize(f"{root}/gpu.mp4") > 0 and os.path.getsize(f"{root}/cpu.mp4") > 0
    with pytest.raises(BadInput, match="no pool named 'tpu'; this server's pools: default, gpu"):
        daemon.client.submit(f"file://{src}", f"file://{root}/x.mp4", outputs=MP4, pool="tpu")


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


def test_pools_on_local_backends(root):
    daemon = Feederd(root, POOLS={"gpu": {"max_workers": 1}}, MAX_NUM_WORKERS=1).start()
    try:
        run_pools(daemon, root)
    finally:
        daemon.stop()


def test_pools_on_dynamodb_and_sqs(tmp_path):
    """The same on DynamoDB + SQS (moto): the gpu pool's jobs go through media_nommer_gpu."""
    endpoint = moto_endpoint()
    reset_moto()
    root = str(tmp_path)
    daemon = Feederd(root, POOLS={"gpu": {"max_workers": 1}}, MAX_NUM_WORKERS=1, JOB_STORE_BACKEND="dynamodb",
                     WORK_QUEUE_BACKEND="sqs", AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1",
                     DYNAMODB_JOB_TABLE="nommer_jobs_pools", CONFIG_S3_BUCKET="nommer-config-pools",
                     QUEUE_WAIT_TIME_S=1.0, HEARTBEAT_INTERVAL_S=1.0).start(timeout_s=60)
    try:
        run_pools(daemon, root)
        import boto3
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        names = {url.rsplit("/", 1)[1] for url in sqs.list_queues()["QueueUrls"]}
        assert {"media_nommer", "media_nommer_gpu", "media_nommer_gpu_high", "media_nommer_dlq"} <= names, names
    finally:
        daemon.stop()


def test_priority_batch_and_retry(root):
    """One worker, through the `nommer` command: a batch of low jobs (and a bad item, refused
    alone), then a high job, which starts before the low ones still waiting. A job that failed on a
    broken source is retried once the source is fixed and finishes, its event log keeping both runs."""
    daemon = Feederd(root, MAX_NUM_WORKERS=1).start()
    run = cli_against(f"http://127.0.0.1:{daemon.port}")
    try:
        src = put_clip(root, "in.mp4")
        batch = os.path.join(root, "batch.json")
        with open(batch, "w") as f:
            json.dump({"common": {"outputs": MP4, "priority": 10}, "sources": [
                *({"source_path": f"file://{src}", "dest_path": f"file://{root}/low{i}.mp4"} for i in range(4)),
                {"source_path": f"file://{src}", "dest_path": f"file://{root}/bad.mp4", "priority": 101}]}, f)
        result = run("batch", batch)
        assert result.exit_code == 1, result.output  # one item refused, the others submitted
        lines = result.stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4"], lines
        assert lines[4].startswith("4 BADINPUT: priority:"), lines
        lows = [line.split()[1] for line in lines[:4]]
        outputs = os.path.join(root, "mp4.json")
        with open(outputs, "w") as f:
            json.dump(MP4, f)
        result = run("submit", src, f"{root}/high.mp4", "--outputs", outputs, "--priority", "90")
        assert result.exit_code == 0, result.output
        high = result.stdout.strip()
        jobs = wait_all(daemon, lows + [high])
        assert {j["job_state"] for j in jobs.values()} == {"FINISHED"}, daemon.log()
        assert (jobs[high]["priority"], jobs[lows[0]]["priority"]) == (90, 10)
        lows_before = [j for j in jobs.values() if j["priority"] == 10 and j["started_at"] < jobs[high]["started_at"]]
        assert len(lows_before) <= 1, jobs  # at most the one the worker had taken before the high came

        broken = os.path.join(root, "broken.mp4")
        with open(broken, "wb") as f:
            f.write(b"this is not a video")
        job_id = daemon.client.submit(f"file://{broken}", f"file://{root}/fixed.mp4", outputs=MP4)
        failed = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=120)
        assert failed["job_state"] == "ERROR", failed
        shutil.copy(src, broken)
        result = run("retry", job_id)
        assert (result.exit_code, result.stdout.strip()) == (0, f"{job_id} PENDING (retry 1)"), result.output
        done = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=120)
        assert (done["job_state"], done["attempts"], done["retries"]) == ("FINISHED", 1, 1), done
        with pytest.raises(Conflict):
            daemon.client.retry(job_id)
        if hasattr(daemon.client, "job_events"):
            deadline = time.monotonic() + 10  # the STATE event is stored just after the state
            while True:
                kinds = [(e["kind"], e.get("state")) for e in daemon.client.job_events(job_id)]
                if ("state", "FINISHED") in kinds or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            order = [kinds.index(k) for k in (("state", "ERROR"), ("retry", "PENDING"), ("state", "FINISHED"))]
            assert order == sorted(order), kinds
    finally:
        daemon.stop()
