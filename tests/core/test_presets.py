"""Server presets (nommer.core.outputs.presets): the built-in ones, the
operator's (PRESETS_DIR, PRESETS), validation at load, listing and expanding
with overrides."""

import json
import os

import pytest

from nommer.conf import Settings
from nommer.conf.loader import ConfigErrors
from nommer.core.errors import InvalidJobSpec, NommerError, NoSuchPreset
from nommer.core.outputs import presets
from nommer.core.outputs.presets import PresetError, expand, get_preset, list_presets, load_presets
from nommer.core.outputs.validate import validate_body

BUILT_IN = ["audio-aac", "audio-image-merge", "cmaf-h264", "crf-720", "hls-h264", "hls-hevc", "storyboard",
            "web-1280", "web-640", "web-mp4-720"]
LEGACY = ["crf-720", "web-1280", "web-640"]
CLIENT_PRESETS = os.path.join(os.path.dirname(presets.__file__), "..", "..", "client", "presets")
SRC, DEST = "s3://in/title.mov", "s3://out/title/"


@pytest.fixture(scope="module")
def settings():
    return Settings.from_overrides()


def submit(preset, **overrides):
    b = {"source_path": SRC, "dest_path": DEST, "preset": preset}
    if overrides:
        b["overrides"] = overrides
    return b


def write(path, obj):
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def test_built_in_presets_listed(settings):
    listed = list_presets(settings)
    assert [p["name"] for p in listed] == BUILT_IN
    for p in listed:
        assert p["description"] and isinstance(p["description"], str), p["name"]
        assert ("outputs" in p) != ("job_options" in p), p["name"]
        assert set(p) == {"name", "description", "requires", "outputs" if "outputs" in p else "job_options"}
    assert {p["name"] for p in listed if "job_options" in p} == set(LEGACY)


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_presets_are_the_clients(settings, name):
    """The three 2011 presets are the client's, unchanged."""
    with open(os.path.join(CLIENT_PRESETS, f"{name}.json")) as f:
        client = json.load(f)
    assert get_preset(name, settings)["job_options"] == {"nommer": client["nommer"], "options": client["options"]}


def test_audio_aac_is_declarative(settings):
    assert get_preset("audio-aac", settings)["outputs"] == [
        {"type": "audio", "name": "audio.m4a", "codec": "aac", "bitrate": "128k"}]


@pytest.mark.parametrize("name", [n for n in BUILT_IN if n != "audio-image-merge"])
def test_each_built_in_preset_expands_to_a_valid_body(settings, name):
    expanded = expand(submit(name), settings)
    validate_body(expanded)
    assert "preset" not in expanded and expanded["source_path"] == SRC and expanded["dest_path"] == DEST
    if name in LEGACY:
        assert expanded["job_options"] == get_preset(name, settings)["job_options"]
    else:
        for out in expanded["outputs"]:  # normalized: defaults spelled out
            assert "name" in out or "dir" in out


def test_cmaf_shares_one_set_of_segments(settings):
    hls, dash = expand(submit("cmaf-h264"), settings)["outputs"]
    assert (hls["type"], dash["type"]) == ("hls", "dash")
    for field in ("dir", "ladder", "codec", "segment_s", "encoder_preset", "audio_bitrate"):
        assert hls[field] == dash[field], field
    assert hls["codec"] == "h264" and hls["ladder"] == "default" and hls["segment_s"] == 6


def test_shipped_contents(settings):
    assert expand(submit("hls-hevc"), settings)["outputs"][0]["codec"] == "hevc"
    (mp4,) = expand(submit("web-mp4-720"), settings)["outputs"]
    assert (mp4["type"], mp4["height"], mp4["crf"]) == ("mp4", 720, 23)
    types = [o["type"] for o in expand(submit("storyboard"), settings)["outputs"]]
    assert "storyboard" in types and "poster" in types


def test_audio_image_merge_needs_image_path(settings):
    assert get_preset("audio-image-merge", settings)["requires"] == ["image_path"]
    with pytest.raises(InvalidJobSpec) as info:
        expand(submit("audio-image-merge"), settings)
    assert info.value.field == "overrides.image_path"
    assert ("preset audio-image-merge needs overrides.image_path (the URI of the still image)"
            in info.value.message)
    (mp4,) = expand(submit("audio-image-merge", image_path="s3://in/cover.jpg"), settings)["outputs"]
    assert mp4["type"] == "mp4" and mp4["image_path"] == "s3://in/cover.jpg"


