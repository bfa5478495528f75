"""The captions output (nommer.workerd.outputs.captions) and its attachment to
the ladders (hls.write_hls's SUBTITLES rendition, mpd.add_text_tracks).

Speech is made in the test by espeak-ng (Debian), mixed under a testsrc2
picture one second in; music and silence by lavfi. Every step runs as the
worker runs it: in the bubblewrap sandbox (empty environment, only the
scratch dir writable, as ``nobody`` when the tests run as root), the
transcription runner included. WebVTT and SRT are read back with webvtt-py,
playlists with m3u8, the MPD with ElementTree.
"""

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction

import m3u8
import pytest
import webvtt

from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.outputs.validate import validate_outputs
from nommer.workerd.nommers.outputs import directories_under
from nommer.workerd.outputs import captions, hls, mpd, package
from nommer.workerd.outputs.source import AudioTrack, SourceInfo
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST
from nommer.workerd.sandbox import Sandbox
from nommer.workerd.transcribe import engines, vad
from tests.workerd import media as worker_media
from tests.workerd.outputs.media import CAP_S, ffmpeg, probe

#: What espeak-ng says, one second into the source.
SPEECH = "Please call Stella. Ask her to bring these things with her from the store."
SPEECH_AT_S = 1.0
DASH_NS = {"d": mpd.DASH_NS}
TIMESTAMP = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3}$")


def seconds(stamp):
    """``HH:MM:SS.mmm`` -> seconds."""
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


# --- sources ------------------------------------------------------------------------------

def speech_source(directory):
    """A 320x180 testsrc2 clip with espeak-ng's speech starting at SPEECH_AT_S, one second
    of silence after it; ``(path, speech seconds)``."""
    wav = os.path.join(directory, "speech.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", wav, SPEECH], check=True,
                   capture_output=True, timeout=60)
    speech_s = float(json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", wav],
        check=True, capture_output=True).stdout)["format"]["duration"])
    total = SPEECH_AT_S + speech_s + 1.0
    path = os.path.join(directory, "speech.mp4")
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=25:duration={total:.3f}", "-i", wav,
           "-filter_complex", f"[1:a]adelay={int(SPEECH_AT_S * 1000)}:all=1,apad[a]",
           "-map", "0:v", "-map", "[a]", "-t", f"{total:.3f}", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", path)
    return path, speech_s


def music_source(directory):
    """4 s of a synthetic melody over a chord (no voice), with a picture."""
    path = os.path.join(directory, "music.mp4")
    melody = "0.2*sin(2*PI*t*(440+220*floor(mod(t*4,4))))"
    chord = "+".join(f"0.1*sin(2*PI*{f}*t)" for f in (261.63, 329.63, 392.0))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
           "-f", "lavfi", "-i", f"aevalsrc='{melody}+{chord}':s=48000:d=4",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


def silent_source(directory):
    """3 s of picture over digital silence (an audio stream that says nothing)."""
    path = os.path.join(directory, "silence.mp4")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
           "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "3",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", path)
    return path


# --- running steps as the worker does ------------------------------------------------------

def run_sandboxed(steps, source_path, work_dir, root):
    """Run each ``Step`` in the worker's sandbox, as OutputsNommer does: ``-t`` before
    the output of capped steps, the scratch and the directories under ``work_dir``
    writable, the source and the step's ``readable`` read-only; a root test run gives
    the writable dirs to ``nobody`` first (``Sandbox.prepare``). The runner's stdout
    (progress) is returned per step."""
    settings = worker_media.settings(DATA_DIR=os.path.join(root, "data"),
                                     SCRATCH_DIR=os.path.dirname(os.path.dirname(work_dir)))
    sandbox = Sandbox(settings)
    outputs = []
    for step in steps:
        argv = list(step.argv)
        if step.capped:
            argv = argv[:-1] + ["-t", f"{CAP_S:.3f}"] + argv[-1:]
        writable = [os.path.dirname(work_dir)] + directories_under(work_dir)
        readable = [source_path, *step.readable]
        sandbox.prepare(writable, readable)
        launch = sandbox.wrap(argv, writable=writable, readable=readable, cwd=os.path.dirname(work_dir))
        done = subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd, capture_output=True,
                              timeout=600)
        assert done.returncode == 0, (step.what, done.stderr[-3000:].decode(errors="replace"))
        outputs.append(done.stdout.decode())
    return outputs


