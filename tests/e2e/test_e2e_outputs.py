"""End to end, declarative outputs: real feederd and workerd, real ffmpeg in the
sandbox, the issue's example job (every output type in one submit) stored
under a file:// prefix, its manifests parsed with libraries and its ladder
played in headless chromium; and the bad-input paths (ERROR with the reason,
nothing half-written)."""

import json
import os
import subprocess
import urllib.request
import xml.etree.ElementTree as ET

import m3u8
import pytest

from tests.e2e.harness import Feederd, daemon_fixture
from tests.workerd.outputs.media import make_source

FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}


def example_outputs():
    """The issue's example job's outputs (ladder cut to two rungs and shorter
    segments for a 4 s source, so the test stays quick)."""
    ladder = [{"height": 360, "bitrate": "600k"}, {"height": 234, "bitrate": "145k"}]
    return [
        {"type": "hls", "ladder": ladder, "codec": "h264", "segment_s": 2, "encoder_preset": "veryfast"},
        {"type": "dash", "ladder": ladder, "codec": "h264", "segment_s": 2, "encoder_preset": "veryfast"},
        {"type": "mp4", "name": "download.mp4", "height": 240, "crf": 23, "encoder_preset": "veryfast"},
        {"type": "poster", "name": "poster.jpg"},
        {"type": "thumbnails", "interval_s": 2, "width": 160},
        {"type": "storyboard", "interval_s": 1, "tile_width": 80, "columns": 2, "rows": 2},
        {"type": "audio", "name": "audio.m4a", "codec": "aac", "bitrate": "128k"},
    ]


