"""feederd's JSON API (Klein).

Routes (all answer JSON, never an HTML page)::

    POST /job/submit          media-nommer's submit (also /job/submit/)
    GET  /job/<id>            one job
    GET  /job/<id>/events     the job's event log, ?after=SEQ&limit=N
    POST /job/<id>/cancel     cancel a job; a running encode is stopped
    POST /job/<id>/retry      queue an ERROR, CANCELED or ABANDONED job again (``requeue``)
    POST /jobs/batch          many jobs in one request, a result each (``batch``)
    GET  /jobs                ?state=&limit=&cursor=  newest first
    GET  /health              store and queue reachable, counts
    GET  /workers             the worker registry, with running jobs (and instances)
    GET  /presets             the server's presets, each with its outputs
    GET  /presets/<name>      one preset
    GET  /schema              the JSON Schema of job bodies (application/schema+json)
    GET  /openapi.json        this API as an OpenAPI 3.0 document
    GET  /ui/                 the web dashboard (static files, ``dashboard``)
    GET  /events              live job events, Server-Sent Events (``sse``)
    POST /events/token        a short-lived token for GET /events?token= (browsers)
    GET  /metrics             Prometheus metrics (text exposition format; ``metrics``)

Success: ``{"success": true, ...}``. Errors: ``{"success": false,
"error_code": ..., "message": ...}`` with a 4xx status for the caller's
mistakes and 500 (logged with the traceback) for ours.

Every route but /health, /schema and /openapi.json takes an API key
(``Authorization: Bearer KEY``) with the route's scope, and a key sees only
its own jobs unless it is ``admin`` (``nommer.feederd.auth``: also the
anonymous rule on loopback); each caller has a rate limit
(``ratelimit``) and each key a quota of unfinished jobs (``quota``). On
loopback, Host and Origin are checked first (``crosssite``). Request bodies
are capped before they are read (``bodycap``, in the Site) and again here.

The HTTP status and ``error_code`` of every error are decided here, at the
edge, by one table (``EDGE_ERRORS``, looked up along the exception's MRO):
core exceptions carry only a message (and fields such as
``InvalidJobSpec.field``). Anything the table does not know is a logged 500
``INTERNAL``.

Size (issue 10: about 400 lines at most, or a reason): kept whole. It is
the API's one Klein resource, its routes and, as issue 10 asks, the error
table at the edge; what could leave has left (``auth``, ``ratelimit``,
``quota``, ``crosssite``, ``bodycap``, ``inflight``; the OpenAPI document is
``openapi.json``, served by ``apidoc``).
"""

import json
import re

from klein import Klein
from klein.resource import KleinResource
from twisted.internet import defer
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from nommer.core.chunking import public_chunks
from nommer.core.deferreds import gather
from nommer.core.errors import InvalidJobSpec, JobCanceled, NoSuchJob, NoSuchPreset, NommerError
from nommer.core.events import event_to_api
from nommer.core.job import Job, iso8601, new_job_id
from nommer.core.keys import NoSuchKey
from nommer.core.outputs.presets import PRESET_NAME, get_preset, list_presets
from nommer.core.requeue import NotRetryable, retry_job
from nommer.core.worker_registry.base import EXITED
from nommer.core.spec import OUTPUTS_NOMMER, validate_submission
from nommer.core.states import IllegalTransition, JobState
from nommer.core.uri import redact_uri
from nommer.feederd import crosssite
from nommer.feederd.apidoc import openapi_document, schema_document
from nommer.feederd.auth import Authenticator, Forbidden, Unauthorized
from nommer.feederd.batch import BatchQuota, batch_items, submit_batch
from nommer.feederd.bodycap import refusal_message
from nommer.feederd.dashboard import ui_resource
from nommer.feederd.events_hub import StreamsFull
from nommer.feederd.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, FeederMetrics
from nommer.feederd.quota import QuotaExceeded, check_unfinished_quota
from nommer.feederd.ratelimit import RateLimited, RateLimiter, retry_after_header

