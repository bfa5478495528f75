"""GET /events over a real socket: the API's Klein resource in a real
``InFlightSite`` on a loopback port, read by raw TCP clients, with a real
SQLite job store, queue and key store. Events are published to the hub as
the notifier would (``hub.publish``).

Headers (never gzipped), the snapshot, keys and tenants (Bearer, stream
tokens, ``?key=`` refused), filters and their errors, Last-Event-ID by header
and by query, the caps (503/429), a client that never reads dropped while a
fast one keeps receiving, clients removed when they go, HEAD, stopping."""

import json
import socket

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.events import EventKind, JobEvent
from nommer.core.job import Job, new_job_id
from nommer.core.keys import open_key_store
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from nommer.feederd.events_hub import Filters, Viewer
from nommer.feederd.inflight import InFlightSite
from nommer.feederd.sse import EventStreams, JobViews, make_hub
from tests.feederd.test_events_hub import job_triples, sse_messages
from tests.helpers import doc_two_pass, ensure, eventually, temp_settings

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


class RawClient(protocol.Protocol):
    """Sends one request, keeps every byte of the answer. HTTP/1.0 by default:
    no chunking, the stream is the raw body until the server closes."""

    def __init__(self, request):
        self.request = request
        self.data = b""
        self.closed = defer.Deferred()
        self.lost = False

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.lost = True
        self.closed.callback(self.data)

    @property
    def head(self):
        return self.data.split(b"\r\n\r\n", 1)[0].decode()

    @property
    def status(self):
        return int(self.head.split(" ", 2)[1]) if self.data else None

    def header(self, name):
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def body(self):
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""

    def messages(self):
        """``[(id, event, data)]`` of the complete SSE messages so far."""
        return sse_messages(self.body)

    def jobs(self):
        return job_triples(self.messages())

    def json(self):
        return json.loads(self.body)


class StreamTestBase(TestCase):
    timeout = 60

    def build(self, **overrides):
        self.settings, self.root = temp_settings(self, **overrides)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.clock = task.Clock()
        self.clock.advance(reactor.seconds())
        self.keys = open_key_store(self.settings, reactor=reactor, clock=self.clock)
        for closable in (self.keys, self.queue, self.store):
            self.addCleanup(closable.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.hub = make_hub(self.store, self.settings, reactor)
        self.hub.startService()
        self.addCleanup(lambda: self.hub.running and self.hub.stopService())
        self.streams = EventStreams(self.hub, self.store, self.settings, self.clock)
        self.api = JobAPI(self.ledger, self.settings, clock=self.clock, keys=self.keys, events=self.streams)
        self.site = InFlightSite(self.api.resource())
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.clients = []
        self.addCleanup(self._close_clients)

    def _close_clients(self):
        for client in self.clients:
            if client.transport is not None and not client.lost:
                client.transport.abortConnection()
        return defer.DeferredList([c.closed for c in self.clients])

    async def open(self, path="/events", headers=(), method="GET", version="HTTP/1.0", body=b""):
        """A raw client that sent ``method path``; returns once it has the response head."""
        lines = [f"{method} {path} {version}", f"Host: 127.0.0.1:{self.port.getHost().port}",
                 *[f"{k}: {v}" for k, v in headers]]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        client = RawClient(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.clients.append(client)
        await endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), client)
        await eventually(lambda: b"\r\n\r\n" in client.data or client.lost, what="the response head")
        return client

    async def submit(self, owner=None, state=None):
        job = await self.ledger.submit(Job(job_id=new_job_id(), owner=owner, source_path=f"file://{self.root}/in.mp4",
                                           dest_path=f"file://{self.root}/out.mp4", nommer=FFMPEG,
                                           job_options=doc_two_pass()))
        if state is not None:
            await self.ledger.set_state(job.job_id, state)
        return job.job_id

    def publish(self, job_id, kind="state", state=None, **kw):
        self.hub.publish(JobEvent(job_id=job_id, at=reactor.seconds(), kind=EventKind(kind), state=state, **kw))

    async def key(self, name, *scopes):
        key, secret = await self.keys.create(name, scopes or ("submit", "read", "cancel"))
        return key.key_id, secret


