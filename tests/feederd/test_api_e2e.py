"""The API's protections end to end: a real ``twistd feederd`` subprocess,
real sockets, real ``nommer keys create``.

- Off loopback with no API key, feederd refuses to start (non-zero exit,
  the message says how to make a key); with one, it starts and wants it.
- On loopback: anonymous until the first key is created, then 401; tenants
  see only their own jobs; a foreign Origin and a non-loopback Host are
  refused; a 10 MB body is refused (413) before anything is spooled (the
  daemon's TMPDIR is watched: its open files and the directory) and without
  feederd's memory growing by anything like 10 MB.
"""

import json
import os
import socket
import time

import pytest

from nommer.client.api import NommerClient, Unauthorized
from tests.badinput.conftest import assert_alive_and_clean, assert_json_error, raw_request
from tests.e2e.harness import Feederd, create_key
from tests.helpers import open_files_under

NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
MIB = 1024 * 1024


def body(root):
    return json.dumps({"source_path": f"file://{root}/in.mp4", "dest_path": f"file://{root}/out.mp4",
                       "notify_url": None,
                       "job_options": {"nommer": NOMMER, "options": [{"outfile_options": [["f", "mp4"]]}]}}).encode()


def submit(feederd, key=None, headers=()):
    headers = [("Content-Type", "application/x-www-form-urlencoded"), *headers]
    if key:
        headers.append(("Authorization", f"Bearer {key}"))
    return raw_request(feederd.port, "POST", "/job/submit", body(feederd.root), headers)


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return str(root)


def test_off_loopback_start_needs_a_key(root):
    """API_INTERFACE 0.0.0.0 with no key: twistd feederd exits non-zero saying how to make one.
    After `nommer keys create`, it starts; anonymous calls are 401, the key's are served."""
    feederd = Feederd(root, API_INTERFACE="0.0.0.0", FLEET_BACKEND="none")
    try:
        # The key check runs once the reactor does: a loaded machine may answer /health (keyless)
        # before the refusal, so the exit is awaited either way.
        try:
            feederd.start(timeout_s=30)
        except AssertionError as exc:
            assert "exited" in str(exc)
        feederd.proc.wait(30)
        assert feederd.proc.returncode not in (0, None), feederd.log()
        assert "nommer keys create NAME --scope admin" in feederd.log()
        assert "not loopback" in feederd.log()
    finally:
        feederd.stop()
    secret = create_key(feederd, "ops", "admin")
    feederd = Feederd(root, API_INTERFACE="0.0.0.0", FLEET_BACKEND="none")
    try:
        feederd.start()
        resp = submit(feederd)
        assert_json_error(resp, 401, "UNAUTHORIZED")
        assert resp.headers["www-authenticate"].startswith("Bearer")
        resp = submit(feederd, key=secret)
        assert resp.status == 200, resp
        client = NommerClient(f"http://127.0.0.1:{feederd.port}", timeout_s=10, api_key=secret)
        assert client.get(resp.json()["job_id"])["owner"] is not None
        assert_alive_and_clean(feederd)
    finally:
        feederd.stop()


def test_loopback_protections(root, tmp_path, monkeypatch):
    """One loopback feederd, its TMPDIR watched: anonymous until a key exists; tenants; Origin
    and Host; oversized bodies refused before spooling and without memory growth."""
    tmpdir = str(tmp_path / "feederd-tmp")
    os.makedirs(tmpdir)
    monkeypatch.setenv("TMPDIR", tmpdir)
    feederd = Feederd(root, FLEET_BACKEND="none")
    try:
        feederd.start()
        pid = feederd.proc.pid

        # Anonymous on loopback while no key exists; the 2011 client's request shape.
        resp = submit(feederd)
        assert resp.status == 200, resp
        anonymous_job = resp.json()["job_id"]
        assert feederd.client.get(anonymous_job)["owner"] is None

        # Cross-site: a foreign Origin (a web page's form post) and a re-bound Host.
        assert_json_error(submit(feederd, headers=[("Origin", "http://evil.example")]), 403, "FORBIDDEN")
        assert_json_error(submit(feederd, headers=[("Host", "evil.example")]), 421, "BADHOST")
        own = submit(feederd, headers=[("Origin", f"http://localhost:{feederd.port}")])
        assert own.status == 200, own

        # Oversized bodies: warm up, then watch the temp dir and the peak RSS.
        for _ in range(20):
            assert submit(feederd).status == 200
        peak_before = peak_rss_bytes(pid)
        with socket.create_connection(("127.0.0.1", feederd.port), timeout=15) as sock:
            sock.sendall(b"POST /job/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % (10 * MIB) + b" " * (300 * 1024))
            answer = b""
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                assert not open_files_under(tmpdir, pid), "feederd spooled the body to a temp file"
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert b"Connection: close" in head
        assert json.loads(payload)["error_code"] == "BADINPUT"
        chunked = b"".join(b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n" for _ in range(160)) + b"0\r\n\r\n"
        resp = raw_request(feederd.port, "POST", "/job/submit", chunked,
                           [("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")])
        assert_json_error(resp, 413, "BADINPUT", ["larger than"])
        resp = raw_request(feederd.port, "POST", "/job/submit", b" " * (10 * MIB), [("Content-Type", "application/json")])
        assert_json_error(resp, 413, "BADINPUT", ["larger than"])
        assert os.listdir(tmpdir) == [] and not open_files_under(tmpdir, pid)
        growth = peak_rss_bytes(pid) - peak_before
        assert growth < 5 * MIB, f"feederd's peak RSS grew by {growth} bytes for 10 MB bodies"

        # The first key ends anonymous access at once; tenants see only their own jobs.
        admin = create_key(feederd, "ops", "admin")
        tenant = create_key(feederd, "tenant", "submit,read,cancel")
        resp = submit(feederd)
        assert_json_error(resp, 401, "UNAUTHORIZED")
        with pytest.raises(Unauthorized):
            feederd.client.get(anonymous_job)
        resp = submit(feederd, key=tenant)
        assert resp.status == 200, resp
        tenant_client = NommerClient(f"http://127.0.0.1:{feederd.port}", timeout_s=10, api_key=tenant)
        mine = resp.json()["job_id"]
        assert [j["job_id"] for j in tenant_client.list()[0]] == [mine]
        resp = raw_request(feederd.port, "GET", f"/job/{anonymous_job}", b"", [("Authorization", f"Bearer {tenant}")])
        assert_json_error(resp, 404, "NOSUCHJOB")
        resp = raw_request(feederd.port, "GET", "/workers", b"", [("Authorization", f"Bearer {tenant}")])
        assert_json_error(resp, 403, "FORBIDDEN")
        admin_client = NommerClient(f"http://127.0.0.1:{feederd.port}", timeout_s=10, api_key=admin)
        assert admin_client.get(anonymous_job)["owner"] is None
        assert admin_client.get(mine)["owner"] == tenant_client.get(mine)["owner"]
        assert_alive_and_clean(feederd)
    finally:
        feederd.stop()
