"""Malformed API requests against a real feederd: each gets a 4xx JSON error
(``success: false``, an ``error_code``, a message, no traceback), and the
daemon is alive, serving, and has logged no traceback after all of them.

The cases are data (``CASES``); ``@ROOT@`` in a body is the daemon's file
root. Requests Twisted's HTTP parser rejects before any application code runs
(a malformed request line or header) are in ``PROTOCOL_CASES``: Twisted
answers them with a bare ``400`` or closes the connection; they are checked
for that, for no traceback, and for the daemon surviving them.
"""

import gzip
import json

import pytest

from tests.badinput.conftest import (NOMMER, TRACEBACK_RE, assert_alive_and_clean,
                                     assert_json_error, raw_request, start_feederd)

JOB_ID = "0123456789abcdef0123456789abcdef0123456789abcdef01"
GOOD_PASS = [{"outfile_options": [["c:v", "libx264"], ["f", "mp4"]]}]


def body(**changes):
    """A valid submit body with ``changes``; a value of ``...`` drops the key."""
    b = {"source_path": "file://@ROOT@/in.mp4", "dest_path": "file://@ROOT@/out.mp4",
         "notify_url": None, "job_options": {"nommer": NOMMER, "options": GOOD_PASS}}
    for key, value in changes.items():
        if value is ...:
            b.pop(key, None)
        else:
            b[key] = value
    return b


def options(value):
    return body(job_options={"nommer": NOMMER, "options": value})


def raw_body(text):
    """A body written by hand (to hold escapes json.dumps would not write)."""
    return text.encode("utf-8")


def nested(n, open_, close, inner=b"1"):
    return open_ * n + inner + close * n


JSON = [("Content-Type", "application/json")]
S, G, P = "/job/submit", "GET", "POST"

