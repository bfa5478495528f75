"""The live event hub, pure: fake sinks, a fake job table, a ``task.Clock``.

Fan-out, filters, tenant visibility, the ring buffer (resume, reset when too
old), heartbeats, a slow client dropped while a fast one keeps receiving,
the caps, one job's order while it is read from the store."""

import json

import pytest
from twisted.internet import defer, task

from nommer.core.errors import NoSuchJob
from nommer.core.events import EventKind, JobEvent
from nommer.feederd.events_hub import EventsHub, Filters, StreamsFull, Viewer
from nommer.feederd.ratelimit import RateLimited

NOW = 1_800_000_000.0
ADMIN = Viewer(key_id="k_admin", sees_all=True)
ALICE = Viewer(key_id="k_alice")
BOB = Viewer(key_id="k_bob")
JA = "a" * 50  # Alice's job
JB = "b" * 50  # Bob's job


def sse_messages(data):
    """``[(id, event, data)]`` of the complete SSE messages in ``data`` (bytes; comments left
    out, a message not yet ended by its blank line too), ``data`` parsed as JSON."""
    found = []
    for block in data.decode().split("\n\n")[:-1]:
        fields = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
        if "data" in fields:
            found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return found


def job_triples(messages):
    """``[(job_id, kind, state)]`` of the job events among ``sse_messages``'s ``messages``."""
    return [(d["job_id"], d["kind"], d["state"]) for _, e, d in messages if e == "job"]


class Sink:
    """A subscriber's sink that records what it is given."""

    def __init__(self, fail=False):
        self.data = b""
        self.writes = 0
        self.closed = False
        self.aborted = False
        self.fail = fail

    def write(self, data):
        if self.fail:
            raise RuntimeError("connection gone")
        self.data += data
        self.writes += 1

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True

    def messages(self):
        """``[(id, event, data)]`` of the SSE messages received (comments left out)."""
        return sse_messages(self.data)

    def jobs(self):
        """The job events: ``[(job_id, kind, state)]``."""
        return job_triples(self.messages())

    def pings(self):
        return self.data.count(b": ping\n\n")


class Jobs:
    """The fake job store: owner and row per job, answered at once or when released."""

    def __init__(self):
        self.table = {JA: ("k_alice", {"job_id": JA, "job_state": "PENDING", "attempts": 0}),
                      JB: ("k_bob", {"job_id": JB, "job_state": "PENDING", "attempts": 0})}
        self.reads = []
        self.held = None  # a list of Deferreds when reads are held back

    def load_job(self, job_id):
        self.reads.append(job_id)
        if self.held is not None:
            d = defer.Deferred()
            self.held.append((d, job_id))
            return d
        return self._answer(job_id)

    def _answer(self, job_id):
        if job_id not in self.table:
            raise NoSuchJob(job_id)
        owner, row = self.table[job_id]
        return owner, dict(row)

    def release(self):
        held, self.held = self.held, []
        for d, job_id in held:
            try:
                d.callback(self._answer(job_id))
            except NoSuchJob as exc:
                d.errback(exc)

    def load_snapshot(self, viewer, filters):
        rows = [dict(row) for job_id, (owner, row) in sorted(self.table.items())
                if viewer.may_see(owner) and filters.match(job_id, row["job_state"])]
        return {"jobs": rows, "truncated": False}


@pytest.fixture
def clock():
    c = task.Clock()
    c.advance(NOW)
    return c


@pytest.fixture
def jobs():
    return Jobs()


def make_hub(clock, jobs, **kw):
    hub = EventsHub(clock, jobs.load_job, jobs.load_snapshot, **kw)
    hub.startService()
    return hub


def event(job_id, kind="state", state=None, **kw):
    return JobEvent(job_id=job_id, at=NOW, kind=EventKind(kind), state=state, **kw)


