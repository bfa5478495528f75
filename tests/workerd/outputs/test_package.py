"""One ffmpeg run per hls/dash package (nommer.workerd.outputs.package):
the planned argv, then real runs on tiny sources checked with ffprobe, the
MPD (xml.etree) and the HLS playlists (m3u8)."""

import json
import os
import xml.etree.ElementTree as ET
from fractions import Fraction as F

import m3u8
import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import package
from nommer.workerd.outputs.source import AudioTrack, SourceInfo
from nommer.workerd.outputs.step import MANIFEST, MEDIA, PLAYLIST
from tests.workerd.outputs import media
from tests.workerd.outputs.cmaf_ladders import concatenated
from tests.workerd.outputs.media import ffprobe_json

NS = {"d": "urn:mpeg:dash:schema:mpd:2011"}
STEREO = AudioTrack(index=0, channels=2, sample_rate=48000, codec="aac")


def ladder_spec(kind, **fields):
    """A normalized hls/dash spec (every field filled, as the worker gets it)."""
    spec = {"type": kind, "ladder": "default", "codec": "h264", "segment_s": 6, "dir": "stream",
            "encoder_preset": "medium", "audio_bitrate": "128k"}
    spec["name"] = "master.m3u8" if kind == "hls" else "manifest.mpd"
    if kind == "hls":
        spec["iframes"] = True
    spec.update(fields)
    return spec


def both(**fields):
    return {"hls": ladder_spec("hls", **fields), "dash": ladder_spec("dash", **fields)}


def src(width=640, height=360, fps=F(30), audio=(STEREO,), duration_s=4.0):
    return SourceInfo(duration_s=duration_s, width=width, height=height, fps=fps,
                      video_codec="h264", audio=tuple(audio))


def argv_of(pkg, source, tmp_path):
    (step,) = package.plan(pkg, source, ffmpeg_bin="/usr/bin/ffmpeg", input_path="/in/src.mp4",
                           work_dir=str(tmp_path))
    return step, step.argv


def option(argv, name):
    """The value after ``name`` in argv (the first occurrence)."""
    return argv[argv.index(name) + 1]


# --- grouping and the planned command (pure) ---------------------------------------------------

def test_group_key_puts_an_hls_and_a_dash_output_of_the_same_ladder_together():
    hls, dash = ladder_spec("hls", iframes=False), ladder_spec("dash", name="video.mpd")
    assert package.group_key(hls) == package.group_key(dash)
    assert hash(package.group_key(hls))
    assert package.group_key(ladder_spec("hls", audio_bitrate="128k")) == \
        package.group_key(ladder_spec("dash", audio_bitrate=128000))
    for field, value in [("dir", "other"), ("codec", "hevc"), ("segment_s", 4),
                         ("encoder_preset", "fast"), ("audio_bitrate", "96k"),
                         ("ladder", [{"height": 360, "bitrate": "1M"}])]:
        assert package.group_key(ladder_spec("hls", **{field: value})) != package.group_key(dash)


def test_plan_is_one_run_of_the_dash_muxer_into_the_package_dir(tmp_path):
    step, argv = argv_of(both(), src(duration_s=4.0), tmp_path)
    assert argv[0] == "/usr/bin/ffmpeg"
    assert argv[argv.index("-i") + 1] == "/in/src.mp4"
    assert argv[-4:] == ["-progress", "pipe:1", "-nostats",
                         str(tmp_path / "stream" / "manifest.mpd")]
    assert (tmp_path / "stream").is_dir()
    assert option(argv, "-f") == "dash"
    assert option(argv, "-seg_duration") == "6"
    assert option(argv, "-use_template") == "1" and option(argv, "-use_timeline") == "1"
    assert option(argv, "-frag_type") == "duration" and option(argv, "-frag_duration") == "2"
    assert option(argv, "-init_seg_name") == "init-$RepresentationID$.m4s"
    assert option(argv, "-media_seg_name") == "chunk-$RepresentationID$-$Number%05d$.m4s"
    assert "-t" not in argv  # caps are the orchestrator's
    # 640x360 source, default ladder: 234p and 360p; 4 s x (416x234 + 640x360) pixels
    assert step.expected_s == 4.0
    assert step.weight == pytest.approx(4.0 * (416 * 234 + 640 * 360) / 1e6)
    assert step.what == "hls+dash ladder stream/"


