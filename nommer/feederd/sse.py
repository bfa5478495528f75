"""``GET /events``: the live job events as Server-Sent Events (the hub that
numbers, buffers and fans them out is ``nommer.feederd.events_hub``).

The stream (``text/event-stream``; ``Cache-Control: no-cache``,
``X-Accel-Buffering: no`` so nginx does not hold it back; never compressed)::

    retry: 2000                      reconnect after 2 s (EventSource does it by itself)
    id: 1767225600123                the hub's global sequence
    event: snapshot                  first, without Last-Event-ID: the job table
    data: {"jobs": [...], "truncated": false, "last_event_id": 1767225600123}

    id: 1767225600124
    event: job                       every job event the caller may see
    data: {"job_id": ..., "seq": 3, "kind": "state", "at": "2026-01-01T00:00:01.250Z",
           "state": "ENCODING", "worker_id": ..., "attempt": 1, "progress": null, "details": null,
           "job": {"job_id", "job_state", "progress", "attempts", "worker_id", "created_at", ...}}

(the event as ``GET /job/<id>/events`` shows it, ``event_to_api``, plus
``job``: ``JOB_ROW_FIELDS`` of the job as the hub last knew it).

    : ping                           a heartbeat comment every SSE_HEARTBEAT_S

A snapshot holds the jobs not yet final (newest first, at most
SSE_SNAPSHOT_JOBS; ``truncated`` says some were left out) and the last
SSE_SNAPSHOT_FINAL_JOBS final ones, each shaped as an event's ``job``.

Query: ``job_id=ID`` (one job: 404 if the caller may not see it),
``state=S[,S...]`` (the job's state after the event; repeatable),
``last_event_id=N`` (as the ``Last-Event-ID`` header, which wins: resume
after event N from the buffer, or ``event: reset`` with a fresh snapshot
when N is older than the buffer), ``token=T`` (below).

Who sees what: a stream authenticates like every route (``Authorization:
Bearer KEY``, scope ``read``; the anonymous rule on loopback) and sees the
events of the jobs its key may see (``admin``: all). A browser's EventSource
cannot send headers, so ``POST /events/token`` (Bearer, ``read``) gives a
short-lived stream token: ``GET /events?token=T``. A token opens event
streams only (no other route takes one), for the key that asked for it, as
often as needed for SSE_TOKEN_TTL_S seconds (EventSource's own reconnects);
after that, ask for a new one and reconnect with ``?last_event_id=``.
The API key itself is not accepted in the URL: URLs land in access logs,
proxy logs and browser history, and a key lives until it is revoked. Tokens
live in this feederd's memory: another feederd does not know them.

Limits: SSE_MAX_CLIENTS streams in all (503 ``TOOMANYSTREAMS``),
SSE_MAX_CLIENTS_PER_KEY per key (429 ``RATELIMITED``); a client more than
SSE_MAX_BUFFER_BYTES behind is disconnected.
"""

import hashlib
import secrets

from twisted.internet import defer, tcp
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from nommer.core.errors import InvalidJobSpec, NoSuchJob
from nommer.core.states import FINAL_STATES, JobState
from nommer.feederd.api import JOB_ID_RE, job_to_api
from nommer.feederd.auth import Caller, Unauthorized
from nommer.feederd.events_hub import JOB_ROW_FIELDS, EventsHub, Filters, Viewer

#: Milliseconds a client waits before reconnecting (the stream's ``retry:``).
RETRY_MS = 2000
#: What a stream starts with: flushes the headers at once.
PREAMBLE = f"retry: {RETRY_MS}\n: nommer event stream\n\n".encode()
#: Tokens alive at once, at most (the oldest are forgotten first).
MAX_TOKENS = 10_000


def job_row(job):
    """The ``JOB_ROW_FIELDS`` of the API's view of ``job`` (``job_to_api``):
    what an event's ``job`` and a snapshot's ``jobs`` hold."""
    view = job_to_api(job)
    return {name: view[name] for name in JOB_ROW_FIELDS if name in view}


