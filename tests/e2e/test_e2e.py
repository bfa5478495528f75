"""End to end: real ``twistd feederd`` spawning real ``twistd workerd``
processes, real ffmpeg, real HTTP. Each test drives the service from outside
through the client library, as a user would."""

import json
import os
import signal
import subprocess
import sys

import pytest

from nommer.client.api import BadInput
from tests.e2e.harness import (REPO, TWISTD, Feederd, HookReceiver, children_of, daemon_fixture, put_clip,
                               realtime_pass)
from tests.helpers import doc_two_pass
from tests.workerd.media import top_level_boxes

FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
OLD_NOMMER = "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


daemon = daemon_fixture()


@pytest.fixture
def hooks():
    receiver = HookReceiver()
    yield receiver
    receiver.close()


def test_two_pass_2011_job_end_to_end(daemon, hooks, root):
    """The 2011 two-pass job on a 1280x720 clip with audio encodes to a playable, faststart 640-wide MP4,
    and the notify_url receiver gets every state in order."""
    src = put_clip(root, "in.mp4", seconds=3, size="1280x720")
    dest = os.path.join(root, "out", "web.mp4")
    job_id = daemon.client.submit(f"file://{src}", f"file://{dest}",
                                  {"nommer": OLD_NOMMER, "options": doc_two_pass()}, notify_url=hooks.url)
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=180)
    assert job["job_state"] == "FINISHED", job
    assert job["attempts"] == 1
    assert job["progress"] == 100.0
    assert job["finished_at"] and job["started_at"] and job["created_at"]

    source, out = ffprobe(src), ffprobe(dest)
    streams = {s["codec_type"]: s for s in out["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["width"] == 640
    assert streams["audio"]["codec_name"] == "aac"
    assert abs(float(out["format"]["duration"]) - float(source["format"]["duration"])) <= 0.1
    boxes = top_level_boxes(dest)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert job["output"]["video"]["width"] == 640
    assert job["output"]["size_bytes"] == os.path.getsize(dest)

    daemon.wait_for(job_id, lambda j: len(hooks.states(job_id)) >= 4, timeout_s=30, what="webhooks")
    assert hooks.states(job_id) == ["DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED"]
    post = hooks.posts[-1]
    assert post["unique_id"] == job_id and post["job_state_details"] == ""


def test_worker_killed_mid_encode_loses_nothing(daemon, root):
    """SIGKILL on the worker mid-encode: the lease expires, another worker finishes the job, attempts = 2."""
    src = put_clip(root, "in.mp4", seconds=6, size="320x240")
    dest = os.path.join(root, "out.mp4")
    job_id = daemon.client.submit(f"file://{src}", f"file://{dest}", {"nommer": OLD_NOMMER, "options": realtime_pass()})
    job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and (j["progress"] or 0) > 5,
                          what="encoding under way")
    victim = daemon.pid_of_worker(job["worker_id"])
    os.kill(victim, signal.SIGKILL)
    done = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=120)
    assert done["job_state"] == "FINISHED", done
    assert done["attempts"] == 2
    assert done["worker_id"] != job["worker_id"]
    assert float(ffprobe(dest)["format"]["duration"]) == pytest.approx(6, abs=0.1)


def test_worker_dying_every_attempt_ends_in_error(daemon, root):
    """A job whose worker is SIGKILLed on every attempt is dead-lettered after MAX_JOB_ATTEMPTS and ends in ERROR."""
    src = put_clip(root, "in.mp4", seconds=20, size="320x240")
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/never.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    killed = []
    for attempt in (1, 2, 3):
        job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and j["attempts"] == attempt,
                              what=f"attempt {attempt} encoding")
        os.kill(daemon.pid_of_worker(job["worker_id"]), signal.SIGKILL)
        killed.append(job["worker_id"])
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)
    assert job["job_state"] == "ERROR", job
    assert job["attempts"] == 3
    assert "gave up after 3 attempts" in job["job_state_details"]
    assert len(set(killed)) == 3
    assert not os.path.exists(os.path.join(root, "never.mp4"))


def test_not_media_ends_in_error_at_once(daemon, root):
    """A source that is not media ends in ERROR on the first attempt with ffprobe's reason."""
    src = os.path.join(root, "notes.mp4")
    with open(src, "w") as f:
        f.write("this is not a video\n" * 100)
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/x.mp4",
                                  {"nommer": OLD_NOMMER, "options": doc_two_pass()})
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)
    assert job["job_state"] == "ERROR"
    assert job["attempts"] == 1
    assert "not a media file" in job["job_state_details"]
    assert "Invalid data" in job["job_state_details"]


