"""Declarative jobs through the client library and the `nommer` command: what they send (against the
stand-in feederd, which records every request) and what a real feederd (``twistd feederd``, no worker
fleet, so jobs stay PENDING) answers to them: its presets, its schema, a preset with overrides, an
unknown field."""

import json
import os

import jsonschema
import pytest

from nommer.client.api import BadInput, InvalidInputError, NommerClient, NoSuchPreset
from nommer.client.cli import parse_override
from nommer.core.outputs.schema import job_schema
from tests.e2e.harness import Feederd
from tests.helpers import cli_against

OUTPUTS_NOMMER = "nommer.workerd.nommers.outputs.OutputsNommer"
#: The presets the issue asks feederd to ship.
REQUIRED_PRESETS = {"crf-720", "web-1280", "web-640", "audio-aac", "hls-hevc", "hls-h264", "cmaf-h264",
                    "web-mp4-720", "audio-image-merge", "storyboard"}


@pytest.fixture
def run(feederd):
    return cli_against(feederd.url)


def last_body(feederd):
    return json.loads(feederd.requests[-1][3])


# --- what the CLI and the client send (stand-in feederd) ---------------------------------------


def test_cli_submit_preset_sends_the_server_preset_name(run, feederd, tmp_path, monkeypatch):
    """`nommer submit SRC DEST/ --preset cmaf-h264` sends {"preset": "cmaf-h264"}: no job_options, no
    overrides; a local DEST ending in / stays a prefix (file URI ending in /)."""
    monkeypatch.chdir(tmp_path)
    result = run("submit", "title.mov", "out/", "--preset", "cmaf-h264")
    assert result.exit_code == 0, result.output
    body = last_body(feederd)
    assert body == {"source_path": (tmp_path / "title.mov").as_uri(), "dest_path": (tmp_path / "out").as_uri() + "/",
                    "notify_url": None, "preset": "cmaf-h264"}
    assert feederd.requests[-1][:2] == ("POST", "/job/submit")


def test_cli_chunking_options(run, feederd):
    """--chunk-s 30 sends "chunking": {"target_s": 30}; --no-chunking sends false; neither sends nothing;
    both is a usage error and sends nothing."""
    result = run("submit", "s3://in/film.mov", "s3://out/film/", "--preset", "cmaf-h264", "--chunk-s", "30")
    assert result.exit_code == 0, result.output
    assert last_body(feederd)["chunking"] == {"target_s": 30.0}
    result = run("submit", "s3://in/film.mov", "s3://out/film/", "--preset", "cmaf-h264", "--no-chunking")
    assert result.exit_code == 0, result.output
    assert last_body(feederd)["chunking"] is False
    result = run("submit", "s3://in/film.mov", "s3://out/film/", "--preset", "cmaf-h264")
    assert "chunking" not in last_body(feederd)
    sent = len(feederd.requests)
    result = run("submit", "s3://in/film.mov", "s3://out/film/", "--preset", "cmaf-h264", "--chunk-s", "30",
                 "--no-chunking")
    assert result.exit_code != 0 and "not both" in result.output
    assert len(feederd.requests) == sent


def test_cli_overrides_are_json_when_they_parse(run, feederd):
    """--override KEY=VALUE (repeatable) becomes overrides: 4 -> 4, false -> false, "4" -> "4",
    hevc -> "hevc", a later KEY wins."""
    result = run("submit", "s3://in/title.mov", "s3://out/title/", "--preset", "cmaf-h264",
                 "--override", "segment_s=3", "--override", "segment_s=4", "--override", "codec=hevc",
                 "--override", "iframes=false", "--override", 'dir="4"')
    assert result.exit_code == 0, result.output
    body = last_body(feederd)
    assert body["preset"] == "cmaf-h264"
    assert body["overrides"] == {"segment_s": 4, "codec": "hevc", "iframes": False, "dir": "4"}
    assert body["dest_path"] == "s3://out/title/"


@pytest.mark.parametrize("text,expected", [("a=1", ("a", 1)), ("a=1.5", ("a", 1.5)), ("a=x", ("a", "x")),
                                           ("a=", ("a", "")), ("a=b=c", ("a", "b=c")), (" a =null", ("a", None)),
                                           ('a=[1,2]', ("a", [1, 2])), ('a="k"', ("a", "k"))])
def test_parse_override(text, expected):
    """KEY=VALUE: VALUE as JSON when it parses, else the text; only the first = splits."""
    assert parse_override(text) == expected