class StreamTokens:
    """Short-lived stream tokens (see the module docstring): ``issue(caller)``
    and ``redeem(token)``. Only a SHA-256 of each token is kept."""

    def __init__(self, clock, ttl_s):
        self.clock = clock
        self.ttl_s = ttl_s
        self._tokens = {}  # sha256 hex -> (Caller, expires_at); insertion order = age

    def issue(self, caller):
        """``{"token": str, "expires_in_s": float}`` for ``caller``."""
        now = self.clock.seconds()
        self._prune(now)
        token = "nmt_" + secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = (caller, now + self.ttl_s)
        while len(self._tokens) > MAX_TOKENS:
            self._tokens.pop(next(iter(self._tokens)))
        return {"token": token, "expires_in_s": self.ttl_s}

    def redeem(self, token):
        """The ``Caller`` a live token was issued to; ``Unauthorized`` for
        an unknown or expired one."""
        found = self._tokens.get(_digest(token))
        if found is None or found[1] <= self.clock.seconds():
            raise Unauthorized("the event stream token is unknown or expired: ask for a new one "
                               "(POST /events/token) and reconnect with ?last_event_id=", invalid_token=True)
        return found[0]

    def _prune(self, now):
        for digest in [d for d, (_, expires) in self._tokens.items() if expires <= now]:
            del self._tokens[digest]


def _digest(token):
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class JobViews:
    """What the hub reads from the job store: ``load_job`` and
    ``load_snapshot`` (see ``EventsHub``). ``max_jobs``: jobs not final in
    a snapshot at most; ``max_final``: final ones."""

    def __init__(self, store, max_jobs, max_final):
        self.store = store
        self.max_jobs = max_jobs
        self.max_final = max_final

    async def load_job(self, job_id):
        """``(owner, row)`` of the stored job; raises ``NoSuchJob``."""
        job = await self.store.get(job_id)
        return job.owner, job_row(job)

    async def load_snapshot(self, viewer, filters):
        """``{"jobs": [row, ...], "truncated": bool}``: the jobs ``viewer``
        may see that match ``filters``; not final first (newest first),
        then final ones (most recently updated first)."""
        if filters.job_id is not None:
            try:
                job = await self.store.get(filters.job_id)
            except NoSuchJob:
                return {"jobs": [], "truncated": False}
            shown = viewer.may_see(job.owner) and filters.match(job.job_id, job.job_state.value)
            return {"jobs": [job_row(job)] if shown else [], "truncated": False}
        owner = None if viewer.sees_all else viewer.key_id
        states = [s for s in JobState if filters.states is None or s.value in filters.states]
        open_states = [s for s in states if s not in FINAL_STATES]
        final_states = [s for s in states if s in FINAL_STATES]
        pages = await defer.gatherResults(
            [self.store.list(state=s, limit=self.max_jobs, owner=owner) for s in open_states]
            + [self.store.list(state=s, limit=self.max_final, owner=owner) for s in final_states],
            consumeErrors=True)
        open_pages, final_pages = pages[:len(open_states)], pages[len(open_states):]
        open_rows = sorted((job_row(j) for jobs, _ in open_pages for j in jobs),
                           key=lambda r: (r["created_at"] or "", r["job_id"]), reverse=True)
        truncated = len(open_rows) > self.max_jobs or any(cursor for _, cursor in open_pages)
        final_rows = sorted((job_row(j) for jobs, _ in final_pages for j in jobs),
                            key=lambda r: (r["updated_at"] or "", r["job_id"]), reverse=True)
        return {"jobs": open_rows[:self.max_jobs] + final_rows[:self.max_final], "truncated": truncated}


def make_hub(store, settings, clock):
    """The ``EventsHub`` of a feederd, reading ``store``, with the SSE_*
    settings."""
    views = JobViews(store, settings.SSE_SNAPSHOT_JOBS, settings.SSE_SNAPSHOT_FINAL_JOBS)
    return EventsHub(clock, views.load_job, views.load_snapshot, buffer_events=settings.SSE_BUFFER_EVENTS,
                     heartbeat_s=settings.SSE_HEARTBEAT_S, max_buffer_bytes=settings.SSE_MAX_BUFFER_BYTES,
                     max_clients=settings.SSE_MAX_CLIENTS, max_clients_per_key=settings.SSE_MAX_CLIENTS_PER_KEY)


