"""The live event stream against the real daemons: ``twistd feederd`` with
its ``twistd workerd`` children, real ffmpeg, the client library's
``events()`` over real HTTP (it keeps the connection open; each stream is
read in a thread).

- a job's events arrive live, in order, and are the ones ``GET
  /job/<id>/events`` lists;
- a client that reconnects with Last-Event-ID misses nothing and gets
  nothing twice;
- a key sees only its own jobs' events (keys made with ``nommer keys
  create``), the API's own changes (cancel) included; admin sees all.
"""

import datetime
import threading
import time

import pytest

from nommer.client.api import NommerClient
from tests.e2e.harness import Feederd, create_key, daemon_fixture, put_clip, realtime_pass

NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
#: The job's own fields of an event, as GET /job/<id>/events shows them.
EVENT_FIELDS = ("job_id", "seq", "kind", "at", "state", "worker_id", "attempt", "progress", "details")


class Reader:
    """Reads ``client.events(**kw)`` in a thread: ``messages`` [(arrival time, dict)], until ``stop_when``
    (a predicate on the messages so far) holds or ``close()``."""

    def __init__(self, client, stop_when=None, **kw):
        self.messages = []
        self.error = None
        self._stop = threading.Event()
        self.stop_when = stop_when
        kw.setdefault("reconnect", False)  # ends with feederd, not retried behind the test's back
        self.thread = threading.Thread(target=self._run, args=(client, kw), daemon=True)
        self.thread.start()

    def _run(self, client, kw):
        try:
            for message in client.events(**kw):
                self.messages.append((time.time(), message))
                if self._stop.is_set() or (self.stop_when is not None and self.stop_when(self.messages)):
                    return
        except Exception as exc:  # shown by wait()
            self.error = exc

    def wait(self, timeout_s=120):
        self.thread.join(timeout_s)
        assert self.error is None, self.error
        assert not self.thread.is_alive(), f"the stream did not end; got {[m for _, m in self.messages]}"
        return self

    def close(self):
        self._stop.set()

    def wait_for(self, predicate, timeout_s=60, what="messages"):
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {[m for _, m in self.messages]}"
            time.sleep(0.02)

    def job_events(self, job_id=None):
        return [m for _, m in self.messages if m["event"] == "job" and (job_id is None or m["job_id"] == job_id)]


def ended(job_id):
    """A stop_when: the job's event that leaves it final has arrived."""
    return lambda messages: any(m["event"] == "job" and m["job_id"] == job_id and m["job"]["job_state"] in FINAL
                                and m["kind"] == "state" for _, m in messages)


def event_log(feederd, job_id, key=None):
    client = feederd.client if key is None else NommerClient(feederd.client.base_url, timeout_s=10, api_key=key)
    return client._request("GET", f"/job/{job_id}/events")["events"]


def at_s(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return str(root)


daemon = daemon_fixture()


def test_a_jobs_events_arrive_live_in_order_and_match_its_log(daemon, root):
    """A stream opened before the submit: the empty snapshot, then the job's events (submitted ... FINISHED)
    in the order of their seq, ids increasing, arriving while the job runs (not all at the end), and exactly
    the events GET /job/<id>/events lists."""
    src = put_clip(root, "in.mp4", seconds=3, size="320x240")
    reader = Reader(daemon.client)
    reader.wait_for(lambda m: m and m[0][1]["event"] == "snapshot", what="the snapshot")
    assert reader.messages[0][1]["jobs"] == []
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/out.mp4", {"nommer": NOMMER,
                                                                              "options": realtime_pass()})
    reader.stop_when = ended(job_id)
    reader.wait_for(ended(job_id), timeout_s=120, what="the job's end")
    reader.close()
    job = daemon.client.get(job_id)
    assert job["job_state"] == "FINISHED", job
    streamed = reader.job_events(job_id)
    kinds = [e["kind"] for e in streamed]
    assert kinds[0] == "submitted" and "assigned" in kinds and "progress" in kinds, kinds
    assert [e["state"] for e in streamed if e["kind"] == "state"] == ["DOWNLOADING", "ENCODING", "UPLOADING",
                                                                      "FINISHED"]
    ids = [e["id"] for e in streamed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e["seq"] for e in streamed] == sorted(e["seq"] for e in streamed)
    logged = event_log(daemon, job_id)
    assert [{k: e[k] for k in EVENT_FIELDS} for e in streamed] == [{k: e[k] for k in EVENT_FIELDS} for e in logged]
    # Live: the encode lasts about 3 s (-re); its first state change reached us well before the last one.
    arrivals = {m["kind"] + (m["state"] or ""): t for t, m in reader.messages if m["event"] == "job"}
    assert arrivals["stateFINISHED"] - arrivals["stateDOWNLOADING"] > 1.5, arrivals
    # And each arrived soon after it was stored.
    for t, m in reader.messages:
        if m["event"] == "job" and m["kind"] == "state":
            assert t - at_s(m["at"]) < 2.0, (m, t)


