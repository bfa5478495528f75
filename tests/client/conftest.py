"""A stand-in feederd for the client tests: a real HTTP server on a loopback
port, in a thread, with jobs in a dict.

Each job follows a script of ``(state, progress, details)`` steps; every
``GET /job/<id>`` moves it one step on, so a client that polls sees the
states one after the other. Every request is recorded in ``requests``.
It serves a few presets (``FAKE_PRESETS``: the four 2011 ones and two
declarative ones) and the real job schema.
With ``api_key`` set, a request without ``Authorization: Bearer <api_key>``
is answered 401 UNAUTHORIZED, as feederd does.
"""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
OUTPUTS_NOMMER = "nommer.workerd.nommers.outputs.OutputsNommer"

def _fake_presets():
    from nommer.client import presets
    legacy = [{"name": name, "description": presets.describe(name), "job_options": presets.get(name),
               "requires": []} for name in presets.names()]
    return sorted(legacy + [
        {"name": "cmaf-h264", "description": "HLS and DASH over one set of CMAF segments",
         "outputs": [{"type": "hls", "ladder": "default", "dir": "stream"},
                     {"type": "dash", "ladder": "default", "dir": "stream"}], "requires": []},
        {"name": "audio-image-merge", "description": "the source's audio over a still image",
         "outputs": [{"type": "mp4", "name": "video.mp4"}], "requires": ["image_path"]},
    ], key=lambda p: p["name"])


#: What GET /presets answers.
FAKE_PRESETS = _fake_presets()

DEFAULT_SCRIPT = [
    ("PENDING", None, None),
    ("DOWNLOADING", None, None),
    ("ENCODING", 0.0, None),
    ("ENCODING", 50.0, None),
    ("UPLOADING", 100.0, None),
    ("FINISHED", 100.0, None),
]


class FakeFeederd:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def reset(self):
        """Forget every job and request (the server is shared by the tests)."""
        self.jobs = {}          # job_id -> job dict
        self.scripts = {}       # job_id -> remaining steps
        self.order = []         # job ids, oldest first
        self.requests = []      # (method, path, headers, body bytes)
        self.script = list(DEFAULT_SCRIPT)
        self.next_error = None  # (status, content_type, body bytes[, headers dict]) for the next request
        self.api_key = None     # when set, requests must carry it as a Bearer token
        self.workers = []       # GET /workers answers these
        self._counter = 0

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def add_job(self, state="PENDING", script=None, **fields):
        """Put a job in the store directly; return its id."""
        with self._lock:
            self._counter += 1
            job_id = "%050x" % self._counter
            job = {
                "job_id": job_id, "unique_id": job_id, "job_state": state,
                "job_state_details": None, "source_path": "file:///in.mov",
                "dest_path": "file:///out.mp4", "notify_url": None,
                "nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                "progress": None, "attempts": 0,
                "created_at": "2026-01-02T03:04:%02d.000Z" % (self._counter % 60),
                "updated_at": None, "started_at": None, "finished_at": None,
                "output": None, "worker_id": None,
            }
            job.update(fields)
            self.jobs[job_id] = job
            self.scripts[job_id] = list(script if script is not None else [])
            self.order.append(job_id)
            return job_id

    # -- the endpoints: each returns (status, JSON-able body) --

    def submit(self, body):
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, _err("BADINPUT", "the body is not JSON")
        if not isinstance(payload, dict):
            return 400, _err("BADINPUT", "the body is not an object")
        for key in ("source_path", "dest_path"):
            if not payload.get(key):
                return 400, _err("BADINPUT", f"Missing/invalid required key+val: ['{key}']")
        forms = [k for k in ("job_options", "outputs", "preset") if k in payload]
        if len(forms) > 1:
            return 400, _err("BADINPUT", "give exactly one of job_options, outputs and preset")
        fields = {}
        if forms == ["preset"]:
            known = [p["name"] for p in FAKE_PRESETS]
            if payload["preset"] not in known:
                return 400, _err("BADINPUT", f"preset: no preset named {payload['preset']!r}; "
                                             f"presets: {', '.join(known)}")
            fields = {"nommer": OUTPUTS_NOMMER, "preset": payload["preset"]}
        elif forms == ["outputs"]:
            fields = {"nommer": OUTPUTS_NOMMER, "outputs": payload["outputs"]}
        else:
            opts = payload.get("job_options")
            if not opts:
                return 400, _err("BADINPUT", "Missing/invalid required key+val: ['job_options']")
            for key in ("options", "nommer"):
                if not isinstance(opts, dict) or not opts.get(key):
                    return 400, _err("BADINPUT",
                                     f"Missing/invalid required key+val: ['job_options'][{key}]")
            fields = {"nommer": opts["nommer"]}
        job_id = self.add_job(
            state=self.script[0][0], script=self.script[1:],
            source_path=payload["source_path"], dest_path=payload["dest_path"],
            notify_url=payload.get("notify_url"), **fields)
        return 200, {"success": True, "job_id": job_id}

    def get(self, job_id):
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, _err("NOSUCHJOB", f"no job with id {job_id!r}")
            steps = self.scripts[job_id]
            if steps and job["job_state"] not in FINAL:
                state, progress, details = steps.pop(0)
                job.update(job_state=state, progress=progress, job_state_details=details)
            return 200, {"success": True, "job": dict(job)}

    def list(self, query):
        state = query.get("state", [None])[0]
        limit = int(query.get("limit", ["50"])[0])
        start = int(query.get("cursor", ["0"])[0])
        ids = [j for j in reversed(self.order)
               if state is None or self.jobs[j]["job_state"] == state]
        page = ids[start:start + limit]
        more = start + limit < len(ids)
        return 200, {"success": True, "jobs": [dict(self.jobs[j]) for j in page],
                     "next_cursor": str(start + limit) if more else None}

    def cancel(self, job_id):
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return 404, _err("NOSUCHJOB", f"no job with id {job_id!r}")
            if job["job_state"] in FINAL:
                return 409, _err("CONFLICT", f"job {job_id} is already {job['job_state']}")
            job.update(job_state="CANCELED", job_state_details="canceled by request")
            return 200, {"success": True, "job": dict(job)}


