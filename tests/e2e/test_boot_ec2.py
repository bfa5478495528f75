"""The EC2 fleet end to end: a real ``twistd feederd`` with FLEET_BACKEND
"ec2" launches instances on moto; ``Ec2Player`` boots each one from its user
data and the worker unit (tests/e2e/ec2_boot.py) with a fake IMDS answering
for it. Jobs go through DynamoDB, SQS and S3 (moto)."""

import time

import boto3
import pytest

from tests.aws_server import moto_endpoint, reset_moto
from tests.e2e.ec2_boot import Ec2Player
from tests.e2e.harness import Feederd
from tests.e2e.test_e2e import ffprobe, realtime_pass
from tests.workerd.media import clip

COPY = [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}]
FLEET = "e2e-fleet"


@pytest.fixture
def aws():
    endpoint = moto_endpoint()
    reset_moto()
    session = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    s3 = boto3.client("s3", **session)
    for bucket in ("media-in", "media-out"):
        s3.create_bucket(Bucket=bucket)
    ec2 = boto3.client("ec2", **session)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    boto3.client("iam", **session).create_instance_profile(InstanceProfileName="nommer-worker")
    ec2.create_security_group(GroupName="media_nommer", Description="nommer workers")  # EC2_SECURITY_GROUPS
    return {"endpoint": endpoint, "s3": s3, "ec2": ec2, "ami": ami}


@pytest.fixture
def fleet(aws, tmp_path):
    feederd = Feederd(str(tmp_path), FLEET_BACKEND="ec2", EC2_AMI_ID=aws["ami"], EC2_FLEET_NAME=FLEET,
                      EC2_INSTANCE_TYPES=["c7i.large", "m7i.large"], EC2_IAM_INSTANCE_PROFILE="nommer-worker",
                      MAX_NUM_EC2_INSTANCES=2, MAX_ENCODING_JOBS_PER_WORKER=1, JOB_OVERFLOW_THRESH=0,
                      JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs", AWS_ENDPOINT_URL=aws["endpoint"],
                      AWS_REGION="us-east-1", DYNAMODB_JOB_TABLE="nommer_jobs_boot",
                      DYNAMODB_WORKER_TABLE="nommer_workers_boot", CONFIG_S3_BUCKET="nommer-config-boot",
                      JOB_LEASE_S=3.0, HEARTBEAT_INTERVAL_S=0.5, QUEUE_WAIT_TIME_S=1.0,
                      WORKER_MAX_IDLE_S=4.0, EC2_BOOT_TIMEOUT_S=60.0, WORKER_HEARTBEAT_TIMEOUT_S=30.0,
                      SPOT_INTERRUPTION_POLL_S=0.5, AUTOSCALE_INTERVAL_S=0.5, EC2_SPOT_PRICE_PER_HOUR=0.035)
    feederd.start(timeout_s=60)
    player = Ec2Player(aws["endpoint"], str(tmp_path), fleet_name=FLEET).start()
    yield feederd, player
    player.stop()
    feederd.stop()