def test_plan_maps_every_rung_with_its_own_rate_control_and_keyframes(tmp_path):
    _, argv = argv_of(both(encoder_preset="veryfast"), src(1280, 720, F(60)), tmp_path)
    graph = option(argv, "-filter_complex")
    assert graph.startswith("[0:v:0]split=7[s0][s1][s2][s3][s4][s5][s6];")
    assert "[s0]fps=30/1,scale=416:234,setsar=1[v0]" in graph
    assert "[s4]fps=30/1,scale=960:540,setsar=1[v4]" in graph
    assert "[s5]scale=1280:720,setsar=1[v5]" in graph       # 720p keeps 60 fps
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps == [f"[v{i}]" for i in range(7)] + ["0:a:0"]
    assert option(argv, "-preset:v") == "veryfast"
    assert option(argv, "-pix_fmt:v") == "yuv420p"
    assert option(argv, "-c:v:0") == "libx264" and option(argv, "-profile:v:0") == "high"
    assert (option(argv, "-b:v:1"), option(argv, "-maxrate:v:1"), option(argv, "-bufsize:v:1")) \
        == ("365000", "401500", "730000")
    assert option(argv, "-force_key_frames:v:6") == "expr:gte(t,n_forced*2)"
    assert option(argv, "-g:v:0") == "60" and option(argv, "-g:v:6") == "120"
    assert option(argv, "-keyint_min:v:6") == "120" and option(argv, "-sc_threshold:v:6") == "0"
    assert (option(argv, "-c:a:0"), option(argv, "-b:a:0"), option(argv, "-ac:a:0"),
            option(argv, "-ar:a:0")) == ("aac", "128000", "2", "48000")
    assert option(argv, "-adaptation_sets") == "id=0,streams=v id=1,streams=7"
    assert "-tag:v:0" not in argv


def test_plan_hevc_uses_x265_with_the_hvc1_tag_and_closed_gops(tmp_path):
    _, argv = argv_of(both(codec="hevc"), src(), tmp_path)
    assert option(argv, "-c:v:0") == "libx265" and option(argv, "-c:v:1") == "libx265"
    assert option(argv, "-tag:v:1") == "hvc1"
    assert option(argv, "-forced-idr:v:1") == "1"
    assert option(argv, "-x265-params:v:1").startswith(
        "keyint=60:min-keyint=60:scenecut=0:open-gop=0")
    assert option(argv, "-b:v:1") == "290000"   # the HEVC column
    assert "-profile:v:0" not in argv


def test_plan_one_rung_has_no_split(tmp_path):
    _, argv = argv_of({"dash": ladder_spec("dash")}, src(320, 180), tmp_path)
    assert option(argv, "-filter_complex") == "[0:v:0]scale=320:180,setsar=1[v0]"


def test_plan_each_audio_track_is_a_stream_and_adaptation_set_with_its_language(tmp_path):
    tracks = (AudioTrack(index=0, channels=6, language="eng"), AudioTrack(index=1, channels=2),
              AudioTrack(index=2, channels=2, language="fra"))
    _, argv = argv_of(both(), src(audio=tracks), tmp_path)
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps == ["[v0]", "[v1]", "0:a:0", "0:a:1", "0:a:2"]
    assert option(argv, "-metadata:s:a:0") == "language=eng"
    assert "-metadata:s:a:1" not in argv
    assert option(argv, "-metadata:s:a:2") == "language=fra"
    assert option(argv, "-ac:a:0") == "2"       # 5.1 downmixed to stereo
    assert option(argv, "-adaptation_sets") == \
        "id=0,streams=v id=1,streams=2 id=2,streams=3 id=3,streams=4"


def test_plan_passes_only_language_tags_of_a_sane_shape(tmp_path):
    """ffmpeg 5.1 writes the tag into the MPD's lang attribute unescaped."""
    tracks = (AudioTrack(index=0, language='en" evil="1'), AudioTrack(index=1, language="en-US"),
              AudioTrack(index=2, language="fre"), AudioTrack(index=3, language="English"))
    _, argv = argv_of(both(), src(audio=tracks), tmp_path)
    assert "-metadata:s:a:0" not in argv and "-metadata:s:a:3" not in argv
    assert option(argv, "-metadata:s:a:1") == "language=en-US"
    assert option(argv, "-metadata:s:a:2") == "language=fre"