class StreamTests(StreamTestBase):
    def setUp(self):
        self.build()

    @ensure
    async def test_headers_snapshot_then_live_events(self):
        """text/event-stream, no-cache, X-Accel-Buffering: no, never gzipped (even when asked); retry
        first, the snapshot of the jobs, then live events in order."""
        job_id = await self.submit()
        client = await self.open(headers=[("Accept-Encoding", "gzip, deflate")])
        self.assertEqual(client.status, 200, client.data)
        self.assertEqual(client.header("content-type"), "text/event-stream; charset=utf-8")
        self.assertEqual(client.header("cache-control"), "no-cache")
        self.assertEqual(client.header("x-accel-buffering"), "no")
        self.assertIsNone(client.header("content-encoding"))
        await eventually(lambda: client.messages(), what="the snapshot")
        self.assertTrue(client.body.startswith(b"retry: 2000\n"), client.body[:80])
        (snap_id, name, snapshot), = client.messages()
        self.assertEqual(name, "snapshot")
        self.assertEqual([(j["job_id"], j["job_state"]) for j in snapshot["jobs"]], [(job_id, "PENDING")])
        self.assertFalse(snapshot["truncated"])
        self.publish(job_id, "state", "DOWNLOADING")
        self.publish(job_id, "progress", progress=10.0)
        await eventually(lambda: len(client.messages()) == 3, what="two events")
        self.assertEqual(client.jobs(), [(job_id, "state", "DOWNLOADING"), (job_id, "progress", None)])
        ids = [m[0] for m in client.messages()]
        self.assertEqual(ids, [snap_id, snap_id + 1, snap_id + 2])
        job = client.messages()[2][2]["job"]
        self.assertEqual((job["job_id"], job["progress"], job["attempts"]), (job_id, 10.0, 0))

    @ensure
    async def test_last_event_id_header_and_query(self):
        """Last-Event-ID (header, or ?last_event_id=) replays what came after it and no snapshot; one older
        than the buffer gets event: reset with the table."""
        job_id = await self.submit()
        first = await self.open()
        for p in (10, 20, 30):
            self.publish(job_id, "progress", progress=float(p))
        await eventually(lambda: len(first.messages()) == 4, what="three events")
        ids = [m[0] for m in first.messages()]
        by_header = await self.open(headers=[("Last-Event-ID", str(ids[1]))])
        by_query = await self.open(f"/events?last_event_id={ids[2]}")
        self.publish(job_id, "progress", progress=40.0)
        await eventually(lambda: len(by_header.messages()) == 3 and len(by_query.messages()) == 2)
        self.assertEqual([(m[0], m[2]["progress"]) for m in by_header.messages()],
                         [(ids[2], 20.0), (ids[3], 30.0), (ids[3] + 1, 40.0)])
        self.assertEqual([m[2]["progress"] for m in by_query.messages()], [30.0, 40.0])
        old = await self.open(headers=[("Last-Event-ID", str(ids[0] - 100))])
        await eventually(lambda: old.messages(), what="the reset")
        (_, name, data), = old.messages()
        self.assertEqual(name, "reset")
        self.assertIn("missed", data["reason"])
        self.assertEqual([j["job_id"] for j in data["jobs"]], [job_id])

    @ensure
    async def test_filters_and_their_errors(self):
        """?job_id= and ?state= (comma-separated or repeated, any case) filter; a bad state is 400
        BADINPUT, an unknown or malformed job id 404 NOSUCHJOB, before any stream opens."""
        one, other = await self.submit(), await self.submit()
        by_job = await self.open(f"/events?job_id={one}")
        by_state = await self.open("/events?state=encoding,FINISHED&state=canceled")
        await eventually(lambda: by_job.messages() and by_state.messages())
        self.assertEqual([j["job_id"] for j in by_job.messages()[0][2]["jobs"]], [one])
        self.assertEqual(by_state.messages()[0][2]["jobs"], [])
        self.publish(other, "state", "DOWNLOADING")
        self.publish(one, "state", "DOWNLOADING")
        self.publish(one, "state", "ENCODING")
        self.publish(other, "state", "CANCELED")
        await eventually(lambda: len(by_state.messages()) == 3)
        await eventually(lambda: len(by_job.messages()) == 3)
        self.assertEqual(by_job.jobs(), [(one, "state", "DOWNLOADING"), (one, "state", "ENCODING")])
        # Each job's events keep their order; two jobs' may interleave either way (each is read in turn).
        self.assertEqual(sorted(by_state.jobs()), sorted([(one, "state", "ENCODING"), (other, "state", "CANCELED")]))
        for path, status, code in (("/events?state=NOPE", 400, "BADINPUT"), ("/events?job_id=xyz", 404, "NOSUCHJOB"),
                                   (f"/events?job_id={'f' * 50}", 404, "NOSUCHJOB")):
            client = await self.open(path)
            await client.closed
            self.assertEqual((client.status, client.json()["error_code"]), (status, code), client.data)
        self.assertEqual(len(self.hub.subscribers), 2)

    @ensure
    async def test_clients_removed_when_they_go_and_head(self):
        """A client that disconnects leaves the hub; HEAD answers the stream's headers and ends."""
        client = await self.open()
        await eventually(lambda: client.messages())
        self.assertEqual(len(self.hub.subscribers), 1)
        client.transport.loseConnection()
        await eventually(lambda: not self.hub.subscribers, what="the subscriber removed")
        head = await self.open(method="HEAD")
        await head.closed
        self.assertEqual((head.status, head.header("content-type")), (200, "text/event-stream; charset=utf-8"))
        self.assertEqual(head.body, b"")
        self.assertFalse(self.hub.subscribers)

    @ensure
    async def test_stop_ends_the_streams_and_the_site_drains(self):
        """Stopping the hub ends every stream (HTTP/1.1: the last chunk; the connection stays usable) so the
        site's in-flight count falls to zero and feederd's stop is not held up."""
        old = await self.open()
        new = await self.open(version="HTTP/1.1")
        await eventually(lambda: old.messages() and b"snapshot" in new.data)
        self.assertEqual(self.site.in_flight, 2)
        drained = self.site.refuse_new()
        self.hub.stopService()
        await old.closed
        await drained
        await eventually(lambda: new.data.endswith(b"0\r\n\r\n"), what="the last chunk")
        self.assertEqual(self.site.in_flight, 0)


