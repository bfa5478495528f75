"""/metrics end to end: a real ``twistd feederd`` (spawning real ``twistd workerd``), real ffmpeg,
scraped over HTTP and parsed with prometheus_client's parser: the figures move as jobs run
(submits, jobs by state, the encode histogram fed by the workers' heartbeats, speed, workers, webhook
failures). And feederd started on a port already in use: one line, no traceback."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import TWISTD, Feederd, HookReceiver
from tests.workerd.media import clip

FFMPEG_NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
ONE_PASS = {"nommer": FFMPEG_NOMMER, "options": [{"outfile_options": [["c:v", "libx264"], ["preset", "ultrafast"],
                                                                      ["c:a", "aac"], ["f", "mp4"]]}]}


def scrape(daemon):
    """``{(sample name, frozenset(labels)): value}`` of feederd's /metrics (anonymous: loopback, no key)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
    assert "_created" not in text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found, name, **labels):
    return found.get((name, frozenset(labels.items())))


def wait_metrics(daemon, check, timeout_s=30, what="metrics"):
    deadline = time.monotonic() + timeout_s
    while True:
        found = scrape(daemon)
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {sorted(found.items())}\n{daemon.log()}")
        time.sleep(0.2)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


@pytest.fixture
def hooks():
    receiver = HookReceiver(fail_first=1_000_000)   # every webhook fails
    yield receiver
    receiver.close()


@pytest.fixture
def daemon(root):
    feederd = Feederd(root, MAX_NUM_WORKERS=1, WEBHOOK_MAX_ATTEMPTS=2)
    feederd.start()
    yield feederd
    feederd.stop()


def run_job(daemon, root, name, hook_url=None):
    src = os.path.join(root, f"{name}.mp4")
    shutil.copy(clip(seconds=2, size="320x240"), src)
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/out/{name}.mp4", ONE_PASS, notify_url=hook_url)
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=120)
    assert job["job_state"] == "FINISHED", job
    return job


def test_metrics_move_as_jobs_run(daemon, root, hooks):
    """Before any job: zeros. After each real encode: one more submit, one more FINISHED job, one more
    encode in the histogram (reported by the worker's heartbeat) with its seconds, the media seconds
    of the 2 s clip and a speed; the webhooks that failed are counted; the local worker is seen."""
    before = scrape(daemon)
    assert value(before, "nommer_job_submits_total") == 0
    assert value(before, "nommer_jobs", state="FINISHED") == 0
    assert value(before, "nommer_encode_seconds_count") == 0
    assert value(before, "nommer_webhook_failures_total") == 0
    assert value(before, "nommer_fleet_instances", spot="true") == 0
    health = daemon.client.health()
    assert health["fleet"] == {"backend": "local", "trouble": None, "launch_failures": {}}

    first = run_job(daemon, root, "one", hooks.url)
    found = wait_metrics(daemon, lambda f: value(f, "nommer_encode_seconds_count") == 1,
                         what="the first encode in the histogram")
    assert value(found, "nommer_job_submits_total") == 1
    assert value(found, "nommer_jobs", state="FINISHED") == 1
    assert value(found, "nommer_jobs", state="PENDING") == 0
    seconds = value(found, "nommer_encode_seconds_sum")
    wall = time.mktime(time.strptime(first["finished_at"][:19], "%Y-%m-%dT%H:%M:%S")) - \
        time.mktime(time.strptime(first["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 0 < seconds <= wall + 1.5, (seconds, first)
    assert value(found, "nommer_encode_seconds_bucket", le="+Inf") == 1
    assert 1.9 <= value(found, "nommer_encoded_media_seconds_total") <= 2.2
    speed = value(found, "nommer_encode_speed_ratio")
    assert speed == pytest.approx(value(found, "nommer_encoded_media_seconds_total") / seconds, rel=0.01)
    assert value(found, "nommer_queue_depth", queue="media_nommer") == 0

    run_job(daemon, root, "two")
    found = wait_metrics(daemon, lambda f: value(f, "nommer_encode_seconds_count") == 2,
                         what="the second encode in the histogram")
    assert value(found, "nommer_job_submits_total") == 2
    assert value(found, "nommer_jobs", state="FINISHED") == 2
    assert value(found, "nommer_encode_seconds_sum") > seconds
    assert 3.8 <= value(found, "nommer_encoded_media_seconds_total") <= 4.4
    alive = sum(value(found, "nommer_workers", state=s) for s in ("running", "draining", "terminating"))
    assert alive + value(found, "nommer_workers", state="silent") <= 1
    # every state change of the first job was notified to a receiver that always fails: given up
    found = wait_metrics(daemon, lambda f: value(f, "nommer_webhook_failures_total") >= 4,
                         what="the failed webhooks counted")
    assert hooks.posts == []
    assert "Traceback" not in daemon.log()


def test_port_in_use_is_one_line(root):
    """feederd on a port something else listens on: exits non-zero with one line naming the port,
    the interface and what to change, and no traceback."""
    feederd = Feederd(root)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", feederd.port))
        taken.listen()
        with open(feederd.log_path, "wb") as log:
            proc = subprocess.run(
                [sys.executable, "-c", TWISTD, "--pidfile=", "-n", "feederd", "--config", feederd.config,
                 "--port", str(feederd.port)],
                cwd=root, stdout=log, stderr=subprocess.PIPE, timeout=60)
    output = feederd.log() + proc.stderr.decode()
    assert proc.returncode != 0, output
    line = (f"feederd: port {feederd.port} on 127.0.0.1 is in use (another feederd?); "
            f"set API_PORT or --port")
    assert line in output
    assert "Traceback" not in output
    assert "CannotListenError" not in output
    assert [text for text in output.splitlines() if "in use" in text][0].endswith(line)
