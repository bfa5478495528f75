"""Declarative jobs at the API's edge, in memory (StubTreq over the Klein resource, real SQLite job
store, queue and key store): GET /schema, GET /presets, GET /presets/NAME, submit with outputs or a
preset and overrides, the job document's ``outputs`` and ``preset``, API key scopes and the rate
limit on the new routes, and the OpenAPI document describing them."""

import copy
import json

import jsonschema
from openapi_spec_validator import validate as validate_openapi
from treq.testing import StubTreq
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.keys import open_key_store
from nommer.core.ledger import JobLedger
from nommer.core.outputs.schema import JOB_SCHEMA, OUTPUT_SCHEMAS, OUTPUT_TYPES
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.api import OUTPUTS_NOMMER, JobAPI, openapi_document
from tests.core.outputs_examples import ISSUE_EXAMPLE
from tests.helpers import doc_two_pass, ensure, pumped, temp_settings

URL = "http://127.0.0.1:8001"
NOW = 1_700_000_000.0
FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"

#: The presets the issue asks feederd to ship.
REQUIRED_PRESETS = {"crf-720", "web-1280", "web-640", "audio-aac", "hls-hevc", "hls-h264", "cmaf-h264",
                    "web-mp4-720", "audio-image-merge", "storyboard"}


class OutputsAPITestBase(TestCase):
    timeout = 20

    def setUp(self):
        self.build()

    def build(self, **overrides):
        self.settings, self.root = temp_settings(self, **overrides)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.keys = open_key_store(self.settings, reactor=reactor, clock=self.clock)
        for closable in (self.store, self.queue, self.keys):
            self.addCleanup(closable.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.api = JobAPI(self.ledger, self.settings, clock=self.clock, keys=self.keys)
        self.stub = StubTreq(self.api.resource())

    async def raw(self, method, path, body=None, key=None):
        """(status, content type, body bytes)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode()
        response = await pumped(self.stub, self.stub.request(method, URL + path, **kwargs))
        content = await pumped(self.stub, self.stub.content(response))
        return response.code, response.headers.getRawHeaders("content-type"), content

    async def request(self, method, path, body=None, key=None):
        """(status, JSON payload) of an answer that must be application/json."""
        code, content_type, content = await self.raw(method, path, body, key)
        self.assertEqual(content_type, ["application/json"], f"not JSON: {content[:200]!r}")
        return code, json.loads(content)

    def body(self, **fields):
        body = {"source_path": f"file://{self.root}/in.mov", "dest_path": f"file://{self.root}/title/",
                "notify_url": None}
        body.update(fields)
        return body

    async def submitted_job(self, body, key=None):
        """Submit ``body`` (must be accepted); the job document GET /job/<id> answers."""
        code, payload = await self.request("POST", "/job/submit", body, key=key)
        self.assertEqual(code, 200, payload)
        code, payload = await self.request("GET", f"/job/{payload['job_id']}", key=key)
        self.assertEqual(code, 200, payload)
        return payload["job"]

    def assertError(self, answer, status, code, *words):
        got_status, payload = answer
        self.assertEqual((got_status, payload.get("error_code")), (status, code), payload)
        self.assertIs(payload["success"], False)
        for word in words:
            self.assertIn(word, payload["message"])


class SchemaRouteTests(OutputsAPITestBase):

    @ensure
    async def test_schema_is_the_bare_json_schema_and_validates_the_issue_example(self):
        """GET /schema: 200 application/schema+json, a bare Draft 2020-12 schema (no success wrapper)
        that jsonschema accepts and that accepts the issue's example body; it refuses an unknown type."""
        code, content_type, content = await self.raw("GET", "/schema")
        self.assertEqual((code, content_type), (200, ["application/schema+json"]))
        schema = json.loads(content)
        self.assertNotIn("success", schema)
        self.assertEqual(schema, JOB_SCHEMA)
        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        self.assertEqual(list(validator.iter_errors(ISSUE_EXAMPLE)), [])
        bad = copy.deepcopy(ISSUE_EXAMPLE)
        bad["outputs"][0]["type"] = "smooth"
        self.assertFalse(validator.is_valid(bad))

    @ensure
    async def test_schema_needs_no_key_even_when_keys_exist(self):
        """Once a key exists, anonymous callers are refused on /presets but still get /schema (public
        documentation, like /openapi.json)."""
        await self.keys.create("alice", ("read",))
        self.assertError(await self.request("GET", "/presets"), 401, "UNAUTHORIZED")
        code, _, content = await self.raw("GET", "/schema")
        self.assertEqual(code, 200)
        self.assertIn("$defs", json.loads(content))

    @ensure
    async def test_schema_refuses_other_methods(self):
        """POST /schema is 405 with the API's JSON error."""
        self.assertError(await self.request("POST", "/schema", {}), 405, "METHODNOTALLOWED")


class PresetRouteTests(OutputsAPITestBase):

    @ensure
    async def test_presets_lists_the_shipped_presets_with_their_outputs(self):
        """GET /presets: success, every preset the issue names, sorted; declarative ones with their
        outputs (types of the schema), the 2011 ones with their job_options."""
        code, payload = await self.request("GET", "/presets")
        self.assertEqual(code, 200, payload)
        self.assertIs(payload["success"], True)
        presets = {p["name"]: p for p in payload["presets"]}
        self.assertLessEqual(REQUIRED_PRESETS, set(presets))
        self.assertEqual([p["name"] for p in payload["presets"]], sorted(presets))
        for name, preset in presets.items():
            self.assertTrue(preset["description"], name)
            self.assertEqual(("outputs" in preset) + ("job_options" in preset), 1, preset)
            for output in preset.get("outputs") or []:
                self.assertIn(output["type"], OUTPUT_TYPES, name)
        self.assertEqual([o["type"] for o in presets["cmaf-h264"]["outputs"]], ["hls", "dash"])
        self.assertEqual(presets["web-640"]["job_options"]["nommer"], FFMPEG)
        self.assertEqual(presets["audio-image-merge"]["requires"], ["image_path"])

    @ensure
    async def test_one_preset_and_an_unknown_one(self):
        """GET /presets/cmaf-h264 is that preset; /presets/nope is 404 NOSUCHPRESET naming it and
        listing the presets there are; a 10 KB name is not echoed whole."""
        code, payload = await self.request("GET", "/presets/cmaf-h264")
        self.assertEqual(code, 200, payload)
        self.assertIs(payload["success"], True)
        self.assertEqual(payload["preset"]["name"], "cmaf-h264")
        self.assertEqual({o["dir"] for o in payload["preset"]["outputs"]}, {"stream"})
        self.assertError(await self.request("GET", "/presets/nope"), 404, "NOSUCHPRESET", "'nope'", "cmaf-h264")
        code, payload = await self.request("GET", "/presets/" + "x" * 10_000)
        self.assertError((code, payload), 404, "NOSUCHPRESET")
        self.assertLess(len(payload["message"]), 2000)

    @ensure
    async def test_presets_need_the_read_scope(self):
        """A key without read (submit only) is 403 FORBIDDEN on /presets and /presets/NAME, naming the
        scope; a read key is served."""
        _, submit_only = await self.keys.create("writer", ("submit",))
        _, reader = await self.keys.create("reader", ("read",))
        self.assertError(await self.request("GET", "/presets", key=submit_only), 403, "FORBIDDEN", "'read'")
        self.assertError(await self.request("GET", "/presets/cmaf-h264", key=submit_only), 403, "FORBIDDEN")
        code, payload = await self.request("GET", "/presets", key=reader)
        self.assertEqual(code, 200, payload)


class PresetRateLimitTests(OutputsAPITestBase):

    def setUp(self):
        self.build(API_RATE_LIMIT_PER_MINUTE=2)

    @ensure
    async def test_presets_count_against_the_rate_limit_schema_does_not(self):
        """With API_RATE_LIMIT_PER_MINUTE = 2, the third /presets request in a minute is 429 with
        Retry-After; /schema (no key, like /openapi.json) is still served."""
        for _ in range(2):
            self.assertEqual((await self.request("GET", "/presets"))[0], 200)
        self.assertError(await self.request("GET", "/presets/cmaf-h264"), 429, "RATELIMITED")
        self.assertEqual((await self.raw("GET", "/schema"))[0], 200)
        self.clock.advance(61)
        self.assertEqual((await self.request("GET", "/presets/cmaf-h264"))[0], 200)


class DeclarativeSubmitTests(OutputsAPITestBase):

    @ensure
    async def test_unknown_output_type_is_a_400_naming_it(self):
        """An output of a type the schema does not know: 400 BADINPUT, success false, the message
        names the output and the type; nothing stored."""
        answer = await self.request("POST", "/job/submit", self.body(outputs=[
            {"type": "hls"}, {"type": "smooth-streaming"}]))
        self.assertError(answer, 400, "BADINPUT", "outputs[1]", "smooth-streaming")
        self.assertEqual(await self.store.count_by_state(), {})

    @ensure
    async def test_unknown_output_field_is_a_400_naming_it(self):
        """An unknown field of a known output type: 400 BADINPUT naming the field."""
        answer = await self.request("POST", "/job/submit", self.body(outputs=[
            {"type": "poster", "name": "poster.jpg", "colour": "sepia"}]))
        self.assertError(answer, 400, "BADINPUT", "outputs[0]", "colour")

    @ensure
    async def test_unknown_override_and_unknown_preset_are_400s(self):
        """A preset nobody ships is a 400 (a bad value of the field preset, not a 404) listing the
        presets; an override no output of the preset takes is a 400 naming it."""
        answer = await self.request("POST", "/job/submit", self.body(preset="nope"))
        self.assertError(answer, 400, "BADINPUT", "preset", "'nope'", "cmaf-h264")
        answer = await self.request("POST", "/job/submit", self.body(preset="cmaf-h264",
                                                                     overrides={"colour": "sepia"}))
        self.assertError(answer, 400, "BADINPUT", "colour")

    @ensure
    async def test_issue_example_outputs_are_accepted_and_shown_spelled_out(self):
        """The issue's outputs (file:// source and prefix here): accepted, run by the outputs nommer;
        the job document lists the seven outputs in order, every field of its type filled in, preset
        null."""
        job = await self.submitted_job(self.body(outputs=ISSUE_EXAMPLE["outputs"],
                                                 notify_url="https://app.example/hook"))
        self.assertEqual(job["nommer"], OUTPUTS_NOMMER)
        self.assertIsNone(job["preset"])
        self.assertEqual([o["type"] for o in job["outputs"]],
                         ["hls", "dash", "mp4", "poster", "thumbnails", "storyboard", "audio"])
        for asked, shown in zip(ISSUE_EXAMPLE["outputs"], job["outputs"]):
            self.assertEqual({k: shown[k] for k in asked}, asked)
            defaults = {k for k, v in OUTPUT_SCHEMAS[asked["type"]]["properties"].items() if "default" in v}
            self.assertLessEqual(defaults, set(shown), asked["type"])
            jsonschema.validate(shown, dict(OUTPUT_SCHEMAS[asked["type"]]))
        self.assertEqual(job["outputs"][0]["segment_s"], 6)
        self.assertEqual(job["outputs"][3]["name"], "poster.jpg")

    @ensure
    async def test_preset_with_overrides_shows_its_outputs_with_the_override_applied(self):
        """preset cmaf-h264 + overrides {segment_s: 4, encoder_preset: veryfast}: the job document
        shows preset "cmaf-h264" and its hls and dash outputs with both fields overridden, the
        preset's other fields kept."""
        job = await self.submitted_job(self.body(preset="cmaf-h264",
                                                 overrides={"segment_s": 4, "encoder_preset": "veryfast"}))
        self.assertEqual(job["preset"], "cmaf-h264")
        self.assertEqual(job["nommer"], OUTPUTS_NOMMER)
        self.assertEqual([o["type"] for o in job["outputs"]], ["hls", "dash"])
        for output in job["outputs"]:
            self.assertEqual((output["segment_s"], output["encoder_preset"]), (4, "veryfast"), output)
            self.assertEqual((output["dir"], output["codec"], output["ladder"]), ("stream", "h264", "default"))
        self.assertIsNone(job["output"])

    @ensure
    async def test_a_2011_preset_by_name_is_a_2011_job(self):
        """preset web-640 (one of the four 2011 presets) becomes an FFmpegNommer job with that preset's
        passes: outputs null."""
        job = await self.submitted_job(self.body(preset="web-640", dest_path=f"file://{self.root}/web.mp4"))
        self.assertEqual(job["nommer"], FFMPEG)
        self.assertIsNone(job["outputs"])

    @ensure
    async def test_2011_job_has_null_outputs_and_preset(self):
        """A 2011 body still works unchanged; its document has outputs null and preset null."""
        job = await self.submitted_job(self.body(dest_path=f"file://{self.root}/out.mp4",
                                                 job_options={"nommer": FFMPEG, "options": doc_two_pass()}))
        self.assertEqual(job["nommer"], FFMPEG)
        self.assertEqual((job["outputs"], job["preset"]), (None, None))

    @ensure
    async def test_finished_job_shows_what_the_worker_reported(self):
        """Once the worker stores output["outputs"] (files with path, bytes, Content-Type; rungs) at
        FINISHED, the document's outputs are those, not the requested ones."""
        job = await self.submitted_job(self.body(outputs=[{"type": "poster"}]))
        self.assertEqual(job["outputs"][0]["name"], "poster.jpg")
        reported = [{"type": "poster", "name": "poster.jpg",
                     "files": [{"path": "poster.jpg", "bytes": 5120, "content_type": "image/jpeg"}]}]
        for state in (JobState.DOWNLOADING, JobState.ENCODING, JobState.UPLOADING):
            await self.ledger.set_state(job["job_id"], state)
        await self.ledger.set_state(job["job_id"], JobState.FINISHED, output={"outputs": reported})
        code, payload = await self.request("GET", f"/job/{job['job_id']}")
        self.assertEqual(code, 200, payload)
        self.assertEqual(payload["job"]["outputs"], reported)
        self.assertEqual(payload["job"]["output"], {"outputs": reported})
        code, payload = await self.request("GET", "/jobs")
        self.assertEqual(payload["jobs"][0]["outputs"], reported)

    @ensure
    async def test_outputs_field_of_an_odd_stored_job(self):
        """A stored job of the outputs nommer whose job_options is not a dict (never written by this
        API) shows null outputs rather than failing."""
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in", dest_path="file:///out/",
                                           nommer=OUTPUTS_NOMMER, job_options=[]))
        code, payload = await self.request("GET", f"/job/{job.job_id}")
        self.assertEqual(code, 200, payload)
        self.assertEqual((payload["job"]["outputs"], payload["job"]["preset"]), (None, None))