def test_ffmpeg_rejecting_options_ends_in_error_with_its_lines(daemon, root):
    """Options ffmpeg refuses (an unknown encoder) end in ERROR at once with ffmpeg's last lines."""
    src = put_clip(root, "in.mp4", seconds=1, size="320x240")
    options = [{"outfile_options": [["c:v", "no_such_encoder"], ["f", "mp4"]]}]
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/x.mp4", {"nommer": OLD_NOMMER, "options": options})
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)
    assert job["job_state"] == "ERROR"
    assert job["attempts"] == 1
    assert "no_such_encoder" in job["job_state_details"]


def test_missing_source_ends_in_error(daemon, root):
    """A file:// source that does not exist is an ERROR job saying so, not retried."""
    job_id = daemon.client.submit(f"file://{root}/nope.mp4", f"file://{root}/x.mp4",
                                  {"nommer": OLD_NOMMER, "options": doc_two_pass()})
    job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)
    assert job["job_state"] == "ERROR"
    assert job["attempts"] == 1
    assert "nope.mp4" in job["job_state_details"]


def test_transient_failure_retried_then_error(root):
    """A download that times out every time is retried, then ERROR after MAX_JOB_ATTEMPTS."""
    import socket
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    feederd = Feederd(root, HTTP_DOWNLOAD_TIMEOUT_S=0.5).start()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/in.mp4"
        job_id = feederd.client.submit(url, f"file://{root}/x.mp4", {"nommer": OLD_NOMMER, "options": doc_two_pass()})
        job = feederd.client.wait(job_id, poll_interval_s=0.1, timeout_s=90)
        assert job["job_state"] == "ERROR", job
        assert job["attempts"] == 3
        assert "gave up after 3 attempts" in job["job_state_details"]
    finally:
        feederd.stop()
        silent.close()


def test_cancel_stops_a_running_encode(daemon, root):
    """POST /job/<id>/cancel on a running job: state CANCELED, its ffmpeg is gone, no output written."""
    src = put_clip(root, "in.mp4", seconds=10, size="320x240")
    dest = os.path.join(root, "canceled.mp4")
    job_id = daemon.client.submit(f"file://{src}", f"file://{dest}", {"nommer": OLD_NOMMER, "options": realtime_pass()})
    job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING" and (j["progress"] or 0) > 5,
                          what="encoding under way")
    worker_pid = daemon.pid_of_worker(job["worker_id"])
    assert children_of(worker_pid), "expected an ffmpeg child while encoding"
    canceled = daemon.client.cancel(job_id)
    assert canceled["job_state"] == "CANCELED"
    # The worker notices at its next heartbeat and kills ffmpeg.
    daemon.wait_for(job_id, lambda j: not children_of(worker_pid), timeout_s=10, what="ffmpeg stopped")
    job = daemon.client.get(job_id)
    assert job["job_state"] == "CANCELED"
    assert job["progress"] < 100
    assert not os.path.exists(dest)


def test_warm_then_cold_sigterm(daemon, root):
    """One SIGTERM lets the running job finish; with a second one a job is released and finished elsewhere."""
    src = put_clip(root, "in.mp4", seconds=4, size="320x240")
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/warm.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING", what="encoding")
    pid = daemon.pid_of_worker(job["worker_id"])
    os.kill(pid, signal.SIGTERM)
    done = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)
    assert done["job_state"] == "FINISHED" and done["attempts"] == 1
    daemon.wait_for(job_id, lambda j: pid not in daemon.worker_pids(), timeout_s=30, what="warm exit")

    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/cold.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    job = daemon.wait_for(job_id, lambda j: j["job_state"] == "ENCODING", what="encoding")
    pid = daemon.pid_of_worker(job["worker_id"])
    os.kill(pid, signal.SIGTERM)
    # Signals of one kind that arrive together are delivered once: send the
    # second after the worker has acted on the first.
    marker = f"[{job['worker_id']}]"
    daemon.wait_for(job_id, lambda j: any(marker in line and "warm shutdown" in line
                                          for line in daemon.log().splitlines()), what="warm shutdown logged")
    os.kill(pid, signal.SIGTERM)
    done = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=90)
    assert done["job_state"] == "FINISHED", done
    assert done["attempts"] == 2