def publish(hub, clock, *events):
    for e in events:
        hub.publish(e)
    clock.advance(0)  # the coalesced flush: at once after a quiet spell,
    clock.advance(hub.flush_interval_s)  # else FLUSH_INTERVAL_S after the last one


def test_fan_out_in_order_after_the_snapshot(clock, jobs):
    """Two streams get the snapshot, then every event in order, ids one apart from the hub's sequence."""
    hub = make_hub(clock, jobs)
    a, b = Sink(), Sink()
    hub.subscribe(ADMIN, Filters(), a, preamble=b"retry: 2000\n\n")
    hub.subscribe(ADMIN, Filters(), b)
    assert a.data.startswith(b"retry: 2000\n\n")
    publish(hub, clock, event(JA, "state", "DOWNLOADING"), event(JA, "progress", progress=10.0),
            event(JB, "assigned", worker_id="w1", attempt=1))
    for sink in (a, b):
        messages = sink.messages()
        assert [m[1] for m in messages] == ["snapshot", "job", "job", "job"]
        snap_id, _, snapshot = messages[0]
        assert snap_id == int(NOW * 1000) - 1 == snapshot["last_event_id"]
        assert [r["job_id"] for r in snapshot["jobs"]] == [JA, JB]
        assert [m[0] for m in messages[1:]] == [snap_id + 1, snap_id + 2, snap_id + 3]
        assert sink.jobs() == [(JA, "state", "DOWNLOADING"), (JA, "progress", None), (JB, "assigned", None)]
    data = [d for _, e, d in a.messages() if e == "job"]
    assert data[0]["job"]["job_state"] == "DOWNLOADING"
    assert data[1]["progress"] == 10.0 and data[1]["job"]["progress"] == 10.0
    assert data[1]["job"]["job_state"] == "DOWNLOADING"  # the cached row, moved on by the state event
    assert data[2]["worker_id"] == "w1" and data[2]["at"].endswith("Z")
    assert hub.published == 3


def test_one_write_per_subscriber_per_reactor_turn(clock, jobs):
    """Events published in one turn reach each stream in one write (after the snapshot's)."""
    hub = make_hub(clock, jobs)
    sink = Sink()
    hub.subscribe(ADMIN, Filters(), sink)
    before = sink.writes
    publish(hub, clock, *[event(JA, "progress", progress=p) for p in range(10, 60, 10)])
    assert sink.writes == before + 1
    assert len(sink.jobs()) == 5


def test_filters_by_job_and_state(clock, jobs):
    """?job_id= keeps one job's events; ?state= the events whose job is then in one of the states."""
    hub = make_hub(clock, jobs)
    one, encoding = Sink(), Sink()
    hub.subscribe(ADMIN, Filters(job_id=JB), one)
    hub.subscribe(ADMIN, Filters(states=frozenset({"ENCODING", "FINISHED"})), encoding)
    publish(hub, clock, event(JA, "state", "DOWNLOADING"), event(JB, "state", "DOWNLOADING"),
            event(JA, "state", "ENCODING"), event(JA, "progress", progress=50.0), event(JB, "state", "ENCODING"),
            event(JA, "state", "FINISHED"))
    assert one.jobs() == [(JB, "state", "DOWNLOADING"), (JB, "state", "ENCODING")]
    assert [r["job_id"] for r in one.messages()[0][2]["jobs"]] == [JB]
    assert encoding.jobs() == [(JA, "state", "ENCODING"), (JA, "progress", None), (JB, "state", "ENCODING"),
                               (JA, "state", "FINISHED")]


