"""The live event hub: every job event feederd learns of, fanned out to the
open event streams (``GET /events``; the HTTP side is ``nommer.feederd.sse``).

Where events come from: the notifier reads the state-change queue, on which
every writer of a job (a worker, the API's cancel, the reaper) announces its
events, and hands each one to ``EventsHub.publish`` (``on_event``). So the
hub sees the changes of every daemon, in each job's order.

What the hub does with an event (never blocking the reactor, never raising):

- it joins the job's fields a dashboard needs (``job``: state, progress,
  attempts, worker, times; ``JOB_ROW_FIELDS``) and the job's ``owner``
  (who may see it). They come from a cache of recent jobs; the kinds that
  change them (``REFRESH_KINDS``) read the job again from the store first
  (``load_job``), one job's events staying in their order while it is read;
- it numbers the event with the hub's global sequence (``id``), renders its
  SSE frame once, keeps it in a ring buffer of the last ``buffer_events``
  events (for ``Last-Event-ID`` resumes), and writes it to every subscriber
  allowed to see it (tenant: ``admin`` keys and the anonymous caller see
  every job, another key only the jobs it submitted) whose filters match
  (``job_id``, states). The streams are written at most once every
  ``flush_interval_s`` (50 ms): the first event after a quiet spell goes out
  at once, and under load the events of the interval go out together, in one
  write per stream, each rendered once for all the streams that see the same
  jobs through the same filters. (A write costs the reactor a ``send`` per
  stream whatever its size, some 7 us on a small VM: with 200 streams, a
  write per event would cost about half of what the submit that made the
  event costs; bench/sse_fanout.py.)

Ids: the first id of a hub is the epoch time in milliseconds when it started,
then +1 per event, so the ids of a restarted feederd are above those of the
one before (unless it published over 1000 events a second on average): a
``Last-Event-ID`` from before a restart, or one from the future, is not in
the buffer and gets a fresh snapshot (``event: reset``).

Subscribers: each ``Subscriber`` is also the stream's push producer
(registered on the request), so the transport tells it when its buffer is
full (``pauseProducing``); what is written to it while paused is counted, and
past ``max_buffer_bytes`` the client is dropped (its connection aborted): a
client that does not read never slows the others nor grows feederd's memory.
A heartbeat comment goes to every subscriber every ``heartbeat_s`` (one
LoopingCall that never raises). Streams are capped in total
(``max_clients``: ``StreamsFull``, 503) and per key (``max_clients_per_key``:
``RateLimited``, 429). On stop every stream is ended (the clients reconnect to
the next feederd after ``retry``).
"""

import collections
import itertools
import json

import attr
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from nommer.core.errors import NommerError, NoSuchJob
from nommer.core.events import EventKind, JobEvent, event_to_api
from nommer.feederd.ratelimit import RateLimited

#: The SSE ``event:`` name of a job event (its kind is in the data: one name,
#: so a browser's EventSource needs one listener).
JOB = "job"
#: The first event of a stream without (usable) Last-Event-ID: the job table.
SNAPSHOT = "snapshot"
#: A snapshot sent because the Last-Event-ID asked for is no longer (or not)
#: in the buffer: events were missed, start again from this table.
RESET = "reset"

#: Event kinds after which the job is read again from the store (its state,
#: worker, attempts may have changed); the others (progress, webhook, error)
#: are joined with the cached job.
REFRESH_KINDS = frozenset({EventKind.SUBMITTED, EventKind.STATE, EventKind.ASSIGNED, EventKind.RETRY, EventKind.CHUNK,
                           EventKind.LEASE_LOST})

#: The job fields (as ``GET /job/<id>`` names them) an event carries in its
#: ``job`` and a snapshot in each of its ``jobs``: what a live job table
#: shows (the rest is one ``GET /job/<id>`` away; every byte here goes to
#: every stream); fields a job view lacks are left out.
JOB_ROW_FIELDS = ("job_id", "job_state", "job_state_details", "progress", "attempts", "worker_id", "preset",
                  "priority", "pool", "source_path", "created_at", "updated_at", "started_at", "finished_at")