def make_dirs(tmp):
    root = str(tmp)
    work_dir = os.path.join(root, "scratch", "job-1", "out")
    os.makedirs(work_dir)
    os.makedirs(os.path.join(root, "data"))
    return root, work_dir


def normalized(*outputs):
    return validate_outputs(list(outputs))


CAPTIONS = {"type": "captions", "language": "en", "engine": "pocketsphinx", "formats": ["vtt", "srt"]}
LADDER = [{"height": 180, "bitrate": "250k"}]


def build_captions(spec, source_path, work_dir, root):
    source = probe(source_path)
    steps = captions.plan(spec, source, ffmpeg_bin="ffmpeg", input_path=source_path, work_dir=work_dir)
    progress = run_sandboxed(steps, source_path, work_dir, root)
    return source, steps, progress, captions.finish(spec, source, steps, work_dir)


@pytest.fixture(scope="module")
def speech_job(tmp_path_factory):
    """A speech source's captions (pocketsphinx, VTT and SRT) and an hls+dash package of
    2 s segments carrying them, every step run in the sandbox."""
    root, work_dir = make_dirs(tmp_path_factory.mktemp("speech"))
    path, speech_s = speech_source(root)
    hls_spec, dash_spec, spec = normalized(
        {"type": "hls", "ladder": LADDER, "segment_s": 2, "encoder_preset": "veryfast"},
        {"type": "dash", "ladder": LADDER, "segment_s": 2, "encoder_preset": "veryfast"},
        CAPTIONS)
    source, steps, progress, result = build_captions(spec, path, work_dir, root)
    pkg = {"hls": hls_spec, "dash": dash_spec}
    ladder_steps = package.plan(pkg, source, ffmpeg_bin="ffmpeg", input_path=path, work_dir=work_dir)
    run_sandboxed(ladder_steps, path, work_dir, root)
    made = package.finish(pkg, source, ladder_steps, work_dir, subtitles=[result])
    return {"root": root, "work_dir": work_dir, "source": source, "steps": steps, "progress": progress,
            "result": result, "speech_s": speech_s, "spec": spec, "package": made,
            "stream": os.path.join(work_dir, "stream")}


def local(result, path):
    return next(f.local for f in result.files if f.path == path)


def vtt_cues(path):
    return [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.read(path)]


# --- plan ----------------------------------------------------------------------------------

def a_source(audio=(AudioTrack(index=0, channels=2, sample_rate=48000, language="eng"),)):
    return SourceInfo(duration_s=10.0, width=320, height=180, fps=Fraction(25), video_codec="h264",
                      audio=tuple(audio))