class KeyedStreamTests(StreamTestBase):
    """With API keys: who may open a stream and what each sees."""

    def setUp(self):
        self.build(SSE_MAX_CLIENTS=4, SSE_MAX_CLIENTS_PER_KEY=2)

    @ensure
    async def test_a_key_sees_only_its_own_jobs(self):
        """Alice's stream: her jobs in the snapshot and her jobs' events only; admin sees both; Alice asking
        for Bob's job by id gets 404 as for a job that does not exist."""
        alice_id, alice = await self.key("alice")
        bob_id, bob = await self.key("bob")
        _, admin = await self.key("ops", "admin")
        mine, theirs = await self.submit(owner=alice_id), await self.submit(owner=bob_id)
        a = await self.open(headers=[("Authorization", f"Bearer {alice}")])
        b = await self.open(headers=[("Authorization", f"Bearer {admin}")])
        await eventually(lambda: a.messages() and b.messages())
        self.assertEqual([j["job_id"] for j in a.messages()[0][2]["jobs"]], [mine])
        self.assertEqual(sorted(j["job_id"] for j in b.messages()[0][2]["jobs"]), sorted([mine, theirs]))
        self.publish(theirs, "state", "DOWNLOADING")
        self.publish(mine, "state", "DOWNLOADING")
        await eventually(lambda: len(a.messages()) == 2 and len(b.messages()) == 3)
        self.assertEqual(a.jobs(), [(mine, "state", "DOWNLOADING")])
        self.assertEqual(b.jobs(), [(theirs, "state", "DOWNLOADING"), (mine, "state", "DOWNLOADING")])
        denied = await self.open(f"/events?job_id={theirs}", headers=[("Authorization", f"Bearer {alice}")])
        await denied.closed
        self.assertEqual((denied.status, denied.json()["error_code"]), (404, "NOSUCHJOB"))
        # Bob, by stream token: his job only.
        token = await self.open("/events/token", method="POST", headers=[("Authorization", f"Bearer {bob}")])
        await token.closed
        c = await self.open("/events?token=" + token.json()["token"])
        await eventually(lambda: c.messages())
        self.assertEqual([j["job_id"] for j in c.messages()[0][2]["jobs"]], [theirs])

    @ensure
    async def test_who_may_open_a_stream(self):
        """No key: 401; a key without read: 403; ?key= is not a credential; a stream token opens the
        stream of its key until it expires (then 401), and nothing else."""
        _, reader = await self.key("reader", "read")
        _, submitter = await self.key("submitter", "submit")
        for headers, path, status in (([], "/events", 401), ([("Authorization", f"Bearer {submitter}")], "/events", 403),
                                      ([], f"/events?key={reader}", 401),
                                      ([("Authorization", f"Bearer {submitter}")], "/events/token", 403)):
            client = await self.open(path, headers=headers, method="POST" if path.endswith("token") else "GET")
            await client.closed
            self.assertEqual(client.status, status, client.data)
        answer = await self.open("/events/token", method="POST", headers=[("Authorization", f"Bearer {reader}")])
        await answer.closed
        self.assertEqual(answer.status, 200, answer.data)
        token = answer.json()["token"]
        self.assertEqual(answer.json()["expires_in_s"], self.settings.SSE_TOKEN_TTL_S)
        for _ in range(2):  # EventSource reconnects with the same URL
            stream = await self.open(f"/events?token={token}")
            self.assertEqual(stream.status, 200)
            stream.transport.loseConnection()
        for path in (f"/jobs?token={token}", f"/events?token={token[:-2]}xx"):
            client = await self.open(path)
            await client.closed
            self.assertEqual(client.status, 401, client.data)
        self.clock.advance(self.settings.SSE_TOKEN_TTL_S)
        expired = await self.open(f"/events?token={token}")
        await expired.closed
        self.assertEqual(expired.status, 401)
        self.assertIn("expired", expired.json()["message"])

    @ensure
    async def test_caps_per_key_and_in_total(self):
        """Past SSE_MAX_CLIENTS_PER_KEY for one key: 429 RATELIMITED; past SSE_MAX_CLIENTS: 503
        TOOMANYSTREAMS with Retry-After; both say which setting."""
        _, one = await self.key("one")
        _, two = await self.key("two")
        _, three = await self.key("three")
        auth = [[("Authorization", f"Bearer {k}")] for k in (one, two, three)]
        opened = [await self.open(headers=auth[0]), await self.open(headers=auth[0])]
        over = await self.open(headers=auth[0])
        await over.closed
        self.assertEqual((over.status, over.json()["error_code"]), (429, "RATELIMITED"))
        self.assertIn("SSE_MAX_CLIENTS_PER_KEY", over.json()["message"])
        opened += [await self.open(headers=auth[1]), await self.open(headers=auth[1])]
        full = await self.open(headers=auth[2])
        await full.closed
        self.assertEqual((full.status, full.json()["error_code"]), (503, "TOOMANYSTREAMS"))
        self.assertIn("SSE_MAX_CLIENTS", full.json()["message"])
        self.assertIsNotNone(full.header("retry-after"))
        opened[0].transport.loseConnection()
        await eventually(lambda: len(self.hub.subscribers) == 3)
        again = await self.open(headers=auth[2])
        self.assertEqual(again.status, 200)