def test_overrides_applied_to_outputs_that_take_them(settings):
    hls, dash = expand(submit("cmaf-h264", segment_s=4, encoder_preset="fast"), settings)["outputs"]
    assert hls["segment_s"] == dash["segment_s"] == 4
    assert hls["encoder_preset"] == dash["encoder_preset"] == "fast"
    outs = expand(submit("storyboard", width=640, columns=4), settings)["outputs"]
    by_type = {o["type"]: o for o in outs}
    assert by_type["poster"]["width"] == 640          # poster takes width
    assert by_type["storyboard"]["columns"] == 4      # storyboard takes columns
    assert "width" not in by_type["storyboard"]       # storyboard does not take width
    assert "columns" not in by_type["poster"]


def test_override_bitrate_replaces_crf(settings):
    (mp4,) = expand(submit("web-mp4-720", bitrate="2M"), settings)["outputs"]
    assert mp4["bitrate"] == "2M" and "crf" not in mp4
    (mp4,) = expand(submit("web-mp4-720", crf=28), settings)["outputs"]
    assert mp4["crf"] == 28 and "bitrate" not in mp4


@pytest.mark.parametrize("preset,overrides,field,words", [
    ("hls-h264", {"crf": 20}, "overrides.crf", ["no output of preset hls-h264 takes crf", "ladder, codec"]),
    ("hls-h264", {"type": "dash"}, "overrides.type", ["cannot be overridden"]),
    ("cmaf-h264", {"segment_s": 100}, "overrides.segment_s",
     ["maximum is 30", "preset cmaf-h264's outputs[0], an hls output"]),
    ("cmaf-h264", {"ladder": [{"height": 10, "bitrate": "1M"}]}, "overrides.ladder[0].height", ["minimum is 64"]),
    ("cmaf-h264", {"name": "x.m3u8"}, "overrides.name", ["outputs[1], a dash output", ".mpd"]),
    ("web-mp4-720", {"crf": 20, "bitrate": "1M"}, "overrides.bitrate", ["not both"]),
    ("audio-image-merge", {"image_path": 7}, "overrides.image_path", ["must be a string"]),
    ("crf-720", {"crf": 20}, "overrides", ["2011", "no overrides"]),
    ("storyboard", {"dir": "poster.jpg"}, "outputs[1]", ["preset storyboard with these overrides", "same place", "dir or name"]),
])
def test_overrides_refused(settings, preset, overrides, field, words):
    with pytest.raises(InvalidJobSpec) as info:
        expand(submit(preset, **overrides), settings)
    assert info.value.field == field, info.value.message
    for word in words:
        assert word in info.value.message, (word, info.value.message)


def test_unknown_preset(settings):
    with pytest.raises(NoSuchPreset) as info:
        get_preset("nope", settings)
    assert isinstance(info.value, NommerError) and info.value.name == "nope"
    assert "no preset named 'nope'" in info.value.message and "cmaf-h264, crf-720" in info.value.message
    with pytest.raises(InvalidJobSpec) as info:
        expand(submit("nope"), settings)
    assert info.value.field == "preset" and "hls-h264" in info.value.message


def test_get_preset_hands_out_copies(settings):
    got = get_preset("hls-h264", settings)
    got["outputs"].append({"type": "poster"})
    list_presets(settings)[0]["description"] = "changed"
    assert get_preset("hls-h264", settings)["outputs"] == [
        {"type": "hls", "ladder": "default", "codec": "h264", "segment_s": 6}]
    assert list_presets(settings)[0]["description"] != "changed"


def test_loaded_once_per_settings(settings, monkeypatch):
    load_presets(settings)
    calls = []
    monkeypatch.setattr(presets, "builtin_presets", lambda: calls.append(1) or {})
    load_presets(settings)
    assert calls == []
    assert "hls-h264" not in load_presets(Settings.from_overrides())  # a new settings object loads anew
    assert calls == [1]


# --- the operator's presets ----------------------------------------------------------------

FAST_HLS = {"description": "HLS, 4 s segments, fast", "outputs": [{"type": "hls", "segment_s": 4,
                                                                    "encoder_preset": "veryfast"}]}


def test_presets_dir_adds_and_replaces(tmp_path):
    write(tmp_path / "hls-h264.json", FAST_HLS)
    write(tmp_path / "my.audio.json", {"description": "opus", "outputs": [
        {"type": "audio", "name": "a.opus", "codec": "opus", "bitrate": "96k"}]})
    write(tmp_path / "README.txt", "not a preset")
    s = Settings.from_overrides(PRESETS_DIR=str(tmp_path))
    assert s.PRESETS_DIR == str(tmp_path)
    names = [p["name"] for p in list_presets(s)]
    assert "my.audio" in names and "cmaf-h264" in names and "README" not in names
    assert get_preset("hls-h264", s)["description"] == "HLS, 4 s segments, fast"
    (hls,) = expand(submit("hls-h264"), s)["outputs"]
    assert hls["segment_s"] == 4 and hls["encoder_preset"] == "veryfast"