@pytest.mark.parametrize("args,words", [
    (["--override", "segment_s=4", "--options", "x.json"], ["--override goes with --preset"]),
    (["--preset", "cmaf-h264", "--override", "segment_s"], ["segment_s", "KEY=VALUE"]),
    (["--preset", "cmaf-h264", "--override", "=4"], ["KEY=VALUE"]),
    (["--outputs", "dict.json"], ["expected a JSON list of outputs"]),
    (["--outputs", "missing.json"], ["cannot read missing.json"]),
])
def test_cli_usage_errors_send_nothing(run, feederd, tmp_path, monkeypatch, args, words):
    """Overrides without a preset, an override without =, outputs that are not a list, a missing
    file: exit 2 with the reason on stderr, nothing sent."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text(json.dumps([{"outfile_options": [["f", "mp4"]]}]))
    (tmp_path / "dict.json").write_text(json.dumps({"type": "hls"}))
    result = run("submit", "file:///a", "file:///b/", *args)
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.stderr
    assert feederd.requests == []


def test_cli_outputs_from_a_file_and_from_stdin(run, feederd, tmp_path):
    """--outputs FILE sends the list as outputs; --outputs - reads it from stdin; a whole job body's
    outputs are taken too."""
    outputs = [{"type": "hls", "segment_s": 4}, {"type": "poster", "name": "poster.jpg"}]
    f = tmp_path / "outputs.json"
    f.write_text(json.dumps(outputs))
    assert run("submit", "file:///a", "file:///b/", "--outputs", str(f)).exit_code == 0
    assert last_body(feederd)["outputs"] == outputs and "preset" not in last_body(feederd)
    from click.testing import CliRunner
    from nommer.client.cli import cli
    result = CliRunner().invoke(cli, ["--api", feederd.url, "submit", "file:///a", "file:///b/", "--outputs", "-"],
                                input=json.dumps({"source_path": "ignored", "outputs": outputs}))
    assert result.exit_code == 0, result.output
    assert last_body(feederd)["outputs"] == outputs


def test_client_submit_takes_exactly_one_form(feederd):
    """submit() with none or two of job_options/outputs/preset, or overrides without preset, raises
    InvalidInputError before sending anything; each form alone sends only its key."""
    client = NommerClient(feederd.url, api_key="")
    for kwargs in ({}, {"preset": "cmaf-h264", "outputs": [{"type": "poster"}]},
                   {"outputs": [{"type": "poster"}], "overrides": {"segment_s": 4}}):
        with pytest.raises(InvalidInputError):
            client.submit("file:///a", "file:///b/", **kwargs)
    assert feederd.requests == []
    client.submit("file:///a", "file:///b/", outputs=[{"type": "poster"}])
    assert set(last_body(feederd)) == {"source_path", "dest_path", "notify_url", "outputs"}
    client.submit("file:///a", "file:///b/", preset="cmaf-h264", overrides={"segment_s": 4})
    assert last_body(feederd)["overrides"] == {"segment_s": 4}
    client.submit("file:///a", "file:///b.mp4", {"nommer": "x", "options": [{}]}, "http://hook.example/")
    assert last_body(feederd)["notify_url"] == "http://hook.example/"  # the 2011 positional call


def test_cli_presets_schema_and_one_preset(run, feederd):
    """`nommer presets NAME` prints that preset as JSON; an unknown one exits 2 with NOSUCHPRESET and
    a hint; `nommer schema` prints GET /schema."""
    result = run("presets", "cmaf-h264")
    assert result.exit_code == 0, result.output
    assert [o["type"] for o in json.loads(result.stdout)["outputs"]] == ["hls", "dash"]
    result = run("presets", "nope")
    assert result.exit_code == 2
    assert "(NOSUCHPRESET)" in result.stderr and "nommer presets" in result.stderr
    result = run("schema")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == job_schema()
    assert feederd.requests[-1][:2] == ("GET", "/schema")


def test_cli_status_shows_the_outputs(run, feederd):
    """`nommer status` of a finished declarative job prints its preset and one line per output: type,
    where, files and bytes, rung sizes."""
    job_id = feederd.add_job(state="FINISHED", nommer=OUTPUTS_NOMMER, preset="cmaf-h264", outputs=[
        {"type": "hls", "dir": "stream", "files": [{"path": "stream/master.m3u8", "bytes": 300},
                                                   {"path": "stream/a.m4s", "bytes": 700}],
         "rungs": [{"width": 416, "height": 234}, {"width": 640, "height": 360}]},
        {"type": "poster", "name": "poster.jpg", "files": [{"path": "poster.jpg", "bytes": 42}]}])
    result = run("status", job_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "preset" in lines[-3] and lines[-3].endswith("cmaf-h264")
    assert lines[-2].split(None, 1)[1] == "hls stream: 2 files, 1000 bytes, rungs 416x234 640x360"
    assert lines[-1].split(None, 1)[1] == "poster poster.jpg: 1 files, 42 bytes"


# --- against a real feederd ------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real feederd (twistd) with no worker fleet, its file root, and a client of it."""
    root = os.path.realpath(str(tmp_path_factory.mktemp("outputs-client")))
    feederd = Feederd(root, FLEET_BACKEND="none").start()
    yield feederd
    feederd.stop()