def _err(code, message):
    return {"success": False, "error_code": code, "message": message}


def _handler_for(fake):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _route(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.requests.append((method, self.path, dict(self.headers), body))
            if fake.next_error is not None:
                status, ctype, payload, *headers = fake.next_error
                fake.next_error = None
                return self._send(status, payload, ctype, *headers)
            if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._send(401, json.dumps(_err("UNAUTHORIZED", "missing or invalid API key")).encode(),
                                  "application/json")
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            if method == "POST" and parts == ["job", "submit"]:
                result = fake.submit(body)
            elif method == "GET" and parts == ["health"]:
                result = 200, {"success": True, "status": "ok", "jobs_pending": 0}
            elif method == "GET" and parts == ["presets"]:
                result = 200, {"success": True, "presets": FAKE_PRESETS}
            elif method == "GET" and len(parts) == 2 and parts[0] == "presets":
                found = [p for p in FAKE_PRESETS if p["name"] == parts[1]]
                result = (200, {"success": True, "preset": found[0]}) if found else (
                    404, _err("NOSUCHPRESET", f"no preset named {parts[1]!r}"))
            elif method == "GET" and parts == ["schema"]:
                from nommer.core.outputs.schema import job_schema
                return self._send(200, json.dumps(job_schema()).encode(), "application/schema+json")
            elif method == "GET" and parts == ["workers"]:
                result = 200, {"success": True, "workers": fake.workers}
            elif method == "GET" and parts == ["jobs"]:
                result = fake.list(urllib.parse.parse_qs(url.query))
            elif method == "GET" and len(parts) == 2 and parts[0] == "job":
                result = fake.get(parts[1])
            elif method == "POST" and len(parts) == 3 and parts[::2] == ["job", "cancel"]:
                result = fake.cancel(parts[1])
            else:
                return self._send(404, b"<html><body>No Such Resource</body></html>",
                                  "text/html")
            status, data = result
            self._send(status, json.dumps(data).encode(), "application/json")

        def _send(self, status, payload, ctype, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

    return Handler


@pytest.fixture(scope="session")
def _feederd_server():
    fake = FakeFeederd().start()
    yield fake
    fake.stop()


@pytest.fixture
def feederd(_feederd_server, monkeypatch):
    """The stand-in feederd, emptied for this test (and no NOMMER_API_KEY
    from the environment the tests run in)."""
    monkeypatch.delenv("NOMMER_API_KEY", raising=False)
    _feederd_server.reset()
    return _feederd_server


@pytest.fixture
def other_server():
    """A second stand-in feederd (a redirect's target), of this test only."""
    fake = FakeFeederd().start()
    yield fake
    fake.stop()


@pytest.fixture
def web640():
    from nommer.client import presets
    return presets.get("web-640")