MAX_LIST_LIMIT = 500
JOB_ID_RE = re.compile(r"^[0-9a-f]{50}$")
#: Deepest nesting of lists and objects a request body may have (a job needs 5).
MAX_JSON_DEPTH = 64
#: Most characters of a bad job id repeated in an error message.
MAX_ECHOED_ID_CHARS = 80


def _check_json_shape(value):
    """Refuse a parsed body nested deeper than MAX_JSON_DEPTH (deeper data
    would overflow the recursion limit later: validation, storing) or holding
    a string that is not valid Unicode (a lone surrogate from a ``"\\ud800"``
    escape: it cannot be encoded to a file name, an argv, a URL or the job
    store). Iterative, so any depth is safe."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            strings = (item,)
        elif isinstance(item, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise InvalidJobSpec(None, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                strings = tuple(item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                strings = ()
                stack.extend((v, depth + 1) for v in item)
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                bad = text[exc.start]
                raise InvalidJobSpec(None, f"the request body holds a lone UTF-16 surrogate "
                                     f"(\\u{ord(bad):04x}); strings must be valid Unicode") from None


def _declared_outputs(job):
    """``(outputs, preset)`` of the job document: for a declarative job
    (``OUTPUTS_NOMMER``), the outputs the worker reported at FINISHED
    (``job.output["outputs"]``: per output its type, files with relative
    path, bytes and Content-Type, rungs...) or, before that, the requested
    ones (normalized, every field spelled out), and the preset's name or
    None; for a 2011 job ``(None, None)``."""
    options = job.job_options
    if job.nommer != OUTPUTS_NOMMER or not isinstance(options, dict):
        return None, None
    produced = job.output.get("outputs") if isinstance(job.output, dict) else None
    return (produced if produced is not None else options.get("outputs")), options.get("preset")


def job_to_api(job):
    """The API's view of a job: the original field names (``unique_id``,
    ``job_state``, ``job_state_details``...), ISO 8601 UTC times, progress
    in percent, and URIs with any password shown as ``***``. The sealed
    credentials (``Job.sealed_credentials``) are never shown.
    Declarative jobs also show ``outputs`` and ``preset``
    (``_declared_outputs``); both are null for a 2011 job."""
    outputs, preset = _declared_outputs(job)
    return {
        "job_id": job.job_id,
        "unique_id": job.job_id,
        "job_state": job.job_state.value,
        "job_state_details": job.job_state_details,
        "source_path": redact_uri(job.source_path),
        "dest_path": redact_uri(job.dest_path),
        "notify_url": redact_uri(job.notify_url) if job.notify_url else None,
        "nommer": job.nommer,
        "progress": None if job.progress is None else round(job.progress, 1),
        "attempts": job.attempts,
        "worker_id": job.worker_id,
        "output": job.output,
        "created_at": iso8601(job.created_at),
        "updated_at": iso8601(job.updated_at),
        "started_at": iso8601(job.started_at),
        "finished_at": iso8601(job.finished_at),
        "heartbeat_at": iso8601(job.heartbeat_at),
        "owner": job.owner,
        "outputs": outputs,
        "preset": preset,
        "priority": job.priority,
        "pool": job.pool,
        "retries": job.retries,
        "chunks": public_chunks(job.chunks),
    }


class WrongMethod(NommerError):
    """A route asked for with a method it does not take, where the router
    cannot tell (``GET /job/submit`` matches ``GET /job/<job_id>``)."""


class BodyTooLarge(NommerError):
    """A request body over MAX_REQUEST_BODY_BYTES."""


#: Every error the API answers -> (HTTP status, error_code). An exception
#: takes the entry of the nearest class along its MRO (an ``InvalidURI`` is
#: an ``InvalidJobSpec``; a ``PermanentJobError`` has no entry of its own and
#: is a ``NommerError``). The message is the exception's ``message``, or
#: the one ``JobAPI._message`` words (IllegalTransition, werkzeug's routing
#: errors). Anything not here: 500 ``INTERNAL``.
EDGE_ERRORS = {
    InvalidJobSpec: (400, "BADINPUT"),
    Unauthorized: (401, "UNAUTHORIZED"),
    Forbidden: (403, "FORBIDDEN"),
    NoSuchJob: (404, "NOSUCHJOB"),
    NoSuchKey: (404, "NOSUCHKEY"),
    NoSuchPreset: (404, "NOSUCHPRESET"),
    NotFound: (404, "NOTFOUND"),  # werkzeug: no route has the path
    MethodNotAllowed: (405, "METHODNOTALLOWED"),  # werkzeug: the path's routes take other methods
    WrongMethod: (405, "METHODNOTALLOWED"),
    IllegalTransition: (409, "CONFLICT"),
    NotRetryable: (409, "CONFLICT"),
    JobCanceled: (409, "CANCELED"),
    BodyTooLarge: (413, "BADINPUT"),
    RateLimited: (429, "RATELIMITED"),
    StreamsFull: (503, "TOOMANYSTREAMS"),
    QuotaExceeded: (429, "QUOTA"),
    NommerError: (500, "ERROR"),  # a core error with no entry nearer (logged)
}


def error_answer(exc):
    """``(status, error_code)`` of the API's answer to ``exc``: the
    ``EDGE_ERRORS`` entry of the nearest class along its MRO, or None."""
    for cls in type(exc).__mro__:
        answer = EDGE_ERRORS.get(cls)
        if answer is not None:
            return answer
    return None


class _EdgeResource(KleinResource):
    """Klein's resource, except that:

    - a URL whose path or Host header is not UTF-8 once percent-decoded
      (``/job/%ED%A0%80``) gets the API's JSON 400: Klein itself answers it
      with a text body and logs a traceback;
    - when the API listens on loopback, a request whose Host is not a
      loopback name (421 ``BADHOST``) or whose Origin is not the API's own
      (403 ``FORBIDDEN``) is refused before any route runs
      (``crosssite.check``)."""

    def __init__(self, app, loopback):
        super().__init__(app)
        self.loopback = loopback

    def render(self, request):
        try:
            for part in (request.getRequestHostname(), *request.prepath, *request.postpath):
                part.decode("utf-8")
        except UnicodeDecodeError:
            return _error(request, 400, "BADINPUT",
                          "the URL is not valid UTF-8 once percent-decoded (path or Host header)")
        if self.loopback:
            refused = crosssite.check(request, request.getHost().port)
            if refused is not None:
                return _error(request, *refused)
        return super().render(request)


def _json(request, status, payload):
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(payload).encode()


def _error(request, status, code, message):
    return _json(request, status, {"success": False, "error_code": code, "message": message})


class JobAPI:
    """The API over a ``JobLedger``. ``health_extra()`` (optional) returns a
    dict merged into /health (e.g. the fleet's worker count); ``on_submit()``
    (optional) is called after each accepted job (pokes the autoscaler).
    ``registry`` (a ``WorkerRegistry``, optional) serves ``GET /workers``;
    ``fleet_view()`` (optional) returns a list (or a Deferred of one) of
    instance dicts, each with an ``instance_id``, shown beside the workers,
    or None when the fleet has no instances of its own (``Fleet.instances``).
    ``keys`` (a ``KeyStore``; None behaves as an empty one) authenticates
    callers; whether anonymous callers and the Host/Origin checks apply
    follows ``settings.API_INTERFACE`` (loopback or not).
    ``clock`` (default: the global reactor) gives ``seconds()`` for how long
    ago a worker was seen, the rate limit and the key cache.
    ``metrics`` (a ``nommer.feederd.metrics.FeederMetrics``; None: one over
    the store, queue and registry, without a fleet) serves ``GET /metrics``
    and counts submits. ``fleet_status()`` (optional) returns the fleet's
    state (``{"backend", "trouble", "launch_failures"}``), shown as
    ``fleet`` in ``GET /workers``."""

    app = Klein()
    log = Logger()

    def __init__(self, ledger, settings, on_submit=None, health_extra=None, registry=None, fleet_view=None,
                 clock=None, keys=None, metrics=None, fleet_status=None, events=None):
        self.ledger = ledger
        self.store = ledger.store
        self.queue = ledger.queue
        self.settings = settings
        self._on_submit = on_submit
        self._health_extra = health_extra
        self.registry = registry
        self._fleet_view = fleet_view
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.loopback = crosssite.is_loopback_interface(settings.API_INTERFACE)
        self.keys = keys
        self.auth = Authenticator(keys, self.loopback, clock)
        self.limiter = RateLimiter(settings.API_RATE_LIMIT_PER_MINUTE, clock)
        if metrics is None:
            metrics = FeederMetrics(self.store, self.queue, settings, registry=registry, clock=clock)
        self.metrics = metrics
        self._fleet_status = fleet_status
        #: ``nommer.feederd.sse.EventStreams`` serving /events (None: 503 NOEVENTS).
        self.events = events

    def resource(self):
        return _EdgeResource(self.app, self.loopback)

    # --- errors -------------------------------------------------------------

    @app.handle_errors(*EDGE_ERRORS)
    def _known_error(self, request, failure):
        exc = failure.value
        status, code = error_answer(exc)
        if status >= 500 and not isinstance(exc, StreamsFull):  # a full house is not our bug
            self.log.failure("API error on {path}", failure, path=request.path)
        return _error(request, status, code, self._message(request, exc))

    @staticmethod
    def _message(request, exc):
        """The message answering ``exc`` (an ``EDGE_ERRORS`` one), after
        setting the headers its answer needs."""
        if isinstance(exc, Unauthorized):
            challenge = 'Bearer realm="nommer"' + (', error="invalid_token"' if exc.invalid_token else "")
            request.setHeader(b"WWW-Authenticate", challenge.encode())
        retry_after_s = getattr(exc, "retry_after_s", None)  # RateLimited, QuotaExceeded
        if retry_after_s is not None:
            request.setHeader(b"Retry-After", retry_after_header(retry_after_s).encode())
        if isinstance(exc, IllegalTransition):
            return f"job {exc.job_id} is already {exc.current.value}"
        if isinstance(exc, NotFound):
            return f"no such endpoint: {request.path.decode(errors='replace')}"
        if isinstance(exc, MethodNotAllowed):
            # RFC 9110: a 405 lists the allowed methods. /job/submit also matches
            # /job/<job_id>, whose GET refuses "submit": only POST is really allowed.
            allowed = set(exc.valid_methods or ())
            if request.path.rstrip(b"/").endswith(b"/job/submit"):
                allowed = {"POST"}
            allowed = sorted(allowed)
            if allowed:
                request.setHeader(b"Allow", ", ".join(allowed).encode())
            return f"{request.method.decode()} is not allowed on {request.path.decode(errors='replace')}"
        return exc.message

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure):
        self.log.failure("unexpected error on {method} {path}", failure,
                         method=request.method, path=request.path)
        return _error(request, 500, "INTERNAL", "internal error; the server log has the details")

    # --- routes -------------------------------------------------------------

    @app.route("/job/submit", methods=["POST"], strict_slashes=False)
    async def submit(self, request):
        caller = await self._caller(request, "submit")
        body = self._read_json(request)
        spec = validate_submission(body, self.settings)  # an unknown preset here: 400 naming the field
        await check_unfinished_quota(self.store, caller, self.settings.MAX_UNFINISHED_JOBS_PER_KEY)
        job = await self.ledger.submit(Job(job_id=new_job_id(), owner=caller.owner, **spec))
        self.metrics.submitted()
        if self._on_submit is not None:
            self._on_submit()
        return _json(request, 200, {"success": True, "job_id": job.job_id})

    @app.route("/job/<string:job_id>", methods=["GET"], strict_slashes=False)
    async def get_job(self, request, job_id):
        if job_id == "submit":
            request.setHeader(b"Allow", b"POST")
            raise WrongMethod("submit a job with POST /job/submit")
        caller = await self._caller(request, "read")
        job = await self._visible_job(caller, self._job_id(job_id))
        return _json(request, 200, {"success": True, "job": job_to_api(job)})

    @app.route("/job/<string:job_id>/events", methods=["GET"], strict_slashes=False)
    async def job_events(self, request, job_id):
        """The job's event log (``nommer.core.events``), oldest first:
        ``{"success": true, "job_id", "events": [...], "next_after"}``, each
        event as ``event_to_api`` shows it (``at`` ISO 8601 UTC). ``?after=SEQ``
        (default 0) gives the events after that ``seq``; ``?limit=N`` (1 to
        500, default 500) at most that many; ``next_after`` is the ``seq`` to
        ask after for the next page when this one is full, else null. Needs
        ``read``; a key sees only its own jobs' (404 like GET /job/<id>)."""
        caller = await self._caller(request, "read")
        job_id = self._job_id(job_id)
        after = self._count_arg(request, "after", 0, 0, None)
        limit = self._count_arg(request, "limit", MAX_LIST_LIMIT, 1, MAX_LIST_LIMIT)
        await self._visible_job(caller, job_id)
        await self.ledger.events_settled(job_id)  # this feederd's own changes (cancel...) recorded
        events = await self.store.list_events(job_id, after_seq=after, limit=limit)
        next_after = events[-1].seq if len(events) == limit else None
        return _json(request, 200, {"success": True, "job_id": job_id, "events": [event_to_api(e) for e in events],
                                    "next_after": next_after})

    @app.route("/job/<string:job_id>/cancel", methods=["POST"], strict_slashes=False)
    async def cancel_job(self, request, job_id):
        caller = await self._caller(request, "cancel")
        job_id = self._job_id(job_id)
        await self._visible_job(caller, job_id)  # 404 (not found, or not this caller's) before 409
        job = await self.ledger.set_state(job_id, JobState.CANCELED, "canceled by request")
        return _json(request, 200, {"success": True, "job": job_to_api(job)})

    @app.route("/job/<string:job_id>/retry", methods=["POST"], strict_slashes=False)
    async def retry(self, request, job_id):
        """Queue a job in ERROR, CANCELED or ABANDONED again
        (``nommer.core.requeue``): ``{"success": true, "job": {...}}`` (now
        PENDING, ``attempts`` 0, ``retries`` one more); 409 ``CONFLICT`` for a
        job in another state; 404 for a job the key may not see. Needs
        ``submit``."""
        caller = await self._caller(request, "submit")
        job_id = self._job_id(job_id)
        await self._visible_job(caller, job_id)  # 404 (not found, or not this caller's) before 409
        job = await retry_job(self.ledger, job_id)
        if self._on_submit is not None:
            self._on_submit()
        return _json(request, 200, {"success": True, "job": job_to_api(job)})

    @app.route("/jobs/batch", methods=["POST"], strict_slashes=False)
    async def batch(self, request):
        """Many jobs at once (``nommer.feederd.batch``): ``{"success": true,
        "results": [{"index", "success", "job_id"} or {"index", "success":
        false, "error_code", "message", "field"}], "submitted": n, "failed":
        n}`` with status 200 whatever the items' fates; 400 for a body that
        is not a batch or holds more than MAX_BATCH_JOBS jobs. Each item is
        a submit (same checks, the key's quota per item). Needs ``submit``."""
        caller = await self._caller(request, "submit")
        items = batch_items(self._read_json(request), self.settings.MAX_BATCH_JOBS)
        quota = BatchQuota(self.store, caller, self.settings.MAX_UNFINISHED_JOBS_PER_KEY)
        await quota.start()
        metrics = getattr(self, "metrics", None)

        async def submit_one(item):
            spec = validate_submission(item, self.settings)
            quota.take()
            try:
                job = await self.ledger.submit(Job(job_id=new_job_id(), owner=caller.owner, **spec))
            except Exception:
                quota.give_back()
                raise
            if metrics is not None:
                metrics.submitted()
            return job
        results = await submit_batch(items, submit_one, error_answer)
        submitted = sum(1 for r in results if r["success"])
        if submitted and self._on_submit is not None:
            self._on_submit()
        return _json(request, 200, {"success": True, "results": results, "submitted": submitted,
                                    "failed": len(results) - submitted})

    @app.route("/jobs", methods=["GET"], strict_slashes=False)
    async def list_jobs(self, request):
        caller = await self._caller(request, "read")
        state = self._arg(request, "state")
        if state is not None:
            try:
                state = JobState(state.upper())
            except ValueError:
                raise InvalidJobSpec("state", f"{state!r} is not a job state; one of "
                                     + ", ".join(s.value for s in JobState))
        limit = self._arg(request, "limit")
        if limit is None:  # Badinput: "?limit=" (empty) is refused, not read as the default
            limit = "50"
        # Badinput: "²".isdigit() is True but int("²") raises (a 500): ASCII digits only.
        if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIST_LIMIT:
            raise InvalidJobSpec("limit", f"must be an integer from 1 to {MAX_LIST_LIMIT}")
        cursor = self._arg(request, "cursor")
        try:
            jobs, next_cursor = await self.store.list(state=state, limit=int(limit), cursor=cursor,
                                                      owner=None if caller.sees_all else caller.key_id)
        except ValueError as exc:
            raise InvalidJobSpec("cursor", str(exc))
        return _json(request, 200, {"success": True, "jobs": [job_to_api(j) for j in jobs],
                                    "next_cursor": next_cursor})

    @app.route("/health", methods=["GET"])
    async def health(self, request):
        try:
            counts = await self.store.count_by_state()
            depth = await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)
        except Exception:
            self.log.failure("health check failed")
            return _json(request, 503, {"success": False, "error_code": "UNHEALTHY", "status": "failing",
                                        "message": "the job store or the work queue is not answering"})
        payload = {"success": True, "status": "ok", "jobs": counts, "queue": depth}
        if self._health_extra is not None:
            payload.update(self._health_extra())
        return _json(request, 200, payload)

    @app.route("/workers", methods=["GET"], strict_slashes=False)
    async def workers(self, request):
        """``{"success": true, "workers": [...]}``, most recently seen first.
        Each worker is its ``WorkerRecord`` dict plus ``current_jobs``
        (``[{"job_id", "job_state", "progress"}]`` of its jobs still in the
        store), ``seen_s_ago`` (float seconds by this server's clock) and
        ``alive`` (seen within WORKER_HEARTBEAT_TIMEOUT_S and not exited).
        With a ``fleet_view`` that answers a list: ``instance`` (the
        instance dict of its ``instance_id``, or null) on each worker and
        ``instances`` (every instance); if the fleet fails to answer,
        ``fleet_error`` (a message) instead. With a ``fleet_status``:
        ``fleet`` (``{"backend", "trouble": null or {"code", "message",
        "since", ...}, "launch_failures"}``, as in /health). 503
        ``NOREGISTRY`` without a registry. Needs ``admin``."""
        await self._caller(request, "admin")
        if self.registry is None:
            return _error(request, 503, "NOREGISTRY", "this feederd has no worker registry")
        records = await self.registry.list()
        jobs = await gather([self._current_jobs(r.jobs) for r in records])
        now = self.clock.seconds()
        workers = []
        for record, current in zip(records, jobs):
            seen_s_ago = round(now - record.last_seen, 3)
            workers.append(dict(record.to_dict(), current_jobs=current, seen_s_ago=seen_s_ago,
                                alive=record.state != EXITED
                                and seen_s_ago <= self.settings.WORKER_HEARTBEAT_TIMEOUT_S))
        payload = {"success": True, "workers": workers}
        if self._fleet_status is not None:
            payload["fleet"] = self._fleet_status()
        if self._fleet_view is not None:
            try:
                instances = await defer.maybeDeferred(self._fleet_view)
                instances = None if instances is None else list(instances)
            except Exception:
                self.log.failure("GET /workers: the fleet view failed")
                payload["fleet_error"] = "the fleet did not answer; the server log has the details"
            else:
                if instances is None:  # a fleet without instances of its own (Fleet.instances)
                    return _json(request, 200, payload)
                by_id = {i.get("instance_id"): i for i in instances}
                for worker in workers:
                    worker["instance"] = by_id.get(worker["instance_id"]) if worker["instance_id"] else None
                payload["instances"] = instances
        return _json(request, 200, payload)

    async def _current_jobs(self, job_ids):
        """``[{"job_id", "job_state", "progress"}]`` of the jobs among
        ``job_ids`` still in the store (read in parallel)."""
        async def one(job_id):
            try:
                job = await self.store.get(job_id)
            except NoSuchJob:
                return None
            return {"job_id": job.job_id, "job_state": job.job_state.value,
                    "progress": None if job.progress is None else round(job.progress, 1)}
        found = await gather([one(j) for j in job_ids])
        return [j for j in found if j is not None]

    @app.route("/metrics", methods=["GET"])
    async def metrics_text(self, request):
        """Prometheus metrics in the text exposition format
        (``nommer.feederd.metrics``), refreshed for this scrape. Farm-wide
        figures (every caller's jobs, the workers, the fleet's cost): needs
        the ``metrics`` scope (a scraper's key that can do nothing else) or
        ``admin`` (anonymous on loopback without keys)."""
        await self._caller(request, "metrics")
        body = await self.metrics.render()
        request.setHeader(b"Content-Type", METRICS_CONTENT_TYPE.encode())
        return body

    @app.route("/events", methods=["GET"], strict_slashes=False)
    async def event_stream(self, request):
        """The live event stream (``nommer.feederd.sse``): a key with
        ``read`` (``Authorization: Bearer``) or ``?token=`` from POST
        /events/token; query ``job_id``, ``state``, ``last_event_id``."""
        if self.events is None:
            return _error(request, 503, "NOEVENTS", "this feederd has no event stream")
        caller = await self.events.caller(request, lambda: self._caller(request, "read"))
        return await self.events.open(request, caller)

    @app.route("/events/token", methods=["POST"], strict_slashes=False)
    async def event_stream_token(self, request):
        """``{"success": true, "token", "expires_in_s"}``: a token opening
        ``GET /events?token=`` for this key's view, for a short while
        (SSE_TOKEN_TTL_S). Needs ``read``."""
        caller = await self._caller(request, "read")
        if self.events is None:
            return _error(request, 503, "NOEVENTS", "this feederd has no event stream")
        return _json(request, 200, {"success": True, **self.events.token_for(caller)})

    @app.route("/presets", methods=["GET"], strict_slashes=False)
    async def presets(self, request):
        """``{"success": true, "presets": [...]}``, sorted by name: each
        ``{"name", "description", "outputs" (declarative) or "job_options"
        (the 2011 ones), "requires"}`` (``nommer.core.outputs.presets``).
        Needs ``read``."""
        await self._caller(request, "read")
        return _json(request, 200, {"success": True, "presets": list_presets(self.settings)})

    @app.route("/presets/<string:name>", methods=["GET"], strict_slashes=False)
    async def preset(self, request, name):
        """``{"success": true, "preset": {...}}`` (shaped as in /presets);
        404 ``NOSUCHPRESET`` for a name no preset has. Needs ``read``."""
        await self._caller(request, "read")
        if not PRESET_NAME.fullmatch(name):  # a 16 KiB path is not echoed whole into the message
            raise NoSuchPreset(name if len(name) <= MAX_ECHOED_ID_CHARS else name[:MAX_ECHOED_ID_CHARS] + "...",
                               [p["name"] for p in list_presets(self.settings)])
        return _json(request, 200, {"success": True, "preset": get_preset(name, self.settings)})

    @app.route("/schema", methods=["GET"])
    def schema(self, request):
        """The JSON Schema (Draft 2020-12) of job bodies, bare (not wrapped in
        ``success``), as ``application/schema+json``. Public documentation
        like /openapi.json: no key."""
        request.setHeader(b"Content-Type", b"application/schema+json")
        return schema_document()

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        """The OpenAPI 3.0 description of this API (``apidoc.openapi_document``)."""
        request.setHeader(b"Content-Type", b"application/json")
        return openapi_document()

    @app.route("/ui/", branch=True)
    def dashboard(self, request):
        """The web dashboard's static files (``nommer.feederd.dashboard``):
        no key needed for the files themselves (they hold no secret); the
        page sends the key it is given to the API routes."""
        return ui_resource()

    @app.route("/ui", methods=["GET", "HEAD"])
    def dashboard_slash(self, request):
        """``/ui`` -> ``/ui/`` (relative, so a path prefix of a proxy is kept)."""
        return request.redirect(b"ui/") or b""

    # --- helpers ------------------------------------------------------------

    async def _caller(self, request, scope):
        """The request's ``auth.Caller``, counted against its rate limit and
        allowed ``scope``; else Unauthorized, RateLimited or Forbidden."""
        try:
            caller = await self.auth.caller(request)
        except Unauthorized as exc:
            if exc.invalid_token:
                self._throttle_failed_key(request)
            raise
        wait_s = self.limiter.take(caller.rate_key)
        if wait_s is not None:
            raise RateLimited(f"more than {self.settings.API_RATE_LIMIT_PER_MINUTE} requests a minute "
                              f"(API_RATE_LIMIT_PER_MINUTE); retry in {retry_after_header(wait_s)} s", wait_s)
        if not caller.may(scope):
            who = f"API key {caller.key_id} ({caller.name})"
            raise Forbidden(f"{who} lacks the {scope!r} scope; it has " + ", ".join(sorted(caller.scopes)))
        return caller

    def _throttle_failed_key(self, request):
        """A wrong, malformed or revoked key counts against the rate limit of
        the client's address (not of any key), so guessing keys, or making
        feederd look them up in DynamoDB, goes no faster than
        API_RATE_LIMIT_PER_MINUTE a minute from one address; past it the
        answer is 429 RATELIMITED instead of 401."""
        peer = request.getClientAddress()
        wait_s = self.limiter.take(("failed-key", getattr(peer, "host", None)))
        if wait_s is not None:
            raise RateLimited(f"more than {self.settings.API_RATE_LIMIT_PER_MINUTE} requests a minute with "
                              f"a wrong API key from this address; retry in {retry_after_header(wait_s)} s",
                              wait_s)

    async def _visible_job(self, caller, job_id):
        """The job, if ``caller`` may see it; NoSuchJob alike for a job that
        does not exist and one of another caller (ids do not leak)."""
        job = await self.store.get(job_id)
        if not caller.can_see(job):
            raise NoSuchJob(job_id)
        return job

    @staticmethod
    def _job_id(job_id):
        if not JOB_ID_RE.match(job_id):
            # A 16 KiB path is not echoed whole into the message.
            raise NoSuchJob(job_id if len(job_id) <= MAX_ECHOED_ID_CHARS
                            else job_id[:MAX_ECHOED_ID_CHARS] + "...")
        return job_id

    def _count_arg(self, request, name, default, low, high):
        """Query argument ``name`` as an int from ``low`` to ``high`` (None:
        no bound), ``default`` when absent; InvalidJobSpec otherwise (ASCII
        digits only; an empty value is refused, not read as the default)."""
        value = self._arg(request, name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit()) or int(value) < low or (high is not None and int(value) > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise InvalidJobSpec(name, f"must be an integer {bounds}")
        return int(value)

    @staticmethod
    def _arg(request, name):
        values = request.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else None

    def _read_json(self, request):
        """The whole body as JSON, whatever the Content-Type (the original
        client sent JSON labelled as a form). The Site's ``BodyCappedRequest``
        already refused a body over MAX_REQUEST_BODY_BYTES; this checks again
        (a resource served by another Site)."""
        limit = self.settings.MAX_REQUEST_BODY_BYTES
        raw = request.content.read(limit + 1)
        if len(raw) > limit:
            raise BodyTooLarge(refusal_message(limit))
        if not raw.strip():
            raise InvalidJobSpec(None, "the request body is empty; send the job as a JSON object")
        try:
            body = json.loads(raw)
        except RecursionError:
            # Badinput: 100k nested lists made json.loads raise RecursionError (a 500).
            raise InvalidJobSpec(None, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidJobSpec(None, f"the request body is not valid JSON: {exc}")
        _check_json_shape(body)
        return body
