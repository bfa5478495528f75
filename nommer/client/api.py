"""A small synchronous client for feederd's JSON API.

Users' scripts are not Twisted programs, so this module blocks: it is built on
``urllib.request`` and ``json`` from the standard library, and reads the live
event stream (:meth:`NommerClient.events`) with ``sseclient-py`` over the
same ``urllib`` response.

    from nommer.client import NommerClient, presets

    client = NommerClient("http://127.0.0.1:8001", api_key="nmk_...")  # or env NOMMER_API_KEY
    job_id = client.submit("file:///videos/in.mov", "file:///videos/out.mp4",
                           presets.get("web-640"))
    job = client.wait(job_id, on_update=lambda j: print(j["job_state"], j["progress"]))

    # Declarative: a server preset (GET /presets), or outputs of your own.
    client.submit("s3://in/title.mov", "s3://out/title/", preset="cmaf-h264",
                  overrides={"segment_s": 4})
    client.submit("s3://in/title.mov", "s3://out/title/",
                  outputs=[{"type": "hls", "ladder": "default"}, {"type": "poster"}])

    for event in client.events(job_id=job_id):     # live, reconnecting (GET /events)
        print(event["event"], event.get("kind"), event.get("state"))

API keys: every request carries ``Authorization: Bearer <key>`` when the
client has a key (``api_key=``, else the environment variable
NOMMER_API_KEY). The key is never printed, logged nor shown by ``repr``, and
is not sent on to wherever a redirect points.

Errors: the server's error answers become :class:`APIError` (subclasses
:class:`BadInput`, :class:`NoSuchJob`, :class:`NoSuchPreset`, :class:`Conflict`,
:class:`Unauthorized`, :class:`Forbidden`, :class:`RateLimited`); not
reaching the server at all is :class:`ConnectionFailed`.

The original media-nommer client's shape (``connect(api_hostname)`` ->
``APIConnection.job_submit(...)`` -> ``APIResponse``) is kept at the end of
this module for scripts written against ``media_nommer_api``.

Size (issue 10: about 400 lines at most, or a reason): kept whole. It is
the client a user's script imports, standard library only: the errors
(one per API error code, their hints naming the client's own settings),
``NommerClient`` and the 2011 shape; the errors are what the client
raises and are documented with it.
"""

import email.utils
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import sseclient

from nommer import __version__
from nommer.core.states import FINAL_STATES

DEFAULT_API_URL = "http://127.0.0.1:8001"

#: The nommer every preset and every bare list of passes means.
FFMPEG_NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"

#: Names of the states a job never leaves.
FINAL_STATE_NAMES = frozenset(s.value for s in FINAL_STATES)

_USER_AGENT = f"nommer-client/{__version__}"

#: Environment variable holding the API key when none is given.
API_KEY_ENV = "NOMMER_API_KEY"


# --- Errors -----------------------------------------------------------------


class ClientError(Exception):
    """Base class of everything this client raises on purpose."""


class APIError(ClientError):
    """feederd answered, and the answer is an error.

    ``status`` is the HTTP status (200 for an original-style
    ``{"success": false}`` answer), ``error_code`` the API's code
    (``BADINPUT``, ``NOSUCHJOB``, ``CONFLICT``...; ``HTTP_<status>`` when the
    answer was not the API's JSON), ``message`` the text meant for a person.
    """

    #: A sentence telling the user what to do about it, or None.
    hint = None

    def __init__(self, status, error_code, message):
        super().__init__(f"{message} ({error_code})" + (f"; {self.hint}" if self.hint else ""))
        self.status = status
        self.error_code = error_code
        self.message = message


class BadInput(APIError):
    """The request was refused as malformed (400, ``BADINPUT``)."""


class NoSuchJob(APIError):
    """No job has that id (404, ``NOSUCHJOB``)."""


class NoSuchPreset(APIError):
    """No server preset has that name (404, ``NOSUCHPRESET``)."""

    hint = "`nommer presets` lists the server's presets"


class Conflict(APIError):
    """The request does not fit the job's state, e.g. cancelling a finished
    job (409, ``CONFLICT``)."""


class Unauthorized(APIError):
    """No API key, or one feederd does not know or that was revoked (401,
    ``UNAUTHORIZED``)."""

    hint = (f"give a valid API key (--api-key, the environment variable {API_KEY_ENV}, or api_key=); "
            "whoever runs feederd creates one with `nommer keys create NAME`")


