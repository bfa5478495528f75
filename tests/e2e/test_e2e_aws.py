"""End to end on AWS APIs served locally (moto server): real ``twistd
feederd`` and ``twistd workerd`` processes with the DynamoDB job store, SQS
queues and S3 storage, driven over HTTP through the client library."""

import json
import os
import signal
import subprocess
import sys

import boto3
import pytest
from cryptography.fernet import Fernet

from tests.aws_server import moto_endpoint, reset_moto
from tests.e2e.harness import Feederd
from tests.e2e.test_e2e import ffprobe, realtime_pass
from tests.helpers import doc_two_pass
from tests.workerd.media import clip, top_level_boxes

OLD_NOMMER = "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def aws(tmp_path):
    endpoint = moto_endpoint()
    reset_moto()
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for bucket in ("media-in", "media-out"):
        s3.create_bucket(Bucket=bucket)
    return {"endpoint": endpoint, "s3": s3,
            "dynamodb": boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1"),
            "sqs": boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")}


@pytest.fixture
def daemon(aws, tmp_path):
    feederd = Feederd(str(tmp_path), JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs",
                      AWS_ENDPOINT_URL=aws["endpoint"], AWS_REGION="us-east-1",
                      DYNAMODB_JOB_TABLE="nommer_jobs_e2e", CONFIG_S3_BUCKET="nommer-config-e2e",
                      JOB_CREDENTIALS_KEY=Fernet.generate_key().decode(), JOB_LEASE_S=3.0,
                      HEARTBEAT_INTERVAL_S=1.0, QUEUE_WAIT_TIME_S=1.0)
    feederd.start(timeout_s=60)
    yield feederd
    feederd.stop()


def upload_clip(aws, key, **kw):
    aws["s3"].upload_file(clip(**kw), "media-in", key)


def test_s3_two_pass_job_on_dynamodb_and_sqs(aws, daemon, tmp_path):
    """An s3:// -> s3:// 2011 two-pass job, with the original credentials-in-URI form, ends FINISHED:
    the output object checks out with ffprobe, the job document is in DynamoDB, and the secret is nowhere."""
    upload_clip(aws, "in.mp4", seconds=3, size="1280x720")
    source = f"s3://AKIAOLDSTYLE:{SECRET}@media-in/in.mp4"
    job_id = daemon.client.submit(source, "s3://media-out/out/web.mp4", {"nommer": OLD_NOMMER, "options": doc_two_pass()})
    job = daemon.client.wait(job_id, poll_interval_s=0.2, timeout_s=240)
    assert job["job_state"] == "FINISHED", (job, daemon.log())
    assert "***" in job["source_path"] and SECRET not in json.dumps(job)

    local = str(tmp_path / "web.mp4")
    aws["s3"].download_file("media-out", "out/web.mp4", local)
    head = aws["s3"].head_object(Bucket="media-out", Key="out/web.mp4")
    assert head["ContentType"] == "video/mp4"
    probe = ffprobe(local)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"]) == ("h264", 640)
    assert streams["audio"]["codec_name"] == "aac"
    assert abs(float(probe["format"]["duration"]) - 3.0) <= 0.1
    boxes = top_level_boxes(local)
    assert boxes.index("moov") < boxes.index("mdat")

    item = aws["dynamodb"].get_item(TableName="nommer_jobs_e2e", Key={"job_id": {"S": job_id}},
                                    ConsistentRead=True)["Item"]
    assert item["job_state"]["S"] == "FINISHED"

    # The secret: not in the logs, the table, the queues or the published worker config.
    assert SECRET not in daemon.log()
    table = json.dumps(aws["dynamodb"].scan(TableName="nommer_jobs_e2e")["Items"])
    assert job_id in table and SECRET not in table
    for url in aws["sqs"].list_queues().get("QueueUrls", []):
        got = aws["sqs"].receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        assert SECRET not in json.dumps(got.get("Messages", []))
    config = aws["s3"].get_object(Bucket="nommer-config-e2e", Key="nomconf.py")["Body"].read().decode()
    assert "WORK_QUEUE_BACKEND = 'sqs'" in config
    assert "JOB_CREDENTIALS_KEY" not in config and SECRET not in config


def test_worker_killed_on_sqs_loses_nothing(aws, daemon):
    """SIGKILL mid-encode: the SQS visibility timeout expires and another worker finishes the job, attempts = 2."""
    upload_clip(aws, "long.mp4", seconds=6, size="320x240")
    job_id = daemon.client.submit("s3://media-in/long.mp4", "s3://media-out/long.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and (j["progress"] or 0) > 5,
                          timeout_s=90, what="encoding")
    os.kill(daemon.pid_of_worker(job["worker_id"]), signal.SIGKILL)
    done = daemon.client.wait(job_id, poll_interval_s=0.2, timeout_s=120)
    assert done["job_state"] == "FINISHED", (done, daemon.log())
    assert done["attempts"] == 2
    assert aws["s3"].head_object(Bucket="media-out", Key="long.mp4")["ContentLength"] > 0


def test_job_failing_every_attempt_lands_in_dlq_and_ends_error(aws, daemon):
    """A job whose worker dies on every attempt is redriven to the SQS DLQ and ends in ERROR with the reason."""
    upload_clip(aws, "doomed.mp4", seconds=20, size="320x240")
    job_id = daemon.client.submit("s3://media-in/doomed.mp4", "s3://media-out/doomed.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    for attempt in (1, 2, 3):
        job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and j["attempts"] == attempt,
                              timeout_s=90, what=f"attempt {attempt}")
        os.kill(daemon.pid_of_worker(job["worker_id"]), signal.SIGKILL)
    done = daemon.client.wait(job_id, poll_interval_s=0.2, timeout_s=120)
    assert done["job_state"] == "ERROR", (done, daemon.log())
    assert "gave up after 3 attempts" in done["job_state_details"]


def test_nommer_aws_setup_is_idempotent(aws, tmp_path):
    """`nommer aws setup` creates the job and worker tables, queues (with redrive) and bucket, and a second
    run only checks them."""
    config = tmp_path / "nomconf.py"
    config.write_text(f"JOB_STORE_BACKEND = 'dynamodb'\nWORK_QUEUE_BACKEND = 'sqs'\n"
                      f"AWS_ENDPOINT_URL = {aws['endpoint']!r}\nAWS_REGION = 'us-east-1'\n"
                      f"DYNAMODB_JOB_TABLE = 'setup_jobs'\nCONFIG_S3_BUCKET = 'setup-config'\n")
    argv = [sys.executable, "-m", "nommer.client.cli", "aws", "setup", "--config", str(config)]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "setup_jobs" in first.stdout and "created DynamoDB table nommer_workers" in first.stdout
    assert aws["dynamodb"].describe_table(TableName="setup_jobs")["Table"]["TableStatus"] == "ACTIVE"
    assert aws["dynamodb"].describe_table(TableName="nommer_workers")["Table"]["TableStatus"] == "ACTIVE"
    dlq = aws["sqs"].get_queue_url(QueueName="media_nommer_dlq")["QueueUrl"]
    main = aws["sqs"].get_queue_url(QueueName="media_nommer")["QueueUrl"]
    policy = json.loads(aws["sqs"].get_queue_attributes(QueueUrl=main, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(":media_nommer_dlq") and int(policy["maxReceiveCount"]) == 3
    assert dlq
    aws["s3"].head_bucket(Bucket="setup-config")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert second.returncode == 0, second.stdout + second.stderr



def test_declarative_outputs_under_an_s3_prefix(aws, daemon, tmp_path):
    """A cmaf-h264 preset job plus a poster, s3:// source to an s3:// prefix, on DynamoDB and SQS: every
    file of the job document is an object under the prefix with its Content-Type (playlists, MPD,
    CMAF segments, JPEG), and the master playlist read back from S3 names only objects that exist."""
    import m3u8

    upload_clip(aws, "title.mp4", seconds=3, size="640x360")
    job_id = daemon.client.submit("s3://media-in/title.mp4", "s3://media-out/title/",
                                  outputs=[{"type": "hls", "ladder": [{"height": 234, "bitrate": "145k"}],
                                            "encoder_preset": "veryfast", "segment_s": 2},
                                           {"type": "dash", "ladder": [{"height": 234, "bitrate": "145k"}],
                                            "encoder_preset": "veryfast", "segment_s": 2},
                                           {"type": "poster"}])
    job = daemon.client.wait(job_id, poll_interval_s=0.2, timeout_s=240)
    assert job["job_state"] == "FINISHED", (job, daemon.log())
    listed = aws["s3"].list_objects_v2(Bucket="media-out", Prefix="title/")["Contents"]
    keys = {o["Key"][len("title/"):]: o["Size"] for o in listed}
    expected_types = {".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml",
                      ".m4s": "video/iso.segment", ".jpg": "image/jpeg"}
    for entry in job["outputs"]:
        for f in entry["files"]:
            assert keys.get(f["path"]) == f["bytes"], (f, keys)
            head = aws["s3"].head_object(Bucket="media-out", Key="title/" + f["path"])
            assert head["ContentType"] == expected_types[os.path.splitext(f["path"])[1]] == f["content_type"]
    hls = job["outputs"][0]
    body = aws["s3"].get_object(Bucket="media-out", Key=f"title/{hls['dir']}/{hls['name']}")["Body"].read()
    master = m3u8.loads(body.decode())
    named = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    assert named and all(f"{hls['dir']}/{uri}" in keys for uri in named)