class SlowClientTests(StreamTestBase):
    def setUp(self):
        self.build(SSE_MAX_BUFFER_BYTES=64 * 1024)

    @ensure
    async def test_a_client_that_never_reads_is_dropped_the_others_get_everything(self):
        """A raw socket (small receive buffer) that sends its request and never reads: once the kernel and
        the transport buffers are full and 64 KiB more are due, it is disconnected; a reading client
        gets every event, in order, meanwhile."""
        job_id = await self.submit()
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", self.port.getHost().port))
        self.addCleanup(slow.close)
        slow.sendall(f"GET /events HTTP/1.0\r\nHost: 127.0.0.1:{self.port.getHost().port}\r\n\r\n".encode())
        fast = await self.open()
        await eventually(lambda: len(self.hub.subscribers) == 2 and fast.messages())
        details = "x" * 1000
        sent = 0
        while not self.hub.dropped:
            for _ in range(50):
                self.publish(job_id, "progress", progress=float(sent % 100), details=details)
                sent += 1
            await task.deferLater(reactor, 0.01, lambda: None)
            self.assertLess(sent, 100_000, "the slow client was never dropped")
        self.assertEqual(len(self.hub.subscribers), 1)
        self.publish(job_id, "state", "ENCODING")
        sent += 1
        await eventually(lambda: len(fast.jobs()) == sent, timeout_s=30, what="every event at the fast client")
        self.assertEqual(fast.jobs()[-1], (job_id, "state", "ENCODING"))
        ids = [m[0] for m in fast.messages()]
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))))
        # The slow one finds its connection dropped: reset, or EOF after what the kernel held.
        slow.setblocking(False)
        got = 0
        while True:
            try:
                chunk = slow.recv(1 << 20)
            except BlockingIOError:
                await task.deferLater(reactor, 0.01, lambda: None)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        self.assertLess(got, sent * len(details))