def test_plan_no_audio_is_video_only(tmp_path):
    _, argv = argv_of(both(), src(audio=()), tmp_path)
    assert not [a for a in argv if a.startswith("0:a")]
    assert not [a for a in argv if a.startswith("-c:a")]
    assert option(argv, "-adaptation_sets") == "id=0,streams=v"


@pytest.mark.parametrize("asked,used", [(6, 6), (5, 6), (3, 4), (2, 2), (1, 2), (2.5, 4),
                                        (10, 10)])
def test_segment_duration_is_on_the_keyframe_grid(asked, used, tmp_path):
    assert package.segment_duration({"segment_s": asked}) == used
    _, argv = argv_of({"dash": ladder_spec("dash", segment_s=asked)}, src(), tmp_path)
    assert option(argv, "-seg_duration") == str(used)


def test_plan_refuses_an_audio_only_source(tmp_path):
    with pytest.raises(PermanentJobError, match="the source has no video stream"):
        argv_of(both(), SourceInfo(duration_s=3.0, audio=(STEREO,)), tmp_path)
    assert not (tmp_path / "stream").exists()


def test_plan_refuses_a_package_whose_outputs_differ(tmp_path):
    pkg = {"hls": ladder_spec("hls"), "dash": ladder_spec("dash", codec="hevc")}
    with pytest.raises(ValueError, match="must share"):
        argv_of(pkg, src(), tmp_path)
    with pytest.raises(ValueError, match="needs an hls or a dash"):
        argv_of({"hls": None, "dash": None}, src(), tmp_path)


@pytest.mark.parametrize("bad", ["../out", "/abs", "."])
def test_plan_refuses_a_dir_outside_the_scratch_dir(bad, tmp_path):
    with pytest.raises(PermanentJobError, match="not a relative path"):
        argv_of({"dash": ladder_spec("dash", dir=bad)}, src(), tmp_path / "work")


# --- real runs --------------------------------------------------------------------------------

def read_mpd(path):
    """``[(adaptation set element, representation element, [segment names])]``."""
    root = ET.parse(path).getroot()
    out = []
    for aset in root.iterfind("d:Period/d:AdaptationSet", NS):
        for rep in aset.iterfind("d:Representation", NS):
            template = rep.find("d:SegmentTemplate", NS)
            rep_id = rep.get("id")
            count = sum(int(s.get("r", "0")) + 1
                        for s in template.iterfind("d:SegmentTimeline/d:S", NS))
            names = [f"chunk-{rep_id}-{n:05d}.m4s" for n in range(1, count + 1)]
            out.append((aset, rep, names))
    return out


class Run:
    """A package planned, run with ffmpeg and finished, in a temp dir."""

    def __init__(self, tmp_path, source_path, pkg):
        self.tmp = tmp_path
        self.source = media.probe(source_path)
        self.pkg = pkg
        self.work = str(tmp_path / "work")
        os.makedirs(self.work)
        self.steps = package.plan(pkg, self.source, ffmpeg_bin="ffmpeg", input_path=source_path,
                                  work_dir=self.work)
        media.run_steps(self.steps)
        self.base = os.path.join(self.work, "stream")
        self.mpd = read_mpd(os.path.join(self.base, package.MPD_NAME))  # before finish renames
        self.results = package.finish(pkg, self.source, self.steps, self.work)

    def reps(self, kind):
        return [(a, r, names) for a, r, names in self.mpd if a.get("contentType") == kind]

    def joined(self, rep, names, label):
        """The rendition ``rep``'s init + ``names`` in one file called ``label``
        (what a player appends)."""
        return concatenated(self.base, f"init-{rep.get('id')}.m4s", names, str(self.tmp / label))

    def packets(self, rep, names, label):
        return ffprobe_json(self.joined(rep, names, label), "-show_packets",
                            "-show_entries", "packet=pts_time,flags")["packets"]


def two_rung(codec, **fields):
    return both(codec=codec, segment_s=fields.pop("segment_s", 2), encoder_preset="veryfast",
                audio_bitrate="96k", ladder=fields.pop("ladder", [
                    {"height": 180, "bitrate": "150k"}, {"height": 234, "bitrate": "250k"}]),
                **fields)