def test_bad_input_classes_at_submit_and_daemon_keeps_serving(daemon, root):
    """Each bad input class is a clear 400 from the real daemon, which keeps serving."""
    src = put_clip(root, "in.mp4", seconds=1, size="320x240")
    good = {"nommer": OLD_NOMMER, "options": doc_two_pass()}
    cases = [
        (f"file://{src}", f"file://{root}/o.mp4", {"nommer": "os.system", "options": [{}]}, "nommer"),
        (f"file://{src}", f"file://{root}/o.mp4",
         {"nommer": OLD_NOMMER, "options": [{"outfile_options": [["i", "/etc/passwd"], ["f", "mp4"]]}]}, "options"),
        ("gopher://host/in.mp4", f"file://{root}/o.mp4", good, "source_path"),
        ("file:///etc/passwd", f"file://{root}/o.mp4", good, "source_path"),
        (f"file://{src}", "file:///tmp/../etc/o.mp4", good, "dest_path"),
    ]
    for source, dest, options, word in cases:
        with pytest.raises(BadInput) as caught:
            daemon.client.submit(source, dest, options)
        assert word in caught.value.message
        assert caught.value.status == 400
    import urllib.request
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/job/submit", data=b"{not json",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    payload = json.loads(caught.value.read())
    assert caught.value.code == 400 and payload["error_code"] == "BADINPUT" and payload["success"] is False
    assert daemon.client.health()["status"] == "ok"


def test_idle_workers_exit(daemon, root):
    """After their job, workers exit by themselves once idle for WORKER_MAX_IDLE_S."""
    src = put_clip(root, "in.mp4", seconds=1, size="320x240")
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/o.mp4",
                                  {"nommer": OLD_NOMMER, "options": realtime_pass()})
    assert daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=60)["job_state"] == "FINISHED"
    assert daemon.worker_pids()
    daemon.wait_for(job_id, lambda j: not daemon.worker_pids(), timeout_s=30, what="idle workers to exit")
    # feederd reaps the exited children a moment after pgrep stops seeing them.
    daemon.wait_for(job_id, lambda j: daemon.client.health()["workers"] == [], timeout_s=10,
                    what="feederd to see the workers gone")


def test_cli_submit_wait_with_preset(daemon, root):
    """`nommer submit SRC DEST --preset web-640 --wait` against the real daemon exits 0 with the file written."""
    src = put_clip(root, "in.mp4", seconds=2, size="1280x720")
    dest = os.path.join(root, "cli.mp4")
    result = subprocess.run([sys.executable, "-m", "nommer.client.cli", "--api", f"http://127.0.0.1:{daemon.port}",
                             "submit", src, dest, "--preset", "web-640", "--wait"],
                            capture_output=True, text=True, timeout=180, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FINISHED" in result.stdout + result.stderr
    assert ffprobe(dest)["streams"][0]["width"] == 640


def test_bad_config_reports_every_problem_before_starting(root):
    """feederd with a mistyped name and a bad value exits non-zero naming both, having started nothing."""
    config = os.path.join(root, "nomconf.py")
    with open(config, "w") as f:
        f.write("MAX_NUM_WORKER = 4\nAPI_PORT = 'eighty'\nNOMMERD_MAX_INACTIVITY = 30\n")
    result = subprocess.run([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "feederd", "--config", config],
                            capture_output=True, text=True, timeout=60, cwd=root)
    assert result.returncode != 0
    assert "MAX_NUM_WORKER" in result.stderr and "MAX_NUM_WORKERS" in result.stderr  # did you mean
    assert "API_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(root, "nommer-data"))


def test_twistd_lists_plugins_after_plain_install(tmp_path):
    """After a plain (non-editable) `pip install .`, `twistd --help` lists feederd and workerd."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), REPO], check=True, capture_output=True, timeout=300)
    assert (target / "twisted" / "plugins" / "feederd.py").exists()
    # Every package of the source tree made it in (an explicit list in pyproject.toml can forget one).
    source_packages = {os.path.relpath(d, REPO) for d, _, files in os.walk(os.path.join(REPO, "nommer"))
                       if "__init__.py" in files}
    installed = {os.path.relpath(d, target) for d, _, files in os.walk(target / "nommer") if "__init__.py" in files}
    assert source_packages == installed, source_packages ^ installed
    assert (target / "nommer" / "client" / "presets" / "web-640.json").exists()
    assert not (target / "twisted" / "plugins" / "__init__.py").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--help"],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=60).stdout
    assert "feederd" in out and "workerd" in out
