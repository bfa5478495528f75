"""Credentials in submitted URIs: sealed in the store, *** in the API, unsealed on the worker."""

import json
import os
import types

from cryptography.fernet import Fernet
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.ledger import JobLedger
from nommer.core.secrets import unseal_uri
from nommer.core.store import make_store
from nommer.core.uri import as_media_uri
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from nommer.workerd import context as worker_mod
from tests.helpers import doc_two_pass, ensure, pumped, temp_settings

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SOURCE = f"s3://{KEY_ID}:{SECRET}@media-in/raw/clip.mov"
DEST = f"s3://{KEY_ID}:{SECRET}@media-out/web/clip.mp4"


class APISecretsTests(TestCase):
    timeout = 10

    def build(self, **overrides):
        self.settings, self.root = temp_settings(self, **overrides)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.stub = StubTreq(JobAPI(self.ledger, self.settings).resource())

    async def request(self, method, path, body=None):
        kwargs = {"data": json.dumps(body).encode()} if body is not None else {}
        response = await pumped(self.stub, self.stub.request(method, "http://127.0.0.1:8001" + path,
                                                             **kwargs))
        raw = await pumped(self.stub, self.stub.content(response))
        return response.code, raw

    def submit_body(self):
        return {"source_path": SOURCE, "dest_path": DEST, "notify_url": None,
                "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}

    def data_dir_bytes(self):
        """Every byte under DATA_DIR (the SQLite files, WAL and journal included)."""
        blobs = []
        for parent, _, names in os.walk(self.settings.DATA_DIR):
            for name in names:
                with open(os.path.join(parent, name), "rb") as f:
                    blobs.append(f.read())
        self.assertTrue(blobs, "no database files found; the grep below would prove nothing")
        return b"".join(blobs)

    @ensure
    async def test_secret_sealed_redacted_and_unsealed(self):
        """The SQLite files never hold the secret, GET /job shows ***, the worker gets the original."""
        self.build(JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        code, raw = await self.request("POST", "/job/submit", self.submit_body())
        self.assertEqual(code, 200, raw)
        job_id = json.loads(raw)["job_id"]

        self.assertIn(job_id.encode(), self.data_dir_bytes())
        self.assertNotIn(SECRET.encode(), self.data_dir_bytes())
        for part in SECRET.split("/"):
            self.assertNotIn(part.encode(), self.data_dir_bytes())

        code, raw = await self.request("GET", f"/job/{job_id}")
        self.assertEqual(code, 200, raw)
        self.assertNotIn(SECRET.encode(), raw)
        shown = json.loads(raw)
        shown = shown.get("job", shown)
        self.assertEqual(shown["source_path"], f"s3://{KEY_ID}:***@media-in/raw/clip.mov")
        self.assertEqual(shown["dest_path"], f"s3://{KEY_ID}:***@media-out/web/clip.mp4")
        self.assertNotIn(b"sealed_credentials", raw)
        code, raw = await self.request("GET", "/jobs")
        self.assertEqual(code, 200, raw)
        self.assertIn(job_id.encode(), raw)
        self.assertNotIn(SECRET.encode(), raw)
        self.assertNotIn(b"sealed_credentials", raw)

        # Worker side: the stored job unseals to the original URIs...
        job = await self.store.get(job_id)
        self.assertEqual(unseal_uri(job.source_path, job.sealed_credentials["source_path"],
                                    self.settings), SOURCE)
        self.assertEqual(unseal_uri(job.dest_path, job.sealed_credentials["dest_path"],
                                    self.settings), DEST)

        # ...and JobContext hands the storage the original URIs (parsed: MediaURIs).
        seen = []

        class FakeStorage:
            async def download(self, uri, local_path):
                seen.append(("download", uri))
                return 0

            async def upload(self, local_path, uri):
                seen.append(("upload", uri))
                return 0
        self.patch(worker_mod, "get_storage", lambda uri, settings, reactor: FakeStorage())
        fake_worker = types.SimpleNamespace(reactor=reactor, settings=self.settings)
        context = worker_mod.JobContext(fake_worker, job, self.root)

        async def no_state_write(state):  # upload_result stores UPLOADING first: not this test's matter
            pass
        context.set_state = no_state_write
        await context.download_source(os.path.join(self.root, "source"))
        await context.upload_result(os.path.join(self.root, "out.mp4"))
        self.assertEqual(seen, [("download", as_media_uri(SOURCE)), ("upload", as_media_uri(DEST))])

    @ensure
    async def test_secret_refused_without_key(self):
        """Without JOB_CREDENTIALS_KEY the submit is a 400 BADINPUT that does not echo the secret."""
        self.build()
        code, raw = await self.request("POST", "/job/submit", self.submit_body())
        self.assertEqual(code, 400, raw)
        payload = json.loads(raw)
        self.assertEqual(payload["error_code"], "BADINPUT")
        self.assertIn("JOB_CREDENTIALS_KEY", payload["message"])
        self.assertNotIn(SECRET.encode(), raw)
        jobs, _ = await self.store.list()
        self.assertEqual(jobs, [])


class TokenSecretsTests(TestCase):
    """A token as an http(s) username (sent as basic auth) and token-like query parameters
    (access-token, hmac...): sealed in the store, *** in the API, the original on the worker."""

    timeout = 10
    build = APISecretsTests.build
    request = APISecretsTests.request
    data_dir_bytes = APISecretsTests.data_dir_bytes

    TOKEN = "ghp_" + "T0KENxyz" * 4
    HOOK_TOKEN = "H00K" + "abc123" * 4
    HMAC = "HMAC" + "def456" * 4

    @ensure
    async def test_token_username_and_query_sealed_redacted_and_unsealed(self):
        self.build(JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        source = f"https://{self.TOKEN}@media.example/in/clip.mov"
        hook = f"https://hooks.example/cb?access-token={self.HOOK_TOKEN}&hmac={self.HMAC}&id=7"
        body = {"source_path": source, "dest_path": f"file://{self.root}/out.mp4", "notify_url": hook,
                "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}
        code, raw = await self.request("POST", "/job/submit", body)
        self.assertEqual(code, 200, raw)
        job_id = json.loads(raw)["job_id"]

        stored_bytes = self.data_dir_bytes()
        self.assertIn(job_id.encode(), stored_bytes)
        for secret in (self.TOKEN, self.HOOK_TOKEN, self.HMAC):
            self.assertNotIn(secret.encode(), stored_bytes)

        code, raw = await self.request("GET", f"/job/{job_id}")
        self.assertEqual(code, 200, raw)
        shown = json.loads(raw)["job"]
        self.assertEqual(shown["source_path"], "https://***@media.example/in/clip.mov")
        self.assertEqual(shown["notify_url"], "https://hooks.example/cb?access-token=***&hmac=***&id=7")
        for secret in (self.TOKEN, self.HOOK_TOKEN, self.HMAC):
            self.assertNotIn(secret.encode(), raw)

        job = await self.store.get(job_id)
        self.assertEqual(unseal_uri(job.notify_url, job.sealed_credentials["notify_url"], self.settings), hook)
        seen = []

        class FakeStorage:
            async def download(self, uri, local_path):
                seen.append(uri)
                return 0
        self.patch(worker_mod, "get_storage", lambda uri, settings, reactor: FakeStorage())
        context = worker_mod.JobContext(types.SimpleNamespace(reactor=reactor, settings=self.settings),
                                        job, self.root)
        await context.download_source(os.path.join(self.root, "source"))
        self.assertEqual(seen, [as_media_uri(source)])

    @ensure
    async def test_token_username_refused_without_key(self):
        self.build()
        body = {"source_path": f"https://{self.TOKEN}@media.example/in/clip.mov",
                "dest_path": f"file://{self.root}/out.mp4", "notify_url": None,
                "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}
        code, raw = await self.request("POST", "/job/submit", body)
        self.assertEqual(code, 400, raw)
        self.assertIn("JOB_CREDENTIALS_KEY", json.loads(raw)["message"])
        self.assertNotIn(self.TOKEN.encode(), raw)
