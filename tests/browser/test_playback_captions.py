"""Captions play in a real browser: a job with hls, dash and captions outputs through real
feederd and workerd (speech made by espeak-ng, transcribed in the worker's sandbox), its HLS
master played by hls.js and its MPD by dash.js in headless chromium. Beyond the ladder
playing, the ``<video>`` lists an English text track and, once it is switched on, holds the
captions' cues at their times (hls.js from the segmented WebVTT of the SUBTITLES rendition,
dash.js from the text AdaptationSet's VTT)."""

import os

import pytest
import webvtt
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.harness import MediaServer, check_playback
from tests.e2e.test_e2e_captions import captions_job_outputs
from tests.e2e.test_e2e_outputs import finished_job
from tests.workerd.outputs.test_captions import seconds, speech_source

#: Seconds a cue's start or end may differ between the page and the VTT (the player's
#: rounding, and the timestamp offset hls.js applies from the fMP4 timeline).
TOLERANCE_S = 0.25

#: The text tracks of the page's <video>, and the cues of the English one.
TRACKS_JS = """
var video = document.getElementById('video');
return Array.prototype.map.call(video.textTracks, function (t) {
  return {kind: t.kind, label: t.label, language: t.language, mode: t.mode,
          cues: t.cues ? Array.prototype.map.call(t.cues, function (c) {
            return [c.startTime, c.endTime, c.text]; }) : null};
});
"""
#: Switch the English text track on and play the clip again from the start.
SHOW_JS = """
var video = document.getElementById('video'), lang = arguments[0];
for (var i = 0; i < video.textTracks.length; i++) {
  var t = video.textTracks[i];
  t.mode = (t.language === lang || t.language.indexOf(lang + '-') === 0) ? 'showing' : 'disabled';
}
video.currentTime = 0;
var p = video.play();
if (p && p.catch) { p.catch(function () {}); }
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(the FINISHED job document, the destination prefix) of an hls+dash+captions job."""
    root = str(tmp_path_factory.mktemp("captions-playback"))
    return finished_job(root, lambda: speech_source(root)[0], {"outputs": captions_job_outputs()}, timeout_s=400)


@pytest.fixture(scope="module")
def server(finished):
    with MediaServer(finished[1]) as srv:
        yield srv


def english(tracks):
    return [t for t in tracks if t["language"] == "en" or t["language"].startswith("en-")]


@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_the_ladder_plays_with_its_english_captions_track(chromium, server, finished, kind):
    job, prefix = finished
    entry = next(o for o in job["outputs"] if o["type"] == kind)
    caps = next(o for o in job["outputs"] if o["type"] == "captions")
    expected = [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.read(os.path.join(prefix, caps["vtt"]))]
    assert expected, caps
    rungs = [(r["width"], r["height"]) for r in entry["rungs"]]
    seen = check_playback(chromium, server, kind, server.url(f"{entry['dir']}/{entry['name']}"), rungs)
    assert all(s["currentTime"] >= 1.0 for s in seen)

    def wait(predicate, what, timeout_s=30):
        try:
            return WebDriverWait(chromium, timeout_s, poll_frequency=0.2).until(lambda d: predicate())
        except TimeoutException:
            raise AssertionError(f"{kind}: no {what} within {timeout_s} s; text tracks: "
                                 f"{chromium.execute_script(TRACKS_JS)}") from None

    tracks = wait(lambda: english(chromium.execute_script(TRACKS_JS)), "English text track listed")
    assert len(tracks) == 1, tracks
    assert tracks[0]["kind"] in ("subtitles", "captions"), tracks

    chromium.execute_script(SHOW_JS, "en")

    def cues_shown():
        (track,) = english(chromium.execute_script(TRACKS_JS))
        cues = {(round(a, 3), round(b, 3), text) for a, b, text in track["cues"] or []}
        return cues if len(cues) >= len(expected) and track["mode"] == "showing" else None

    cues = sorted(wait(cues_shown, f"{len(expected)} cues in the English track"))
    for start, end, text in expected:
        match = [c for c in cues if abs(c[0] - start) <= TOLERANCE_S and abs(c[1] - end) <= TOLERANCE_S]
        assert match, (start, end, text, cues)
        assert " ".join(match[0][2].split()) == " ".join(text.split())