@pytest.fixture(scope="module")
def h264_60fps(tmp_path_factory):
    """60 fps, 5.1 audio, 4 s; 180p and 234p capped at 30 fps, a 360p rung kept at 60."""
    tmp = tmp_path_factory.mktemp("h264")
    path = media.fps60(str(tmp), duration_s=4, audio="5.1")
    ladder = [{"height": 180, "bitrate": "150k"}, {"height": 234, "bitrate": "250k"},
              {"height": 360, "bitrate": "400k", "fps_max": 60}]
    return Run(tmp, path, two_rung("h264", ladder=ladder))


@pytest.fixture(scope="module")
def hevc_two_languages(tmp_path_factory):
    """HEVC, two audio tracks (eng, fra) shorter than the video, 4 s segments."""
    tmp = tmp_path_factory.mktemp("hevc")
    path = media.make_source(str(tmp), "two.mp4", duration_s=4, audio="two-languages",
                             audio_duration_s=2.5)
    pkg = two_rung("hevc", segment_s=4)
    pkg["dash"] = None
    return Run(tmp, path, pkg)


@pytest.fixture(scope="module")
def silent_tiny(tmp_path_factory):
    """320x180 (under the lowest rung of the default ladder), no audio, dash only."""
    tmp = tmp_path_factory.mktemp("silent")
    path = media.tiny(str(tmp), audio=None, duration_s=3)
    return Run(tmp, path, {"hls": None, "dash": ladder_spec("dash", encoder_preset="veryfast",
                                                           segment_s=2, name="video.mpd")})


@pytest.fixture(scope="module")
def portrait_default(tmp_path_factory):
    """360x640 portrait with stereo audio, the default ladder: rungs scale by width."""
    tmp = tmp_path_factory.mktemp("portrait")
    path = media.portrait(str(tmp), duration_s=3)
    return Run(tmp, path, both(encoder_preset="veryfast", segment_s=2))


@pytest.fixture(scope="module")
def odd_default(tmp_path_factory):
    """641x361 (odd sides, 4:4:4), the default ladder: even rungs no larger than the source."""
    tmp = tmp_path_factory.mktemp("odd")
    path = media.truly_odd_size(str(tmp), duration_s=3)
    return Run(tmp, path, both(encoder_preset="veryfast", segment_s=2))


def test_portrait_rungs_scale_by_width_and_never_upscale(portrait_default):
    sizes = sorted((int(r.get("width")), int(r.get("height"))) for _, r, _ in portrait_default.reps("video"))
    assert sizes and all(w <= 360 and h <= 640 and h > w for w, h in sizes), sizes
    assert sizes == [(234, 416), (360, 640)], sizes
    assert all(w % 2 == 0 and h % 2 == 0 for w, h in sizes)


def test_odd_source_gives_even_rungs_within_it(odd_default):
    sizes = sorted((int(r.get("width")), int(r.get("height"))) for _, r, _ in odd_default.reps("video"))
    assert sizes and all(w <= 641 and h <= 361 and w % 2 == 0 and h % 2 == 0 for w, h in sizes), sizes
    assert sizes == [(416, 234), (640, 360)], sizes


@pytest.fixture(params=["h264_60fps", "hevc_two_languages", "silent_tiny", "portrait_default", "odd_default"])
def run(request):
    return request.getfixturevalue(request.param)


def test_every_segment_of_every_rung_starts_with_a_keyframe_at_the_same_time(run):
    starts = {}
    for _, rep, names in run.reps("video"):
        assert names and all(os.path.isfile(os.path.join(run.base, n)) for n in names)
        starts[rep.get("id")] = []
        for name in names:
            packets = run.packets(rep, [name], f"{name}.mp4")
            assert packets[0]["flags"].startswith("K"), (name, packets[0])
            starts[rep.get("id")].append(round(float(packets[0]["pts_time"]), 3))
            # keyframes only on the 2 s grid (no scene-cut IDRs)
            for p in packets:
                if "K" in p["flags"]:
                    t = float(p["pts_time"])
                    assert abs(t / 2 - round(t / 2)) < 1e-3, (name, t)
    first, *others = starts.values()
    assert all(o == first for o in others), starts
    assert first[0] == 0.0