class Forbidden(APIError):
    """The API key is valid but lacks the scope this request needs (403,
    ``FORBIDDEN``), e.g. a read-only key submitting a job."""

    hint = "this API key lacks the scope for it; see `nommer keys list` for the scopes of each key"


class RateLimited(APIError):
    """Too many requests (429, ``RATELIMITED``). ``retry_after_s``: seconds
    to wait before trying again, from the Retry-After header (None if absent)."""

    def __init__(self, status, error_code, message, retry_after_s=None):
        self.retry_after_s = retry_after_s
        if retry_after_s is not None:
            self.hint = f"try again in {retry_after_s:g} s"
        super().__init__(status, error_code, message)


class InvalidInputError(ClientError, ValueError):
    """Refused before anything was sent: the original ``job_submit`` without a
    source, a destination or options, ``submit`` without exactly one of
    job_options, outputs and preset, or an empty job id or preset name."""


class ConnectionFailed(ClientError):
    """feederd could not be reached (refused, unknown host, timed out)."""

    def __init__(self, url, reason):
        super().__init__(
            f"cannot reach feederd at {url}: {reason}; "
            "is feederd running? start it with `make run`")
        self.url = url
        self.reason = reason


class WaitTimeout(ClientError):
    """:meth:`NommerClient.wait` gave up. ``job`` is the last state seen."""

    def __init__(self, job_id, timeout_s, job):
        state = job.get("job_state") if job else None
        super().__init__(
            f"job {job_id} is still {state} after {timeout_s:g} s")
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.job = job


_ERRORS_BY_CODE = {"BADINPUT": BadInput, "NOSUCHJOB": NoSuchJob, "NOSUCHPRESET": NoSuchPreset, "CONFLICT": Conflict,
                   "UNAUTHORIZED": Unauthorized, "FORBIDDEN": Forbidden, "RATELIMITED": RateLimited}
_ERRORS_BY_STATUS = {400: BadInput, 404: NoSuchJob, 409: Conflict, 401: Unauthorized, 403: Forbidden,
                     429: RateLimited}


