"""mpd: the timeline of ffmpeg's MPDs against the files and ffprobe, template
expansion on hand-written MPDs, and the bandwidth rewrite read back by
ffmpeg's own DASH demuxer."""

import os
import shutil
import xml.etree.ElementTree as ET

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import mpd
from nommer.workerd.outputs.measure import measure
from tests.workerd.outputs.cmaf_ladders import concatenated, ladder_fixture
from tests.workerd.outputs.media import ffprobe_json

NS = {"d": mpd.DASH_NS}


stereo = ladder_fixture("stereo")
languages = ladder_fixture("languages")
hevc = ladder_fixture("hevc")


def _copy(directory, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(directory, dest)
    return str(dest)


def test_representations_of_a_two_rung_ladder_match_the_files(stereo, tmp_path):
    reps = mpd.read_timeline(os.path.join(stereo, "manifest.mpd"))
    assert [(r.rep_id, r.content_type) for r in reps] == [("0", "video"), ("1", "video"),
                                                          ("2", "audio")]
    on_disk = set(os.listdir(stereo))
    for rep in reps:
        assert rep.init == f"init-{rep.rep_id}.m4s" and rep.init in on_disk
        assert [s.name for s in rep.segments] == [f"chunk-{rep.rep_id}-{n:05d}.m4s"
                                                  for n in range(1, len(rep.segments) + 1)]
        assert {s.name for s in rep.segments} <= on_disk
        assert [s.number for s in rep.segments] == list(range(1, len(rep.segments) + 1))
        # Contiguous timeline from 0.
        assert rep.segments[0].start_s == 0
        for a, b in zip(rep.segments, rep.segments[1:]):
            assert b.start_s == pytest.approx(a.start_s + a.duration_s, abs=1e-9)
        # The timeline is the media's presentation timeline: it ends where
        # ffprobe of init + all segments ends (the AAC priming that the edit
        # list cuts starts at -1024/48000 s and is not on the timeline).
        whole = concatenated(stereo, rep.init, [s.name for s in rep.segments],
                             str(tmp_path / f"{rep.rep_id}.mp4"))
        probe = ffprobe_json(whole, "-show_streams", "-show_format")
        (stream,) = probe["streams"]
        end = float(stream["start_time"]) + float(stream["duration"])
        assert rep.duration_s == pytest.approx(end, abs=0.001)
        assert stream["codec_type"] == rep.content_type
        if rep.content_type == "video":
            assert (rep.width, rep.height) == (stream["width"], stream["height"])
            assert rep.frame_rate == "30/1" and rep.fps == 30.0
            assert rep.codecs.startswith("avc1.")
            assert (rep.channels, rep.sample_rate, rep.lang) == (None, None, None)
        else:
            assert rep.codecs == "mp4a.40.2"
            assert rep.channels == stream["channels"] == 2
            assert rep.sample_rate == int(stream["sample_rate"]) == 48000
            assert rep.lang is None  # ffmpeg writes lang="und"
            assert (rep.width, rep.height, rep.frame_rate) == (None, None, None)
    assert [s.duration_s for s in reps[0].segments] == [4.0, 1.0]
    root = ET.parse(os.path.join(stereo, "manifest.mpd")).getroot()
    total = mpd.parse_duration(root.get("mediaPresentationDuration"))
    assert reps[0].duration_s == pytest.approx(total, abs=0.001)


def test_each_audio_rendition_keeps_its_language(languages):
    reps = mpd.read_timeline(os.path.join(languages, "manifest.mpd"))
    assert [(r.content_type, r.lang) for r in reps] == [("video", None), ("audio", "eng"),
                                                        ("audio", "fra")]


def test_bare_hevc_codecs_are_completed_from_the_init_segment(hevc):
    path = os.path.join(hevc, "manifest.mpd")
    declared = ET.parse(path).getroot().find(".//d:Representation[@id='0']", NS).get("codecs")
    assert declared == "hvc1"  # what ffmpeg 5.1 writes
    video = mpd.read_timeline(path)[0]
    assert video.codecs.startswith("hvc1.1.") and video.codecs.count(".") >= 3


def test_rewritten_bandwidths_are_what_ffmpegs_dash_demuxer_reads(stereo, tmp_path):
    directory = _copy(stereo, tmp_path)
    path = os.path.join(directory, "manifest.mpd")
    with open(path, "rb") as f:
        before = f.read().decode().splitlines()
    reps = mpd.read_timeline(path)
    measured = {r.rep_id: measure(r, directory).peak_bps for r in reps}
    mpd.rewrite_bandwidth(path, measured)
    with open(path, "rb") as f:
        after = f.read().decode().splitlines()
    # Only the bandwidth values changed: same lines otherwise, byte for byte.
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(changed) == 3
    for b, a in changed:
        assert "<Representation" in b
        assert b.split('bandwidth="')[0] == a.split('bandwidth="')[0]
        assert b.split('bandwidth="')[1].split('"', 1)[1] == a.split('bandwidth="')[1].split('"', 1)[1]
    # Still a DASH MPD in the DASH namespace, read by us and by ffmpeg.
    root = ET.parse(path).getroot()
    assert root.tag == f"{{{mpd.DASH_NS}}}MPD"
    assert {r.get("id"): int(r.get("bandwidth"))
            for r in root.iterfind(".//d:Representation", NS)} == measured
    assert [r.segments for r in mpd.read_timeline(path)] == [r.segments for r in reps]
    streams = ffprobe_json(path, "-show_streams")["streams"]
    assert sorted(int(s["tags"]["variant_bitrate"]) for s in streams) == sorted(measured.values())
    assert measured["0"] != 800000  # measured, not the declared -b:v


def test_rewrite_sets_codecs_and_keeps_the_rest(hevc, tmp_path):
    directory = _copy(hevc, tmp_path)
    path = os.path.join(directory, "manifest.mpd")
    reps = mpd.read_timeline(path)
    mpd.rewrite_bandwidth(path, {"0": 123456}, codecs={r.rep_id: r.codecs for r in reps})
    rep = ET.parse(path).getroot().find(".//d:Representation[@id='0']", NS)
    assert rep.get("codecs") == reps[0].codecs and rep.get("bandwidth") == "123456"
    assert rep.get("width") == "640"
    streams = ffprobe_json(path, "-show_streams")["streams"]
    assert {s["codec_name"] for s in streams} == {"hevc", "aac"}


def test_rewrite_refuses_an_unknown_representation(stereo, tmp_path):
    directory = _copy(stereo, tmp_path)
    path = os.path.join(directory, "manifest.mpd")
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(ValueError, match="'9'"):
        mpd.rewrite_bandwidth(path, {"0": 1000, "9": 1000})
    with open(path, "rb") as f:
        assert f.read() == before  # nothing written


HAND_WRITTEN = """<?xml version="1.0"?>
<!-- a comment that must survive -->
<mpd:MPD xmlns:mpd="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013"
     type="static" mediaPresentationDuration="PT0H0M10.5S">
  <mpd:Period>
    <mpd:AdaptationSet contentType="video" frameRate="30000/1001" width="320" height="180"
        codecs="avc1.42c00d" minBandwidth='1' maxBandwidth="2">
      <mpd:SegmentTemplate timescale="1000" media="v_$RepresentationID$_$Time$.m4s"
          initialization="v_$RepresentationID$_init.mp4" startNumber="7"
          presentationTimeOffset="500">
        <mpd:SegmentTimeline>
          <mpd:S t="500" d="2000" r="2"/>
          <mpd:S d="1000"/>
          <mpd:S t="8000" d="1500" r="-1"/>
        </mpd:SegmentTimeline>
      </mpd:SegmentTemplate>
      <mpd:Representation id="lo" bandwidth='100' cenc:default_KID="x"/>
      <mpd:Representation id="hi" bandwidth="200" width="640" height="360"/>
    </mpd:AdaptationSet>
    <mpd:AdaptationSet mimeType="audio/mp4" lang="de" codecs="mp4a.40.2">
      <mpd:AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" value="6"/>
      <mpd:Representation id="a" bandwidth="64000" audioSamplingRate="44100">
        <mpd:SegmentTemplate timescale="48000" duration="192000"
            media="a-$Number%03d$-$$.m4s" initialization="a-init.m4s"/>
      </mpd:Representation>
    </mpd:AdaptationSet>
    <mpd:AdaptationSet contentType="text"><mpd:Representation id="t" bandwidth="1"/></mpd:AdaptationSet>
  </mpd:Period>
</mpd:MPD>
"""


def test_templates_timelines_and_inherited_attributes(tmp_path):
    path = tmp_path / "hand.mpd"
    path.write_text(HAND_WRITTEN)
    lo, hi, audio = mpd.read_timeline(str(path))
    assert (lo.rep_id, lo.width, lo.height, lo.codecs) == ("lo", 320, 180, "avc1.42c00d")
    assert (hi.width, hi.height, hi.frame_rate) == (640, 360, "30000/1001")
    assert lo.init == "v_lo_init.mp4"
    # r=2 -> three 2 s segments, then 1 s, then r=-1 up to the end (10.5 s + 0.5 s offset).
    assert [(s.name, s.number, s.start_s, s.duration_s) for s in lo.segments] == [
        ("v_lo_500.m4s", 7, 0.0, 2.0), ("v_lo_2500.m4s", 8, 2.0, 2.0),
        ("v_lo_4500.m4s", 9, 4.0, 2.0), ("v_lo_6500.m4s", 10, 6.0, 1.0),
        ("v_lo_8000.m4s", 11, 7.5, 1.5), ("v_lo_9500.m4s", 12, 9.0, 1.5)]
    assert lo.duration_s == 10.5
    assert (audio.content_type, audio.lang, audio.channels, audio.sample_rate) == (
        "audio", "de", 6, 44100)
    # SegmentTemplate@duration: 4 s segments, the last one cut at the end.
    assert [(s.name, s.start_s, s.duration_s) for s in audio.segments] == [
        ("a-001-$.m4s", 0.0, 4.0), ("a-002-$.m4s", 4.0, 4.0), ("a-003-$.m4s", 8.0, 2.5)]


def test_rewrite_keeps_prefixes_quotes_and_comments_and_follows_min_max(tmp_path):
    path = tmp_path / "hand.mpd"
    path.write_text(HAND_WRITTEN)
    mpd.rewrite_bandwidth(str(path), {"lo": 150000, "hi": 450000, "a": 70000})
    text = path.read_text()
    assert text == (HAND_WRITTEN.replace("bandwidth='100'", "bandwidth='150000'")
                    .replace('bandwidth="200"', 'bandwidth="450000"')
                    .replace('bandwidth="64000"', 'bandwidth="70000"')
                    .replace("minBandwidth='1'", "minBandwidth='150000'")
                    .replace('maxBandwidth="2"', 'maxBandwidth="450000"'))


def test_a_representation_without_bandwidth_gets_one_and_values_are_escaped(tmp_path):
    path = tmp_path / "m.mpd"
    path.write_text('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><Period><AdaptationSet>'
                    '<Representation id="v"/></AdaptationSet></Period></MPD>')
    mpd.rewrite_bandwidth(str(path), {"v": 5}, codecs={"v": 'a"b&c'})
    rep = ET.parse(str(path)).getroot().find(".//d:Representation", NS)
    assert rep.get("bandwidth") == "5" and rep.get("codecs") == 'a"b&c'


def test_unreadable_manifests_are_permanent_errors(tmp_path):
    bad = tmp_path / "bad.mpd"
    bad.write_text("<MPD><Period>")
    with pytest.raises(PermanentJobError, match="bad.mpd"):
        mpd.read_timeline(str(bad))
    with pytest.raises(PermanentJobError, match="bad.mpd"):
        mpd.rewrite_bandwidth(str(bad), {})
    two = tmp_path / "two.mpd"
    two.write_text('<MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><Period/><Period/></MPD>')
    with pytest.raises(PermanentJobError, match="2 periods"):
        mpd.read_timeline(str(two))
    with pytest.raises(PermanentJobError, match="cannot be read"):
        mpd.read_timeline(str(tmp_path / "missing.mpd"))


@pytest.mark.parametrize("text, seconds", [
    ("PT5.0S", 5.0), ("PT1H2M3.5S", 3723.5), ("P1DT2S", 86402.0), ("PT0.021333S", 0.021333),
    ("PT2M", 120.0)])
def test_parse_duration(text, seconds):
    assert mpd.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "PT", "P", "PTS", "-PT1S"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        mpd.parse_duration(text)


def test_expand_template():
    assert mpd.expand_template("chunk-$RepresentationID$-$Number%05d$.m4s",
                               rep_id="3", number=12) == "chunk-3-00012.m4s"
    assert mpd.expand_template("$Bandwidth$/$Time$$$", rep_id="a", time=90,
                               bandwidth="800") == "800/90$"
    with pytest.raises(ValueError, match="Number"):
        mpd.expand_template("$Number$", rep_id="a")