class SnapshotTests(TestCase):
    """JobViews.load_snapshot over a real SQLite store."""

    timeout = 30

    @ensure
    async def test_open_jobs_newest_first_then_recent_final_ones_bounded(self):
        settings, root = temp_settings(self)
        store = make_store(settings, reactor)
        queue = make_queue(settings, reactor)
        self.addCleanup(queue.close)
        self.addCleanup(store.close)
        ledger = JobLedger(store, queue, settings)
        made = []
        for i, (owner, state) in enumerate([("k1", None), ("k1", JobState.DOWNLOADING), ("k2", None),
                                            ("k1", JobState.CANCELED), ("k1", JobState.CANCELED),
                                            ("k1", None), ("k2", JobState.CANCELED)]):
            job = await ledger.submit(Job(job_id=new_job_id(), owner=owner, source_path=f"file://{root}/a.mp4",
                                          dest_path=f"file://{root}/b.mp4", nommer=FFMPEG,
                                          job_options=doc_two_pass(), created_at=1000.0 + i))
            if state is not None:
                await ledger.set_state(job.job_id, state)
            made.append(job.job_id)
        views = JobViews(store, max_jobs=2, max_final=1)
        k1 = Viewer(key_id="k1")
        snap = await views.load_snapshot(k1, Filters())
        self.assertEqual([r["job_id"] for r in snap["jobs"]], [made[5], made[1], made[4]])
        self.assertTrue(snap["truncated"])
        self.assertEqual(set(snap["jobs"][0]) - {"priority", "pool"},
                         {"job_id", "job_state", "job_state_details", "progress", "attempts", "worker_id",
                          "preset", "source_path", "created_at", "updated_at", "started_at", "finished_at"})
        everyone = await JobViews(store, max_jobs=10, max_final=10).load_snapshot(Viewer(sees_all=True), Filters())
        self.assertEqual(len(everyone["jobs"]), 7)
        self.assertFalse(everyone["truncated"])
        pending = await views.load_snapshot(k1, Filters(states=frozenset({"PENDING"})))
        self.assertEqual([r["job_id"] for r in pending["jobs"]], [made[5], made[0]])
        self.assertFalse(pending["truncated"])
        one = await views.load_snapshot(k1, Filters(job_id=made[2]))
        self.assertEqual(one["jobs"], [])  # k2's job
        self.assertEqual(await views.load_job(made[2]), ("k2", (await views.load_snapshot(
            Viewer(key_id="k2"), Filters(job_id=made[2])))["jobs"][0]))