def retry_after_seconds(value, now=None):
    """Seconds a Retry-After header value asks for (delta-seconds or an
    HTTP date), at least 0; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _api_error(status, data, text, headers=None):
    """The exception for an error answer (JSON ``data`` or, failing that, ``text``;
    ``headers`` for Retry-After)."""
    if isinstance(data, dict):
        code = data.get("error_code")
        message = data.get("message") or data.get("error") or "request failed"
    else:
        code = None
        snippet = " ".join((text or "").split())[:200]
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    cls = _ERRORS_BY_CODE.get(code) or _ERRORS_BY_STATUS.get(status, APIError)
    if not code:
        code = f"HTTP_{status}" if status >= 400 else "ERROR"
    if cls is RateLimited:
        return cls(status, code, str(message), retry_after_s=retry_after_seconds((headers or {}).get("Retry-After")))
    return cls(status, code, str(message))


def normalize_base_url(base_url):
    """``"localhost:8001/"`` -> ``"http://localhost:8001"``."""
    url = (base_url or DEFAULT_API_URL).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def job_options_from(value):
    """A job_options object from either a full one (``{"nommer", "options"}``)
    or a bare list of FFmpeg passes. Raises ``ValueError`` for anything else."""
    if isinstance(value, list):
        return {"nommer": FFMPEG_NOMMER, "options": value}
    if isinstance(value, dict) and "options" in value:
        opts = dict(value)
        opts.setdefault("nommer", FFMPEG_NOMMER)
        return opts
    raise ValueError(
        'expected a job_options object {"nommer": ..., "options": [...]} '
        "or a list of passes")


# --- The client -------------------------------------------------------------


class NommerClient:
    """Blocking client of one feederd.

    ``timeout_s`` bounds each HTTP request (connect and each read).
    ``api_key``: sent as ``Authorization: Bearer <api_key>`` on every
    request; None (the default) takes the environment variable
    NOMMER_API_KEY, "" sends no key. Surrounding blanks are dropped; a key
    holding other blanks or control characters is refused
    (:class:`InvalidInputError`, the key not repeated).
    ``sleep`` and ``clock`` are what :meth:`wait` uses to pause and to
    measure time; tests replace them.
    """

    def __init__(self, base_url=DEFAULT_API_URL, timeout_s=30, *, api_key=None,
                 sleep=time.sleep, clock=time.monotonic):
        self.base_url = normalize_base_url(base_url)
        self.timeout_s = timeout_s
        self._api_key = _checked_api_key(os.environ.get(API_KEY_ENV) if api_key is None else api_key)
        self._sleep = sleep
        self._clock = clock

    def __repr__(self):
        return f"NommerClient({self.base_url!r}{', with an API key' if self._api_key else ''})"

    @property
    def has_api_key(self):
        """Whether requests carry an API key (the key itself is not shown)."""
        return bool(self._api_key)

    # -- plumbing --

    def _send(self, method, path, body=None, query=None):
        """Send one request; return ``(status, text, parsed JSON or None,
        headers)`` whatever the status (headers: an ``http.client.HTTPMessage``).
        Raises only :class:`ConnectionFailed`."""
        url = self.base_url + path
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        if self._api_key:
            # Unredirected: urllib would otherwise copy it to wherever a redirect points.
            req.add_unredirected_header("Authorization", f"Bearer {self._api_key}")
        try:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    status, raw, answer_headers = resp.status, resp.read(), resp.headers
            except urllib.error.HTTPError as e:
                with e:
                    status, raw, answer_headers = e.code, e.read(), e.headers
        except urllib.error.URLError as e:
            raise self._unreachable(method, path, e.reason) from None
        except (OSError, http.client.HTTPException) as e:
            # TimeoutError, ConnectionResetError, RemoteDisconnected, BadStatusLine...
            raise self._unreachable(method, path, e) from None
        text = raw.decode("utf-8", "replace")
        return status, text, _loads_or_none(text), answer_headers

    def _unreachable(self, method, path, reason):
        if isinstance(reason, TimeoutError):
            reason = f"no answer within {self.timeout_s:g} s"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        else:
            reason = str(reason) or type(reason).__name__
        return ConnectionFailed(self.base_url, f"{method} {path}: {reason}")

    def _request(self, method, path, body=None, query=None):
        """Send one request; return the JSON object of a successful answer,
        raise :class:`APIError` for any other."""
        status, text, parsed, headers = self._send(method, path, body, query)
        if status >= 400 or (isinstance(parsed, dict) and parsed.get("success") is False):
            raise _api_error(status, parsed, text, headers)
        if not isinstance(parsed, dict):
            raise APIError(status, "BADRESPONSE",
                           f"{method} {path} did not answer with a JSON object")
        return parsed

    # -- the API --

    def submit(self, source_path, dest_path, job_options=None, notify_url=None, *, outputs=None, preset=None,
               overrides=None, priority=None, pool=None, chunking=None):
        """Submit a job; return its id. Give exactly one of:

        - ``job_options``: the 2011 form, ``{"nommer": ..., "options": [...]}``
          (see :mod:`nommer.client.presets`);
        - ``outputs``: a list of declarative outputs, each a dict with a
          ``type`` (``hls``, ``dash``, ``mp4``, ``poster``, ``thumbnails``,
          ``storyboard``, ``audio``; :meth:`schema` has every field);
        - ``preset``: a server preset's name (:meth:`presets`), with
          ``overrides`` (a dict of output fields) if wanted.

        A ``dest_path`` ending in ``/`` is a prefix every output file goes
        under. ``priority``: 0..100, higher runs first (server default 50);
        ``pool``: the pool of workers that runs it (server setting POOLS;
        default: the preset's, else ``default``); ``chunking`` (declarative
        jobs): True, False, or ``{"target_s": 30, "min_s": ..., "max_s": ...}``
        (seconds) to split the source over many workers (None: the server
        decides by the source's length, CHUNKING_MIN_SOURCE_S). Raises
        :class:`InvalidInputError` (nothing sent) for none or several of the
        three, or ``overrides`` without ``preset``; :class:`BadInput` when
        feederd refuses the body (the message names the field, e.g. an
        unknown pool)."""
        forms = {"job_options": job_options, "outputs": outputs, "preset": preset}
        given = [name for name, value in forms.items() if value is not None]
        if len(given) != 1:
            raise InvalidInputError("give exactly one of job_options, outputs and preset"
                                    + (f" (got {', '.join(given)})" if given else ""))
        if overrides is not None and preset is None:
            raise InvalidInputError("overrides go with a preset")
        body = {"source_path": source_path, "dest_path": dest_path, "notify_url": notify_url,
                given[0]: forms[given[0]]}
        if overrides is not None:
            body["overrides"] = overrides
        if priority is not None:
            body["priority"] = priority
        if pool is not None:
            body["pool"] = pool
        if chunking is not None:
            body["chunking"] = chunking
        data = self._request("POST", "/job/submit", body=body)
        return data["job_id"]

    def batch(self, jobs=None, *, common=None, sources=None):
        """Submit many jobs in one request (``POST /jobs/batch``): either
        ``jobs`` (a list of full job bodies, dicts as :meth:`submit` sends),
        or ``common`` (the fields every job shares) with ``sources`` (a list
        of dicts, each a job's own fields, at least ``source_path`` and
        ``dest_path``, over ``common``). Returns the list of results, one per
        item in order: ``{"index", "success": True, "job_id"}`` or
        ``{"index", "success": False, "error_code", "message", "field"}``:
        one bad item does not sink the others. Raises
        :class:`InvalidInputError` (nothing sent) unless exactly one form is
        given; :class:`BadInput` for a batch over the server's
        MAX_BATCH_JOBS."""
        if (jobs is None) == (sources is None) or (common is not None and sources is None):
            raise InvalidInputError("give jobs, or common with sources")
        body = {"jobs": list(jobs)} if jobs is not None else {"common": dict(common or {}), "sources": list(sources)}
        return self._request("POST", "/jobs/batch", body=body)["results"]

    def retry(self, job_id):
        """Queue a job in ERROR, CANCELED or ABANDONED again (attempts back
        to 0, its event log kept); return it (now PENDING). Raises
        :class:`Conflict` for a job in another state, :class:`NoSuchJob`."""
        return self._request("POST", f"/job/{_quote_id(job_id)}/retry")["job"]

    def presets(self):
        """The server's presets, sorted by name: a list of dicts with
        ``name``, ``description``, ``outputs`` (a declarative preset) or
        ``job_options`` (a 2011 one) and ``requires``."""
        return self._request("GET", "/presets")["presets"]

    def preset(self, name):
        """One server preset, as in :meth:`presets` (raises :class:`NoSuchPreset`)."""
        if not name or not isinstance(name, str):
            raise InvalidInputError(f"a preset name must be a non-empty string, not {name!r}")
        return self._request("GET", "/presets/" + urllib.parse.quote(name, safe=""))["preset"]

    def schema(self):
        """The JSON Schema (Draft 2020-12) of job bodies, as a dict."""
        return self._request("GET", "/schema")

    def get(self, job_id):
        """The job as a dict (raises :class:`NoSuchJob`)."""
        return self._request("GET", "/job/" + _quote_id(job_id))["job"]

    def list(self, state=None, limit=50, cursor=None):
        """One page of jobs, newest first: ``(jobs, next_cursor)``;
        ``next_cursor`` is None on the last page."""
        data = self._request("GET", "/jobs", query={
            "state": str(state).upper() if state else None,
            "limit": limit,
            "cursor": cursor,
        })
        return data.get("jobs", []), data.get("next_cursor")

    def iter_jobs(self, state=None, page_size=50):
        """Every job (optionally in one state), newest first, page by page."""
        cursor = None
        while True:
            jobs, next_cursor = self.list(state=state, limit=page_size, cursor=cursor)
            yield from jobs
            if not next_cursor or next_cursor == cursor:
                return
            cursor = next_cursor

    def job_events(self, job_id, after=0, page_size=500):
        """The job's event log, oldest first (``GET /job/<id>/events``, every
        page): a list of dicts with ``job_id``, ``seq`` (1, 2, ...), ``kind``
        (``submitted``, ``state``, ``assigned``, ``lease_lost``, ``retry``,
        ``progress``, ``webhook``, ``error``), ``at`` (ISO 8601 UTC),
        ``state``, ``worker_id``, ``attempt``, ``progress`` (percent) and
        ``details``; only those after ``seq`` ``after``. Raises
        :class:`NoSuchJob` (also for another key's job)."""
        events = []
        while True:
            data = self._request("GET", f"/job/{_quote_id(job_id)}/events",
                                 query={"after": after, "limit": page_size})
            events += data.get("events", [])
            if data.get("next_after") is None or data["next_after"] == after:
                return events
            after = data["next_after"]

    def cancel(self, job_id):
        """Cancel a job; return it. Raises :class:`Conflict` if it is already final."""
        return self._request("POST", f"/job/{_quote_id(job_id)}/cancel")["job"]

    def health(self):
        """feederd's health answer (``{"success": true, "status": "ok", ...}``)."""
        return self._request("GET", "/health")

    def workers(self):
        """The worker registry, most recently seen first: a list of dicts
        with the worker's ``worker_id``, ``state`` (running, draining,
        interrupted, terminating, exited), ``jobs`` (ids), ``capacity``,
        ``jobs_done``, ``host``, ``version``, ``instance_id``,
        ``instance_type``, ``availability_zone``, ``market`` (None off EC2),
        ``started_at`` and ``last_seen`` (epoch s, the worker's clock), plus
        ``current_jobs`` (``[{"job_id", "job_state", "progress"}]``),
        ``seen_s_ago`` (s), ``alive`` (bool) and, with a cloud fleet,
        ``instance`` (dict with ``uptime_s``, ``cost_usd``..., or None).
        Raises :class:`APIError` (``NOREGISTRY``, 503) when feederd keeps
        no registry."""
        return self._request("GET", "/workers")["workers"]

    def events(self, job_id=None, state=None, last_event_id=None, *, reconnect=True, idle_timeout_s=None):
        """The live event stream (``GET /events``): a generator of dicts, one
        per server-sent event, each the event's JSON data plus ``event`` (its
        SSE name) and ``id`` (the server's event id, an int):

        - ``event == "snapshot"`` first (``"reset"`` when ``last_event_id``
          was too old for the server's buffer: events were missed): ``jobs``
          (a list of job rows, as ``job`` below), ``truncated``,
          ``last_event_id``, and for a reset ``reason``;
        - then ``event == "job"`` for every job event this key may see:
          ``job_id``, ``kind`` (``submitted``, ``state``, ``assigned``,
          ``progress``, ``retry``, ``lease_lost``, ``webhook``, ``error``),
          ``at`` (ISO 8601 UTC), ``seq``, ``state``, ``worker_id``,
          ``attempt``, ``progress``, ``details``, and ``job``: the job's
          ``job_state``, ``progress``, ``attempts``, ``worker_id``, times...

        ``job_id``: only that job's events (:class:`NoSuchJob` if this key
        may not see it). ``state``: a state name or a list of them (the job's
        state after the event). ``last_event_id``: resume after that event
        (replayed from the server's buffer) instead of starting with a
        snapshot.

        When the connection drops (feederd restarting, a proxy's timeout, no
        byte for ``idle_timeout_s``, default the larger of 45 s and the
        client's ``timeout_s``; the server sends a heartbeat every 15 s) it
        is opened again after the server's ``retry`` delay (2 s), with
        ``Last-Event-ID`` set to the last id received, so nothing is missed
        (or a ``reset`` says what to do). ``reconnect=False`` ends the
        generator instead. The first connection's errors are raised
        (:class:`ConnectionFailed`, :class:`Unauthorized`...); on a
        reconnection, feederd being unreachable, 503 and 429 are waited out,
        other errors raised. Stop by leaving the loop (the connection is
        closed)."""
        states = None
        if state is not None:
            states = ",".join(s.upper() for s in ([state] if isinstance(state, str) else state))
        query = {"job_id": job_id, "state": states}
        last = None if last_event_id is None else str(last_event_id)
        idle_s = idle_timeout_s if idle_timeout_s is not None else max(45.0, float(self.timeout_s or 0))
        retry_s = 2.0
        connected = False
        while True:
            try:
                response = self._open_stream(query, last, idle_s)
            except (ConnectionFailed, APIError) as exc:
                transient = isinstance(exc, ConnectionFailed) or exc.status in (429, 503)
                if not (connected and reconnect and transient):
                    raise
                self._sleep(max(retry_s, getattr(exc, "retry_after_s", None) or 0.0))
                continue
            connected = True
            try:
                with response:
                    for message in sseclient.SSEClient(response).events():
                        if message.retry and message.retry.isdigit():
                            retry_s = int(message.retry) / 1000.0
                        if message.id:
                            last = message.id
                        data = _loads_or_none(message.data)
                        if not isinstance(data, dict):
                            continue
                        data["event"] = message.event
                        data["id"] = int(message.id) if message.id and message.id.isdigit() else message.id
                        yield data
            except (OSError, http.client.HTTPException, ValueError):
                pass  # dropped (a reset, a timeout, a truncated chunk): reconnect below
            if not reconnect:
                return
            self._sleep(retry_s)

    def _open_stream(self, query, last_event_id, idle_s):
        """``GET /events`` with ``query``: the open ``urllib`` response of a
        200 ``text/event-stream``; raises :class:`APIError` for an error
        answer, :class:`ConnectionFailed` when feederd cannot be reached."""
        url = self.base_url + "/events"
        query = {k: v for k, v in query.items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "User-Agent": _USER_AGENT}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        req = urllib.request.Request(url, headers=headers, method="GET")
        if self._api_key:
            req.add_unredirected_header("Authorization", f"Bearer {self._api_key}")
        try:
            try:
                response = urllib.request.urlopen(req, timeout=idle_s)
            except urllib.error.HTTPError as e:
                with e:
                    text = e.read().decode("utf-8", "replace")
                raise _api_error(e.code, _loads_or_none(text), text, e.headers) from None
        except urllib.error.URLError as e:
            raise self._unreachable("GET", "/events", e.reason) from None
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable("GET", "/events", e) from None
        if not (response.headers.get("Content-Type") or "").startswith("text/event-stream"):
            with response:
                text = response.read(64 * 1024).decode("utf-8", "replace")
            raise _api_error(response.status, _loads_or_none(text), text, response.headers) \
                if response.status >= 400 else APIError(response.status, "BADRESPONSE",
                                                         "GET /events did not answer with an event stream")
        return response

    def wait(self, job_id, poll_interval_s=1.0, timeout_s=None, on_update=None):
        """Poll the job until it is final and return it.

        ``on_update(job)`` is called after every poll, the last one included.
        A poll answered 429 (:class:`RateLimited`) is tried again after its
        Retry-After (at least ``poll_interval_s``).
        Raises :class:`WaitTimeout` if the job is not final after
        ``timeout_s`` seconds (None = wait for ever).
        """
        deadline = None if timeout_s is None else self._clock() + timeout_s
        job = None
        while True:
            pause = poll_interval_s
            try:
                job = self.get(job_id)
            except RateLimited as e:
                pause = max(poll_interval_s, e.retry_after_s or 0.0)
            else:
                if on_update is not None:
                    on_update(job)
                if job.get("job_state") in FINAL_STATE_NAMES:
                    return job
            if deadline is not None:
                left = deadline - self._clock()
                if left <= 0:
                    raise WaitTimeout(job_id, timeout_s, job)
                pause = min(pause, left)
            self._sleep(pause)


def _checked_api_key(api_key):
    """The key to send (blanks around it dropped), or None for none."""
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise InvalidInputError(f"an API key must be a string, not {type(api_key).__name__}")
    api_key = api_key.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or ord(c) > 126 for c in api_key):
        raise InvalidInputError("the API key holds blanks, control or non-ASCII characters (is it the right "
                                "value? it is not repeated here)")
    return api_key or None


