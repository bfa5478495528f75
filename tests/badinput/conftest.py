"""Bad-input suite: helpers shared by its modules.

Every module drives a REAL feederd subprocess (``tests.e2e.harness.Feederd``)
over real sockets on 127.0.0.1. ``raw_request`` writes the request bytes
itself, so paths, methods and headers reach the server exactly as written
(no client-side normalization of ``..``, ``//`` or ``%2e``).
"""

import http.client
import json
import os
import re
import socket
import time

import pytest

from tests.e2e.harness import Feederd

#: What a traceback looks like in a response body or a log: the header line
#: and a frame line (``File "x.py", line 12, in f``). A bare "line " is not
#: used: the JSON parser's own message says "line 1 column 2", which is for
#: the person who sent the body, not a traceback.
TRACEBACK_RE = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+|line \d+, in ')
FINAL_STATES = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased names -> value
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.headers.get('content-type')} {self.body[:300]!r}>"


def raw_request(port, method, path, body=b"", headers=None, *, raw=None, timeout_s=15):
    """Send one HTTP/1.1 request as bytes and read the answer.

    ``path`` and ``method`` are str or bytes, sent verbatim; ``headers`` a
    list of (name, value) pairs (a Content-Length is added for a non-empty
    body unless one is given); ``raw`` replaces the whole request. Returns a
    RawResponse, or None when the server closed the connection without an
    answer."""
    if raw is None:
        method = method.encode() if isinstance(method, str) else method
        path = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        headers = list(headers or [])
        names = {n.lower() for n, _ in headers}
        if "host" not in names:
            headers.insert(0, ("Host", f"127.0.0.1:{port}"))
        if body and "content-length" not in names and "transfer-encoding" not in names:
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close"))
        head = b"".join((n.encode("latin-1") if isinstance(n, str) else n) + b": "
                        + (v.encode("latin-1") if isinstance(v, str) else v) + b"\r\n"
                        for n, v in headers)
        raw = method + b" " + path + b" HTTP/1.1\r\n" + head + b"\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (or close) before reading everything
        response = http.client.HTTPResponse(sock, method=(raw.split(b" ", 1)[0].decode("latin-1")))
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        try:
            data = response.read()
        except http.client.IncompleteRead as e:
            data = e.partial
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, data)


def assert_json_error(resp, status=None, code=None, words=()):
    """A 4xx JSON error of the documented shape, no traceback in it."""
    assert resp is not None, "the server closed the connection without answering"
    assert 400 <= resp.status < 500, resp
    if status is not None:
        assert resp.status == status, resp
    assert resp.headers.get("content-type") == "application/json", resp
    text = resp.body.decode("utf-8")
    assert not TRACEBACK_RE.search(text), resp
    payload = json.loads(text)
    assert payload["success"] is False, payload
    assert isinstance(payload["error_code"], str) and payload["error_code"], payload
    assert isinstance(payload["message"], str) and payload["message"].strip(), payload
    if code is not None:
        assert payload["error_code"] == code, payload
    for word in words:
        assert word in payload["message"], (word, payload)
    return payload


def log_tracebacks(feederd):
    """Tracebacks in the feederd log (its whole file, worker output included)."""
    with open(feederd.log_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    return [m.start() for m in re.finditer(r"Traceback \(most recent call last\)", text)], text


def assert_alive_and_clean(feederd):
    """GET /health answers 200 and the log holds no traceback."""
    assert feederd.proc.poll() is None, f"feederd exited {feederd.proc.returncode}"
    resp = raw_request(feederd.port, "GET", "/health")
    assert resp is not None and resp.status == 200, resp
    assert resp.json()["success"] is True
    found, text = log_tracebacks(feederd)
    assert not found, "tracebacks in the feederd log:\n" + "\n----\n".join(
        text[max(0, i - 300):i + 1500] for i in found[:5])


def submit_raw(port, body):
    """POST /job/submit with ``body`` (a dict, JSON-encoded; or bytes)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw_request(port, "POST", "/job/submit", data, [("Content-Type", "application/json")])


def wait_final(feederd, job_id, timeout_s):
    """Poll the job until it ends (bounded); returns the job."""
    deadline = time.monotonic() + timeout_s
    job = None
    while time.monotonic() < deadline:
        job = feederd.client.get(job_id)
        if job["job_state"] in FINAL_STATES:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end within {timeout_s} s: {job}")


def start_feederd(root, **settings):
    feederd = Feederd(str(root), **settings)
    feederd.start()
    return feederd


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return os.path.realpath(str(tmp_path_factory.mktemp("badinput")))
