"""Submit-time validation of job bodies against the JSON Schema
(nommer.core.outputs.validate) and normalization (nommer.core.outputs.normalize):
each error names its field and says what is wrong in words; the rules beyond
the schema; defaults spelled out."""

import copy

import pytest

from nommer.core.errors import InvalidJobSpec
from nommer.core.outputs.normalize import defaults_of, normalize_output
from nommer.core.outputs.schema import OUTPUT_SCHEMAS, OUTPUT_TYPES
from nommer.core.outputs.validate import validate_body, validate_outputs
from tests.core.outputs_examples import ISSUE_OUTPUTS

SRC, DEST = "s3://in/title.mov", "s3://out/title/"


def body(**fields):
    b = {"source_path": SRC, "dest_path": DEST}
    b.update(fields)
    return b


def error_of(call, *args):
    with pytest.raises(InvalidJobSpec) as info:
        call(*args)
    return info.value


def test_issue_example_is_valid():
    """The issue's example body (every output type) passes, with and without notify_url."""
    validate_body(body(outputs=ISSUE_OUTPUTS, notify_url="https://app.example/hook"))
    validate_body(body(outputs=ISSUE_OUTPUTS, notify_url=None))
    assert [o["type"] for o in validate_outputs(ISSUE_OUTPUTS)] == OUTPUT_TYPES[:7]


def test_2011_body_is_valid():
    validate_body(body(job_options={"nommer": "x.Y", "options": [{"outfile_options": []}]}))