def _quote_id(job_id):
    if not job_id or not isinstance(job_id, str):
        raise InvalidInputError(f"a job id must be a non-empty string, not {job_id!r}")
    return urllib.parse.quote(job_id, safe="")


def _loads_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- The original client's shape (media_nommer_api) ---------------------------


class APIResponse:
    """An answer from feederd: ``data`` is the parsed JSON, ``raw_response``
    the body as text, ``is_success()`` is ``data["success"]``."""

    def __init__(self, raw_response, data=None):
        self.raw_response = raw_response
        self.data = json.loads(raw_response) if data is None else data

    def is_success(self):
        return bool(self.data.get("success"))

    def __repr__(self):
        return f"APIResponse({self.data!r})"


class APIConnection:
    """The original client's connection. Error answers (which the 2011 server
    sent with HTTP 200) come back as an unsuccessful :class:`APIResponse`;
    only an unreachable server raises (:class:`ConnectionFailed`)."""

    def __init__(self, api_hostname, timeout_s=30, api_key=None):
        self.api_hostname = normalize_base_url(api_hostname)
        #: The full client, for everything the original could not do.
        self.client = NommerClient(self.api_hostname, timeout_s=timeout_s, api_key=api_key)

    def job_submit(self, source_path, dest_path, job_options, notify_url=None):
        missing = [name for name, value in (("source_path", source_path),
                                            ("dest_path", dest_path),
                                            ("job_options", job_options)) if not value]
        if missing:
            raise InvalidInputError(f"missing or empty: {', '.join(missing)}")
        status, text, data, _ = self.client._send("POST", "/job/submit", body={
            "source_path": source_path,
            "dest_path": dest_path,
            "notify_url": notify_url,
            "job_options": job_options,
        })
        if not isinstance(data, dict):
            raise _api_error(status, data, text)
        return APIResponse(text, data)


def connect(api_hostname, api_key=None):
    """``connect("http://localhost:8001")`` -> :class:`APIConnection` (the
    original ``media_nommer_api.connect``; the API key from NOMMER_API_KEY
    unless given)."""
    return APIConnection(api_hostname, api_key=api_key)