def test_a_key_sees_only_its_own_jobs(clock, jobs):
    """Alice's stream carries Alice's job only, Bob's Bob's; admin sees both; an unknown job only admin."""
    hub = make_hub(clock, jobs)
    alice, bob, admin = Sink(), Sink(), Sink()
    for viewer, sink in ((ALICE, alice), (BOB, bob), (ADMIN, admin)):
        hub.subscribe(viewer, Filters(), sink)
    ghost = "c" * 50
    publish(hub, clock, event(JA, "state", "DOWNLOADING"), event(JB, "state", "DOWNLOADING"),
            event(ghost, "state", "ERROR"))
    assert alice.jobs() == [(JA, "state", "DOWNLOADING")]
    assert bob.jobs() == [(JB, "state", "DOWNLOADING")]
    assert admin.jobs() == [(JA, "state", "DOWNLOADING"), (JB, "state", "DOWNLOADING"), (ghost, "state", "ERROR")]
    assert [r["job_id"] for r in alice.messages()[0][2]["jobs"]] == [JA]
    # A key id that is None (anonymous) without sees_all sees no owned job.
    assert not Viewer(key_id=None).may_see("k_alice") and not Viewer(key_id=None).may_see(None)


def test_resume_from_the_buffer(clock, jobs):
    """Last-Event-ID inside the buffer: exactly the events after it (no snapshot), then live ones."""
    hub = make_hub(clock, jobs)
    first = Sink()
    hub.subscribe(ADMIN, Filters(), first)
    publish(hub, clock, *[event(JA, "progress", progress=p) for p in (10, 20, 30, 40)])
    ids = [m[0] for m in first.messages()[1:]]
    again = Sink()
    hub.subscribe(ADMIN, Filters(), again, last_event_id=str(ids[1]).encode())
    publish(hub, clock, event(JA, "progress", progress=50))
    got = again.messages()
    assert [m[1] for m in got] == ["job"] * 3
    assert [m[0] for m in got] == ids[2:] + [ids[-1] + 1]
    assert [d["progress"] for _, _, d in got] == [30, 40, 50]
    # At the newest id: nothing replayed, nothing missed.
    current = Sink()
    hub.subscribe(ADMIN, Filters(), current, last_event_id=hub.last_id)
    assert current.messages() == []
    # Resuming applies the stream's own filters and tenant.
    bob = Sink()
    hub.subscribe(BOB, Filters(), bob, last_event_id=ids[0])
    assert bob.messages() == []


def test_too_old_or_unknown_id_gets_a_reset_snapshot(clock, jobs):
    """An id older than the buffer (or from the future, another run, garbage): event reset with the table."""
    hub = make_hub(clock, jobs, buffer_events=3)
    sink = Sink()
    hub.subscribe(ADMIN, Filters(), sink)
    publish(hub, clock, *[event(JA, "progress", progress=p) for p in (10, 20, 30, 40, 50)])
    ids = [m[0] for m in sink.messages()[1:]]
    assert [r.id for r in hub.buffer] == ids[2:]
    ok = Sink()
    hub.subscribe(ADMIN, Filters(), ok, last_event_id=ids[1])  # the one just before the buffer
    assert [m[0] for m in ok.messages()] == ids[2:]
    for asked in (ids[0], ids[-1] + 5, b"garbage", "-3", ""):
        late = Sink()
        hub.subscribe(ADMIN, Filters(), late, last_event_id=asked)
        (only,) = late.messages()
        assert only[1] == "reset" and only[0] == hub.last_id
        assert "missed" in only[2]["reason"] and [r["job_id"] for r in only[2]["jobs"]] == [JA, JB]


def test_heartbeat_to_every_live_stream_and_it_never_stops(clock, jobs):
    """A comment every heartbeat_s; a stream whose write fails is dropped and the loop goes on."""
    hub = make_hub(clock, jobs, heartbeat_s=15.0)
    ok, broken = Sink(), Sink()
    hub.subscribe(ADMIN, Filters(), ok)
    hub.subscribe(ADMIN, Filters(), broken)
    broken.fail = True
    clock.advance(14.9)
    assert ok.pings() == 0
    clock.advance(0.1)
    assert ok.pings() == 1 and broken not in [s.sink for s in hub.subscribers]
    clock.advance(15)
    clock.advance(15)
    assert ok.pings() == 3 and len(hub.subscribers) == 1
    assert hub._heartbeat.running