# (body, field, words in the message)
CASES = [
    ("not-an-object", ["outputs"], None, ["JSON object"]),
    ("unknown-output-type", body(outputs=[{"type": "gif"}]), "outputs[0].type",
     ["unknown output type 'gif'", "types: hls, dash, mp4, poster, thumbnails, storyboard, audio"]),
    ("unknown-field-in-output-8", body(outputs=[{"type": "poster", "name": f"p{i}.jpg"} for i in range(7)]
                                       + [{"type": "hls", "foo": 1}]),
     "outputs[7]", ["unknown field 'foo'", "an hls output takes: ladder, codec, segment_s"]),
    ("unknown-fields-in-mp4", body(outputs=[{"type": "mp4", "foo": 1, "bar": 2}]), "outputs[0]",
     ["unknown fields 'foo', 'bar'", "an mp4 output takes: name"]),
    ("unknown-field-in-rung", body(outputs=[{"type": "hls", "ladder": [{"height": 360, "bitrate": "1M",
                                                                        "qp": 3}]}]),
     "outputs[0].ladder[0]", ["unknown field 'qp'", "height, width, bitrate, fps_max"]),
    ("unknown-top-level-field", body(outputs=[{"type": "hls"}], callback="x"), None,
     ["unknown field 'callback'", "a job body takes: source_path, dest_path"]),
    ("no-form", body(), None, ["required", "give exactly one of job_options (the 2011 form), outputs, or preset"]),
    ("two-forms", body(outputs=[{"type": "hls"}], preset="hls-h264"), None,
     ["give exactly one of job_options (the 2011 form), outputs, or preset", "outputs and preset"]),
    ("three-forms", body(outputs=[{"type": "hls"}], preset="hls-h264",
                         job_options={"nommer": "a.B", "options": 1}), None,
     ["job_options, outputs and preset"]),
    ("overrides-without-preset", body(outputs=[{"type": "hls"}], overrides={"crf": 1}), "overrides",
     ["preset"]),
    ("type-missing", body(outputs=[{"name": "x.mp4"}]), "outputs[0].type", ["is required", "hls"]),
    ("segment-too-long", body(outputs=[{"type": "hls", "segment_s": 100}]), "outputs[0].segment_s",
     ["is 100", "maximum is 30"]),
    ("crf-negative", body(outputs=[{"type": "mp4", "crf": -1}]), "outputs[0].crf", ["minimum is 0"]),
    ("fps-zero", body(outputs=[{"type": "mp4", "fps_max": 0}]), "outputs[0].fps_max", ["more than 0"]),
    ("columns-zero", body(outputs=[{"type": "storyboard", "columns": 0}]), "outputs[0].columns",
     ["minimum is 1"]),
    ("rung-too-small", body(outputs=[{"type": "dash", "ladder": [{"height": 10, "bitrate": "1M"}]}]),
     "outputs[0].ladder[0].height", ["is 10", "minimum is 64"]),
    ("rung-bitrate-word", body(outputs=[{"type": "hls", "ladder": [{"height": 360, "bitrate": "fast"}]}]),
     "outputs[0].ladder[0].bitrate", ["'fast'", "not a bitrate", "128k"]),
    ("rung-bitrate-too-low-int", body(outputs=[{"type": "hls", "ladder": [{"height": 360, "bitrate": 5}]}]),
     "outputs[0].ladder[0].bitrate", ["is 5", "minimum is 16000"]),
    ("ladder-word", body(outputs=[{"type": "hls", "ladder": "big"}]), "outputs[0].ladder",
     ["'big'", "default", "list of rungs"]),
    ("ladder-empty", body(outputs=[{"type": "hls", "ladder": []}]), "outputs[0].ladder",
     ["at least 1"]),
    ("codec-unknown", body(outputs=[{"type": "hls", "codec": "vp9"}]), "outputs[0].codec",
     ["'vp9'", "'h264', 'hevc'"]),
    ("bool-not-int", body(outputs=[{"type": "thumbnails", "width": True}]), "outputs[0].width",
     ["must be an integer"]),
    ("dir-escapes", body(outputs=[{"type": "thumbnails", "dir": "../up"}]), "outputs[0].dir",
     ["'../up'", "not a directory name"]),
    ("name-wrong-extension", body(outputs=[{"type": "mp4", "name": "x.avi"}]), "outputs[0].name",
     ["'x.avi'", ".mp4, .m4v or .mov"]),
    ("hls-name-not-m3u8", body(outputs=[{"type": "hls", "name": "index.mpd"}]), "outputs[0].name",
     [".m3u8"]),
    ("too-many-outputs", body(outputs=[{"type": "poster"}] * 21), "outputs", ["21 outputs", "at most 20"]),
    ("no-outputs", body(outputs=[]), "outputs", ["at least 1"]),
    ("outputs-not-list", body(outputs={"type": "hls"}), "outputs", ["must be a list, not an object"]),
    ("output-not-object", body(outputs=["hls"]), "outputs[0]", ["must be an object, not a string"]),
    ("source-missing", {"dest_path": DEST, "outputs": [{"type": "hls"}]}, "source_path", ["is required"]),
    ("source-number", body(source_path=5, outputs=[{"type": "hls"}]), "source_path",
     ["must be a string, not an integer"]),
    ("source-too-long", body(source_path="s3://b/" + "a" * 5000, outputs=[{"type": "hls"}]), "source_path",
     ["longer than 4096"]),
    ("notify-number", body(notify_url=5, outputs=[{"type": "hls"}]), "notify_url",
     ["a string or null", "not an integer"]),
    ("preset-bad-name", body(preset="Big One"), "preset", ["not a preset name"]),
    ("nommer-number", body(job_options={"nommer": 5, "options": []}), "job_options.nommer",
     ["must be a string"]),
    ("nommer-missing", body(job_options={"options": []}), "job_options.nommer", ["is required"]),
    ("overrides-too-many", body(preset="hls-h264", overrides={f"f{i}": 1 for i in range(33)}), "overrides",
     ["at most 32"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_schema_error_names_the_field(case):
    _id, data, field, words = case
    error = error_of(validate_body, data)
    assert error.field == field, error.message
    for word in words:
        assert word in error.message, (word, error.message)
    prefix = f"{field}: " if field else ""
    assert error.message.startswith(prefix)
    assert error.reason == error.message[len(prefix):]


def test_source_path_reported_before_outputs():
    """The original's order: a bad source_path is reported before an output's problem."""
    error = error_of(validate_body, {"dest_path": DEST, "outputs": [{"type": "gif"}]})
    assert error.field == "source_path"


def test_first_output_first():
    error = error_of(validate_body, body(outputs=[{"type": "hls"}, {"type": "mp4", "crf": 99},
                                                  {"type": "gif"}]))
    assert error.field == "outputs[1].crf"


def test_deepest_error_of_an_output_first():
    """An unknown field and a bad rung in the same output: the rung (deeper) is reported."""
    error = error_of(validate_body, body(outputs=[{"type": "hls", "foo": 1,
                                                   "ladder": [{"height": 1, "bitrate": "1M"}]}]))
    assert error.field == "outputs[0].ladder[0].height"


# --- validate_outputs: the rules beyond the schema -------------------------------------

def test_validate_outputs_names_its_field():
    error = error_of(validate_outputs, [{"type": "poster", "at_s": -1}], "job_options.options.outputs")
    assert error.field == "job_options.options.outputs[0].at_s"
    assert error_of(validate_outputs, "hls").field == "outputs"


def test_audio_extension_must_suit_codec():
    error = error_of(validate_outputs, [{"type": "audio", "name": "song.mp3", "codec": "aac"}])
    assert error.field == "outputs[0]"
    assert "song.mp3" in error.message and "aac" in error.message
    validate_outputs([{"type": "audio", "name": "song.mp3", "codec": "mp3"}])
    validate_outputs([{"type": "audio", "name": "song.opus", "codec": "opus"}])


def test_audio_bitrate_above_codec_limit():
    """check_spec's own rule (mp3 takes at most 320k) reaches the caller as a 400."""
    error = error_of(validate_outputs, [{"type": "audio", "name": "a.mp3", "codec": "mp3", "bitrate": "400k"}])
    assert error.field == "outputs[0]" and "320k" in error.message


@pytest.mark.parametrize("outputs,field", [
    ([{"type": "mp4", "bitrate": "1k"}], "outputs[0].bitrate"),
    ([{"type": "mp4", "bitrate": "101M"}], "outputs[0].bitrate"),
    ([{"type": "audio", "bitrate": "15.999k"}], "outputs[0].bitrate"),
    ([{"type": "hls", "audio_bitrate": "8k"}], "outputs[0].audio_bitrate"),
    ([{"type": "poster"}, {"type": "dash", "ladder": [{"height": 360, "bitrate": "1M"},
                                                      {"height": 720, "bitrate": "0.5k"}]}],
     "outputs[1].ladder[1].bitrate"),
])
def test_bitrate_strings_bounded(outputs, field):
    error = error_of(validate_outputs, outputs)
    assert error.field == field
    assert "16k to 100M" in error.message


def test_bitrate_bounds_inclusive():
    validate_outputs([{"type": "mp4", "bitrate": "16k"}, {"type": "audio", "bitrate": "16000"},
                      {"type": "dash", "ladder": [{"height": 2160, "bitrate": "100M"}]}])


def test_mp4_crf_and_bitrate_not_both():
    error = error_of(validate_outputs, [{"type": "mp4", "crf": 20, "bitrate": "2M"}])
    assert error.field == "outputs[0].bitrate" and "not both" in error.message
    (spec,) = validate_outputs([{"type": "mp4", "bitrate": "2M"}])
    assert "crf" not in spec and spec["bitrate"] == "2M"
    (spec,) = validate_outputs([{"type": "mp4"}])
    assert spec["crf"] == 23 and "bitrate" not in spec


def test_two_outputs_same_file():
    error = error_of(validate_outputs, [{"type": "mp4", "name": "a.mp4"}, {"type": "poster"},
                                        {"type": "mp4", "name": "a.mp4", "height": 360}])
    assert error.field == "outputs[2]"
    assert "outputs[0] (mp4, a.mp4)" in error.message and "outputs[2] (mp4, a.mp4)" in error.message


def test_two_outputs_same_dir():
    error = error_of(validate_outputs, [{"type": "hls"}, {"type": "thumbnails", "dir": "stream"}])
    assert error.field == "outputs[1]"
    assert "outputs[0] (hls, stream/)" in error.message and "outputs[1] (thumbnails, stream/)" in error.message
    error = error_of(validate_outputs, [{"type": "hls"}, {"type": "hls", "codec": "hevc"}])
    assert "same place" in error.message


def test_output_inside_another_outputs_dir():
    error = error_of(validate_outputs, [{"type": "storyboard"}, {"type": "poster", "name": "storyboard/p.jpg"}])
    assert error.field == "outputs[1]" and "inside" in error.message
    error = error_of(validate_outputs, [{"type": "thumbnails", "dir": "a/b"}, {"type": "storyboard", "dir": "a"}])
    assert error.field == "outputs[1]" and "inside" in error.message
    # a common prefix that is not a directory is fine
    validate_outputs([{"type": "storyboard", "dir": "sb"}, {"type": "poster", "name": "sb2/p.jpg"}])


def test_hls_and_dash_share_a_dir_when_they_agree():
    (hls, dash) = validate_outputs([{"type": "hls", "segment_s": 4}, {"type": "dash", "segment_s": 4}])
    assert hls["dir"] == dash["dir"] == "stream"


@pytest.mark.parametrize("field,a,b", [
    ("ladder", "default", [{"height": 360, "bitrate": "800k"}]),
    ("codec", "h264", "hevc"),
    ("segment_s", 6, 4),
    ("encoder_preset", "medium", "fast"),
    ("audio_bitrate", "128k", "96k"),
])
def test_hls_and_dash_sharing_a_dir_must_agree(field, a, b):
    error = error_of(validate_outputs, [{"type": "hls", field: a}, {"type": "dash", field: b}])
    assert error.field == f"outputs[1].{field}"
    assert "share dir 'stream'" in error.message and field in error.message
    validate_outputs([{"type": "hls", field: a}, {"type": "dash", field: b, "dir": "dash"}])


# --- normalize ----------------------------------------------------------------------------

@pytest.mark.parametrize("type_name", OUTPUT_TYPES)
def test_defaults_filled(type_name):
    """Every field with a schema default is filled; fields without one stay absent."""
    required = {"compare": {"distorted": "file:///media/d.mp4"}}.get(type_name, {})
    (spec,) = validate_outputs([{"type": type_name, **required}])
    props = OUTPUT_SCHEMAS[type_name]["properties"]
    for name, prop in props.items():
        if "default" in prop:
            assert spec[name] == prop["default"], name
        elif name not in ("type", *required):
            assert name not in spec, name
    assert list(spec)[0] == "type"
    assert validate_outputs([spec]) == [spec]  # normalized is a fixed point


def test_given_values_and_custom_ladder_untouched():
    ladder = [{"height": 720, "bitrate": "3M"}, {"height": 360, "bitrate": 800000, "fps_max": 30}]
    given = [{"type": "hls", "ladder": copy.deepcopy(ladder), "segment_s": 4, "audio_bitrate": 96000}]
    (spec,) = validate_outputs(given)
    assert spec["ladder"] == ladder
    assert spec["segment_s"] == 4 and spec["audio_bitrate"] == 96000
    assert spec["codec"] == "h264" and spec["iframes"] is True and spec["name"] == "master.m3u8"
    assert given[0] == {"type": "hls", "ladder": ladder, "segment_s": 4, "audio_bitrate": 96000}  # not changed


def test_defaults_of():
    assert defaults_of("storyboard") == {"interval_s": 2, "tile_width": 160, "columns": 5, "rows": 5,
                                         "dir": "storyboard"}
    assert normalize_output({"type": "poster"}) == {"type": "poster", "name": "poster.jpg"}


@pytest.mark.parametrize("output,field,words", [
    ({"type": "mp4", "target": {"vmaf": 93, "crf_range": [30, 20]}}, "outputs[0].target.crf_range", "lowest"),
    ({"type": "mp4", "bitrate": "2M", "target": {"vmaf": 93}}, "outputs[0].target", "no bitrate"),
    ({"type": "mp4", "image_path": "file:///media/a.jpg", "target": {"vmaf": 93}}, "outputs[0].target",
     "audio merge"),
    ({"type": "mp4", "image_path": "file:///media/a.jpg", "quality": {}}, "outputs[0].quality", "audio merge"),
])
def test_target_and_quality_rules(output, field, words):
    """What a quality search or measurement cannot do is refused at submit, naming the field."""
    with pytest.raises(InvalidJobSpec) as info:
        validate_outputs([output])
    assert info.value.field == field and words in info.value.message