def test_instances_boot_register_encode_and_terminate_themselves(aws, fleet, tmp_path):
    """Jobs wait -> feederd launches (never more than the max) -> each instance boots from its user data,
    registers, encodes; the jobs end FINISHED; then every worker idles out and terminates its own instance."""
    feederd, player = fleet
    aws["s3"].upload_file(clip(seconds=1, size="320x240"), "media-in", "in.mp4")
    job_ids = [feederd.client.submit("s3://media-in/in.mp4", f"s3://media-out/out{k}.mp4",
                                     {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer", "options": COPY})
               for k in range(4)]

    seen_live = 0
    deadline = time.monotonic() + 180
    done = {}
    while len(done) < len(job_ids) and time.monotonic() < deadline:
        states = player.states()
        seen_live = max(seen_live, sum(1 for s in states.values() if s in ("pending", "running")))
        for job_id in job_ids:
            job = feederd.client.get(job_id)
            if job["job_state"] in ("FINISHED", "ERROR", "CANCELED", "ABANDONED"):
                done[job_id] = job
        time.sleep(0.2)
    assert len(done) == len(job_ids), (player.states(), feederd.log(), player.journals())
    assert {j["job_state"] for j in done.values()} == {"FINISHED"}, (done, player.journals())
    assert 1 <= len(player.instances) and seen_live <= 2, player.states()
    assert player.errors == []

    # Every instance was launched as the issue says: spot, tagged, IMDSv2, profile, terminate on shutdown.
    descriptions = player.describe()
    for instance_id in player.instances:
        d = descriptions[instance_id]
        tags = {t["Key"]: t["Value"] for t in d.get("Tags", [])}
        assert tags["nommer:fleet"] == FLEET and tags["nommer:role"] == "worker"
        assert d.get("InstanceLifecycle") == "spot"
        assert d["IamInstanceProfile"]["Arn"].endswith("/nommer-worker")
        # The workers ran the jobs: worker ids are these instance ids.
    assert {j["worker_id"] for j in done.values()} <= set(player.instances)

    # The registry shows the workers with their instances (GET /workers through the client).
    workers = {w["worker_id"]: w for w in feederd.client.workers()}
    assert set(player.instances) <= set(workers), workers
    for instance_id in player.instances:
        assert workers[instance_id]["instance_id"] == instance_id
        assert workers[instance_id]["market"] == "spot"
    # Uptime and cost: moto's spot price history says 0.00001 USD/hour.
    priced = [w["instance"] for w in workers.values() if w.get("instance")]
    assert priced, workers
    for instance in priced:
        assert instance["uptime_s"] >= 0 and instance["price_per_hour"] == pytest.approx(0.00001)
        assert instance["cost_usd"] == pytest.approx(0.00001 * max(60, instance["uptime_s"]) / 3600, rel=0.1)

    # Idle: each worker terminates its own instance and exits 0 (not restarted by systemd).
    player.wait(lambda: all(s == "terminated" for s in player.states().values()), 60, "instances to terminate")
    player.wait(lambda: all(i.exit_code is not None or i.reclaimed for i in player.instances.values()), 30,
                "workers to exit")
    for inst in player.instances.values():
        assert not inst.reclaimed and inst.exit_code == 0, (inst.instance_id, player.journal(inst.instance_id))
    outputs = aws["s3"].list_objects_v2(Bucket="media-out")["Contents"]
    assert len(outputs) == 4
    local = str(tmp_path / "out0.mp4")
    aws["s3"].download_file("media-out", "out0.mp4", local)
    assert ffprobe(local)["streams"]
    # No instance is launched again once every job is done.
    time.sleep(2)
    assert all(s == "terminated" for s in player.states().values())


def test_spot_interruption_mid_encode_loses_nothing(aws, fleet, tmp_path):
    """A spot notice mid-encode: the worker releases the job at once and exits; EC2 reclaims the instance;
    feederd launches another, which finishes the job."""
    feederd, player = fleet
    aws["s3"].upload_file(clip(seconds=6, size="320x240"), "media-in", "long.mp4")
    job_id = feederd.client.submit("s3://media-in/long.mp4", "s3://media-out/long.mp4",
                                   {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                                    "options": realtime_pass()})
    job = feederd.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and (j["progress"] or 0) > 5,
                           timeout_s=120, what="encoding on an instance")
    first = job["worker_id"]
    assert first in player.instances
    player.interrupt(first)
    player.wait(lambda: player.instances[first].exit_code is not None, 30, "the interrupted worker to exit")
    assert player.instances[first].exit_code == 0, player.journal(first)
    released = feederd.client.get(job_id)
    assert released["job_state"] in ("PENDING", "DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED")
    player.reclaim(first)

    final = feederd.client.wait(job_id, poll_interval_s=0.2, timeout_s=180)
    assert final["job_state"] == "FINISHED", (final, feederd.log(), player.journals())
    assert final["worker_id"] != first
    assert aws["s3"].head_object(Bucket="media-out", Key="long.mp4")["ContentLength"] > 0
    local = str(tmp_path / "long.mp4")
    aws["s3"].download_file("media-out", "long.mp4", local)
    assert abs(float(ffprobe(local)["format"]["duration"]) - 6.0) <= 0.2
    assert "spot interruption" in player.journal(first)
