"""The named presets: well formed, and each one really encodes with ffmpeg."""

import importlib.util
import json
import shutil
import struct
import subprocess
from importlib import resources

import pytest

from nommer.client import presets
from nommer.client.api import FFMPEG_NOMMER

REQUIRED = {"web-640", "web-1280", "audio-aac", "crf-720"}
#: ffmpeg 5.1 output option spellings the presets may use.
KNOWN_FLAGS = {"c:v", "c:a", "b:v", "b:a", "profile:v", "vf", "preset", "crf", "pass", "f",
               "an", "vn", "ar", "ac", "pix_fmt", "movflags", "maxrate", "bufsize", "g"}
BARE_FLAGS = {"an", "vn"}

WORKER_OPTIONS = importlib.util.find_spec("nommer.workerd.nommers.ffmpeg_options") is not None
needs_worker_options = pytest.mark.skipif(not WORKER_OPTIONS,
                                          reason="nommer.workerd.nommers.ffmpeg_options is absent")
has_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="ffmpeg/ffprobe not installed")


def opts(name):
    return dict(presets.get(name)["options"][-1]["outfile_options"])


def test_required_presets_exist():
    """The four documented presets are there, and names() is sorted."""
    assert REQUIRED <= set(presets.names())
    assert presets.names() == sorted(presets.names())


def test_unknown_preset_raises_KeyError_listing_the_names():
    """get() of an unknown name raises KeyError whose message lists the real names."""
    with pytest.raises(KeyError) as info:
        presets.get("web-9000")
    assert "web-640" in info.value.args[0] and "crf-720" in info.value.args[0]


def test_get_returns_a_fresh_copy():
    """Changing a returned preset does not change the next get()."""
    first = presets.get("web-640")
    first["options"].clear()
    assert len(presets.get("web-640")["options"]) == 2


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_preset_file_is_valid_json_in_the_original_format(name):
    """Each file parses, has a description, the FFmpeg nommer and 1-2 well-formed passes."""
    raw = json.loads(resources.files("nommer.client").joinpath(f"presets/{name}.json")
                     .read_text(encoding="utf-8"))
    assert raw["description"] and "\n" not in raw["description"]
    assert presets.describe(name) == raw["description"]
    job_options = presets.get(name)
    assert set(job_options) == {"nommer", "options"}
    assert job_options["nommer"] == FFMPEG_NOMMER
    passes = job_options["options"]
    assert 1 <= len(passes) <= 2
    for p in passes:
        assert set(p) <= {"infile_options", "outfile_options", "move_atom_to_front"}
        assert isinstance(p.get("move_atom_to_front", False), bool)
        for pairs in (p.get("infile_options", []), p["outfile_options"]):
            for pair in pairs:
                assert isinstance(pair, list) and len(pair) == 2
                flag, value = pair
                assert flag in KNOWN_FLAGS, flag
                assert not flag.startswith("-")
                assert (value is None) == (flag in BARE_FLAGS), pair
                assert value is None or isinstance(value, str)
        assert "f" in dict(p["outfile_options"]), "the output has no extension: -f is needed"


@pytest.mark.parametrize("name,width,bitrate", [("web-640", "640", "800k"),
                                                ("web-1280", "1280", "2500k")])
def test_web_presets_are_two_pass_with_matching_video_settings(name, width, bitrate):
    """Pass 1 is video only (-an, -pass 1); pass 2 adds AAC (-pass 2); the video flags agree."""
    first, second = (dict(p["outfile_options"]) for p in presets.get(name)["options"])
    assert first["pass"] == "1" and "an" in first and "c:a" not in first
    assert second["pass"] == "2" and second["c:a"] == "aac" and second["b:a"] == "128k"
    video = ("c:v", "preset", "profile:v", "b:v", "vf", "pix_fmt", "f")
    assert [first[k] for k in video] == [second[k] for k in video]
    assert second["c:v"] == "libx264" and second["profile:v"] in ("baseline", "main")
    assert second["b:v"] == bitrate and second["vf"] == f"scale={width}:-2"
    assert (second["pix_fmt"], second["movflags"], second["f"]) == ("yuv420p", "+faststart", "mp4")


