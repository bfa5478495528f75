"""nommer.workerd.outputs.audio: AAC, Opus and MP3 files made by real ffmpeg
from tiny sources, probed afterwards."""

import array
import os
import subprocess
import sys

import pytest

from nommer.core.errors import PermanentJobError
from nommer.workerd.outputs import audio
from nommer.workerd.outputs.step import MEDIA
from tests.workerd.outputs import media
from tests.workerd.media import top_level_boxes
from tests.workerd.outputs.media import probe_json


def spec(**fields):
    """A normalized audio spec: the schema's defaults, then ``fields``."""
    s = {"type": "audio", "name": "audio.m4a", "codec": "aac", "bitrate": "128k",
         "channels": 2, "sample_rate": 48000, "track": 0}
    s.update(fields)
    return s


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("audio-sources"))
    paths = {"stereo": media.landscape(d, width=320, height=180),
             "surround": media.surround(d, width=320, height=180, duration_s=2),
             "two": media.two_languages(d, width=320, height=180, duration_s=2),
             "silent": media.no_audio(d, width=320, height=180, duration_s=1),
             "audio_only": media.audio_only(d)}
    return {k: (p, media.probe(p)) for k, p in paths.items()}


def run(s, source_key, sources, work_dir):
    """plan, run every step's argv with ffmpeg, finish: ``(steps, OutputResult)``."""
    path, info = sources[source_key]
    _, steps, result = media.build(audio, s, path, work_dir, source=info)
    return steps, result


def tone_hz(path, channel):
    """Frequency (Hz) of the sine on ``channel`` of ``path``, by counting zero
    crossings over its middle second."""
    pcm = media.ffmpeg("-i", path, "-af", f"pan=mono|c0=c{channel},atrim=0.5:1.5",
                       "-ar", "48000", "-f", "f32le", "-", timeout=60).stdout
    samples = array.array("f", pcm)
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / 48000)


CASES = [
    # codec, name, sample_rate asked, format_name from ffprobe
    ("aac", "audio.m4a", 48000, "mov,mp4,m4a,3gp,3g2,mj2"),
    ("aac", "music/audio.mp4", 44100, "mov,mp4,m4a,3gp,3g2,mj2"),
    ("aac", "audio.aac", 48000, "aac"),
    ("opus", "audio.opus", 48000, "ogg"),
    ("opus", "audio.ogg", 48000, "ogg"),
    ("opus", "audio.webm", 48000, "matroska,webm"),
    ("mp3", "audio.mp3", 44100, "mp3"),
    ("mp3", "audio.mp3", 48000, "mp3"),
]


@pytest.mark.parametrize("codec,name,rate,format_name", CASES)
def test_each_codec_and_container(codec, name, rate, format_name, sources, tmp_path):
    """Each codec in each container it allows: the probed codec, channels,
    sample rate and duration are what was asked, and finish describes the file."""
    s = spec(codec=codec, name=name, sample_rate=rate, bitrate="96k")
    steps, result = run(s, "stereo", sources, tmp_path)
    assert len(steps) == 1 and steps[0].expected_s == pytest.approx(3.0, abs=0.1)
    [f] = result.files
    assert f.path == name and f.role == MEDIA
    assert f.local == os.path.join(str(tmp_path), *name.split("/"))
    assert f.bytes == os.path.getsize(f.local) > 1000
    assert f.content_type == {"m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac",
                              "opus": "audio/ogg", "ogg": "audio/ogg", "webm": "audio/webm",
                              "mp3": "audio/mpeg"}[name.rsplit(".", 1)[1]]
    probed = probe_json(f.local)
    assert probed["format"]["format_name"] == format_name
    [stream] = probed["streams"]
    assert stream["codec_type"] == "audio"
    assert stream["codec_name"] == codec
    assert stream["channels"] == 2
    assert int(stream["sample_rate"]) == rate
    duration = float(probed["format"]["duration"])
    assert duration == pytest.approx(3.0, abs=0.1)
    measured = f.bytes * 8 / duration
    info = result.info
    assert info["codec"] == codec and info["channels"] == 2 and info["sample_rate"] == rate
    assert info["duration_s"] == pytest.approx(3.0, abs=0.05)
    assert info["bitrate_average"] == pytest.approx(measured, rel=0.05)
    # the encoder was given 96 kb/s: the file is near it (a sine is easy, so VBR may go lower)
    assert 40000 < info["bitrate_average"] < 130000
    assert "note" not in info
    if name.endswith((".m4a", ".mp4")):
        boxes = top_level_boxes(f.local)
        assert boxes.index("moov") < boxes.index("mdat"), boxes  # fast start
    if name.endswith(".m4a"):
        assert probed["format"]["tags"]["major_brand"].strip() == "M4A"


def test_opus_is_always_48000(sources, tmp_path):
    """libopus has no 44100: an Opus output asked at 44100 Hz is 48000 Hz, and says so."""
    s = spec(codec="opus", name="audio.opus", sample_rate=44100)
    _, result = run(s, "stereo", sources, tmp_path)
    assert "-ar" in audio.plan(s, sources["stereo"][1], ffmpeg_bin="ffmpeg", input_path="/x",
                               work_dir="/w")[0].argv
    [stream] = probe_json(result.files[0].local)["streams"]
    assert int(stream["sample_rate"]) == 48000
    assert result.info["sample_rate"] == 48000
    assert "48000" in result.info["note"] and "44100" in result.info["note"]