def test_plan_extracts_16k_mono_pcm_then_runs_the_runner_with_this_interpreter(tmp_path):
    tracks = [AudioTrack(index=0, channels=2), AudioTrack(index=1, channels=2, language="fra")]
    spec = normalized(dict(CAPTIONS, track=1))[0]
    extract, runner = captions.plan(spec, a_source(tracks), ffmpeg_bin="ffmpeg", input_path="/in/src.mp4",
                                    work_dir=str(tmp_path))
    wav = os.path.join(str(tmp_path), "captions", captions.WAV_NAME)
    assert os.path.isdir(os.path.dirname(wav))
    argv = extract.argv
    assert argv[0] == "ffmpeg" and argv[argv.index("-i") + 1] == "/in/src.mp4"
    assert argv[argv.index("-map") + 1] == "0:a:1"
    assert [argv[argv.index(o) + 1] for o in ("-ac", "-ar", "-c:a", "-f")] == ["1", "16000", "pcm_s16le", "wav"]
    assert argv[-1] == wav and os.path.basename(wav).startswith(".")  # hidden: never uploaded
    assert extract.capped and extract.expected_s == 10.0
    argv = runner.argv
    assert argv[:4] == [sys.executable, "-I", "-m", "nommer.workerd.transcribe"]
    options = dict(zip(argv[4::2], argv[5::2]))
    assert options["--engine"] == "pocketsphinx" and options["--language"] == "en"
    assert options["--input"] == wav
    assert options["--output"] == os.path.join(os.path.dirname(wav), captions.TRANSCRIPT_NAME)
    assert runner.capped is False and runner.expected_s == 10.0
    import nommer
    readable = runner.readable
    assert os.path.dirname(os.path.abspath(nommer.__file__)) in readable
    for prefix in {sys.prefix, sys.base_prefix} - {"/usr"}:
        assert any(prefix == r or prefix.startswith(r + "/") for r in readable), (prefix, readable)
    assert runner.weight > extract.weight


def test_plan_refuses_a_source_without_audio(tmp_path):
    spec = normalized(CAPTIONS)[0]
    with pytest.raises(PermanentJobError) as e:
        captions.plan(spec, a_source(audio=()), ffmpeg_bin="ffmpeg", input_path="/x", work_dir=str(tmp_path))
    assert str(e.value) == "the source has no audio stream: captions need speech"
    with pytest.raises(PermanentJobError, match="1 audio track; track 3"):
        captions.plan(dict(spec, track=3), a_source(), ffmpeg_bin="ffmpeg", input_path="/x",
                      work_dir=str(tmp_path))


def test_plan_refuses_a_language_the_engine_lacks_naming_its_languages(tmp_path):
    spec = dict(normalized(CAPTIONS)[0], language="fr")
    with pytest.raises(PermanentJobError) as e:
        captions.plan(spec, a_source(), ffmpeg_bin="ffmpeg", input_path="/x", work_dir=str(tmp_path))
    assert "'fr'" in str(e.value) and "it has: en" in str(e.value)


def test_interpreter_paths_are_few_and_not_nested():
    paths = captions.interpreter_paths()
    assert paths and all(os.path.isabs(p) and os.path.exists(p) for p in paths)
    assert not any(p != q and q.startswith(p.rstrip("/") + "/") for p in paths for q in paths)
    assert not any(p == "/usr" or p.startswith("/usr/") or p == "/" for p in paths)


# --- speech --------------------------------------------------------------------------------

