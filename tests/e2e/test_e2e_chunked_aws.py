"""End to end, chunked encoding on AWS APIs served locally (moto server):
real ``twistd feederd`` and two ``twistd workerd`` processes with the
DynamoDB job store, SQS queues and S3 storage (the fixtures of
tests/e2e/test_e2e_aws.py). The chunk checkpoints live beside the outputs,
under ``<dest prefix>.nommer-chunks/<job_id>/`` in S3, and are deleted once
the merge stored the outputs."""

import re

from tests.e2e.test_e2e_aws import aws, daemon  # noqa: F401 (pytest fixtures)
from tests.e2e.test_e2e_chunked import probe_video
from tests.e2e.test_e2e_outputs import submit
from tests.workerd.chunks import sources

MP4 = {"type": "mp4", "name": "video.mp4", "crf": 23, "encoder_preset": "veryfast"}
CHUNK_DETAILS = re.compile(r"^chunk (\d+) \(")


def test_chunked_mp4_on_s3_sqs_and_dynamodb(aws, daemon, tmp_path):  # noqa: F811
    """An s3:// source with scene cuts and audio shorter than the video, chunked in about 2 s
    chunks to an s3:// prefix: every chunk encoded once, the joined output frame-exact, the
    checkpoints gone from S3 after the merge, and the event log telling each chunk and the merge."""
    media = tmp_path / "media"
    media.mkdir()
    src = sources.make_scenes(str(media), width=320, height=180, fps=24, duration_s=8, audio_duration_s=6.5)
    aws["s3"].upload_file(src, "media-in", "chunked/scenes.mp4")

    status, answer = submit(daemon, {"source_path": "s3://media-in/chunked/scenes.mp4",
                                     "dest_path": "s3://media-out/title/", "outputs": [MP4],
                                     "chunking": {"target_s": 2, "min_s": 1}})
    assert status == 200, answer
    job_id = answer["job_id"]
    job = daemon.client.wait(job_id, poll_interval_s=0.2, timeout_s=100)
    assert job["job_state"] == "FINISHED", (job["job_state_details"], job, daemon.log())

    chunks = job["chunks"]
    assert chunks and len(chunks) >= 3, chunks
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["state"] == "FINISHED" and c["attempts"] == 1 and c["worker_id"] for c in chunks), chunks
    assert sum(c["frames"] for c in chunks) == sources.total_frames(24, 8)

    local = str(tmp_path / "video.mp4")
    aws["s3"].download_file("media-out", "title/video.mp4", local)
    frames, duration, _ = probe_video(local)
    assert frames == sources.total_frames(24, 8)
    assert abs(duration - frames / 24) < 0.001, duration

    listed = aws["s3"].list_objects_v2(Bucket="media-out", Prefix="title/").get("Contents", [])
    keys = [o["Key"] for o in listed]
    assert "title/video.mp4" in keys, keys
    assert not [k for k in keys if k.startswith("title/.nommer-chunks/")], keys
    everywhere = aws["s3"].list_objects_v2(Bucket="media-out").get("Contents", [])
    assert not [o["Key"] for o in everywhere if ".nommer-chunks" in o["Key"]], everywhere

    events = daemon.client.job_events(job_id)
    chunk_events = [e for e in events if e["kind"] == "chunk"]
    named = {int(m.group(1)) for e in chunk_events if (m := CHUNK_DETAILS.match(e["details"] or ""))}
    assert named == set(range(len(chunks))), [e["details"] for e in chunk_events]
    for c in chunks:
        finished = [e for e in chunk_events if (e["details"] or "").startswith(f"chunk {c['index']} (")
                    and "finished on" in e["details"]]
        assert len(finished) == 1, [e["details"] for e in chunk_events]
    assert any(e["kind"] == "chunk" and (e["details"] or "").startswith("planned ") for e in events), events
    assert [e for e in events if e["kind"] == "merge"], [(e["kind"], e["details"]) for e in events]