def test_presets_setting_wins(tmp_path):
    write(tmp_path / "hls-h264.json", FAST_HLS)
    legacy = {"description": "copy", "nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
              "options": [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}]}
    s = Settings.from_overrides(PRESETS_DIR=str(tmp_path), PRESETS={
        "hls-h264": {"description": "from nomconf", "outputs": [{"type": "hls", "codec": "hevc"}]},
        "remux": legacy})
    assert get_preset("hls-h264", s)["description"] == "from nomconf"
    assert expand(submit("remux"), s)["job_options"] == {"nommer": legacy["nommer"], "options": legacy["options"]}


@pytest.mark.parametrize("filename,content,words", [
    ("bad.json", {"description": "x", "outputs": [{"type": "hls", "foo": 1}]},
     ["bad.json", "outputs[0]: unknown field 'foo'"]),
    ("gif.json", {"outputs": [{"type": "gif"}]}, ["gif.json", "unknown output type 'gif'"]),
    ("broken.json", "{not json", ["broken.json", "not valid JSON"]),
    ("Upper.json", FAST_HLS, ["Upper.json", "not a preset name"]),
    ("empty.json", {"description": "nothing"}, ["empty.json", "needs outputs"]),
    ("extra.json", dict(FAST_HLS, colour="red"), ["extra.json", "unknown field 'colour'"]),
    ("req.json", dict(FAST_HLS, requires=["image_path"]), ["req.json", "requires 'image_path'"]),
    ("clash.json", {"outputs": [{"type": "poster"}, {"type": "poster"}]}, ["clash.json", "same place"]),
])
def test_bad_preset_file_refused_at_load(tmp_path, filename, content, words):
    write(tmp_path / filename, content)
    with pytest.raises(ConfigErrors) as info:
        Settings.from_overrides(PRESETS_DIR=str(tmp_path))
    (error,) = info.value.errors
    assert error.startswith("PRESETS_DIR = ")
    for word in words:
        assert word in error, (word, error)
    path = str(tmp_path / filename)
    assert path in error


def test_every_bad_file_reported(tmp_path):
    write(tmp_path / "a.json", {"outputs": [{"type": "gif"}]})
    write(tmp_path / "b.json", "[]")
    with pytest.raises(ConfigErrors) as info:
        Settings.from_overrides(PRESETS_DIR=str(tmp_path), API_PORT=0)
    text = str(info.value)
    assert "a.json" in text and "b.json" in text and "API_PORT" in text
    assert len(info.value.errors) == 3


def test_presets_dir_must_exist(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        Settings.from_overrides(PRESETS_DIR=str(tmp_path / "missing"))
    assert "existing directory" in str(info.value)


def test_bad_presets_setting_refused_at_load():
    with pytest.raises(ConfigErrors) as info:
        Settings.from_overrides(PRESETS={"ok": FAST_HLS, "bad": {"outputs": [{"type": "mp4", "crf": 99}]},
                                         "Bad Name": FAST_HLS})
    errors = info.value.errors
    assert len(errors) == 2, errors
    assert any(e.startswith("PRESETS['bad']") and "outputs[0].crf: is 99; the maximum is 51" in e for e in errors)
    assert any("PRESETS['Bad Name'] (key)" in e and "preset name" in e for e in errors)


def test_legacy_preset_nommer_checked_with_settings(tmp_path):
    """A 2011 preset naming a nommer outside ALLOWED_NOMMERS, or options the nommer refuses,
    is a PresetError at load (feederd start), naming the preset and the problem."""
    write(tmp_path / "evil.json", {"description": "x", "nommer": "os.system", "options": [1]})
    write(tmp_path / "badopts.json", {"description": "x", "nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                                      "options": [{"outfile_options": [["i", "/etc/passwd"]]}]})
    s = Settings.from_overrides(PRESETS_DIR=str(tmp_path))  # the shape is fine: the settings load
    with pytest.raises(PresetError) as info:
        load_presets(s)
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert any(str(tmp_path / "evil.json") in p and "not an allowed nommer" in p for p in problems)
    assert any(str(tmp_path / "badopts.json") in p for p in problems)
    assert "2 problems with the presets" in str(info.value)
    with pytest.raises(PresetError):
        list_presets(s)