def test_slow_client_dropped_fast_one_unaffected(clock, jobs):
    """A stream whose transport is full (paused) is dropped once max_buffer_bytes more are written to it;
    a fast stream receives every event, before and after."""
    hub = make_hub(clock, jobs, max_buffer_bytes=4096)
    fast, slow = Sink(), Sink()
    hub.subscribe(ADMIN, Filters(), fast)
    slow_sub = hub.subscribe(ADMIN, Filters(), slow)
    slow_sub.pauseProducing()
    sent = 0
    while not slow.aborted:
        publish(hub, clock, event(JA, "progress", progress=sent % 100, details="x" * 200))
        sent += 1
        assert sent < 100
    assert slow_sub.dropped and hub.dropped == 1 and slow_sub not in hub.subscribers
    assert 4096 < slow_sub.backlog_bytes < 4096 + 600
    publish(hub, clock, event(JA, "state", "ENCODING"))
    assert len(fast.jobs()) == sent + 1 and fast.jobs()[-1] == (JA, "state", "ENCODING")
    # Paused then resumed in time: not dropped.
    other = Sink()
    sub = hub.subscribe(ADMIN, Filters(), other)
    sub.pauseProducing()
    publish(hub, clock, event(JA, "progress", progress=1, details="x" * 1000))
    sub.resumeProducing()
    publish(hub, clock, *[event(JA, "progress", progress=1, details="x" * 1000) for _ in range(8)])
    assert not other.aborted and len(other.jobs()) == 9


def test_caps_in_total_and_per_key(clock, jobs):
    """Past max_clients: StreamsFull (503); past max_clients_per_key for one key: RateLimited (429);
    a stream that ends frees its place."""
    hub = make_hub(clock, jobs, max_clients=3, max_clients_per_key=2)
    subs = [hub.subscribe(ALICE, Filters(), Sink()) for _ in range(2)]
    with pytest.raises(RateLimited) as info:
        hub.subscribe(ALICE, Filters(), Sink())
    assert "SSE_MAX_CLIENTS_PER_KEY 2" in info.value.message and "k_alice" in info.value.message
    hub.subscribe(BOB, Filters(), Sink())
    with pytest.raises(StreamsFull) as info:
        hub.admit(ADMIN)
    assert "SSE_MAX_CLIENTS 3" in info.value.message and info.value.retry_after_s > 0
    hub.unsubscribe(subs[0])
    hub.unsubscribe(subs[0])  # twice: counted once
    assert hub.streams_of(ALICE) == 1
    hub.subscribe(ALICE, Filters(), Sink())
    assert len(hub.subscribers) == 3


def test_one_jobs_order_kept_while_it_is_read(clock, jobs):
    """Events of a job wait behind its store read, in order; a state event reads it again; another job
    already known is not held up."""
    hub = make_hub(clock, jobs)
    sink = Sink()
    hub.subscribe(ADMIN, Filters(), sink)
    publish(hub, clock, event(JB, "state", "DOWNLOADING"))  # JB known from now on
    jobs.reads.clear()
    jobs.held = []
    jobs.table[JA] = ("k_alice", {"job_id": JA, "job_state": "ENCODING", "attempts": 2, "worker_id": "w9"})
    publish(hub, clock, event(JA, "state", "ENCODING"), event(JA, "progress", progress=10.0),
            event(JB, "progress", progress=20.0), event(JA, "state", "UPLOADING"), event(JA, "progress", progress=90))
    assert sink.jobs()[-1] == (JB, "progress", None)  # not held up by JA
    assert jobs.reads == [JA]
    jobs.release()  # the first read answers; the UPLOADING event asks for a second
    clock.advance(0)
    assert jobs.reads == [JA, JA]
    jobs.release()
    clock.advance(hub.flush_interval_s)
    got = [(k, d["job"]["job_state"], d["job"].get("attempts"), d["job"].get("worker_id"))
           for _, e, d in sink.messages() if e == "job" and d["job_id"] == JA for k in [d["kind"]]]
    assert got == [("state", "ENCODING", 2, "w9"), ("progress", "ENCODING", 2, "w9"),
                   ("state", "UPLOADING", 2, "w9"), ("progress", "UPLOADING", 2, "w9")]


