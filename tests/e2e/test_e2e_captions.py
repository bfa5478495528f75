"""End to end, captions: real feederd and workerd, the transcription runner in the worker's
sandbox. A job with hls, dash and captions outputs on a source whose speech espeak-ng made:
the captions are stored as WebVTT/SRT/JSON, the HLS master carries them as a SUBTITLES
rendition of stored WebVTT segments, the MPD as a text AdaptationSet; a language no installed
engine has is a 400 at submit naming the languages; a source with no audio is an ERROR saying
captions need speech."""

import json
import os
import xml.etree.ElementTree as ET

import m3u8
import pytest
import webvtt

from nommer.workerd.transcribe import engines
from tests.e2e.harness import Feederd
from tests.e2e.test_e2e_outputs import files_under, run_job, submit
from tests.workerd.outputs.media import make_source
from tests.workerd.outputs.test_captions import DASH_NS, seconds, speech_source

LADDER = [{"height": 180, "bitrate": "250k"}]


def captions_job_outputs(**captions):
    return [
        {"type": "hls", "ladder": LADDER, "segment_s": 2, "encoder_preset": "veryfast"},
        {"type": "dash", "ladder": LADDER, "segment_s": 2, "encoder_preset": "veryfast"},
        dict({"type": "captions", "language": "en", "formats": ["vtt", "srt"]}, **captions),
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("captions-e2e"))


@pytest.fixture(scope="module")
def daemon(root):
    feederd = Feederd(root, MAX_NUM_WORKERS=1)
    feederd.start()
    yield feederd
    feederd.stop()


def test_hls_dash_and_captions_in_one_job(daemon, root):
    src, _ = speech_source(root)
    prefix = os.path.join(root, "out", "talk")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": captions_job_outputs()}, timeout_s=400)
    assert job["job_state"] == "FINISHED", job
    assert job["progress"] == 100.0
    hls, dash, caps = job["outputs"]
    assert [o["type"] for o in job["outputs"]] == ["hls", "dash", "captions"]
    stored = set(files_under(prefix))
    for entry in job["outputs"]:
        for f in entry["files"]:
            assert f["path"] in stored, (f, sorted(stored))
            assert os.path.getsize(os.path.join(prefix, f["path"])) == f["bytes"]
    # Scratch files of the transcription (the WAV, the runner's JSON) are never uploaded.
    assert not [p for p in stored if os.path.basename(p).startswith(".")], sorted(stored)

    assert caps["dir"] == "captions" and caps["language"] == "en"
    assert caps["engine"] in engines.available()
    assert caps["empty"] is False and caps["cues"] > 0 and caps["words"] > 0
    assert 0.4 < caps["speech_ratio"] <= 1.0
    assert sorted(f["path"] for f in caps["files"]) == [
        "captions/captions_en.json", "captions/captions_en.srt", "captions/captions_en.vtt"]
    types = {f["path"]: f["content_type"] for f in caps["files"]}
    assert types["captions/captions_en.vtt"] == "text/vtt"
    cues = [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.read(os.path.join(prefix, caps["vtt"]))]
    assert len(cues) == caps["cues"]
    with open(os.path.join(prefix, "captions/captions_en.json"), encoding="utf-8") as f:
        described = json.load(f)
    assert described["engine"] == caps["engine"] and len(described["words"]) == caps["words"]
    spans = described["speech_spans"]
    assert all(any(s[0] <= start <= s[1] for s in spans) for start, _, _ in cues), (cues, spans)

    # HLS: the master names a SUBTITLES rendition whose playlist and segments were stored.
    master = m3u8.load(os.path.join(prefix, hls["dir"], hls["name"]))
    (sub,) = [m for m in master.media if m.type == "SUBTITLES"]
    assert (sub.language, sub.group_id, sub.uri) == ("en", "subs", "subs_en.m3u8")
    assert all(p.stream_info.subtitles == "subs" for p in master.playlists)
    playlist = m3u8.load(os.path.join(prefix, hls["dir"], sub.uri))
    assert playlist.segments
    seen = set()
    for segment in playlist.segments:
        path = f"{hls['dir']}/{segment.uri}"
        assert path in stored
        seen |= {(seconds(c.start), seconds(c.end), c.text) for c in webvtt.read(os.path.join(prefix, path))}
    assert sorted(seen) == cues
    assert hls["subtitles"] == [{"language": "en", "name": "English", "playlist": "stream/subs_en.m3u8"}]

    # DASH: a text/vtt AdaptationSet whose BaseURL is a stored copy of the VTT.
    mpd = ET.parse(os.path.join(prefix, dash["dir"], dash["name"])).getroot()
    (text,) = [a for a in mpd.iterfind(".//d:AdaptationSet", DASH_NS) if a.get("contentType") == "text"]
    assert (text.get("mimeType"), text.get("lang")) == ("text/vtt", "en")
    base = text.find("d:Representation/d:BaseURL", DASH_NS).text
    assert f"{dash['dir']}/{base}" in stored
    with open(os.path.join(prefix, dash["dir"], base), "rb") as f, \
            open(os.path.join(prefix, caps["vtt"]), "rb") as g:
        assert f.read() == g.read()


def test_a_language_no_installed_engine_has_is_refused_at_submit(daemon, root):
    src = make_source(root, "tone.mp4", width=320, height=180, duration_s=1)
    body = {"source_path": f"file://{src}", "dest_path": f"file://{root}/out/refused/",
            "outputs": captions_job_outputs(language="xx")}
    status, answer = submit(daemon, body)
    assert status == 400, answer
    assert answer["error_code"] == "BADINPUT", answer
    assert answer["message"].startswith("outputs[2].language: no installed transcription engine has 'xx'"), answer
    for name, languages in engines.available().items():
        assert f"{name} has: " in answer["message"] and "en" in languages
    body["outputs"] = [{"type": "captions", "engine": "pocketsphinx", "language": "fr"}]
    status, answer = submit(daemon, body)
    assert status == 400 and answer["message"] == "outputs[0].language: engine pocketsphinx has no 'fr'; it has: en"
    assert not os.path.exists(os.path.join(root, "out", "refused"))


def test_captions_of_a_source_without_audio_is_an_error(daemon, root):
    src = make_source(root, "mute.mp4", width=320, height=180, duration_s=1, audio=None)
    prefix = os.path.join(root, "out", "mute")
    job = run_job(daemon, {"source_path": f"file://{src}", "dest_path": f"file://{prefix}/",
                           "outputs": [{"type": "captions"}]})
    assert job["job_state"] == "ERROR", job
    assert "the source has no audio stream: captions need speech" in job["job_state_details"]
    assert not os.path.exists(prefix) or files_under(prefix) == []