# (id, method, path, body (dict | bytes | None), headers, status, error_code, words in the message)
CASES = [
    # --- not JSON, or not a JSON object --------------------------------------------------
    ("bad-json", P, S, b"{bad", JSON, 400, "BADINPUT", ["not valid JSON"]),
    ("trailing-garbage", P, S, b"{} x", JSON, 400, "BADINPUT", ["not valid JSON"]),
    ("single-quotes", P, S, b"{'source_path': 1}", JSON, 400, "BADINPUT", ["not valid JSON"]),
    ("json-array", P, S, b"[]", JSON, 400, "BADINPUT", ["JSON object"]),
    ("json-string", P, S, b'"job"', JSON, 400, "BADINPUT", ["JSON object"]),
    ("json-null", P, S, b"null", JSON, 400, "BADINPUT", ["JSON object"]),
    ("json-number", P, S, b"42", JSON, 400, "BADINPUT", ["JSON object"]),
    ("json-nan", P, S, b"NaN", JSON, 400, "BADINPUT", ["JSON object"]),
    ("invalid-utf8", P, S, b"\xff\xfe\xfd{}", JSON, 400, "BADINPUT", ["not valid JSON"]),
    ("utf16-empty-object", P, S, "{}".encode("utf-16"), JSON, 400, "BADINPUT", ["source_path"]),
    ("bom-empty-object", P, S, b"\xef\xbb\xbf{}", JSON, 400, "BADINPUT", ["source_path"]),
    ("huge-integer", P, S, b'{"x": ' + b"9" * 5000 + b"}", JSON, 400, "BADINPUT", ["not valid JSON"]),
    ("empty-body", P, S, b"", JSON, 400, "BADINPUT", ["empty"]),
    ("whitespace-body", P, S, b" \r\n\t ", JSON, 400, "BADINPUT", ["empty"]),
    ("nul-body", P, S, b"\x00", JSON, 400, "BADINPUT", ["not valid JSON"]),
    # --- size and depth ------------------------------------------------------------------
    ("deep-lists-100k", P, S, nested(100_000, b"[", b"]"), JSON, 400, "BADINPUT", ["nests deeper"]),
    ("deep-objects-100k", P, S, nested(100_000, b'{"a":', b"}"), JSON, 400, "BADINPUT", ["nests deeper"]),
    ("deep-options-900", P, S,
     json.dumps(options(json.loads(nested(900, b"[", b"]")))).encode(), JSON, 400, "BADINPUT",
     ["nests deeper"]),
    ("deep-under-recursion-limit", P, S, nested(990, b"[", b"]"), JSON, 400, "BADINPUT", []),
    ("body-over-1mib", P, S, b" " * (1024 * 1024 + 10), JSON, 413, "BADINPUT", ["larger than"]),
    ("body-over-1mib-json", P, S,
     json.dumps(body(source_path="file://@ROOT@/" + "a" * (1024 * 1024))).encode(), JSON, 413,
     "BADINPUT", ["larger than"]),
    ("huge-options-list", P, S,
     json.dumps(options([{"outfile_options": [["an", None]] * 200}])).encode(), JSON, 400,
     "BADINPUT", ["at most 100"]),
    # --- wrong types for every field -----------------------------------------------------
    ("source-missing", P, S, body(source_path=...), JSON, 400, "BADINPUT", ["source_path", "required"]),
    ("source-number", P, S, body(source_path=123), JSON, 400, "BADINPUT", ["source_path", "string"]),
    ("source-list", P, S, body(source_path=["file:///x"]), JSON, 400, "BADINPUT", ["source_path"]),
    ("source-object", P, S, body(source_path={"uri": "file:///x"}), JSON, 400, "BADINPUT", ["source_path"]),
    ("source-bool", P, S, body(source_path=True), JSON, 400, "BADINPUT", ["source_path"]),
    ("source-empty", P, S, body(source_path=""), JSON, 400, "BADINPUT", ["source_path"]),
    ("source-no-scheme", P, S, body(source_path="/etc/passwd"), JSON, 400, "BADINPUT", ["no scheme"]),
    ("source-unknown-scheme", P, S, body(source_path="gopher://h/x"), JSON, 400, "BADINPUT",
     ["no storage backend"]),
    ("source-too-long", P, S, body(source_path="file://@ROOT@/" + "a" * 5000), JSON, 400,
     "BADINPUT", ["longer than"]),
    ("dest-number", P, S, body(dest_path=7), JSON, 400, "BADINPUT", ["dest_path"]),
    ("dest-list", P, S, body(dest_path=[]), JSON, 400, "BADINPUT", ["dest_path"]),
    ("dest-object", P, S, body(dest_path={}), JSON, 400, "BADINPUT", ["dest_path"]),
    ("dest-false", P, S, body(dest_path=False), JSON, 400, "BADINPUT", ["dest_path"]),
    ("dest-http-private", P, S, body(dest_path="http://10.1.2.3/x.mp4"), JSON, 400, "BADINPUT",
     ["dest_path", "private"]),
    ("dest-no-extension", P, S, body(dest_path="file://@ROOT@/out",
                                     job_options={"nommer": NOMMER, "options": [{"outfile_options": [["c:v", "libx264"]]}]}),
     JSON, 400, "BADINPUT", ["muxer"]),
    ("notify-number", P, S, body(notify_url=5), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-list", P, S, body(notify_url=["http://h/"]), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-bool", P, S, body(notify_url=True), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-ftp", P, S, body(notify_url="ftp://h/hook"), JSON, 400, "BADINPUT", ["notify_url", "http"]),
    ("notify-not-url", P, S, body(notify_url="call me maybe"), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-no-host", P, S, body(notify_url="http:///hook"), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-unclosed-bracket", P, S, body(notify_url="http://[::1/hook"), JSON, 400, "BADINPUT",
     ["notify_url", "IPv6"]),
    ("notify-bad-ipv6", P, S, body(notify_url="http://[zz]/hook"), JSON, 400, "BADINPUT", ["notify_url"]),
    ("notify-bad-port", P, S, body(notify_url="http://h:99999/hook"), JSON, 400, "BADINPUT", ["port"]),
    ("options-missing", P, S, body(job_options=...), JSON, 400, "BADINPUT", ["job_options", "required"]),
    ("options-string", P, S, body(job_options="web-640"), JSON, 400, "BADINPUT", ["job_options"]),
    ("options-list", P, S, body(job_options=[NOMMER]), JSON, 400, "BADINPUT", ["job_options"]),
    ("options-number", P, S, body(job_options=5), JSON, 400, "BADINPUT", ["job_options"]),
    ("nommer-number", P, S, body(job_options={"nommer": 5, "options": GOOD_PASS}), JSON, 400,
     "BADINPUT", ["nommer"]),
    ("nommer-list", P, S, body(job_options={"nommer": [NOMMER], "options": GOOD_PASS}), JSON, 400,
     "BADINPUT", ["nommer"]),
    ("nommer-not-allowed", P, S, body(job_options={"nommer": "os.system", "options": GOOD_PASS}),
     JSON, 400, "BADINPUT", ["not an allowed nommer"]),
    ("nommer-missing", P, S, body(job_options={"options": GOOD_PASS}), JSON, 400, "BADINPUT", ["nommer"]),
    ("passes-string", P, S, options("fast please"), JSON, 400, "BADINPUT", ["options"]),
    ("passes-number", P, S, options(3), JSON, 400, "BADINPUT", ["options"]),
    ("passes-object", P, S, options({"a": 1}), JSON, 400, "BADINPUT", ["options"]),
    ("passes-of-numbers", P, S, options([1]), JSON, 400, "BADINPUT", ["options[0]"]),
    ("three-passes", P, S, options(GOOD_PASS * 3), JSON, 400, "BADINPUT", ["at most 2 passes"]),
    ("pass-unknown-key", P, S, options([{"outfile_options": [], "shell": "rm -rf /"}]), JSON, 400,
     "BADINPUT", ["unknown keys"]),
    ("pass-list-not-list", P, S, options([{"outfile_options": "-c:v libx264"}]), JSON, 400,
     "BADINPUT", ["outfile_options"]),
    ("pair-too-short", P, S, options([{"outfile_options": [["f"]]}]), JSON, 400, "BADINPUT", ["pair"]),
    ("pair-flag-number", P, S, options([{"outfile_options": [[1, 2]]}]), JSON, 400, "BADINPUT", ["flag"]),
    ("pair-value-object", P, S, options([{"outfile_options": [["crf", {"v": 23}]]}]), JSON, 400,
     "BADINPUT", ["value"]),
    ("pair-value-infinite", P, S, raw_body(json.dumps(options([{"outfile_options": [["crf", "X"]]}]))
                                           .replace('"X"', "1e999")), JSON, 400, "BADINPUT", ["finite"]),
    ("faststart-string", P, S, options([{"outfile_options": [["f", "mp4"]], "move_atom_to_front": "yes"}]),
     JSON, 400, "BADINPUT", ["move_atom_to_front"]),
    # --- unicode oddities --------------------------------------------------------------------
    ("surrogate-in-source", P, S, raw_body(json.dumps(body()).replace("in.mp4", "\\ud800.mp4")), JSON,
     400, "BADINPUT", ["surrogate"]),
    ("surrogate-in-notify", P, S, raw_body(json.dumps(body(notify_url="http://h/X")).replace("/X", "/\\udfff")),
     JSON, 400, "BADINPUT", ["surrogate"]),
    ("surrogate-in-option", P, S,
     raw_body(json.dumps(options([{"outfile_options": [["metadata", "title=X"], ["f", "mp4"]]}]))
              .replace("title=X", "title=\\ud83d")), JSON, 400, "BADINPUT", ["surrogate"]),
    ("surrogate-in-key", P, S, raw_body(json.dumps(body())[:-1] + ', "\\udc80": 1}'), JSON, 400,
     "BADINPUT", ["surrogate"]),
    ("surrogate-raw-bytes", P, S, json.dumps(body()).encode().replace(b"in.mp4", b"\xed\xa0\x80.mp4"),
     JSON, 400, "BADINPUT", []),
    ("nul-in-source", P, S, body(source_path="file://@ROOT@/in\x00.mp4"), JSON, 400, "BADINPUT",
     ["control character"]),
    ("nul-percent-in-source", P, S, body(source_path="file://@ROOT@/in%00.mp4"), JSON, 400, "BADINPUT",
     ["NUL"]),
    ("nul-in-flag", P, S, options([{"outfile_options": [["c:v\x00", "libx264"]]}]), JSON, 400,
     "BADINPUT", ["option name"]),
    ("newline-in-value", P, S, options([{"outfile_options": [["metadata", "title=a\nb"], ["f", "mp4"]]}]),
     JSON, 400, "BADINPUT", ["control characters"]),
    ("rtl-override-in-source", P, S, body(source_path="file://@ROOT@/evil\u202e4pm.exe"), JSON, 400,
     "BADINPUT", ["U+202E"]),
    ("rtl-override-encoded", P, S, body(dest_path="file://@ROOT@/x%E2%80%AE4pm.mp4"), JSON, 400,
     "BADINPUT", ["U+202E"]),
    ("c1-control-in-source", P, S, body(source_path="file://@ROOT@/a\u0085b.mp4"), JSON, 400,
     "BADINPUT", ["control character"]),
    ("rtl-in-nommer", P, S, body(job_options={"nommer": "\u202e" + NOMMER, "options": GOOD_PASS}),
     JSON, 400, "BADINPUT", ["not an allowed nommer"]),
    ("zero-width-in-flag", P, S, options([{"outfile_options": [["c\u200b:v", "libx264"]]}]), JSON, 400,
     "BADINPUT", ["option name"]),
    # --- wrong methods ---------------------------------------------------------------------
    ("get-submit", G, S, None, [], 405, "METHODNOTALLOWED", ["POST"]),
    ("put-submit", "PUT", S, b"{}", JSON, 405, "METHODNOTALLOWED", []),
    ("delete-job", "DELETE", f"/job/{JOB_ID}", None, [], 405, "METHODNOTALLOWED", []),
    ("patch-job", "PATCH", f"/job/{JOB_ID}", b"{}", JSON, 405, "METHODNOTALLOWED", []),
    ("get-cancel", G, f"/job/{JOB_ID}/cancel", None, [], 405, "METHODNOTALLOWED", []),
    ("post-health", P, "/health", b"{}", JSON, 405, "METHODNOTALLOWED", []),
    ("post-jobs", P, "/jobs", b"{}", JSON, 405, "METHODNOTALLOWED", []),
    ("options-submit", "OPTIONS", S, None, [], 405, "METHODNOTALLOWED", []),
    ("trace-health", "TRACE", "/health", None, [], 405, "METHODNOTALLOWED", []),
    ("made-up-method", "BREW", "/health", None, [], 405, "METHODNOTALLOWED", []),
    # --- path tricks ---------------------------------------------------------------------
    ("dotdot-health", G, "/job/../health", None, [], 404, "NOTFOUND", []),
    # Werkzeug merges slashes: //job/submit is /job/submit, so the body is still validated.
    ("double-slash-submit", P, "//job/submit", b"{}", JSON, 400, "BADINPUT", ["source_path"]),
    ("double-slash-get-submit", G, "//job/submit", None, [], 405, "METHODNOTALLOWED", []),
    ("encoded-dotdot", G, "/job/%2e%2e/x", None, [], 404, "NOTFOUND", []),
    ("encoded-dotdot-id", G, "/job/%2e%2e", None, [], 404, "NOSUCHJOB", []),
    ("long-path-16k", G, "/job/" + "a" * 16000, None, [], 404, "NOSUCHJOB", []),
    ("cancel-extra", P, f"/job/{JOB_ID}/cancel/extra", None, [], 404, "NOTFOUND", []),
    ("unknown-job", G, f"/job/{JOB_ID}", None, [], 404, "NOSUCHJOB", []),
    ("cancel-unknown-job", P, f"/job/{JOB_ID}/cancel", None, [], 404, "NOSUCHJOB", []),
    ("uppercase-job-id", G, f"/job/{JOB_ID.upper()}", None, [], 404, "NOSUCHJOB", []),
    ("nul-job-id", G, "/job/%00", None, [], 404, "NOSUCHJOB", []),
    ("surrogate-job-id", G, "/job/%ED%A0%80", None, [], 400, "BADINPUT", ["UTF-8"]),
    ("latin1-path", G, "/job/caf%E9", None, [], 400, "BADINPUT", ["UTF-8"]),
    ("root", G, "/", None, [], 404, "NOTFOUND", []),
    ("health-trailing-slash", G, "/health/", None, [], 404, "NOTFOUND", []),
    ("etc-passwd", G, "/jobs/../../../etc/passwd", None, [], 404, "NOTFOUND", []),
    ("uppercase-route", P, "/JOB/SUBMIT", b"{}", JSON, 404, "NOTFOUND", []),
    ("semicolon-param", P, "/job/submit;jsessionid=1", b"{}", JSON, 405, "METHODNOTALLOWED", []),
    ("absolute-form-target", G, "http://evil.example/nothing", None, [], 404, "NOTFOUND", []),
    # --- bad query arguments on /jobs ----------------------------------------------------
    ("limit-word", G, "/jobs?limit=abc", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-empty", G, "/jobs?limit=", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-zero", G, "/jobs?limit=0", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-too-big", G, "/jobs?limit=501", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-negative", G, "/jobs?limit=-1", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-fraction", G, "/jobs?limit=1.5", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-superscript-two", G, "/jobs?limit=%C2%B2", None, [], 400, "BADINPUT", ["limit"]),
    ("limit-huge", G, "/jobs?limit=" + "9" * 400, None, [], 400, "BADINPUT", ["limit"]),
    ("limit-nul", G, "/jobs?limit=%00", None, [], 400, "BADINPUT", ["limit"]),
    ("state-unknown", G, "/jobs?state=DONE", None, [], 400, "BADINPUT", ["state"]),
    ("state-bad-utf8", G, "/jobs?state=%ff", None, [], 400, "BADINPUT", ["state"]),
    ("cursor-garbage", G, "/jobs?cursor=zzz", None, [], 400, "BADINPUT", ["cursor"]),
    ("cursor-base64-json", G, "/jobs?cursor=eyJ4IjoxfQ%3D%3D", None, [], 400, "BADINPUT", ["cursor"]),
    ("cursor-long", G, "/jobs?cursor=" + "A" * 8000, None, [], 400, "BADINPUT", ["cursor"]),
    ("cursor-surrogate-bytes", G, "/jobs?cursor=%ED%A0%80", None, [], 400, "BADINPUT", ["cursor"]),
    # --- content types and encodings ---------------------------------------------------------
    ("form-encoded-body", P, S, b"source_path=file%3A%2F%2F%2Fx&dest_path=y",
     [("Content-Type", "application/x-www-form-urlencoded")], 400, "BADINPUT", ["not valid JSON"]),
    ("multipart-body", P, S,
     b'--XX\r\nContent-Disposition: form-data; name="source_path"\r\n\r\nfile:///x\r\n--XX--\r\n',
     [("Content-Type", "multipart/form-data; boundary=XX")], 400, "BADINPUT", ["not valid JSON"]),
    ("xml-body", P, S, b"<job><source_path>file:///etc/passwd</source_path></job>",
     [("Content-Type", "application/xml")], 400, "BADINPUT", ["not valid JSON"]),
    ("gzip-body", P, S, gzip.compress(json.dumps(body()).encode()),
     [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], 400, "BADINPUT", []),
    ("charset-lies", P, S, b"{}", [("Content-Type", "application/json; charset=utf-16")], 400,
     "BADINPUT", ["source_path"]),
    ("html-accept", G, "/nowhere", None, [("Accept", "text/html")], 404, "NOTFOUND", []),
    # --- header oddities -------------------------------------------------------------------
    ("content-length-zero", P, S, None, [("Content-Length", "0")] + JSON, 400, "BADINPUT", ["empty"]),
    ("chunked-array", P, S, b"2\r\n[]\r\n0\r\n\r\n", [("Transfer-Encoding", "chunked")] + JSON, 400,
     "BADINPUT", ["JSON object"]),
    ("chunked-over-1mib", P, S,
     b"".join(b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n" for _ in range(17)) + b"0\r\n\r\n",
     [("Transfer-Encoding", "chunked")] + JSON, 413, "BADINPUT", []),
    ("expect-continue", P, S, b"[]", [("Expect", "100-continue")] + JSON, 400, "BADINPUT", []),
    ("method-override-header", P, S, b"[]", [("X-HTTP-Method-Override", "DELETE")] + JSON, 400,
     "BADINPUT", []),
    # On loopback, Host must name loopback (DNS-rebinding guard) and Origin be the API's own.
    ("empty-host-header", G, "/nowhere", None, [("Host", "")], 421, "BADHOST", ["loopback"]),
    ("rebound-host", P, S, b"{}", [("Host", "evil.example:8001")] + JSON, 421, "BADHOST", ["loopback"]),
    ("two-host-headers", G, "/health", None, [("Host", "127.0.0.1"), ("Host", "evil.example")], 421,
     "BADHOST", []),
    ("numeric-host-spelling", G, "/health", None, [("Host", "2130706433")], 421, "BADHOST", []),
    ("foreign-origin", P, S, b"{}", [("Origin", "http://evil.example")] + JSON, 403, "FORBIDDEN",
     ["cross-site"]),
    ("null-origin", P, S, b"{}", [("Origin", "null")] + JSON, 403, "FORBIDDEN", ["cross-site"]),
    ("other-port-origin", G, "/jobs", None, [("Origin", "http://127.0.0.1:1")], 403, "FORBIDDEN", []),
    # A key sent must be good, even while anonymous callers are served (no key exists here).
    ("bad-bearer", G, "/jobs", None, [("Authorization", "Bearer nope")], 401, "UNAUTHORIZED", []),
    ("basic-auth", G, "/jobs", None, [("Authorization", "Basic dXNlcjpwYXNz")], 401, "UNAUTHORIZED", []),
    ("latin1-host-header", G, "/health", None, [("Host", b"caf\xe9.example")], 400, "BADINPUT", ["UTF-8"]),
    ("many-headers", G, "/nowhere", None, [(f"X-H{i}", "v") for i in range(200)], 404, "NOTFOUND", []),
    ("huge-cookie", G, "/nowhere", None, [("Cookie", "a=" + "b" * 12000)], 404, "NOTFOUND", []),
    # Proxy headers: the request may come from afar through a local proxy, so it needs a key.
    ("forwarded-spoof", P, S, b"[]", [("X-Forwarded-For", "169.254.169.254"),
                                      ("Forwarded", "for=127.0.0.1")] + JSON, 401, "UNAUTHORIZED", ["proxy"]),
    ("x-real-ip", G, "/jobs", None, [("X-Real-IP", "203.0.113.9")], 401, "UNAUTHORIZED", ["proxy"]),
]

#: Rejected by Twisted's HTTP parser before the API sees them: a bare 400
#: (no body) or a closed connection.
PROTOCOL_CASES = [
    ("garbage-request-line", b"GARBAGE\r\n\r\n"),
    ("http-9.9", b"GET /health HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("header-without-colon", b"GET /health HTTP/1.1\r\nHost: x\r\nbadheader\r\nConnection: close\r\n\r\n"),
    ("nul-in-path", b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("non-ascii-path", b"GET /job/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("content-length-word", b"POST /job/submit HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n"
                            b"Connection: close\r\n\r\n{}"),
    ("two-content-lengths", b"POST /job/submit HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                            b"Content-Length: 7\r\nConnection: close\r\n\r\n{}"),
    ("bad-chunk-size", b"POST /job/submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\nzz\r\n"),
    ("request-line-over-16k", b"GET /job/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header-over-16k", b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n"),
]


@pytest.fixture(scope="module")
def daemon(root):
    """A feederd with no worker fleet: accepted jobs stay PENDING."""
    feederd = start_feederd(root, FLEET_BACKEND="none")
    yield feederd
    feederd.stop()


def _send(daemon, root, method, path, data, headers):
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    data = (data or b"").replace(b"@ROOT@", root.encode())
    return raw_request(daemon.port, method, path, data, headers)


def test_case_count():
    """The suite holds at least 50 distinct malformed requests that reach the API."""
    assert len(CASES) >= 50
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_json_4xx(daemon, root, case):
    """One malformed request: a 4xx JSON error of the documented shape, no traceback."""
    _id, method, path, data, headers, status, code, words = case
    resp = _send(daemon, root, method, path, data, headers)
    assert_json_error(resp, status, code, words)


@pytest.mark.parametrize("case", PROTOCOL_CASES, ids=[c[0] for c in PROTOCOL_CASES])
def test_request_twisted_rejects_gets_bare_400_or_close(daemon, case):
    """A request Twisted's HTTP parser refuses: a bare 400 or a closed connection, never a traceback."""
    _id, raw = case
    resp = raw_request(daemon.port, None, None, raw=raw)
    if resp is not None:
        assert resp.status == 400, resp
        assert not TRACEBACK_RE.search(resp.body.decode("latin-1")), resp


def test_cancel_twice_is_409(daemon, root):
    """Canceling a job that already ended is 409 CONFLICT, and the job stays CANCELED."""
    resp = _send(daemon, root, "POST", "/job/submit", body(), JSON)
    assert resp.status == 200, resp
    job_id = resp.json()["job_id"]
    first = _send(daemon, root, "POST", f"/job/{job_id}/cancel", b"", [])
    assert first.status == 200 and first.json()["job"]["job_state"] == "CANCELED", first
    again = _send(daemon, root, "POST", f"/job/{job_id}/cancel", b"", [])
    assert_json_error(again, 409, "CONFLICT", ["CANCELED"])


def test_405_lists_allowed_methods(daemon, root):
    """A 405 carries an Allow header naming the methods the route takes."""
    resp = _send(daemon, root, "DELETE", "/health", None, [])
    assert_json_error(resp, 405, "METHODNOTALLOWED")
    assert "GET" in resp.headers.get("allow", ""), resp.headers
    for method in ("GET", "PUT", "OPTIONS"):
        resp = _send(daemon, root, method, "/job/submit", None, [])
        assert resp.headers.get("allow") == "POST", (method, resp.headers)


def test_nothing_bad_was_stored(daemon):
    """None of the malformed submissions became a job: the only stored job is the one canceled above."""
    jobs, _ = daemon.client.list(limit=500)
    assert len(jobs) <= 1, [j["source_path"] for j in jobs]


def test_daemon_alive_and_log_clean(daemon):
    """After every malformed request, GET /health is 200 and the log holds no traceback."""
    assert_alive_and_clean(daemon)