def test_speech_gives_webvtt_cues_inside_the_speech_the_vad_found(speech_job):
    result, spec = speech_job["result"], speech_job["spec"]
    vtt = local(result, "captions/captions_en.vtt")
    with open(vtt, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "WEBVTT"
    stamps = [part for line in lines if "-->" in line for part in line.split(" --> ")]
    assert stamps and all(TIMESTAMP.match(s) for s in stamps), stamps
    cues = vtt_cues(vtt)
    assert cues, lines
    with open(local(result, "captions/captions_en.json"), encoding="utf-8") as f:
        described = json.load(f)
    spans = described["speech_spans"]
    assert spans
    # The VAD found the speech where it is: espeak-ng's from 1 s, give or take its padding.
    assert SPEECH_AT_S - 0.5 <= spans[0][0] <= SPEECH_AT_S + 0.5, spans
    assert spans[-1][1] <= SPEECH_AT_S + speech_job["speech_s"] + 0.5, spans
    previous_end = 0.0
    for start, end, text in cues:
        # Each cue starts inside a speech span; it ends at most the 1 s minimum later.
        span = next((s for s in spans if s[0] <= start <= s[1]), None)
        assert span is not None, (start, spans)
        assert end <= span[1] + 1.0 + 1e-3, (start, end, span)
        assert 0 < end - start <= 7.0 + 1e-3 and start >= previous_end - 1e-3  # no overlap
        assert 1 <= len(text.splitlines()) <= 2 and all(len(line) <= 42 for line in text.splitlines())
        previous_end = end
    # The words are inside the spans too, each flagged against the engine's threshold.
    threshold = described["low_confidence_threshold"]
    assert threshold == engines.LOW_CONFIDENCE["pocketsphinx"]
    assert described["words"]
    for w in described["words"]:
        assert any(s[0] <= w["start"] <= w["end"] <= s[1] + 1e-3 for s in spans), w
        assert w["low_confidence"] == (w["confidence"] is not None and w["confidence"] < threshold)
    assert [c["text"] for c in described["cues"]] == [t for _, _, t in cues]
    info = result.info
    assert info["language"] == "en" and info["engine"] == "pocketsphinx"
    assert info["cues"] == len(cues) and info["words"] == len(described["words"])
    assert info["empty"] is False and "note" not in info
    assert info["speech_ratio"] == described["speech_ratio"] > 0.4
    assert info["low_confidence_words"] == sum(w["low_confidence"] for w in described["words"])
    assert info["vtt"] == "captions/captions_en.vtt" and spec["dir"] == "captions"


def test_srt_beside_it_has_the_same_cues_and_roles_are_media_then_manifest(speech_job):
    result = speech_job["result"]
    srt = local(result, "captions/captions_en.srt")
    from_srt = [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.from_srt(srt)]
    assert from_srt == vtt_cues(local(result, "captions/captions_en.vtt"))
    with open(srt, encoding="utf-8") as f:
        assert f.readline().strip() == "1"
    roles = {f.path: (f.role, f.content_type, f.bytes) for f in result.files}
    assert roles["captions/captions_en.vtt"][:2] == (MEDIA, "text/vtt")
    assert roles["captions/captions_en.srt"][:2] == (MEDIA, "application/x-subrip")
    assert roles["captions/captions_en.json"][:2] == (MANIFEST, "application/json")
    assert sorted(roles) == ["captions/captions_en.json", "captions/captions_en.srt", "captions/captions_en.vtt"]
    assert all(os.path.getsize(f.local) == f.bytes for f in result.files)


def test_the_runner_reports_progress_as_ffmpeg_does(speech_job):
    lines = speech_job["progress"][1].splitlines()
    times = [int(line.split("=")[1]) for line in lines if line.startswith("out_time_us=")]
    assert times == sorted(times) and times[-1] >= 0.9 * speech_job["source"].duration_s * 1e6
    assert lines[-1] == "progress=end"


# --- no speech -----------------------------------------------------------------------------

@pytest.mark.parametrize("maker", [music_source, silent_source], ids=["music", "silence"])
def test_music_and_silence_give_an_empty_track_and_say_so(maker, tmp_path):
    root, work_dir = make_dirs(tmp_path)
    path = maker(root)
    spec = normalized(dict(CAPTIONS, engine="auto"))[0]
    _, _, _, result = build_captions(spec, path, work_dir, root)
    vtt = local(result, "captions/captions_en.vtt")
    assert vtt_cues(vtt) == []
    with open(vtt, encoding="utf-8") as f:
        assert f.read().strip() == "WEBVTT"
    info = result.info
    assert info["empty"] is True and info["cues"] == 0 and info["words"] == 0
    assert info["speech_ratio"] < vad.MIN_SPEECH_RATIO
    assert re.fullmatch(r"no speech found \(speech ratio 0\.\d\d\): empty track", info["note"]), info
    assert info["engine"] in engines.available()
    with open(local(result, "captions/captions_en.json"), encoding="utf-8") as f:
        described = json.load(f)
    assert described["words"] == [] and described["empty"] is True and described["note"] == info["note"]


# --- attached to the ladders ---------------------------------------------------------------

def test_hls_master_lists_a_subtitles_rendition_on_every_variant(speech_job):
    stream = speech_job["stream"]
    master = m3u8.load(os.path.join(stream, "master.m3u8"))
    subs = [m for m in master.media if m.type == "SUBTITLES"]
    assert len(subs) == 1
    sub = subs[0]
    assert (sub.group_id, sub.language, sub.name, sub.default, sub.autoselect, sub.uri) == \
        ("subs", "en", "English", "NO", "YES", "subs_en.m3u8")
    assert master.playlists and all(p.stream_info.subtitles == "subs" for p in master.playlists)
    info = speech_job["package"]["hls"].info
    assert info["subtitles"] == [{"language": "en", "name": "English", "playlist": "stream/subs_en.m3u8"}]


def test_hls_subtitle_segments_follow_the_video_segments_and_hold_every_cue(speech_job):
    stream = speech_job["stream"]
    master = m3u8.load(os.path.join(stream, "master.m3u8"))
    video = m3u8.load(os.path.join(stream, master.playlists[0].uri))
    subs = m3u8.load(os.path.join(stream, "subs_en.m3u8"))
    assert [s.duration for s in subs.segments] == [s.duration for s in video.segments]
    assert len(subs.segments) >= 3  # 2 s segments of a ~6 s source
    assert subs.target_duration == video.target_duration and subs.is_endlist
    assert subs.playlist_type == "vod" and all(s.init_section is None for s in subs.segments)
    seen, start = [], 0.0
    for n, segment in enumerate(subs.segments):
        assert segment.uri == f"subs_en_{n + 1:05d}.vtt"
        path = os.path.join(stream, segment.uri)
        with open(path, encoding="utf-8") as f:
            head = f.read().splitlines()[:2]
        assert head == ["WEBVTT", "X-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000"]
        end = start + segment.duration if n + 1 < len(subs.segments) else float("inf")
        for cue in vtt_cues(path):
            assert cue[0] < end and cue[1] > start, (segment.uri, cue)  # overlaps its segment
            seen.append(cue)
        start += segment.duration
    whole = vtt_cues(local(speech_job["result"], "captions/captions_en.vtt"))
    assert sorted(set(seen)) == whole
    roles = {f.path: f.role for f in speech_job["package"]["hls"].files}
    assert roles["stream/subs_en.m3u8"] == PLAYLIST
    assert all(roles[f"stream/{s.uri}"] == MEDIA for s in subs.segments)
    assert roles["stream/master.m3u8"] == MANIFEST


def test_dash_mpd_has_a_webvtt_text_adaptation_set(speech_job):
    stream = speech_job["stream"]
    root = ET.parse(os.path.join(stream, "manifest.mpd")).getroot()
    sets = root.findall("d:Period/d:AdaptationSet", DASH_NS)
    ids = [s.get("id") for s in sets]
    assert len(ids) == len(set(ids))
    text = [s for s in sets if s.get("contentType") == "text"]
    assert len(text) == 1
    aset = text[0]
    assert (aset.get("mimeType"), aset.get("lang")) == ("text/vtt", "en")
    role = aset.find("d:Role", DASH_NS)
    assert (role.get("schemeIdUri"), role.get("value")) == ("urn:mpeg:dash:role:2011", "subtitle")
    rep = aset.find("d:Representation", DASH_NS)
    assert int(rep.get("bandwidth")) > 0
    assert rep.find("d:BaseURL", DASH_NS).text == "subs_en.vtt"
    with open(os.path.join(stream, "subs_en.vtt"), "rb") as f, \
            open(local(speech_job["result"], "captions/captions_en.vtt"), "rb") as g:
        assert f.read() == g.read()
    # The ladder's own representations are read as before (text is not one of them).
    kinds = sorted({r.content_type for r in mpd.read_timeline(os.path.join(stream, "manifest.mpd"))})
    assert kinds == ["audio", "video"]
    result = speech_job["package"]["dash"]
    roles = {f.path: f.role for f in result.files}
    assert roles["stream/subs_en.vtt"] == MEDIA and roles["stream/manifest.mpd"] == MANIFEST
    assert result.info["subtitles"] == [{"language": "en", "name": "English", "vtt": "stream/subs_en.vtt"}]


MPD_TEXT = b"""<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4.0S">
\t<Period id="0" start="PT0.0S">
\t\t<AdaptationSet id="0" contentType="video">
\t\t\t<Representation id="0" bandwidth="1000"/>
\t\t</AdaptationSet>
\t</Period>
</MPD>
"""


def test_add_text_tracks_inserts_only_the_sets_and_refuses_a_taken_id(tmp_path):
    path = str(tmp_path / "m.mpd")
    with open(path, "wb") as f:
        f.write(MPD_TEXT)
    mpd.add_text_tracks(path, [("subs_en", "en", "subs_en.vtt", 100.2), ("subs_fr", "fr", "a&b.vtt", 10)])
    with open(path, "rb") as f:
        data = f.read()
    head, tail = MPD_TEXT.split(b"\t</Period>")
    assert data.startswith(head) and data.endswith(b"\t</Period>" + tail)
    root = ET.fromstring(data)
    sets = root.findall("d:Period/d:AdaptationSet", DASH_NS)
    assert [(s.get("id"), s.get("lang")) for s in sets] == [("0", None), ("1", "en"), ("2", "fr")]
    assert sets[1].find("d:Representation", DASH_NS).get("bandwidth") == "802"
    assert sets[2].find("d:Representation/d:BaseURL", DASH_NS).text == "a&b.vtt"
    with pytest.raises(ValueError, match="subs_en"):
        mpd.add_text_tracks(path, [("subs_en", "en", "x.vtt", 1)])


def test_write_hls_names_two_tracks_of_one_language_apart():
    class Track:
        def __init__(self, language):
            self.language, self.cues = language, ()
    assert hls.subtitle_names([Track("en"), Track("en"), Track("fr")]) == [
        ("subs_en", "English", "en"), ("subs_en_2", "English 2", "en"), ("subs_fr", "French", "fr")]


def test_subtitle_segments_escape_markup_and_repeat_a_cue_across_a_boundary():
    texts = hls.subtitle_segments([(0.5, 2.5, "fish & <chips>\nand peas"), (3.0, 3.5, "x")],
                                  [(0.0, 2.0), (2.0, 2.0)])
    assert texts[0] == ("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n"
                        "00:00:00.500 --> 00:00:02.500\nfish &amp; &lt;chips&gt;\nand peas\n")
    assert "00:00:00.500 --> 00:00:02.500" in texts[1] and "00:00:03.000 --> 00:00:03.500" in texts[1]


# --- submit time ---------------------------------------------------------------------------

def test_submit_refuses_a_language_or_engine_this_host_lacks(monkeypatch):
    monkeypatch.setattr(engines, "available", lambda: {"pocketsphinx": ["en"]})
    with pytest.raises(InvalidJobSpec) as e:
        validate_outputs([{"type": "mp4"}, {"type": "captions", "language": "fr"}])
    assert e.value.field == "outputs[1].language"
    assert "'fr'" in e.value.reason and "pocketsphinx has: en" in e.value.reason
    with pytest.raises(InvalidJobSpec) as e:
        validate_outputs([{"type": "captions", "engine": "faster-whisper"}])
    assert e.value.field == "outputs[0].engine" and "not installed" in e.value.reason
    with pytest.raises(InvalidJobSpec) as e:
        validate_outputs([{"type": "captions", "engine": "pocketsphinx", "language": "de"}])
    assert e.value.field == "outputs[0].language" and "it has: en" in e.value.reason
    assert validate_outputs([{"type": "captions"}])[0]["engine"] == "auto"  # en is there
    monkeypatch.setattr(engines, "available", lambda: {})
    with pytest.raises(InvalidJobSpec, match="no transcription engine is installed"):
        validate_outputs([{"type": "captions"}])