def _nullable_to_json_schema(node):
    """OpenAPI 3.0's ``nullable`` as a null type (JSON Schema Draft 4, whose boolean
    ``exclusiveMinimum`` OpenAPI 3.0 shares), everywhere."""
    if isinstance(node, dict):
        node = {k: _nullable_to_json_schema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if "type" in node:
                node["type"] = [node["type"], "null"]
            elif "enum" in node:
                node["enum"] = [*node["enum"], None]
        return node
    return [_nullable_to_json_schema(v) for v in node] if isinstance(node, list) else node


class OpenAPIDocumentTests(OutputsAPITestBase):

    @ensure
    async def test_document_is_valid_openapi_and_describes_the_new_routes(self):
        """The served document is valid OpenAPI 3.0, has /schema (no key), /presets and
        /presets/{name} (read), NOSUCHPRESET, the job's outputs and preset, and one output schema
        per type of the job schema."""
        code, payload = await self.request("GET", "/openapi.json")
        self.assertEqual(code, 200)
        validate_openapi(payload)
        paths = payload["paths"]
        self.assertEqual(paths["/schema"]["get"]["security"], [])
        self.assertIn("application/schema+json", paths["/schema"]["get"]["responses"]["200"]["content"])
        self.assertNotIn("security", paths["/presets"]["get"])
        self.assertIn("404", paths["/presets/{name}"]["get"]["responses"])
        schemas = payload["components"]["schemas"]
        self.assertIn("NOSUCHPRESET", schemas["Error"]["properties"]["error_code"]["enum"])
        self.assertLessEqual({"outputs", "preset"}, set(schemas["Job"]["properties"]))
        self.assertEqual(set(schemas["JobSubmission"]["properties"]), set(JOB_SCHEMA["properties"]))
        self.assertEqual(set(schemas["Output"]["discriminator"]["mapping"]), set(OUTPUT_TYPES))
        for type_name, ref in schemas["Output"]["discriminator"]["mapping"].items():
            component = schemas[ref.rsplit("/", 1)[-1]]
            self.assertEqual(set(component["properties"]), set(OUTPUT_SCHEMAS[type_name]["properties"]))
            self.assertIs(component["additionalProperties"], False)

    @ensure
    async def test_document_agrees_with_the_job_schema_on_bodies(self):
        """The issue's example is a valid JobSubmission of the OpenAPI document; an unknown output
        field, an unknown type and two forms at once are invalid there as under GET /schema."""
        document = _nullable_to_json_schema(json.loads(openapi_document()))
        submission = dict(document["components"]["schemas"]["JobSubmission"], components=document["components"])
        openapi_valid = jsonschema.Draft4Validator(submission).is_valid
        schema_valid = jsonschema.Draft202012Validator(JOB_SCHEMA).is_valid
        self.assertTrue(openapi_valid(ISSUE_EXAMPLE))
        unknown_field = copy.deepcopy(ISSUE_EXAMPLE)
        unknown_field["outputs"][2]["colour"] = "sepia"
        unknown_type = copy.deepcopy(ISSUE_EXAMPLE)
        unknown_type["outputs"][4]["type"] = "gif"
        two_forms = dict(ISSUE_EXAMPLE, preset="cmaf-h264")
        for body in (unknown_field, unknown_type, two_forms):
            self.assertFalse(openapi_valid(body), body)
            self.assertFalse(schema_valid(body), body)
        preset_body = {"source_path": "file:///a", "dest_path": "file:///b/", "preset": "cmaf-h264",
                       "overrides": {"segment_s": 4}}
        self.assertTrue(openapi_valid(preset_body) and schema_valid(preset_body))