def test_a_reconnect_with_last_event_id_misses_nothing(daemon, root):
    """A stream (opened before the submit) read until the job is ENCODING, closed; the job goes on; a new
    stream with Last-Event-ID of the last message received gets the rest: together, each event of the job's
    log once, in order."""
    src = put_clip(root, "in.mp4", seconds=3, size="320x240")
    first = Reader(daemon.client, stop_when=lambda messages: any(
        m["event"] == "job" and m["state"] == "ENCODING" for _, m in messages))
    first.wait_for(lambda m: m, what="the snapshot")
    job_id = daemon.client.submit(f"file://{src}", f"file://{root}/out.mp4", {"nommer": NOMMER,
                                                                              "options": realtime_pass()})
    first.wait()
    last_id = first.messages[-1][1]["id"]
    daemon.wait_for(job_id, lambda j: j["job_state"] in FINAL, timeout_s=120, what="the job's end")
    second = Reader(daemon.client, job_id=job_id, last_event_id=last_id, stop_when=ended(job_id)).wait()
    assert all(m["event"] == "job" for _, m in second.messages), "a resume starts with no snapshot"
    together = first.job_events() + second.job_events()
    assert [e["id"] for e in together] == sorted({e["id"] for e in together})
    assert [(e["seq"], e["kind"], e["state"]) for e in together] == \
        [(e["seq"], e["kind"], e["state"]) for e in event_log(daemon, job_id)]


def test_a_key_sees_only_its_own_jobs_events(root):
    """Alice and Bob each submit a job and cancel it; Alice's stream carries her jobs' events only (snapshot
    included), Bob's his, admin's all; a cancel through the API reaches the streams like a worker's change."""
    feederd = Feederd(root, FLEET_BACKEND="none")
    keys = {name: create_key(feederd, name, scopes) for name, scopes in
            (("alice", "submit,read,cancel"), ("bob", "submit,read,cancel"), ("ops", "admin"))}
    feederd.start()
    try:
        clients = {name: NommerClient(feederd.client.base_url, timeout_s=10, api_key=key) for name, key in keys.items()}
        early = clients["alice"].submit(f"file://{root}/a0.mp4", f"file://{root}/a0-out.mp4",
                                        {"nommer": NOMMER, "options": realtime_pass()})
        readers = {name: Reader(client) for name, client in clients.items()}
        for reader in readers.values():
            reader.wait_for(lambda m: m, what="the snapshot")
        jobs = {name: clients[name].submit(f"file://{root}/{name}.mp4", f"file://{root}/{name}-out.mp4",
                                           {"nommer": NOMMER, "options": realtime_pass()}) for name in ("alice", "bob")}
        for name, job_id in jobs.items():
            assert clients[name].cancel(job_id)["job_state"] == "CANCELED"
        for name in ("alice", "bob"):
            readers[name].wait_for(ended(jobs[name]), what=f"{name}'s cancel")
        readers["ops"].wait_for(lambda m: ended(jobs["alice"])(m) and ended(jobs["bob"])(m), what="both cancels")
        time.sleep(1.0)  # anything misrouted would be here by now
        for reader in readers.values():
            reader.close()
        assert [j["job_id"] for j in readers["alice"].messages[0][1]["jobs"]] == [early]
        assert readers["bob"].messages[0][1]["jobs"] == []
        assert {j["job_id"] for j in readers["ops"].messages[0][1]["jobs"]} == {early}
        own = {"alice": {early, jobs["alice"]}, "bob": {jobs["bob"]}}
        for name in ("alice", "bob"):
            seen = readers[name].job_events()
            # Alice may also get her early job's SUBMITTED event if it reached feederd after she connected.
            assert jobs[name] in {e["job_id"] for e in seen} <= own[name], (name, seen)
            mine = readers[name].job_events(jobs[name])
            assert [(e["kind"], e["state"]) for e in mine] == [("submitted", "PENDING"), ("state", "CANCELED")]
            assert [e["seq"] for e in mine] == [e["seq"] for e in event_log(feederd, jobs[name], keys[name])]
        assert set(jobs.values()) <= {e["job_id"] for e in readers["ops"].job_events()} <= own["alice"] | own["bob"]
    finally:
        feederd.stop()