def test_events_during_the_snapshot_wait_for_it(clock, jobs):
    """A stream whose snapshot is being read holds the events meanwhile and gets them after it; events
    published before it subscribed (not yet flushed) are not sent again."""
    pending = defer.Deferred()
    hub = EventsHub(clock, jobs.load_job, lambda viewer, filters: pending)
    hub.startService()
    hub.publish(event(JA, "state", "DOWNLOADING"))  # in the outbox, not flushed
    sink = Sink()
    hub.subscribe(ADMIN, Filters(), sink, preamble=b": hi\n\n")
    publish(hub, clock, event(JA, "state", "ENCODING"))
    assert sink.data == b": hi\n\n"
    pending.callback({"jobs": [{"job_id": JA, "job_state": "DOWNLOADING"}], "truncated": False})
    messages = sink.messages()
    assert [m[1] for m in messages] == ["snapshot", "job"]
    assert messages[1][2]["state"] == "ENCODING" and messages[1][0] == messages[0][0] + 1


def test_publish_never_raises(clock, jobs):
    """Malformed input, a store that fails: logged, nothing raised, later events still flow."""
    hub = make_hub(clock, jobs)
    sink = Sink()
    hub.subscribe(ADMIN, Filters(), sink)
    hub.publish({"nonsense": True})
    hub.publish(None)
    jobs.load_job = lambda job_id: defer.fail(RuntimeError("store down"))
    publish(hub, clock, event("d" * 50, "state", "ENCODING"))
    jobs.load_job = Jobs().load_job
    publish(hub, clock, event(JA, "state", "ENCODING"))
    assert sink.jobs() == [("d" * 50, "state", "ENCODING"), (JA, "state", "ENCODING")]


def test_stop_ends_every_stream(clock, jobs):
    """stopService flushes what was published and ends each stream; the heartbeat stops."""
    hub = make_hub(clock, jobs)
    sinks = [Sink(), Sink()]
    for sink in sinks:
        hub.subscribe(ADMIN, Filters(), sink)
    hub.publish(event(JA, "state", "CANCELED"))
    hub.stopService()
    assert all(s.closed and s.jobs() == [(JA, "state", "CANCELED")] for s in sinks)
    assert not hub.subscribers and not hub._heartbeat.running


def test_writes_at_once_after_a_quiet_spell_then_at_most_every_interval(clock, jobs):
    """The first event after a quiet spell is written at once; events during the next FLUSH_INTERVAL_S
    wait for its end and go out together; streams seeing the same jobs get the same bytes."""
    hub = make_hub(clock, jobs, flush_interval_s=0.025)
    a, b, bob = Sink(), Sink(), Sink()
    for viewer, sink in ((ADMIN, a), (ADMIN, b), (BOB, bob)):
        hub.subscribe(viewer, Filters(), sink)
    publish(hub, clock, event(JB, "state", "DOWNLOADING"))  # both jobs known from here on
    publish(hub, clock, event(JA, "state", "DOWNLOADING"))
    clock.advance(1)
    writes = a.writes
    hub.publish(event(JA, "progress", progress=10))
    clock.advance(0)
    assert a.writes == writes + 1  # at once
    clock.advance(0.010)
    hub.publish(event(JA, "progress", progress=20))
    hub.publish(event(JB, "progress", progress=30))
    clock.advance(0.010)
    assert a.writes == writes + 1  # waiting for the interval's end
    clock.advance(0.005)
    assert a.writes == writes + 2 and [d["progress"] for _, _, d in a.messages()[-2:]] == [20, 30]
    assert a.data == b.data
    assert [d["progress"] for _, _, d in bob.messages()[-1:]] == [30]