def test_each_keyframe_begins_a_fragment(hevc_two_languages):
    """4 s segments, keyframes every 2 s: two moof boxes per full segment, so
    an I-frame playlist can address each keyframe by byte range."""
    from tests.workerd.media import top_level_boxes
    for _, rep, names in hevc_two_languages.reps("video"):
        for name in names:
            packets = hevc_two_languages.packets(rep, [name], f"f-{name}.mp4")
            keys = sum("K" in p["flags"] for p in packets)
            assert top_level_boxes(os.path.join(hevc_two_languages.base, name)).count("moof") \
                == keys == 2


def test_small_rungs_of_a_60fps_source_are_capped_at_30(h264_60fps):
    rates = {}
    for _, rep, names in h264_60fps.reps("video"):
        path = h264_60fps.joined(rep, names, f"all-{rep.get('id')}.mp4")
        (stream,) = ffprobe_json(path, "-show_streams", "-count_packets")["streams"]
        rates[(stream["width"], stream["height"])] = (stream["avg_frame_rate"],
                                                      int(stream["nb_read_packets"]))
    assert rates == {(320, 180): ("30/1", 120), (416, 234): ("30/1", 120),
                     (640, 360): ("60/1", 240)}


def test_audio_is_aac_lc_stereo_48k_with_its_language(run):
    audio = run.reps("audio")
    expected = {"h264_60fps": [None], "hevc_two_languages": ["eng", "fra"],
                "silent_tiny": []}
    langs = [a.get("lang") if a.get("lang") != "und" else None for a, _, _ in audio]
    kind = [k for k, v in expected.items() if v == langs]
    assert kind, langs
    for aset, rep, names in audio:
        path = run.joined(rep, names, f"a-{rep.get('id')}.mp4")
        (stream,) = ffprobe_json(path, "-show_streams")["streams"]
        assert (stream["codec_name"], stream["profile"], stream["channels"],
                stream["sample_rate"]) == ("aac", "LC", 2, "48000")
        assert (stream.get("tags") or {}).get("language", "und") == (aset.get("lang") or "und")


def test_no_audio_source_gives_a_video_only_ladder(silent_tiny):
    assert silent_tiny.reps("audio") == []
    assert sorted(f for f in os.listdir(silent_tiny.base) if f.startswith("init-")) == \
        ["init-0.m4s"]
    (_, rep, _), = silent_tiny.reps("video")
    assert (rep.get("width"), rep.get("height")) == ("320", "180")


def test_hevc_init_segments_carry_the_hvc1_tag(hevc_two_languages):
    for _, rep, _ in hevc_two_languages.reps("video"):
        init = os.path.join(hevc_two_languages.base, f"init-{rep.get('id')}.m4s")
        (stream,) = ffprobe_json(init, "-show_streams")["streams"]
        assert (stream["codec_name"], stream["codec_tag_string"]) == ("hevc", "hvc1")


# --- finish -----------------------------------------------------------------------------------

def by_role(result, role):
    return sorted(f.path for f in result.files if f.role == role)


def test_finish_lists_shared_segments_and_each_outputs_manifests(h264_60fps):
    results = h264_60fps.results
    assert set(results) == {"hls", "dash"}
    hls, dash = results["hls"], results["dash"]
    assert by_role(hls, MEDIA) == by_role(dash, MEDIA)
    expected_media = sorted(f"stream/{n}" for _, rep, names in h264_60fps.mpd
                            for n in [f"init-{rep.get('id')}.m4s", *names])
    assert by_role(dash, MEDIA) == expected_media
    assert by_role(dash, MANIFEST) == ["stream/manifest.mpd"]
    assert by_role(dash, PLAYLIST) == []
    assert by_role(hls, MANIFEST) == ["stream/master.m3u8"]
    assert by_role(hls, PLAYLIST) and all(p.endswith(".m3u8") for p in by_role(hls, PLAYLIST))
    assert not [f for f in hls.files if f.path.endswith(".mpd")]
    for result in (hls, dash):
        for f in result.files:
            assert f.local == os.path.join(h264_60fps.work, f.path)
            assert f.bytes == os.path.getsize(f.local) > 0
        assert {f.content_type for f in result.files if f.path.endswith(".m4s")} == \
            {"video/iso.segment"}