class EventStreams:
    """What the API's ``/events`` routes call: ``caller`` (a token or the
    usual authentication), ``token_for`` and ``open`` (the stream's
    resource). ``hub``: the ``EventsHub``; ``store``: the job store."""

    def __init__(self, hub, store, settings, clock):
        self.hub = hub
        self.store = store
        self.tokens = StreamTokens(clock, settings.SSE_TOKEN_TTL_S)

    async def caller(self, request, authenticate):
        """The stream's ``Caller``: from ``?token=`` when given (no other
        credential is looked at), else ``await authenticate()`` (the API's
        key check with scope ``read``)."""
        token = _arg(request, "token")
        if token is not None:
            caller = self.tokens.redeem(token)
            if not isinstance(caller, Caller):
                raise Unauthorized("the event stream token is not valid", invalid_token=True)
            return caller
        return await authenticate()

    def token_for(self, caller):
        """The answer of ``POST /events/token``: ``{"token", "expires_in_s"}``."""
        return self.tokens.issue(caller)

    async def open(self, request, caller):
        """The resource serving ``request``'s stream for ``caller``, after
        checking its query (400 ``BADINPUT``), its job (404 when not the
        caller's) and the caps (503/429). Nothing is written before."""
        viewer = Viewer.of(caller)
        job_id = _arg(request, "job_id")
        if job_id is not None:
            if not JOB_ID_RE.match(job_id):
                raise NoSuchJob(job_id[:80])
            job = await self.store.get(job_id)
            if not caller.can_see(job):
                raise NoSuchJob(job_id)
        states = None
        given = [s for value in request.args.get(b"state", []) for s in value.decode("utf-8", "replace").split(",")
                 if s.strip()]
        if given:
            names = {s.value for s in JobState}
            bad = [s for s in given if s.strip().upper() not in names]
            if bad:
                raise InvalidJobSpec("state", f"{bad[0][:40]!r} is not a job state; one of " + ", ".join(sorted(names)))
            states = frozenset(s.strip().upper() for s in given)
        last = request.getHeader(b"last-event-id")
        if last is None:
            last = _arg(request, "last_event_id")
        self.hub.admit(viewer)
        return EventStreamResource(self.hub, viewer, Filters(job_id=job_id, states=states), last)


class RequestSink:
    """A ``Subscriber``'s sink over a Twisted ``Request``.

    ``write`` sends straight to the socket when it can: the response has
    started, it is plain TCP and the transport holds nothing unsent (so
    nothing is reordered); what the socket does not take goes to the
    transport as usual (which then buffers it and, past its buffer size,
    pauses the stream's producer). Going through ``Request.write`` costs the
    reactor two ``epoll_ctl`` and a dozen Python calls more per stream and
    write: with 200 streams, a third of the fan-out (bench/sse_fanout.py)."""

    def __init__(self, request):
        self.request = request

    def write(self, data):
        request = self.request
        transport = getattr(getattr(request, "channel", None), "transport", None)
        if not (request.startedWriting and not request.finished and _idle_tcp(transport)):
            request.write(data)
            return
        if request.chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        try:
            sent = transport.getHandle().send(data)
        except OSError:  # full (EAGAIN), or broken: the transport finds out on its own write
            sent = 0
        if sent < len(data):
            transport.write(data[sent:])

    def close(self):
        """End the stream (the client reconnects)."""
        if self.request.producer is not None:
            self.request.unregisterProducer()
        if not self.request.finished and not getattr(self.request, "_disconnected", False):
            self.request.finish()

    def abort(self):
        """Drop the connection at once, unsent bytes and all."""
        if self.request.producer is not None:
            self.request.unregisterProducer()
        channel = getattr(self.request, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is not None:
            transport.abortConnection()


def _idle_tcp(transport):
    """Whether ``transport`` is a connected plain TCP connection with nothing
    waiting to be sent."""
    return (isinstance(transport, tcp.Connection) and not transport.TLS and transport.connected
            and not transport.disconnecting and not transport.dataBuffer and not transport._tempDataBuffer)


class EventStreamResource(Resource):
    """One stream (``EventStreams.open`` makes it after the checks)."""

    isLeaf = True
    log = Logger()

    def __init__(self, hub: EventsHub, viewer, filters, last_event_id):
        super().__init__()
        self.hub = hub
        self.viewer = viewer
        self.filters = filters
        self.last_event_id = last_event_id

    def render_HEAD(self, request):
        self._headers(request)
        return b""

    def render_GET(self, request):
        if getattr(request, "channel", None) is None or getattr(request, "_disconnected", False):
            return NOT_DONE_YET  # the client went while the route ran: nothing to serve
        self._headers(request)
        sub = self.hub.subscribe(self.viewer, self.filters, RequestSink(request), self.last_event_id,
                                 preamble=PREAMBLE)
        request.registerProducer(sub, True)
        request.notifyFinish().addBoth(lambda _: self.hub.unsubscribe(sub))
        return NOT_DONE_YET

    @staticmethod
    def _headers(request):
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")


def _arg(request, name):
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None
