"""The event log and signed webhooks against the real daemons: ``twistd
feederd`` with its ``twistd workerd`` children, real ffmpeg, the client
library over real HTTP, ``nommer keys`` as a subprocess.

- a job's ``GET /job/<id>/events`` is what happened: SUBMITTED, ASSIGNED to
  the worker that ran it, each state in order, every 10 % milestone once,
  each webhook delivered (with the receiver's status);
- every webhook the receiver got verifies with the secret ``nommer keys
  webhook-secret`` shows for the job's key (``anonymous`` without one), and
  not with another key's; a key sees only its own jobs' events.
"""

import os
import subprocess
import sys
import time

import pytest

from nommer.client.api import NommerClient, NoSuchJob
from nommer.client.webhooks import InvalidSignature, verify
from tests.e2e.harness import REPO, Feederd, HookReceiver, put_clip, realtime_pass

NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
STATES = ["DOWNLOADING", "ENCODING", "UPLOADING", "FINISHED"]


@pytest.fixture
def receiver():
    """A webhook receiver; ``receiver.signed``: each POST's raw body and X-Nommer-Signature header."""
    hook = HookReceiver()
    yield hook
    hook.close()


def nommer_cli(daemon, *args):
    """``nommer ARGS --config <the daemon's config>`` as a subprocess; its stdout, stripped."""
    env = {k: v for k, v in os.environ.items() if k != "NOMMER_API_KEY"}
    env["PYTHONPATH"] = REPO
    done = subprocess.run([sys.executable, "-m", "nommer.client.cli", *args, "--config", daemon.config],
                          cwd=daemon.home, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def eventually(check, timeout_s=60, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_job_s_events_are_what_happened(tmp_path, receiver):
    """A 3 s job run at native speed: its events via GET /job/<id>/events are SUBMITTED first,
    ASSIGNED to the worker that ran it (attempt 1), the four states in order, the ten progress
    milestones once each between ENCODING and FINISHED, and a WEBHOOK delivered (HTTP 200) for
    each state; seqs 1..n, times never going back. Every POST verifies with `nommer keys
    webhook-secret anonymous`."""
    root = str(tmp_path)
    daemon = Feederd(root).start()
    try:
        src = put_clip(root, "in.mp4", seconds=3, size="320x240")
        job_id = daemon.client.submit(f"file://{src}", f"file://{root}/out.mp4",
                                      {"nommer": NOMMER, "options": realtime_pass()}, notify_url=receiver.url)
        job = daemon.client.wait(job_id, poll_interval_s=0.1, timeout_s=180)
        assert job["job_state"] == "FINISHED", job

        def delivered():
            events = daemon.client.job_events(job_id)
            return events if sum(e["kind"] == "webhook" for e in events) == len(STATES) else None
        events = eventually(delivered, what="a webhook event per state")
        secret = nommer_cli(daemon, "keys", "webhook-secret", "anonymous")
    finally:
        daemon.stop()

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["job_id"] == job_id for e in events)
    assert [e["at"] for e in events if e["kind"] != "webhook"] == sorted(e["at"] for e in events
                                                                           if e["kind"] != "webhook")
    assert events[0]["kind"] == "submitted" and events[0]["state"] == "PENDING"
    assert events[0]["at"] == job["created_at"]
    [assigned] = [e for e in events if e["kind"] == "assigned"]
    assert (assigned["worker_id"], assigned["attempt"]) == (job["worker_id"], 1)
    states = [e for e in events if e["kind"] == "state"]
    assert [e["state"] for e in states] == STATES
    assert states[-1]["at"] == job["finished_at"]
    assert all(e["worker_id"] == job["worker_id"] for e in states)
    order = [e["seq"] for e in events]
    assert order.index(assigned["seq"]) < order.index(states[0]["seq"])
    progress = [e for e in events if e["kind"] == "progress"]
    assert [e["progress"] for e in progress] == [10.0 * i for i in range(1, 11)]
    encoding, finished = states[1]["seq"], states[3]["seq"]
    assert all(encoding < e["seq"] < finished for e in progress)
    webhooks = [e for e in events if e["kind"] == "webhook"]
    assert [e["state"] for e in webhooks] == STATES
    assert all(e["details"] == f"{e['state']} delivered to {receiver.url}: HTTP 200" for e in webhooks)
    assert not [e for e in events if e["kind"] in ("error", "retry", "lease_lost")]

    assert len(receiver.signed) == len(STATES)
    for body, header in receiver.signed:
        assert abs(verify(body, header, secret) - time.time()) < 300
    with pytest.raises(InvalidSignature):
        verify(receiver.signed[0][0].replace(b"DOWNLOADING", b"FINISHED"), receiver.signed[0][1], secret)


def test_keys_sign_their_own_webhooks_and_see_their_own_events(tmp_path, receiver):
    """With API keys (made by `nommer keys create`): a job's webhooks verify with its key's webhook
    secret, not with another key's nor anonymous's; the other key gets 404 on its events, the
    owner sees them."""
    root = str(tmp_path)
    daemon = Feederd(root).start()
    try:
        keys = {name: nommer_cli(daemon, "keys", "create", name) for name in ("alice", "bob")}
        alice = NommerClient(daemon.client.base_url, api_key=keys["alice"])
        bob = NommerClient(daemon.client.base_url, api_key=keys["bob"])
        alice_id, bob_id = keys["alice"][4:20], keys["bob"][4:20]  # nmk_<key_id>_<secret>
        src = put_clip(root, "in.mp4", seconds=1, size="320x240")
        job_id = alice.submit(f"file://{src}", f"file://{root}/out.mp4",
                              {"nommer": NOMMER, "options": realtime_pass()}, notify_url=receiver.url)
        assert alice.wait(job_id, poll_interval_s=0.1, timeout_s=180)["job_state"] == "FINISHED"
        eventually(lambda: len(receiver.signed) == len(STATES), what="the webhooks")
        events = alice.job_events(job_id)
        with pytest.raises(NoSuchJob):
            bob.job_events(job_id)
        secrets = {name: nommer_cli(daemon, "keys", "webhook-secret", key_id)
                   for name, key_id in (("alice", alice_id), ("bob", bob_id), ("anonymous", "anonymous"))}
    finally:
        daemon.stop()
    assert events[0]["kind"] == "submitted"
    assert [e["state"] for e in events if e["kind"] == "state"] == STATES
    assert len(set(secrets.values())) == 3
    for body, header in receiver.signed:
        verify(body, header, secrets["alice"])
        for other in ("bob", "anonymous"):
            with pytest.raises(InvalidSignature):
                verify(body, header, secrets[other])
