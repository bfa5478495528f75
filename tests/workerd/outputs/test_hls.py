"""hls: the playlists written over ffmpeg's CMAF segments, parsed with m3u8,
checked against sums made here from the files, and read by ffmpeg's HLS
demuxer."""

import math
import os
import shutil

import attr
import m3u8
import pytest

from nommer.workerd.outputs import hls, mpd
from nommer.workerd.outputs.measure import Measured, measure
from nommer.workerd.outputs.step import MANIFEST, PLAYLIST
from tests.workerd.outputs.cmaf_ladders import concatenated, ladder
from tests.workerd.outputs.media import ffprobe_json


@attr.s(auto_attribs=True)
class Written:
    directory: str
    reps: list
    measured: dict
    files: list

    def load(self, name):
        return m3u8.load(os.path.join(self.directory, name))

    def text(self, name):
        with open(os.path.join(self.directory, name)) as f:
            return f.read()

    def rep(self, rep_id):
        (rep,) = [r for r in self.reps if r.rep_id == rep_id]
        return rep


def _write(tmp_path_factory, kind, **kw):
    directory = str(tmp_path_factory.mktemp("hls") / kind)
    shutil.copytree(ladder(tmp_path_factory, kind), directory)
    reps = mpd.read_timeline(os.path.join(directory, "manifest.mpd"))
    measured = {r.rep_id: measure(r, directory) for r in reps}
    return Written(directory, reps, measured, hls.write_hls(directory, reps, measured, **kw))