@pytest.mark.parametrize("channels", [2, 1])
def test_surround_source_downmixed(channels, sources, tmp_path):
    """A 5.1 (6-channel) source gives the asked 2 (or 1) channels."""
    s = spec(codec="aac", name="audio.m4a", channels=channels)
    _, result = run(s, "surround", sources, tmp_path)
    [stream] = probe_json(result.files[0].local)["streams"]
    assert sources["surround"][1].audio[0].channels == 6
    assert stream["channels"] == channels
    assert result.info["channels"] == channels


@pytest.mark.parametrize("track,hz,language", [(0, 440, "eng"), (1, 550, "fra")])
def test_track_picks_the_right_stream(track, hz, language, sources, tmp_path):
    """Track 1 of a two-track source is the second track: its tone (550 Hz on
    the left channel, against 440 Hz for track 0) and its language tag."""
    s = spec(codec="aac", name="audio.m4a", track=track)
    steps, result = run(s, "two", sources, tmp_path)
    assert f"0:a:{track}" in steps[0].argv
    local = result.files[0].local
    assert tone_hz(local, 0) == pytest.approx(hz, abs=8)
    assert tone_hz(local, 1) == pytest.approx(hz + 55, abs=8)
    [stream] = probe_json(local)["streams"]
    assert stream["tags"]["language"] == language


def test_audio_only_source(sources, tmp_path):
    """A source with no video at all gives the audio file too."""
    _, result = run(spec(codec="mp3", name="a.mp3", bitrate="64k"), "audio_only", sources, tmp_path)
    [stream] = probe_json(result.files[0].local)["streams"]
    assert stream["codec_name"] == "mp3"
    assert result.info["bitrate_average"] == pytest.approx(64000, rel=0.15)


def test_no_audio_stream_refused(sources):
    path, info = sources["silent"]
    with pytest.raises(PermanentJobError) as e:
        audio.plan(spec(), info, ffmpeg_bin="ffmpeg", input_path=path, work_dir="/w")
    assert e.value.message == "the source has no audio stream: an audio output needs one"


def test_missing_track_refused(sources):
    with pytest.raises(PermanentJobError) as e:
        audio.plan(spec(track=2), sources["stereo"][1], ffmpeg_bin="ffmpeg",
                   input_path="/x", work_dir="/w")
    assert e.value.message == "the source has 1 audio track; track 2 does not exist"
    with pytest.raises(PermanentJobError) as e:
        audio.plan(spec(track=2), sources["two"][1], ffmpeg_bin="ffmpeg",
                   input_path="/x", work_dir="/w")
    assert e.value.message == "the source has 2 audio tracks; track 2 does not exist"


@pytest.mark.parametrize("codec,name", [("aac", "a.mp3"), ("aac", "a.opus"), ("opus", "a.m4a"),
                                        ("opus", "a.mp3"), ("mp3", "a.ogg"), ("mp3", "a.m4a"),
                                        ("mp3", "a.webm")])
def test_check_spec_refuses_mismatched_extension(codec, name, sources):
    with pytest.raises(ValueError) as e:
        audio.check_spec(spec(codec=codec, name=name))
    text = str(e.value)
    assert name in text and codec in text
    # the worker refuses it too, as a permanent error
    with pytest.raises(PermanentJobError):
        audio.plan(spec(codec=codec, name=name), sources["stereo"][1], ffmpeg_bin="ffmpeg",
                   input_path="/x", work_dir="/w")


@pytest.mark.parametrize("codec,names", [("aac", ["a.m4a", "a.mp4", "a.aac", "d/A.m4a"]),
                                         ("opus", ["a.opus", "a.ogg", "a.webm"]),
                                         ("mp3", ["a.mp3"])])
def test_check_spec_accepts_suitable_extensions(codec, names):
    for name in names:
        assert audio.check_spec(spec(codec=codec, name=name)) is None


def test_check_spec_bitrate_limits():
    with pytest.raises(ValueError, match="at most 512k"):
        audio.check_spec(spec(codec="opus", name="a.opus", bitrate="600k"))
    with pytest.raises(ValueError, match="at most 320k"):
        audio.check_spec(spec(codec="mp3", name="a.mp3", bitrate=400000))
    audio.check_spec(spec(codec="mp3", name="a.mp3", bitrate="320k"))
    audio.check_spec(spec(codec="aac", name="a.m4a", bitrate="512k"))


def test_check_spec_defaults():
    """Fields a partial spec lacks take the schema's defaults (aac, audio.m4a)."""
    audio.check_spec({"type": "audio"})
    with pytest.raises(ValueError):
        audio.check_spec({"type": "audio", "name": "x.mp3"})


def test_importable_without_twisted():
    """feederd's validator imports check_spec: importing the module installs
    no reactor (nor anything else of Twisted's that has side effects)."""
    code = ("import sys, nommer.workerd.outputs.audio as a; "
            "a.check_spec({'codec': 'mp3', 'name': 'x.mp3'}); "
            "print(sorted(m for m in sys.modules if m == 'twisted.internet.reactor'))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    assert out.stdout.strip() == "[]"