def submit(daemon, body):
    """POST /job/submit with ``body`` as it is; (status, answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/job/submit",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def run_job(daemon, body, timeout_s=240):
    status, answer = submit(daemon, body)
    assert status == 200, answer
    return daemon.wait_for(answer["job_id"], lambda j: j["job_state"] in FINAL, timeout_s=timeout_s,
                           what="a final state")


def finished_job(root, make_source, fields, timeout_s=240):
    """Run one job on a feederd (one worker) under ``root``: its source made by ``make_source()``
    (a path under ``root``), stored under the prefix ``root/out/``, the job's other fields
    ``fields``; the job must FINISH. ``(the FINISHED job document, the prefix directory)``."""
    feederd = Feederd(root, MAX_NUM_WORKERS=1)
    feederd.start()
    try:
        src = make_source()
        prefix = os.path.join(root, "out")
        job = run_job(feederd, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/", **fields},
                      timeout_s=timeout_s)
    finally:
        feederd.stop()
    assert job["job_state"] == "FINISHED", job
    return job, prefix


def files_under(top):
    return sorted(os.path.relpath(os.path.join(d, f), top) for d, _, fs in os.walk(top) for f in fs)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path)


daemon = daemon_fixture(MAX_NUM_WORKERS=1)


def test_every_output_type_in_one_job(daemon, root):
    """The issue's example job: HLS and DASH over one set of CMAF segments, an MP4, a poster,
    thumbnails, a storyboard and an audio rendition, all under the prefix; the job document lists
    each output's files (path, bytes, Content-Type) and the ladder's measured rungs."""
    src = make_source(root, "title.mp4", width=640, height=360, fps=30, duration_s=4)
    prefix = os.path.join(root, "out", "title")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": example_outputs()})
    assert job["job_state"] == "FINISHED", job
    assert job["progress"] == 100.0
    outputs = job["outputs"]
    assert [o["type"] for o in outputs] == ["hls", "dash", "mp4", "poster", "thumbnails", "storyboard",
                                           "audio"]
    stored = set(files_under(prefix))
    for entry in outputs:
        assert entry["files"], entry
        for f in entry["files"]:
            assert f["path"] in stored, (f, sorted(stored))
            assert os.path.getsize(os.path.join(prefix, f["path"])) == f["bytes"]
            assert f["content_type"] and "/" in f["content_type"]
    hls, dash = outputs[0], outputs[1]
    hls_segments = {f["path"] for f in hls["files"] if f["path"].endswith(".m4s")}
    dash_segments = {f["path"] for f in dash["files"] if f["path"].endswith(".m4s")}
    assert hls_segments and hls_segments == dash_segments, "HLS and DASH share one set of segments"
    assert [r["height"] for r in hls["rungs"]] == [360, 234] or \
        sorted(r["height"] for r in hls["rungs"]) == [234, 360]
    for rung in hls["rungs"]:
        assert rung["bitrate_peak"] >= rung["bitrate_average"] > 0
        assert rung["codec"].startswith("avc1.")

    master = m3u8.load(os.path.join(prefix, hls["dir"], hls["name"]))
    assert master.is_variant
    for playlist in master.playlists:
        info = playlist.stream_info
        assert info.bandwidth and info.average_bandwidth and info.resolution and info.frame_rate
        variant = m3u8.load(os.path.join(prefix, hls["dir"], playlist.uri))
        assert variant.is_endlist and variant.playlist_type == "vod"
        assert abs(sum(s.duration for s in variant.segments) - 4.0) < 0.1
    mpd = ET.parse(os.path.join(prefix, dash["dir"], dash["name"])).getroot()
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    bandwidths = [int(r.get("bandwidth")) for r in mpd.iterfind(".//d:Representation", ns)]
    assert bandwidths and all(b > 0 for b in bandwidths)

    probed = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", os.path.join(prefix, "download.mp4")],
        capture_output=True, text=True, check=True).stdout)
    video = [s for s in probed["streams"] if s["codec_type"] == "video"][0]
    assert (video["width"], video["height"]) == (426, 240)
    assert os.path.exists(os.path.join(prefix, "poster.jpg"))
    assert os.path.exists(os.path.join(prefix, "audio.m4a"))
    assert outputs[4]["count"] == 2
    assert outputs[5]["tiles"] == 4


def test_ladder_on_audio_only_source_is_an_error(daemon, root):
    """A ladder asked of a source with no video ends in ERROR saying so; nothing is stored."""
    src = make_source(root, "song.m4a", video=False, duration_s=2, audio="stereo")
    prefix = os.path.join(root, "out", "song")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": [{"type": "hls"}, {"type": "audio"}]})
    assert job["job_state"] == "ERROR", job
    assert "no video" in job["job_state_details"]
    assert not os.path.exists(prefix)


def test_audio_outputs_of_an_audio_only_source(daemon, root):
    """Only audio outputs asked of an audio-only source: it works."""
    src = make_source(root, "song.m4a", video=False, duration_s=2, audio="stereo")
    prefix = os.path.join(root, "out", "song")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": [{"type": "audio", "name": "a.mp3", "codec": "mp3"},
                                       {"type": "audio", "name": "a.opus", "codec": "opus"}]})
    assert job["job_state"] == "FINISHED", job
    assert files_under(prefix) == ["a.mp3", "a.opus"]


def test_merge_image_that_is_not_an_image_is_an_error(daemon, root):
    """An audio merge whose image_path is a text file ends in ERROR with the reason."""
    src = make_source(root, "song.m4a", video=False, duration_s=2, audio="stereo")
    image = os.path.join(root, "cover.jpg")
    with open(image, "w") as f:
        f.write("this is not a picture\n" * 20)
    prefix = os.path.join(root, "out", "merge")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": [{"type": "mp4", "image_path": f"file://{image}"}]})
    assert job["job_state"] == "ERROR", job
    assert "image_path" in job["job_state_details"]
    assert not os.path.exists(prefix)


def test_failed_upload_leaves_nothing_half_written(daemon, root):
    """When a late upload fails (the master playlist's path is taken by a directory), what the
    attempt stored before it (segments, playlists) is deleted: no manifest, no orphan segment."""
    src = make_source(root, "title.mp4", width=320, height=180, fps=30, duration_s=2)
    prefix = os.path.join(root, "out", "title")
    os.makedirs(os.path.join(prefix, "stream", "master.m3u8"))
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": [{"type": "hls", "encoder_preset": "ultrafast", "segment_s": 2}]})
    assert job["job_state"] == "ERROR", job
    assert files_under(prefix) == [], files_under(prefix)


class PutReceiver:
    """An HTTP server on loopback storing every PUT body under ``directory`` at its path, and
    answering DELETE; it records (method, path, Content-Type) of each request."""

    def __init__(self, directory):
        import http.server
        import threading

        self.requests = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                length = int(self.headers.get("Content-Length", 0))
                data = self.rfile.read(length)
                receiver.requests.append(("PUT", self.path, self.headers.get("Content-Type")))
                target = os.path.join(directory, self.path.lstrip("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    out.write(data)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_DELETE(self):
                receiver.requests.append(("DELETE", self.path, None))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_outputs_stored_by_http_put_under_a_prefix(daemon, root, tmp_path):
    """An http:// destination prefix: every file is PUT under it with its Content-Type, media
    before playlists before the master playlist."""
    src = make_source(root, "title.mp4", width=320, height=180, fps=30, duration_s=2)
    received = tmp_path / "received"
    receiver = PutReceiver(str(received))
    try:
        job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"{receiver.url}/vod/title/",
                               "outputs": [{"type": "hls", "encoder_preset": "ultrafast", "segment_s": 2},
                                           {"type": "thumbnails", "interval_s": 1, "width": 64}]})
    finally:
        receiver.close()
    assert job["job_state"] == "FINISHED", job
    puts = [(path, ctype) for method, path, ctype in receiver.requests if method == "PUT"]
    listed = sorted("/vod/title/" + f["path"] for o in job["outputs"] for f in o["files"])
    assert sorted(p for p, _ in puts) == listed
    kinds = [os.path.splitext(p)[1] for p, _ in puts]
    assert kinds.index(".m3u8") > max(i for i, k in enumerate(kinds) if k in (".m4s", ".jpg"))
    assert puts[-1][0].endswith("/stream/master.m3u8")
    assert dict(puts)["/vod/title/stream/master.m3u8"] == "application/vnd.apple.mpegurl"
    assert m3u8.load(str(received / "vod/title/stream/master.m3u8")).is_variant