def test_finish_info_states_measured_figures(h264_60fps):
    info = h264_60fps.results["dash"].info
    assert info["manifest"] == "stream/manifest.mpd"
    assert h264_60fps.results["hls"].info["manifest"] == "stream/master.m3u8"
    assert info["segment_s"] == 2
    assert [(r["name"], r["width"], r["height"], r["fps"], r["bitrate_target"])
            for r in info["rungs"]] == [("180p", 320, 180, 30.0, 150_000),
                                        ("234p", 416, 234, 30.0, 250_000),
                                        ("360p", 640, 360, 60.0, 400_000)]
    for r in info["rungs"]:
        assert r["codec"].startswith("avc1.64")
        assert 0 < r["bitrate_average"] <= r["bitrate_peak"]
    (audio,) = info["audio"]
    assert (audio["language"], audio["codec"], audio["channels"]) == (None, "mp4a.40.2", 2)
    assert 0 < audio["bitrate_average"] <= audio["bitrate_peak"] * 1.2
    json.dumps(h264_60fps.results["hls"].info)


def test_finish_rewrites_the_mpd_bandwidth_with_the_measured_peaks(h264_60fps):
    path = os.path.join(h264_60fps.base, "manifest.mpd")
    peaks = {(r["width"], r["height"]): r["bitrate_peak"]
             for r in h264_60fps.results["dash"].info["rungs"]}
    for _, rep, _ in read_mpd(path):
        if rep.get("width"):
            assert int(rep.get("bandwidth")) == peaks[(int(rep.get("width")),
                                                      int(rep.get("height")))]
        else:
            assert int(rep.get("bandwidth")) == \
                h264_60fps.results["dash"].info["audio"][0]["bitrate_peak"]


def test_finish_hls_master_bandwidth_covers_video_and_audio_peaks(hevc_two_languages):
    result = hevc_two_languages.results
    assert set(result) == {"hls"}   # dash not asked: no MPD listed
    hls = result["hls"]
    assert not [f for f in hls.files if f.path.endswith(".mpd")]
    info = hls.info
    assert [a["language"] for a in info["audio"]] == ["eng", "fra"]
    for r in info["rungs"]:
        assert r["codec"].startswith("hvc1.1.6.L"), r["codec"]
    master = m3u8.load(os.path.join(hevc_two_languages.base, "master.m3u8"))
    audio_peak = max(a["bitrate_peak"] for a in info["audio"])
    variants = sorted(master.playlists, key=lambda p: p.stream_info.bandwidth)
    assert len(variants) == len(info["rungs"]) == 2
    for variant, rung in zip(variants, info["rungs"]):
        assert variant.stream_info.bandwidth >= rung["bitrate_peak"] + audio_peak
        assert variant.stream_info.resolution == (rung["width"], rung["height"])
        assert rung["codec"] in variant.stream_info.codecs
        assert os.path.join("stream", variant.uri) in [f.path for f in hls.files]


def test_finish_dash_only_renames_the_mpd_and_writes_no_playlist(silent_tiny):
    assert set(silent_tiny.results) == {"dash"}
    dash = silent_tiny.results["dash"]
    assert by_role(dash, MANIFEST) == ["stream/video.mpd"]
    assert not [f for f in dash.files if f.path.endswith(".m3u8")]
    assert not [f for f in os.listdir(silent_tiny.base) if f.endswith(".m3u8")]
    assert not os.path.exists(os.path.join(silent_tiny.base, "manifest.mpd"))
    assert dash.info["audio"] == []
    assert [(r["name"], r["width"], r["height"], r["bitrate_target"])
            for r in dash.info["rungs"]] == [("180p", 320, 180, 145_000)]


def test_set_init_language_writes_mdhd(hevc_two_languages, tmp_path):
    (_, rep, _), _ = hevc_two_languages.reps("audio")
    init = tmp_path / "init.m4s"
    init.write_bytes(open(os.path.join(hevc_two_languages.base, f"init-{rep.get('id')}.m4s"),
                          "rb").read())
    assert package.set_init_language(str(init), "deu") is True
    (stream,) = ffprobe_json(str(init), "-show_streams")["streams"]
    assert stream["tags"]["language"] == "deu"
    before = init.read_bytes()
    for bad in ("de", "DEU", "d3u", None):
        assert package.set_init_language(str(init), bad) is False
    assert init.read_bytes() == before


def test_finish_without_an_mpd_is_a_permanent_error(tmp_path):
    os.makedirs(tmp_path / "stream")
    with pytest.raises(PermanentJobError, match="no DASH manifest"):
        package.finish(both(), src(), [], str(tmp_path))
