"""End to end: secrets in a presigned source URL and in a notify_url reach
the servers that need them and nowhere else -- not the job store's files, not
the API, not feederd's log (its workers' lines included)."""

import base64
import http.server
import os
import shutil
import threading
import urllib.parse

from cryptography.fernet import Fernet

from tests.e2e.harness import Feederd
from tests.workerd.media import clip

SIGNATURE = "5ec12e7516a7u2e0f7f0a3b1"
CREDENTIAL = "AKIAEXAMPLEKEYID0042/20261205/us-east-1/s3/aws4_request"
HOOK_TOKEN = "Hook7ok3nValue"
HOOK_PASSWORD = "Hook-Pa55w0rd"
OPTIONS = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
           "options": [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}]}


class Server:
    """A loopback HTTP server in a thread: GET serves ``body`` only with the
    presigned query's signature (403 otherwise); POST records the webhook.
    ``seen`` holds (method, path, Authorization header)."""

    def __init__(self, body):
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.seen.append(("GET", self.path, self.headers.get("Authorization")))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                ok = query.get("X-Amz-Signature") == [SIGNATURE] and query.get("X-Amz-Credential") == [CREDENTIAL]
                self.send_response(200 if ok else 403)
                payload = body if ok else b"SignatureDoesNotMatch"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.seen.append(("POST", self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_presigned_source_and_secret_webhook(tmp_path):
    root = str(tmp_path / "media")
    os.makedirs(root)
    with open(clip(seconds=1, size="320x240"), "rb") as f:
        server = Server(f.read())
    feederd = Feederd(root, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode(), WEBHOOK_BACKOFF_S=0.1)
    try:
        feederd.start()
        query = urllib.parse.urlencode({"X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Credential": CREDENTIAL,
                                        "X-Amz-Expires": "600", "X-Amz-SignedHeaders": "host",
                                        "X-Amz-Signature": SIGNATURE})
        source = f"http://127.0.0.1:{server.port}/bucket/in.mp4?{query}"
        hook = f"http://hooks:{HOOK_PASSWORD}@127.0.0.1:{server.port}/hook?token={HOOK_TOKEN}&job=1"
        job_id = feederd.client.submit(source, f"file://{root}/out.mp4", OPTIONS, notify_url=hook)
        job = feederd.wait_for(job_id, lambda j: j["job_state"] in ("FINISHED", "ERROR"), what="the job")
        assert job["job_state"] == "FINISHED", job

        # It still downloads: the worker had the signature.
        gets = [path for method, path, _ in server.seen if method == "GET"]
        assert gets and all(SIGNATURE in urllib.parse.unquote(p) for p in gets), server.seen
        assert os.path.getsize(os.path.join(root, "out.mp4")) > 0
        # The webhooks went out with the token and the password (basic auth).
        feederd.wait_for(job_id, lambda j: any(m == "POST" for m, _, _ in server.seen), what="a webhook")
        posts = [(p, a) for m, p, a in server.seen if m == "POST"]
        auth = "Basic " + base64.b64encode(f"hooks:{HOOK_PASSWORD}".encode()).decode()
        assert all(p == f"/hook?token={HOOK_TOKEN}&job=1" and a == auth for p, a in posts), posts

        # The API shows them masked.
        assert "X-Amz-Signature=***" in job["source_path"] and "X-Amz-Credential=***" in job["source_path"]
        assert job["notify_url"] == f"http://hooks:***@127.0.0.1:{server.port}/hook?token=***&job=1"
        shown = repr(job) + repr(feederd.client.list())
        secrets = [SIGNATURE, "AKIAEXAMPLEKEYID0042", HOOK_TOKEN, HOOK_PASSWORD]
        for secret in secrets:
            assert secret not in shown
    finally:
        feederd.stop()
        server.close()
    # Nor in the store's files (WAL and journal included) or the log of feederd and its workers.
    stored = b""
    for parent, _, names in os.walk(feederd.data_dir):
        for name in names:
            if name.endswith((".sqlite", ".sqlite-wal", ".sqlite-journal", ".sqlite-shm")):
                with open(os.path.join(parent, name), "rb") as f:
                    stored += f.read()
    assert job_id.encode() in stored
    log = open(feederd.log_path, encoding="utf-8", errors="replace").read()
    assert job_id in log
    for secret in secrets:
        assert secret.encode() not in stored, secret
        assert urllib.parse.quote(secret, safe="").encode() not in stored, secret
        assert secret not in log and urllib.parse.quote(secret, safe="") not in log, secret
    shutil.rmtree(feederd.home, ignore_errors=True)
