"""Schemathesis against a real feederd: the OpenAPI document it serves at
GET /openapi.json drives generated requests (valid and invalid) at every
operation; no answer may be a 5xx, and every answer must conform to the
document (status code, content type, headers, body schema) and refuse data
the document says is invalid.

``positive_data_acceptance`` is not among the checks: the document cannot
express everything submit validates (allow-listed ffmpeg flags, storage
roots, existing cursors), so schema-valid requests may rightly get a 400.

schemathesis's own pytest integration (``schema.parametrize()``) does not run
on pytest 9 (it sets ``Item._nodeid``), so each operation runs Hypothesis over
``operation.as_strategy()`` and validates each answer with
``Case.call_and_validate``.
"""

import collections
import json

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.badinput.conftest import assert_alive_and_clean, raw_request, start_feederd

#: Examples per operation and mode (Hypothesis); the module stays under ~2 minutes.
MAX_EXAMPLES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]

#: Every operation; negative data only where there is something to break.
OPERATIONS = [("POST", "/job/submit", True), ("GET", "/job/{job_id}", True), ("GET", "/job/{job_id}/events", True),
              ("POST", "/job/{job_id}/cancel", True), ("POST", "/job/{job_id}/retry", True),
              ("POST", "/jobs/batch", True), ("GET", "/jobs", True),
              ("GET", "/health", False), ("GET", "/workers", False), ("GET", "/openapi.json", False),
              ("GET", "/presets", False), ("GET", "/presets/{name}", True), ("GET", "/schema", False),
              ("GET", "/metrics", False), ("POST", "/events/token", False)]
#: Documented, but not fuzzed: the stream never ends, so a generated request would hang to its timeout
#: (tests/feederd/test_sse.py and tests/e2e/test_e2e_events.py test it).
NOT_FUZZED = [("GET", "/events")]
RUNS = [(method, path, mode) for method, path, negative in OPERATIONS
        for mode in (["positive", "negative"] if negative else ["positive"])]

#: ("METHOD path", mode, status) -> count, filled by the generated tests.
SEEN = collections.Counter()


@pytest.fixture(scope="module")
def daemon(root):
    """A feederd with no worker fleet, so accepted jobs stay PENDING; served anonymously (loopback,
    no API key), all of schemathesis's requests one caller: a rate limit it does not reach."""
    feederd = start_feederd(root, FLEET_BACKEND="none", API_RATE_LIMIT_PER_MINUTE=1_000_000)
    yield feederd
    feederd.stop()


@pytest.fixture(scope="module")
def api_schema(daemon):
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{daemon.port}/openapi.json", timeout=10)
    schema.config.update(base_url=f"http://127.0.0.1:{daemon.port}")
    return schema


def test_document_served_and_lists_every_route(daemon):
    """GET /openapi.json answers the packaged OpenAPI 3.0 document, with every route and the error shape."""
    resp = raw_request(daemon.port, "GET", "/openapi.json")
    assert resp.status == 200 and resp.headers["content-type"] == "application/json", resp
    doc = resp.json()
    assert doc["openapi"].startswith("3.0")
    assert {(m.upper(), p) for p, item in doc["paths"].items() for m in item} == \
        {(m, p) for m, p, _ in OPERATIONS} | set(NOT_FUZZED)
    assert doc["components"]["schemas"]["Error"]["required"] == ["success", "error_code", "message"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {**doc["components"]["securitySchemes"]["bearerAuth"],
                                                                   "type": "http", "scheme": "bearer"}
    assert "owner" in doc["components"]["schemas"]["Job"]["properties"]
    open_routes = {p for p, item in doc["paths"].items() for op in item.values() if op.get("security") == []}
    assert open_routes == {"/health", "/openapi.json", "/schema"}


def test_success_answers_conform(api_schema, root):
    """The success shapes (Submitted, Job, JobList, Health, PresetList, PresetAnswer, the schema) and
    404/409 conform, on a real 2011 job and a real declarative one."""
    def call(method, path, **kw):
        response = api_schema[path][method].Case(**kw).call_and_validate(checks=CHECKS, timeout=15)
        SEEN[(f"{method} {path}", "seeded", response.status_code)] += 1
        return response

    body = {"source_path": f"file://{root}/in.mp4", "dest_path": f"file://{root}/out.mp4", "notify_url": None,
            "job_options": {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                            "options": [{"outfile_options": [["c:v", "libx264"], ["f", "mp4"]],
                                         "move_atom_to_front": True}]}}
    submitted = call("POST", "/job/submit", body=body, media_type="application/json")
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    assert call("GET", "/job/{job_id}", path_parameters={"job_id": job_id}).status_code == 200
    events = call("GET", "/job/{job_id}/events", path_parameters={"job_id": job_id}, query={"limit": 5})
    assert [e["kind"] for e in events.json()["events"]] == ["submitted"]
    listed = call("GET", "/jobs", query={"state": "PENDING", "limit": 5})
    assert job_id in [j["job_id"] for j in listed.json()["jobs"]]
    assert call("POST", "/job/{job_id}/cancel", path_parameters={"job_id": job_id}).status_code == 200
    assert call("POST", "/job/{job_id}/cancel", path_parameters={"job_id": job_id}).status_code == 409
    assert call("GET", "/health").status_code == 200
    declarative = {"source_path": f"file://{root}/in.mp4", "dest_path": f"file://{root}/title/", "notify_url": None,
                   "preset": "cmaf-h264", "overrides": {"segment_s": 4}}
    submitted = call("POST", "/job/submit", body=declarative, media_type="application/json")
    assert submitted.status_code == 200, submitted.text
    job = call("GET", "/job/{job_id}", path_parameters={"job_id": submitted.json()["job_id"]}).json()["job"]
    assert [o["segment_s"] for o in job["outputs"]] == [4, 4]
    assert call("GET", "/presets").status_code == 200
    assert call("GET", "/presets/{name}", path_parameters={"name": "cmaf-h264"}).status_code == 200
    assert call("GET", "/presets/{name}", path_parameters={"name": "nope"}).status_code == 404
    assert call("GET", "/schema").status_code == 200


@pytest.mark.parametrize("method,path,mode", RUNS, ids=[f"{m} {p} {mode}" for m, p, mode in RUNS])
def test_api_conforms(api_schema, method, path, mode):
    """Generated requests for one operation: never a 5xx; status, content type, headers and body
    match the document; data the document calls invalid is refused."""
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=strategy)
    def run(case):
        response = case.call_and_validate(checks=CHECKS, timeout=15)
        SEEN[(f"{method} {path}", mode, response.status_code)] += 1

    run()


def test_generated_traffic_and_daemon_health(daemon):
    """Schemathesis reached every operation, got no 5xx, and the daemon is alive with a clean log."""
    by_operation = collections.Counter()
    for (label, _mode, status), n in SEEN.items():
        by_operation[label] += n
        assert status < 500, (label, status)
    print("\nschemathesis requests:", sum(SEEN.values()), json.dumps(
        {f"{k[0]} {k[1]} -> {k[2]}": v for k, v in sorted(SEEN.items())}, indent=1))
    assert len(by_operation) == len(OPERATIONS), by_operation
    assert sum(by_operation.values()) >= 300, by_operation
    assert_alive_and_clean(daemon)
