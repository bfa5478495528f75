"""nommer's own ladders play in a real browser: a job submitted with the cmaf-h264 server preset
through real feederd and workerd, its HLS master (hls.js) and DASH MPD (dash.js) played in headless
chromium from the destination prefix, each rung forced and shown at its size."""

import pytest

from tests.browser.harness import MediaServer, check_playback
from tests.e2e.test_e2e_outputs import finished_job
from tests.workerd.outputs.media import make_source


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(the FINISHED job document, the destination prefix directory) of a cmaf-h264 job on a
    640x360 source with two audio languages."""
    root = str(tmp_path_factory.mktemp("playback"))
    return finished_job(root, lambda: make_source(root, "title.mp4", width=640, height=360, fps=30, duration_s=6,
                                                  audio="two-languages"),
                        {"preset": "cmaf-h264", "overrides": {"encoder_preset": "veryfast"}})


@pytest.fixture(scope="module")
def server(finished):
    with MediaServer(finished[1]) as srv:
        yield srv


@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_each_rung_of_the_default_ladder_plays(chromium, server, finished, kind):
    job, _ = finished
    entry = next(o for o in job["outputs"] if o["type"] == kind)
    rungs = [(r["width"], r["height"]) for r in entry["rungs"]]
    assert sorted(rungs) == [(416, 234), (640, 360)], "the default ladder, cut at the source's size"
    manifest = f"{entry['dir']}/{entry['name']}"
    seen = check_playback(chromium, server, kind, server.url(manifest), rungs)
    assert sorted((s["width"], s["height"]) for s in seen) == sorted(rungs)
    assert all(s["currentTime"] >= 1.0 for s in seen)
    languages = sorted(a["language"] for a in entry["audio"])
    assert languages == ["eng", "fra"] or languages == ["en", "fr"], entry["audio"]