def test_audio_and_crf_presets_are_single_pass():
    """audio-aac drops video for AAC 128k/48k/stereo in m4a; crf-720 is libx264 CRF 23 medium."""
    audio = opts("audio-aac")
    assert len(presets.get("audio-aac")["options"]) == 1
    assert "vn" in audio and (audio["c:a"], audio["b:a"], audio["ar"], audio["ac"]) == (
        "aac", "128k", "48000", "2")
    crf = opts("crf-720")
    assert len(presets.get("crf-720")["options"]) == 1
    assert (crf["c:v"], crf["crf"], crf["preset"], crf["c:a"], crf["f"]) == (
        "libx264", "23", "medium", "aac", "mp4")
    assert "720" in crf["vf"] and "pass" not in crf


@needs_worker_options
@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_presets_pass_the_workers_option_validation(name):
    """The worker's own allow-list accepts every preset, even with an extension-less dest."""
    from nommer.workerd.nommers.ffmpeg_options import validate_passes
    passes = validate_passes(presets.get(name)["options"], dest_path="file:///srv/out")
    assert len(passes) == len(presets.get(name)["options"])


# --- real encodes ------------------------------------------------------------


def _pass_argv(pass_obj, input_path, output_path, scratch):
    """One pass's ffmpeg argv: the worker's own builder when it exists, else the 2011 rule
    (``-flag value`` pairs around ``-i``; a None value is a bare flag)."""
    if WORKER_OPTIONS:
        from nommer.workerd.nommers import ffmpeg_argv, ffmpeg_options
        [normalized] = ffmpeg_options.validate_passes([pass_obj])
        return ffmpeg_argv.build_argv(normalized, ffmpeg_bin="ffmpeg", input_path=input_path,
                                         output_path=output_path,
                                         passlogfile=str(scratch / "passlog"))

    def flat(pairs):
        return [tok for flag, value in pairs
                for tok in (["-" + flag] if value is None else ["-" + flag, str(value)])]
    return ["ffmpeg", "-nostdin", "-y", *flat(pass_obj.get("infile_options", [])),
            "-i", input_path, *flat(pass_obj["outfile_options"]), output_path]


def _top_level_atoms(path):
    atoms = []
    with open(path, "rb") as f:
        while header := f.read(8):
            size, kind = struct.unpack(">I4s", header)
            atoms.append(kind.decode("latin-1"))
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            f.seek(size - 8, 1)
    return atoms


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 1 s 320x240 H.264 + AAC clip from lavfi."""
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=44100",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True, capture_output=True)
    return path


@has_ffmpeg
@pytest.mark.parametrize("name,expect", [
    ("web-640", {"video": ("h264", 640, 480), "audio": ("aac", "48000", 2)}),
    ("web-1280", {"video": ("h264", 1280, 960), "audio": ("aac", "48000", 2)}),
    ("crf-720", {"video": ("h264", 320, 240), "audio": ("aac", "48000", 2)}),  # never upscaled
    ("audio-aac", {"audio": ("aac", "48000", 2)}),
])
def test_preset_encodes_a_real_clip(name, expect, clip, tmp_path):
    """Run every pass as the worker does (pass 1 to /dev/null, in a scratch dir), probe the output."""
    passes = presets.get(name)["options"]
    out = tmp_path / "out"  # no extension, like the worker's temp file
    for i, p in enumerate(passes):
        target = "/dev/null" if len(passes) > 1 and i == 0 else str(out)
        argv = _pass_argv(p, str(clip), target, tmp_path)
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, f"pass {i + 1}: {result.stderr[-1000:]}"
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_entries",
         "stream=codec_type,codec_name,width,height,sample_rate,channels", str(out)],
        check=True, capture_output=True, text=True).stdout)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert set(streams) == set(expect)
    if "video" in expect:
        v = streams["video"]
        assert (v["codec_name"], v["width"], v["height"]) == expect["video"]
    a = streams["audio"]
    assert (a["codec_name"], a["sample_rate"], a["channels"]) == expect["audio"]
    atoms = _top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat"), "fast start: moov before mdat"
