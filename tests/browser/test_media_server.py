"""The harness's HTTP server: Content-Types from nommer's table, the player page and the vendored players
mounted beside the served directory, byte ranges, and nothing outside the three directories."""

import http.client

import pytest

from tests.browser.harness import PLAYER_DIR, VENDOR_DIR, MediaServer


@pytest.fixture
def served(tmp_path):
    (tmp_path / "hls").mkdir()
    (tmp_path / "hls" / "master.m3u8").write_text("#EXTM3U\n")
    (tmp_path / "manifest.mpd").write_text("<MPD/>")
    (tmp_path / "seg 1.m4s").write_bytes(bytes(range(100)))
    (tmp_path / "init.mp4").write_bytes(b"\0" * 8)
    with MediaServer(tmp_path) as srv:
        yield srv


def get(server, path, headers=None):
    host, port = server.base_url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()   # headers: case-insensitive (an HTTPMessage)
    finally:
        conn.close()


@pytest.mark.parametrize("path, content_type", [
    ("/hls/master.m3u8", "application/vnd.apple.mpegurl"),
    ("/manifest.mpd", "application/dash+xml"),
    ("/seg%201.m4s", "video/iso.segment"),
    ("/init.mp4", "video/mp4"),
    ("/__vendor/hls.min.js", "text/javascript"),
    ("/__vendor/dash.all.min.js", "text/javascript"),
    ("/__player/player.html", "text/html"),
])
def test_content_types(served, path, content_type):
    status, headers, _ = get(served, path)
    assert (status, headers["Content-Type"]) == (200, content_type)


def test_the_mounts_serve_the_player_and_the_vendored_files(served):
    assert get(served, "/__player/player.html")[2] == (PLAYER_DIR / "player.html").read_bytes()
    assert get(served, "/__vendor/hls.min.js")[2] == (VENDOR_DIR / "hls.min.js").read_bytes()


def test_byte_ranges(served):
    status, headers, body = get(served, "/seg%201.m4s", {"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 10-19/100", bytes(range(10, 20)))
    status, headers, body = get(served, "/seg%201.m4s", {"Range": "bytes=-5"})
    assert (status, headers["Content-Range"], body) == (206, "bytes 95-99/100", bytes(range(95, 100)))
    status, headers, body = get(served, "/seg%201.m4s", {"Range": "bytes=90-"})
    assert (status, headers["Content-Length"], body) == (206, "10", bytes(range(90, 100)))
    status, headers, _ = get(served, "/seg%201.m4s", {"Range": "bytes=100-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */100")
    status, _, body = get(served, "/seg%201.m4s")
    assert (status, body) == (200, bytes(range(100)))


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/__vendor/../harness.py", "/__player/../../conftest.py",
                                  "/__player/%2e%2e/harness.py"])
def test_nothing_outside_the_served_directories(served, path):
    status, _, _ = get(served, path)
    assert status == 404
    assert ("GET", path, 404) in served.requests
