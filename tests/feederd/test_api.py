"""The JSON API in memory: StubTreq over the Klein resource, real SQLite store and queue."""

import json

from cryptography.fernet import Fernet
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.ledger import JobLedger
from nommer.core.sqlite import DatabaseClosed
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from tests.helpers import doc_two_pass, ensure, pumped, temp_settings

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
OLD_FFMPEG = "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"



class APITests(TestCase):
    timeout = 10

    def setUp(self):
        # A key, so URIs with passwords are accepted (stored sealed).
        self.settings, self.root = temp_settings(self, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.pokes = []
        api = JobAPI(self.ledger, self.settings, on_submit=lambda: self.pokes.append(1),
                     health_extra=lambda: {"workers": []})
        self.stub = StubTreq(api.resource())

    def body(self, **changes):
        body = {"source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/out.mp4",
                "notify_url": None, "job_options": {"nommer": OLD_FFMPEG, "options": doc_two_pass()}}
        body.update(changes)
        return body

    async def request(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        kwargs = {"headers": headers or {}}
        if data is not None:
            kwargs["data"] = data
        response = await pumped(self.stub, self.stub.request(method, "http://127.0.0.1:8001" + path, **kwargs))
        content = await pumped(self.stub, self.stub.content(response))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"],
                         f"not JSON: {content[:200]!r}")
        return response.code, json.loads(content)

    async def submit(self, **changes):
        code, payload = await self.request("POST", "/job/submit", self.body(**changes),
                                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        return code, payload

    def assertBadInput(self, code, payload, *words):
        self.assertEqual(code, 400, payload)
        self.assertIs(payload["success"], False)
        self.assertEqual(payload["error_code"], "BADINPUT")
        for word in words:
            self.assertIn(word, payload["message"])

    @ensure
    async def test_submit_original_body_with_form_content_type(self):
        """A 2011 job (old nommer path, form Content-Type) is accepted, stored PENDING and queued."""
        code, payload = await self.submit()
        self.assertEqual(code, 200)
        self.assertIs(payload["success"], True)
        job_id = payload["job_id"]
        self.assertRegex(job_id, r"^[0-9a-f]{50}$")
        job = await self.store.get(job_id)
        self.assertEqual(job.job_state, JobState.PENDING)
        self.assertEqual(job.nommer, FFMPEG)
        self.assertEqual((await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME))["visible"], 1)
        self.assertEqual(self.pokes, [1])

    @ensure
    async def test_submit_with_trailing_slash(self):
        """/job/submit/ (as the original docs print it) works too."""
        code, payload = await self.request("POST", "/job/submit/", self.body())
        self.assertEqual(code, 200, payload)

    @ensure
    async def test_malformed_json(self):
        """Invalid JSON is a 400 BADINPUT saying so."""
        code, payload = await self.request("POST", "/job/submit", raw=b'{"source_path": ')
        self.assertBadInput(code, payload, "not valid JSON")

    @ensure
    async def test_empty_body(self):
        """An empty body is a 400 BADINPUT, not the original's traceback."""
        code, payload = await self.request("POST", "/job/submit", raw=b"")
        self.assertBadInput(code, payload, "empty")

    @ensure
    async def test_body_not_an_object(self):
        """A JSON list is refused with a message about the shape."""
        code, payload = await self.request("POST", "/job/submit", [1, 2])
        self.assertBadInput(code, payload, "JSON object")

    @ensure
    async def test_missing_fields_named_in_original_order(self):
        """Each missing required field is named; source_path is checked first."""
        for missing in ("source_path", "dest_path", "job_options"):
            body = self.body()
            del body[missing]
            code, payload = await self.request("POST", "/job/submit", body)
            self.assertBadInput(code, payload, missing)
        code, payload = await self.request("POST", "/job/submit", {"job_options": {}})
        self.assertBadInput(code, payload, "source_path")

    @ensure
    async def test_missing_options_and_nommer(self):
        """job_options without options or nommer names the inner key."""
        code, payload = await self.submit(job_options={"nommer": FFMPEG})
        self.assertBadInput(code, payload, "job_options.options")
        code, payload = await self.submit(job_options={"options": doc_two_pass()})
        self.assertBadInput(code, payload, "job_options.nommer")

    @ensure
    async def test_unknown_nommer_refused_without_import(self):
        """A nommer outside ALLOWED_NOMMERS is refused (never imported)."""
        code, payload = await self.submit(job_options={"nommer": "os.system", "options": doc_two_pass()})
        self.assertBadInput(code, payload, "os.system", "not an allowed nommer")

    @ensure
    async def test_refused_ffmpeg_option(self):
        """An option that reads another file (-i) is refused at submit."""
        options = doc_two_pass()
        options[1]["outfile_options"].append(["i", "/etc/passwd"])
        code, payload = await self.submit(job_options={"nommer": FFMPEG, "options": options})
        self.assertBadInput(code, payload, "job_options.options[1]")

    @ensure
    async def test_refused_filter(self):
        """A filter that reads files (movie=) is refused at submit."""
        options = [{"outfile_options": [["vf", "movie=/etc/passwd"], ["f", "mp4"]]}]
        code, payload = await self.submit(job_options={"nommer": FFMPEG, "options": options})
        self.assertBadInput(code, payload, "movie")

    @ensure
    async def test_unknown_scheme(self):
        """An unknown URI scheme is refused, naming the field."""
        code, payload = await self.submit(source_path="ftp://host/in.mp4")
        self.assertBadInput(code, payload, "source_path", "ftp")

    @ensure
    async def test_file_outside_roots(self):
        """file:// outside FILE_STORAGE_ROOTS is refused, for source and destination."""
        code, payload = await self.submit(source_path="file:///etc/passwd")
        self.assertBadInput(code, payload, "source_path")
        code, payload = await self.submit(dest_path=f"file://{self.root}/../escape.mp4")
        self.assertBadInput(code, payload, "dest_path")

    @ensure
    async def test_bad_notify_url(self):
        """notify_url must be http(s)."""
        code, payload = await self.submit(notify_url="file:///etc/passwd")
        self.assertBadInput(code, payload, "notify_url")

    @ensure
    async def test_get_job_shape(self):
        """GET /job/<id> shows the original field names, ISO times and attempts."""
        _, submitted = await self.submit(notify_url="http://hook.example/x")
        code, payload = await self.request("GET", f"/job/{submitted['job_id']}")
        self.assertEqual(code, 200)
        job = payload["job"]
        self.assertEqual(job["job_id"], submitted["job_id"])
        self.assertEqual(job["unique_id"], submitted["job_id"])
        self.assertEqual(job["job_state"], "PENDING")
        self.assertIsNone(job["job_state_details"])
        self.assertEqual(job["notify_url"], "http://hook.example/x")
        self.assertEqual(job["attempts"], 0)
        self.assertRegex(job["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        for key in ("source_path", "dest_path", "progress", "output", "finished_at", "updated_at"):
            self.assertIn(key, job)

    @ensure
    async def test_password_redacted(self):
        """A password in a source URL is never shown by the API."""
        _, submitted = await self.submit(source_path="https://user:hunter2@media.example/in.mp4")
        code, payload = await self.request("GET", f"/job/{submitted['job_id']}")
        self.assertNotIn("hunter2", json.dumps(payload))
        self.assertIn("***", payload["job"]["source_path"])

    @ensure
    async def test_unknown_job_404_json(self):
        """Unknown and malformed ids are a JSON 404 NOSUCHJOB."""
        for job_id in ("0" * 50, "nope"):
            code, payload = await self.request("GET", f"/job/{job_id}")
            self.assertEqual(code, 404)
            self.assertEqual(payload["error_code"], "NOSUCHJOB")
            self.assertIs(payload["success"], False)

    @ensure
    async def test_unknown_path_and_method_are_json(self):
        """Unknown endpoints and wrong methods answer JSON, never HTML."""
        code, payload = await self.request("GET", "/nope")
        self.assertEqual((code, payload["error_code"]), (404, "NOTFOUND"))
        code, payload = await self.request("GET", "/job/submit")
        self.assertEqual(code, 405)
        code, payload = await self.request("DELETE", "/jobs")
        self.assertEqual(code, 405)

    @ensure
    async def test_cancel(self):
        """Cancel moves a job to CANCELED; a second cancel is a 409 CONFLICT."""
        _, submitted = await self.submit()
        code, payload = await self.request("POST", f"/job/{submitted['job_id']}/cancel")
        self.assertEqual(code, 200)
        self.assertEqual(payload["job"]["job_state"], "CANCELED")
        self.assertIsNotNone(payload["job"]["finished_at"])
        code, payload = await self.request("POST", f"/job/{submitted['job_id']}/cancel")
        self.assertEqual((code, payload["error_code"]), (409, "CONFLICT"))
        code, payload = await self.request("POST", f"/job/{'a' * 50}/cancel")
        self.assertEqual(code, 404)

    @ensure
    async def test_list_filter_and_pages(self):
        """GET /jobs pages newest first and filters by state; bad arguments are 400."""
        ids = [(await self.submit())[1]["job_id"] for _ in range(3)]
        await self.request("POST", f"/job/{ids[0]}/cancel")
        code, payload = await self.request("GET", "/jobs?limit=2")
        self.assertEqual(code, 200)
        self.assertEqual(len(payload["jobs"]), 2)
        self.assertIsNotNone(payload["next_cursor"])
        code, page2 = await self.request("GET", f"/jobs?limit=2&cursor={payload['next_cursor']}")
        seen = [j["job_id"] for j in payload["jobs"] + page2["jobs"]]
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertIsNone(page2["next_cursor"])
        code, canceled = await self.request("GET", "/jobs?state=canceled")
        self.assertEqual([j["job_id"] for j in canceled["jobs"]], [ids[0]])
        for bad in ("state=DONE", "limit=0", "limit=x", "cursor=zzz"):
            code, payload = await self.request("GET", f"/jobs?{bad}")
            self.assertBadInput(code, payload)

    @ensure
    async def test_health(self):
        """/health reports counts by state and the queue depth."""
        await self.submit()
        code, payload = await self.request("GET", "/health")
        self.assertEqual(code, 200)
        self.assertEqual(payload["status"], "ok")
        self.assertEqual(payload["jobs"], {"PENDING": 1})
        self.assertEqual(payload["queue"]["visible"], 1)
        self.assertEqual(payload["workers"], [])

    @ensure
    async def test_health_failing_store_is_503(self):
        """With the store closed, /health says 503 in JSON instead of crashing."""
        self.store.close()
        code, payload = await self.request("GET", "/health")
        self.assertEqual(code, 503)
        self.assertIs(payload["success"], False)
        self.assertEqual(len(self.flushLoggedErrors(DatabaseClosed)), 1)