def written(kind, **kw):
    """A module-scoped fixture: ``Written`` of write_hls(``kw``) over a copy of
    the ladder ``kind``."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        return _write(tmp_path_factory, kind, **kw)
    return fixture


stereo = written("stereo")
languages = written("languages")
silent = written("silent", master_name="index.m3u8")
hevc = written("hevc")


def _sizes(directory, names):
    return [os.path.getsize(os.path.join(directory, n)) for n in names]


def _peak_and_average(directory, rep):
    """Independent figures: bits/s from the file sizes (peak over segments >= 0.5 s)."""
    sizes = _sizes(directory, [s.name for s in rep.segments])
    peak = max(b * 8 / s.duration_s for b, s in zip(sizes, rep.segments) if s.duration_s >= 0.5)
    return peak, sum(sizes) * 8 / rep.duration_s


def _stream_inf_line(text, uri):
    lines = text.splitlines()
    return lines[lines.index(uri) - 1]


def _rep_of(w, uri):
    """The representation whose init the playlist ``uri`` maps."""
    init = w.load(uri).segments[0].init_section.uri
    (rep,) = [r for r in w.reps if r.init == init]
    return rep


def test_files_and_roles(stereo, silent):
    assert stereo.files == [("audio_1.m3u8", PLAYLIST), ("video_360p.m3u8", PLAYLIST),
                            ("video_360p_iframes.m3u8", PLAYLIST), ("video_234p.m3u8", PLAYLIST),
                            ("video_234p_iframes.m3u8", PLAYLIST), ("master.m3u8", MANIFEST)]
    assert silent.files[-1] == ("index.m3u8", MANIFEST)
    for w in (stereo, silent):
        for name, _ in w.files:
            assert os.path.isfile(os.path.join(w.directory, name))
        assert not [n for n in os.listdir(w.directory) if n.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["stereo", "languages", "silent", "hevc"])
def test_media_playlists_follow_the_mpd_timeline(kind, request):
    w = request.getfixturevalue(kind)
    media = [n for n, role in w.files if role == PLAYLIST and not n.endswith("_iframes.m3u8")]
    assert len(media) == len(w.reps)
    for name in media:
        playlist, rep = w.load(name), _rep_of(w, name)
        assert playlist.version == 7
        assert playlist.playlist_type == "vod" and playlist.is_endlist
        assert playlist.is_independent_segments and not playlist.is_i_frames_only
        assert playlist.target_duration == math.ceil(max(s.duration_s for s in rep.segments))
        assert [s.uri for s in playlist.segments] == [s.name for s in rep.segments]
        assert {s.init_section.uri for s in playlist.segments} == {rep.init}
        for ours, theirs in zip(playlist.segments, rep.segments):
            assert ours.duration == pytest.approx(theirs.duration_s, abs=1e-6)
        assert sum(s.duration for s in playlist.segments) == pytest.approx(rep.duration_s,
                                                                          abs=0.001)
        for line in w.text(name).splitlines():
            if line.startswith("#EXTINF:"):
                assert len(line.split(":")[1].rstrip(",").split(".")[1]) >= 3
        assert (rep.content_type == "video") == name.startswith("video_")


def test_master_states_measured_bandwidths_codecs_resolution_frame_rate(stereo, tmp_path):
    master = stereo.load("master.m3u8")
    text = stereo.text("master.m3u8")
    assert master.version == 7 and master.is_independent_segments
    (audio,) = [r for r in stereo.reps if r.content_type == "audio"]
    audio_peak, audio_average = _peak_and_average(stereo.directory, audio)
    bandwidths = [p.stream_info.bandwidth for p in master.playlists]
    assert bandwidths == sorted(bandwidths) and len(bandwidths) == 2
    for playlist in master.playlists:
        rep = _rep_of(stereo, playlist.uri)
        info = playlist.stream_info
        peak, average = _peak_and_average(stereo.directory, rep)
        assert info.bandwidth >= peak + audio_peak
        assert info.bandwidth < peak + audio_peak + 2  # measured, not padded
        assert info.average_bandwidth >= average + audio_average
        assert info.average_bandwidth < average + audio_average + 2
        assert info.codecs == f"{rep.codecs},mp4a.40.2"
        first = concatenated(stereo.directory, rep.init, [rep.segments[0].name],
                             str(tmp_path / f"{rep.rep_id}.mp4"))
        (stream,) = ffprobe_json(first, "-show_streams")["streams"]
        assert info.resolution == (stream["width"], stream["height"])
        assert info.frame_rate == 30.0
        assert ",FRAME-RATE=30.000," in _stream_inf_line(text, playlist.uri)
        assert info.audio == "audio"
    (media,) = master.media
    assert (media.type, media.group_id, media.name, media.default, media.autoselect,
            media.channels, media.language) == ("AUDIO", "audio", "audio 1", "YES", "YES",
                                                "2", None)
    assert media.uri == "audio_1.m3u8" and _rep_of(stereo, media.uri) is audio


def test_ffmpeg_reads_the_master_and_every_sample_of_every_playlist(stereo):
    streams = ffprobe_json(os.path.join(stereo.directory, "master.m3u8"),
                           "-show_streams")["streams"]
    assert sorted(s["codec_type"] for s in streams) == ["audio", "video", "video"]
    assert sorted(int(s["tags"]["variant_bitrate"]) for s in streams if s["codec_type"] == "video") \
        == sorted(p.stream_info.bandwidth for p in stereo.load("master.m3u8").playlists)
    for name, expected in (("video_360p.m3u8", 150), ("video_234p.m3u8", 150)):
        (stream,) = ffprobe_json(os.path.join(stereo.directory, name), "-count_packets",
                                 "-show_entries", "stream=nb_read_packets")["streams"]
        assert int(stream["nb_read_packets"]) == expected  # 5 s at 30 fps


def _iframe_entries(w, playlist):
    """(segment uri, offset, length, EXTINF) of each entry."""
    out = []
    for s in playlist.segments:
        length, _, offset = s.byterange.partition("@")
        out.append((s.uri, int(offset), int(length), s.duration))
    return out


@pytest.mark.parametrize("kind", ["stereo", "hevc", "languages"])
def test_iframe_playlists_point_at_each_keyframe(kind, request, tmp_path):
    w = request.getfixturevalue(kind)
    master = w.load("master.m3u8")
    videos = [r for r in w.reps if r.content_type == "video"]
    assert len(master.iframe_playlists) == len(videos)
    for iframe in master.iframe_playlists:
        playlist = w.load(iframe.uri)
        rep = _rep_of(w, iframe.uri)
        assert playlist.is_i_frames_only and playlist.version == 7 and playlist.is_endlist
        entries = _iframe_entries(w, playlist)
        # Keyframes every 2 s: one entry per 2 s of the track.
        assert len(entries) == math.ceil(rep.duration_s / 2)
        assert sum(e[3] for e in entries) == pytest.approx(rep.duration_s, abs=0.001)
        with open(os.path.join(w.directory, rep.init), "rb") as f:
            init = f.read()
        at = 0.0
        for i, (uri, offset, length, extinf) in enumerate(entries):
            assert uri in {s.name for s in rep.segments}
            with open(os.path.join(w.directory, uri), "rb") as f:
                f.seek(offset)
                piece = f.read(length)
            assert piece[4:8] == b"moof" and len(piece) == length
            path = tmp_path / f"{rep.rep_id}-{i}.mp4"
            path.write_bytes(init + piece)
            packets = ffprobe_json(str(path), "-show_entries", "packet=pts_time,flags")["packets"]
            assert len(packets) == 1 and packets[0]["flags"].startswith("K")
            assert float(packets[0]["pts_time"]) == pytest.approx(at, abs=0.001)
            at += extinf
        # Stream info: measured over the byte ranges, with the rung's codecs and size.
        peak = max(n * 8 / d for _, _, n, d in entries if d >= 0.5)
        info = iframe.iframe_stream_info
        assert peak <= info.bandwidth < peak + 1
        assert info.codecs == rep.codecs
        assert info.resolution == (rep.width, rep.height)


def test_two_languages_are_two_renditions_with_their_language(languages):
    master = languages.load("master.m3u8")
    assert [(m.type, m.group_id, m.language, m.name, m.default, m.autoselect, m.uri)
            for m in master.media] == [
        ("AUDIO", "audio", "en", "English", "YES", "YES", "audio_eng.m3u8"),
        ("AUDIO", "audio", "fr", "French", "NO", "YES", "audio_fra.m3u8")]
    for m in master.media:
        assert _rep_of(languages, m.uri).lang == {"en": "eng", "fr": "fra"}[m.language]
    (variant,) = master.playlists
    video = [r for r in languages.reps if r.content_type == "video"][0]
    audio_peaks = [_peak_and_average(languages.directory, r)[0]
                   for r in languages.reps if r.content_type == "audio"]
    # The rendition group's largest audio peak is in BANDWIDTH.
    assert variant.stream_info.bandwidth >= (_peak_and_average(languages.directory, video)[0]
                                             + max(audio_peaks))
    assert variant.stream_info.codecs == f"{video.codecs},mp4a.40.2"


def test_a_video_only_ladder_has_no_audio_group(silent):
    master = silent.load("index.m3u8")
    text = silent.text("index.m3u8")
    assert not master.media
    (variant,) = master.playlists
    (video,) = silent.reps
    assert variant.stream_info.codecs == video.codecs and "," not in video.codecs
    assert variant.stream_info.audio is None and "AUDIO=" not in text
    peak, average = _peak_and_average(silent.directory, video)
    assert variant.stream_info.bandwidth >= peak
    assert variant.stream_info.average_bandwidth >= average
    assert variant.uri == "video_360p.m3u8"
    streams = ffprobe_json(os.path.join(silent.directory, "index.m3u8"), "-show_streams")
    assert [s["codec_type"] for s in streams["streams"]] == ["video"]


def test_hevc_codecs_are_complete_in_the_master(hevc):
    (variant,) = hevc.load("master.m3u8").playlists
    video_codecs, audio_codecs = variant.stream_info.codecs.split(",")
    assert video_codecs.startswith("hvc1.1.") and video_codecs.count(".") >= 3
    assert audio_codecs == "mp4a.40.2"


# --- without media files: names, audio-only, errors -----------------------------------

def _rep(rep_id, kind, *, height=None, lang=None, channels=2):
    segments = (mpd.Segment(f"c-{rep_id}-1.m4s", 1, 0.0, 4.0),
                mpd.Segment(f"c-{rep_id}-2.m4s", 2, 4.0, 2.5))
    if kind == "video":
        return mpd.Representation(rep_id=rep_id, content_type="video", codecs="avc1.64001f",
                                  width=height * 16 // 9, height=height, frame_rate="30000/1001",
                                  timescale=90000, init=f"init-{rep_id}.m4s", segments=segments)
    return mpd.Representation(rep_id=rep_id, content_type="audio", codecs="mp4a.40.2",
                              lang=lang, channels=channels, sample_rate=48000,
                              timescale=48000, init=f"init-{rep_id}.m4s", segments=segments)


def _measured(peak, average):
    return Measured(peak_bps=peak, average_bps=average, total_bytes=1, duration_s=6.5)


def test_rungs_of_the_same_height_are_named_by_their_bitrate(tmp_path):
    reps = [_rep("0", "video", height=720), _rep("1", "video", height=720),
            _rep("2", "video", height=360), _rep("3", "audio", lang="eng"),
            _rep("4", "audio", lang="eng", channels=6)]
    measured = {"0": _measured(4_800_000, 4_500_000), "1": _measured(3_200_000, 3_000_000),
                "2": _measured(800_000, 700_000), "3": _measured(130_000, 128_000),
                "4": _measured(400_000, 384_000)}
    files = hls.write_hls(str(tmp_path), reps, measured, iframes=False)
    assert [n for n, _ in files] == ["audio_eng_1.m3u8", "audio_eng_2.m3u8",
                                     "video_720p_4500k.m3u8", "video_720p_3000k.m3u8",
                                     "video_360p.m3u8", "master.m3u8"]
    master = m3u8.load(str(tmp_path / "master.m3u8"))
    assert [p.uri for p in master.playlists] == ["video_360p.m3u8", "video_720p_3000k.m3u8",
                                                 "video_720p_4500k.m3u8"]
    assert [p.stream_info.bandwidth for p in master.playlists] == [1_200_000, 3_600_000,
                                                                   5_200_000]
    assert [p.stream_info.average_bandwidth for p in master.playlists] == [1_084_000,
                                                                           3_384_000,
                                                                           4_884_000]
    # Names differ within the group; the 5.1 rendition says 6 channels.
    assert [(m.name, m.channels, m.default) for m in master.media] == [
        ("English", "2", "YES"), ("English 2", "6", "NO")]
    assert "FRAME-RATE=29.970" in (tmp_path / "master.m3u8").read_text()
    assert not master.iframe_playlists


def test_audio_only_renditions_become_audio_variants(tmp_path):
    reps = [_rep("0", "audio", lang="de"), _rep("1", "audio")]
    measured = {"0": _measured(130_000, 128_000), "1": _measured(70_000, 64_000)}
    files = hls.write_hls(str(tmp_path), reps, measured)
    assert files[-1] == ("master.m3u8", MANIFEST)
    master = m3u8.load(str(tmp_path / "master.m3u8"))
    assert not master.media
    assert [(p.uri, p.stream_info.bandwidth, p.stream_info.codecs) for p in master.playlists] \
        == [("audio_2.m3u8", 70_000, "mp4a.40.2"), ("audio_de.m3u8", 130_000, "mp4a.40.2")]


def test_missing_measurements_and_empty_ladders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no representation"):
        hls.write_hls(str(tmp_path), [], {})
    with pytest.raises(ValueError, match=r"\['0'\]"):
        hls.write_hls(str(tmp_path), [_rep("0", "video", height=360)], {})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("code, tag, name", [
    ("eng", "en", "English"), ("fre", "fr", "French"), ("ger", "de", "German"),
    ("en-US", "en-US", "English"), ("mul", "mul", "Multiple languages"), ("zzz", "zzz", None)])
def test_language_tags_and_names(code, tag, name):
    assert hls._language(code) == (tag, name)