def test_real_presets_and_schema(real):
    """The client's presets() has every preset the issue names, with outputs or job_options;
    preset("cmaf-h264") is hls + dash in one dir; preset("nope") raises NoSuchPreset (404); schema()
    is a valid Draft 2020-12 schema."""
    presets = {p["name"]: p for p in real.client.presets()}
    assert REQUIRED_PRESETS <= set(presets)
    assert all(("outputs" in p) != ("job_options" in p) for p in presets.values())
    cmaf = real.client.preset("cmaf-h264")
    assert [o["type"] for o in cmaf["outputs"]] == ["hls", "dash"]
    assert len({o["dir"] for o in cmaf["outputs"]}) == 1
    with pytest.raises(NoSuchPreset) as info:
        real.client.preset("nope")
    assert (info.value.status, info.value.error_code) == (404, "NOSUCHPRESET")
    schema = real.client.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == job_schema()


def test_real_preset_with_overrides_through_client_and_cli(real):
    """submit(preset="cmaf-h264", overrides={"segment_s": 4}) and the same with `nommer submit SRC DEST/
    --preset cmaf-h264 --override segment_s=4`: the job document names the preset and shows its hls and
    dash outputs with segment_s 4, every field filled in."""
    root = real.root
    job_id = real.client.submit(f"file://{root}/in.mov", f"file://{root}/title/", preset="cmaf-h264",
                                overrides={"segment_s": 4})
    run = cli_against(real.client.base_url)
    result = run("submit", f"{root}/in.mov", f"{root}/cli/", "--preset", "cmaf-h264", "--override", "segment_s=4")
    assert result.exit_code == 0, result.output
    for job_id, dest in ((job_id, "title/"), (result.stdout.strip(), "cli/")):
        job = real.client.get(job_id)
        assert (job["job_state"], job["nommer"], job["preset"]) == ("PENDING", OUTPUTS_NOMMER, "cmaf-h264")
        assert job["dest_path"] == f"file://{root}/{dest}"
        assert [(o["type"], o["segment_s"], o["dir"]) for o in job["outputs"]] == [("hls", 4, "stream"),
                                                                                  ("dash", 4, "stream")]
        assert {"ladder", "codec", "encoder_preset", "audio_bitrate", "name"} <= set(job["outputs"][0])


def test_real_unknown_field_and_type_are_refused_naming_them(real):
    """An unknown output field or type: BadInput (400, BADINPUT) whose message names it; the CLI prints
    it and exits 2."""
    root = real.root
    with pytest.raises(BadInput) as info:
        real.client.submit(f"file://{root}/in.mov", f"file://{root}/x/", outputs=[{"type": "hls", "colour": 1}])
    assert info.value.status == 400 and "colour" in info.value.message
    with pytest.raises(BadInput) as info:
        real.client.submit(f"file://{root}/in.mov", f"file://{root}/x/", preset="cmaf-h264",
                           overrides={"colour": 1})
    assert "colour" in info.value.message
    run = cli_against(real.client.base_url)
    result = run("submit", f"{root}/in.mov", f"{root}/x/", "--preset", "nope")
    assert result.exit_code == 2
    assert "(BADINPUT)" in result.stderr and "'nope'" in result.stderr and "cmaf-h264" in result.stderr


def test_real_nommer_presets_lists_what_each_makes(real):
    """`nommer presets` against the real feederd: every required preset, with what it makes (hls+dash
    for cmaf-h264, ffmpeg for the 2011 web-640) and audio-image-merge saying it needs image_path."""
    result = cli_against(real.client.base_url)("presets")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()[1:]}
    assert REQUIRED_PRESETS <= set(rows)
    assert rows["cmaf-h264"][0] == "hls+dash"
    assert rows["web-640"][0] == "ffmpeg"
    assert "image_path=" in rows["audio-image-merge"][1]