#: Jobs whose owner and fields the hub remembers (least recently used dropped).
JOBS_REMEMBERED = 10_000

#: The heartbeat comment.
HEARTBEAT = b": ping\n\n"

#: Shortest time between two writes to the streams, seconds (see the module docstring).
FLUSH_INTERVAL_S = 0.05


class StreamsFull(NommerError):
    """Too many event streams are open on this feederd (SSE_MAX_CLIENTS): the
    API answers 503 ``TOOMANYSTREAMS`` with ``Retry-After``."""

    def __init__(self, message, retry_after_s=5.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def frame(event_id, name, data):
    """One SSE message: ``id``, ``event`` and one ``data`` line of ``data``
    as compact JSON (JSON never holds a raw newline), as bytes."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {name}\ndata: {body}\n\n".encode("utf-8")


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Filters:
    """What a stream asked for: ``job_id`` (one job) or None; ``states`` a
    frozenset of state names (the job's state after the event) or None."""

    job_id: str = None
    states: frozenset = None

    def match(self, job_id, state):
        if self.job_id is not None and job_id != self.job_id:
            return False
        return self.states is None or state in self.states


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Viewer:
    """Who a stream is for: ``key_id`` (None for the anonymous caller) and
    ``sees_all`` (admin or anonymous: every job). ``auth.Caller`` gives both."""

    key_id: str = None
    sees_all: bool = False

    @classmethod
    def of(cls, caller):
        return cls(key_id=caller.key_id, sees_all=caller.sees_all)

    def may_see(self, owner):
        return self.sees_all or (owner is not None and owner == self.key_id)

    @property
    def scope(self):
        """What decides which jobs it sees: every job, or one key's."""
        return "*" if self.sees_all else ("key", self.key_id)

    @property
    def count_key(self):
        """Its entry in the per-key stream count."""
        return self.key_id if self.key_id is not None else "anonymous"


@attr.s(slots=True, frozen=True, auto_attribs=True)
class _Record:
    """One published event as kept in the ring buffer."""

    id: int
    job_id: str
    owner: str
    state: str
    frame: bytes


@implementer(IPushProducer)
class Subscriber:
    """One open stream. ``sink`` is where its bytes go: ``write(bytes)``,
    ``close()`` (end the stream cleanly) and ``abort()`` (drop the
    connection). The transport calls ``pauseProducing``/``resumeProducing``
    (it is the request's push producer); ``stopProducing`` when the
    connection goes. Made by ``EventsHub.subscribe``."""

    def __init__(self, hub, viewer, filters, sink):
        self.hub = hub
        self.viewer = viewer
        self.filters = filters
        self.sink = sink
        self.paused = False
        #: Bytes written while the transport said its buffer was full.
        self.backlog_bytes = 0
        #: Frames held while the snapshot is read (None: live).
        self.pending = []
        self.pending_bytes = 0
        #: The id of the last event this stream was given (events up to it
        #: are in its snapshot or were replayed).
        self.after = None
        self.closed = False
        self.dropped = False

    # IPushProducer, called by the transport (through the HTTP channel).
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        self.backlog_bytes = 0

    def stopProducing(self):
        self.hub.unsubscribe(self)

    def wants(self, record):
        return self.viewer.may_see(record.owner) and self.filters.match(record.job_id, record.state)

    def send(self, data):
        """Write ``data`` (bytes) now, or hold it while the snapshot is read;
        drop the client if it is too far behind. Never raises."""
        if self.closed or not data:
            return
        if self.pending is not None:
            self.pending.append(data)
            self.pending_bytes += len(data)
            if self.pending_bytes > self.hub.max_buffer_bytes:
                self.hub.drop(self, f"{self.pending_bytes} bytes of events waited for its snapshot")
            return
        if self.paused:
            self.backlog_bytes += len(data)
            if self.backlog_bytes > self.hub.max_buffer_bytes:
                self.hub.drop(self, f"it is {self.backlog_bytes} bytes behind (SSE_MAX_BUFFER_BYTES "
                                    f"{self.hub.max_buffer_bytes})")
                return
        try:
            self.sink.write(data)
        except Exception as exc:  # the connection went meanwhile
            self.hub.log.debug("event stream write failed: {why}", why=exc)
            self.hub.unsubscribe(self)

    def go_live(self, first):
        """Write ``first`` (the snapshot) and what was held meanwhile; from
        now on events are written as they come."""
        held, self.pending, self.pending_bytes = self.pending or [], None, 0
        self.send(first + b"".join(held))


class EventsHub(Service):
    """The hub (see the module docstring).

    @param clock: ``IReactorTime`` (ids, heartbeat, coalescing).
    @param load_job: ``load_job(job_id)`` -> (a Deferred of) ``(owner,
        row)``: the job's owner (key_id or None) and its ``JOB_ROW_FIELDS``
        dict; raises ``NoSuchJob`` (then the event is shown to ``admin``
        streams only, with what the event says).
    @param load_snapshot: ``load_snapshot(viewer, filters)`` -> (a Deferred
        of) ``{"jobs": [row, ...], "truncated": bool}``: the job table the
        viewer may see.
    @param buffer_events: events kept for resumes (SSE_BUFFER_EVENTS).
    @param heartbeat_s: seconds between heartbeat comments (SSE_HEARTBEAT_S).
    @param max_buffer_bytes: bytes a client may fall behind before it is
        dropped (SSE_MAX_BUFFER_BYTES).
    @param max_clients: open streams at most (SSE_MAX_CLIENTS).
    @param max_clients_per_key: open streams of one API key (or of the
        anonymous caller) at most (SSE_MAX_CLIENTS_PER_KEY).
    @param flush_interval_s: shortest time between two writes to the
        streams (``FLUSH_INTERVAL_S``).
    """

    log = Logger()

    def __init__(self, clock, load_job, load_snapshot, *, buffer_events=10_000, heartbeat_s=15.0,
                 max_buffer_bytes=1024 * 1024, max_clients=1000, max_clients_per_key=50,
                 flush_interval_s=FLUSH_INTERVAL_S):
        self.clock = clock
        self._load_job = load_job
        self._load_snapshot = load_snapshot
        self.buffer = collections.deque(maxlen=max(1, int(buffer_events)))
        self.heartbeat_s = heartbeat_s
        self.max_buffer_bytes = max_buffer_bytes
        self.max_clients = max_clients
        self.max_clients_per_key = max_clients_per_key
        self.flush_interval_s = flush_interval_s
        self._last_flush = None
        #: The id the next event gets (see the module docstring).
        self.next_id = int(clock.seconds() * 1000)
        self.subscribers = set()
        self._per_key = collections.Counter()
        self._jobs = collections.OrderedDict()  # job_id -> (owner, row)
        self._waiting = {}  # job_id -> deque of JobEvents behind a load of that job
        self._outbox = []  # records published since the last flush
        self._flush_call = None
        self._heartbeat = None
        #: Counters for tests and metrics.
        self.published = 0
        self.dropped = 0

    # --- service ------------------------------------------------------------

    def startService(self):
        super().startService()
        self._heartbeat = task.LoopingCall(self.heartbeat)
        self._heartbeat.clock = self.clock
        self._heartbeat.start(self.heartbeat_s, now=False)

    def stopService(self):
        super().stopService()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._flush()
        for sub in list(self.subscribers):
            self.unsubscribe(sub)
            try:
                sub.sink.close()
            except Exception:
                self.log.failure("closing an event stream")

    @property
    def last_id(self):
        """The id of the last event published (the first id - 1 before any)."""
        return self.next_id - 1

    # --- publishing ---------------------------------------------------------

    def publish(self, event):
        """Take one job event (a ``JobEvent``, or its ``to_dict()``); never
        raises, never waits: the streams get it once its job is known."""
        try:
            if not isinstance(event, JobEvent):
                event = JobEvent.from_dict(event)
            queue = self._waiting.get(event.job_id)
            if queue is not None:
                queue.append(event)
                return
            known = self._jobs.get(event.job_id)
            if known is not None and event.kind not in REFRESH_KINDS:
                self._emit(event, *known)
                return
            self._waiting[event.job_id] = collections.deque([event])
            self._load(event.job_id)
        except Exception:
            self.log.failure("could not publish the event {event!r}", event=event)

    def _load(self, job_id):
        d = defer.maybeDeferred(self._load_job, job_id)
        d.addCallbacks(self._loaded, self._not_loaded, callbackArgs=(job_id,), errbackArgs=(job_id,))
        d.addErrback(lambda f: self.log.failure("event hub: handling job {job_id}", f, job_id=job_id))

    def _loaded(self, owner_row, job_id):
        owner, row = owner_row
        self._remember(job_id, owner, row)
        self._drain(job_id, first_loaded=True)

    def _not_loaded(self, failure, job_id):
        if not failure.check(NoSuchJob):
            self.log.failure("event hub: cannot read job {job_id}; its events go to admin streams only",
                             failure, job_id=job_id)
        if job_id not in self._jobs:
            self._remember(job_id, None, {"job_id": job_id})
        self._drain(job_id, first_loaded=True)

    def _drain(self, job_id, first_loaded):
        """Emit the events waiting for ``job_id`` in order; the first uses
        the job just read, and a later one that needs a fresh read waits for
        it (the rest behind it)."""
        queue = self._waiting.get(job_id)
        owner, row = self._jobs[job_id]
        while queue:
            if not first_loaded and queue[0].kind in REFRESH_KINDS:
                self._load(job_id)
                return
            first_loaded = False
            owner, row = self._emit(queue.popleft(), owner, row)
        self._waiting.pop(job_id, None)

    def _remember(self, job_id, owner, row):
        self._jobs[job_id] = (owner, row)
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > JOBS_REMEMBERED:
            self._jobs.popitem(last=False)

    def _emit(self, event, owner, row):
        """Number ``event``, render it, buffer it and queue it for the
        streams. Returns ``(owner, row)`` as updated by the event."""
        row = dict(row)
        if event.state is not None:
            row["job_state"] = event.state
        if event.kind is EventKind.PROGRESS and event.progress is not None:
            row["progress"] = event.progress
        self._remember(event.job_id, owner, row)
        event_id = self.next_id
        self.next_id += 1
        data = event_to_api(event)
        data["job"] = row
        record = _Record(event_id, event.job_id, owner, row.get("job_state"), frame(event_id, JOB, data))
        self.buffer.append(record)
        self._outbox.append(record)
        self.published += 1
        if self._flush_call is None:
            wait_s = 0.0
            if self._last_flush is not None:
                wait_s = max(0.0, self._last_flush + self.flush_interval_s - self.clock.seconds())
            self._flush_call = self.clock.callLater(wait_s, self._flush)
        return owner, row

    def _flush(self):
        """Write what was published since the last flush: one write per
        subscriber, rendered once per (scope, filters). Never raises."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._last_flush = self.clock.seconds()
        records, self._outbox = self._outbox, []
        if not records:
            return
        first, last = records[0].id, records[-1].id
        rendered = {}
        for sub in list(self.subscribers):
            try:
                after = sub.after
                if after >= first:  # joined meanwhile: what it has not had yet
                    data = b"".join(r.frame for r in records if r.id > after and sub.wants(r))
                else:
                    group = (sub.viewer.scope, sub.filters)
                    data = rendered.get(group)
                    if data is None:
                        data = rendered[group] = b"".join(r.frame for r in records if sub.wants(r))
                sub.after = max(after, last)
                if data:
                    sub.send(data)
            except Exception:
                self.log.failure("event hub: writing to a stream")
                self.unsubscribe(sub)

    # --- subscribers --------------------------------------------------------

    def admit(self, viewer):
        """Raise ``StreamsFull`` (503) or ``RateLimited`` (429) when one more
        stream for ``viewer`` would pass the caps."""
        if len(self.subscribers) >= self.max_clients:
            raise StreamsFull(f"this feederd already serves {len(self.subscribers)} event streams "
                              f"(SSE_MAX_CLIENTS {self.max_clients}); try again later")
        if self._per_key[viewer.count_key] >= self.max_clients_per_key:
            who = "the anonymous caller" if viewer.key_id is None else f"API key {viewer.key_id}"
            raise RateLimited(f"{who} already has {self._per_key[viewer.count_key]} event streams open "
                              f"(SSE_MAX_CLIENTS_PER_KEY {self.max_clients_per_key}); close one first",
                              5.0)

    def subscribe(self, viewer, filters, sink, last_event_id=None, preamble=b""):
        """Open a stream for ``viewer`` with ``filters`` (``Filters``) into
        ``sink``; returns the ``Subscriber`` (register it as the request's
        push producer). ``preamble`` (bytes: ``retry``, a comment) is written
        first. ``last_event_id`` (an int, or None/unparsable): replay the
        buffered events after it, or, when it is not in the buffer, a fresh
        snapshot as ``event: reset``; without one, a snapshot (``event:
        snapshot``). Raises as ``admit``."""
        self.admit(viewer)
        sub = Subscriber(self, viewer, filters, sink)
        self.subscribers.add(sub)
        self._per_key[viewer.count_key] += 1
        sub.pending = None
        sub.send(preamble)  # at once: the client sees the stream open
        sub.after = self.last_id
        asked = _as_id(last_event_id)
        replay = self._replay(asked) if asked is not None else None
        if replay is not None:
            sub.send(b"".join(r.frame for r in replay if sub.wants(r)))
            return sub
        sub.pending = []  # events from now on wait for the snapshot
        mark = sub.after
        reason = None
        if last_event_id is not None:
            reason = (f"the Last-Event-ID asked for is not in this server's buffer (events after "
                      f"{self.first_buffered_id - 1} are; some were missed, or the server restarted): "
                      f"here is the job table again")
        d = defer.maybeDeferred(self._load_snapshot, viewer, filters)

        def send(snapshot):
            if sub.closed:
                return
            data = {"jobs": snapshot["jobs"], "truncated": bool(snapshot.get("truncated")), "last_event_id": mark}
            if reason:
                data["reason"] = reason
            sub.go_live(frame(mark, RESET if reason else SNAPSHOT, data))

        def failed(failure):
            self.log.failure("event stream: could not read the job table", failure)
            if not sub.closed:
                sub.pending = None
                sub.send(b": the job table could not be read; reconnect\n\n")
                self.unsubscribe(sub)
                try:
                    sub.sink.close()
                except Exception:
                    pass
        d.addCallbacks(send, failed)
        d.addErrback(lambda f: self.log.failure("event stream: sending the snapshot", f))
        return sub

    @property
    def first_buffered_id(self):
        """The oldest id in the buffer (``next_id`` when it is empty)."""
        return self.buffer[0].id if self.buffer else self.next_id

    def _replay(self, asked):
        """The buffered records after ``asked``, or None when events after it
        are no longer (or not) in the buffer."""
        if asked > self.last_id or asked < self.first_buffered_id - 1:
            return None
        start = asked - self.first_buffered_id + 1
        return list(itertools.islice(self.buffer, start, None))

    def unsubscribe(self, sub):
        """Forget ``sub`` (idempotent): its connection ended or is ending."""
        if sub.closed:
            return
        sub.closed = True
        self.subscribers.discard(sub)
        key = sub.viewer.count_key
        self._per_key[key] -= 1
        if self._per_key[key] <= 0:
            del self._per_key[key]

    def drop(self, sub, why):
        """Disconnect a client that is too slow."""
        if sub.closed:
            return
        self.unsubscribe(sub)
        sub.dropped = True
        self.dropped += 1
        self.log.warn("dropping a slow event stream ({who}): {why}", who=sub.viewer.count_key, why=why)
        try:
            sub.sink.abort()
        except Exception:
            self.log.failure("aborting a slow event stream")

    def heartbeat(self):
        """A comment to every live stream (proxies keep idle connections
        open). Never raises: a LoopingCall that raised would stop for good."""
        try:
            for sub in list(self.subscribers):
                if sub.pending is None:
                    sub.send(HEARTBEAT)
        except Exception:
            self.log.failure("event stream heartbeat")

    def streams_of(self, viewer):
        """How many streams ``viewer``'s key has open."""
        return self._per_key.get(viewer.count_key, 0)


def _as_id(value):
    """``value`` as an event id (int >= 0), or None when it is not one."""
    if value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None
