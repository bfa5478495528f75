"""The `nommer` command, run with click's CliRunner against the stand-in feederd."""

import io
import json
import re

import pytest
from click.testing import CliRunner

from nommer.client import presets
from nommer.client.api import FFMPEG_NOMMER
from nommer.client.cli import _Progress, cli, main, to_uri
from tests.client.conftest import FAKE_PRESETS
from tests.helpers import cli_against
from tests.processes import free_port


@pytest.fixture
def run(feederd):
    return cli_against(feederd.url)


def last_body(feederd):
    return json.loads(feederd.requests[-1][3])


def test_submit_turns_local_paths_into_absolute_file_uris(run, feederd, tmp_path, monkeypatch):
    """Relative SRC/DEST become file:// URIs under the current directory; stdout is just the id."""
    monkeypatch.chdir(tmp_path)
    result = run("submit", "in.mov", "out dir/out.mp4", "--preset", "web-640")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"[0-9a-f]{50}\n", result.stdout)
    body = last_body(feederd)
    assert body["source_path"] == (tmp_path / "in.mov").as_uri()
    assert body["dest_path"] == f"file://{tmp_path}/out%20dir/out.mp4"
    assert body["preset"] == "web-640" and "job_options" not in body  # a server preset, by name
    assert body["notify_url"] is None


def test_submit_passes_uris_through(run, feederd):
    """Anything with a scheme (s3://, https://, file://) is sent unchanged, with the notify URL."""
    result = run("submit", "s3://KEY:SECRET@bucket/in.mov", "file:///srv/out.mp4",
                 "--preset", "audio-aac", "--notify-url", "http://hook.example/done")
    assert result.exit_code == 0, result.output
    body = last_body(feederd)
    assert (body["source_path"], body["dest_path"]) == ("s3://KEY:SECRET@bucket/in.mov",
                                                        "file:///srv/out.mp4")
    assert body["notify_url"] == "http://hook.example/done"


def test_to_uri_leaves_absolute_paths_absolute():
    """An absolute path keeps its place; only the scheme is added."""
    assert to_uri("/srv/media/a.mov") == "file:///srv/media/a.mov"
    assert to_uri("https://example.com/a.mov") == "https://example.com/a.mov"


def test_submit_options_file_with_a_bare_list_of_passes(run, feederd, tmp_path):
    """--options FILE holding only the passes gets the FFmpeg nommer."""
    passes = [{"outfile_options": [["c:v", "libx264"], ["f", "mp4"]]}]
    f = tmp_path / "opts.json"
    f.write_text(json.dumps(passes))
    result = run("submit", "file:///a", "file:///b", "--options", str(f))
    assert result.exit_code == 0, result.output
    assert last_body(feederd)["job_options"] == {"nommer": FFMPEG_NOMMER, "options": passes}


def test_submit_options_file_with_a_full_job_options_object(run, feederd, tmp_path):
    """--options FILE holding a whole job_options object is sent as is (original nommer path too)."""
    opts = {"nommer": "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer",
            "options": [{"outfile_options": [["f", "mp4"]]}]}
    f = tmp_path / "opts.json"
    f.write_text(json.dumps(opts))
    assert run("submit", "file:///a", "file:///b", "--options", str(f)).exit_code == 0
    assert last_body(feederd)["job_options"] == opts


def test_submit_options_file_that_is_not_json_is_a_usage_error(run, feederd, tmp_path):
    """A broken options file is reported with its name, exit 2, nothing sent."""
    f = tmp_path / "opts.json"
    f.write_text("{not json")
    result = run("submit", "file:///a", "file:///b", "--options", str(f))
    assert result.exit_code == 2
    assert "opts.json" in result.stderr and "Traceback" not in result.output
    assert feederd.requests == []


@pytest.mark.parametrize("extra", [[], ["--preset", "web-640", "--options", "x.json"],
                                   ["--preset", "web-640", "--outputs", "x.json"]])
def test_submit_needs_exactly_one_of_preset_and_options(run, feederd, tmp_path, extra):
    """None or two of --preset/--outputs/--options: usage error, exit 2, nothing sent."""
    (tmp_path / "x.json").write_text("[]")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = run("submit", "a", "b", *extra)
    assert result.exit_code == 2
    assert "exactly one of --preset" in result.stderr
    assert feederd.requests == []


def test_submit_unknown_preset_lists_the_known_ones(run):
    """--preset nope: feederd's refusal, with the list of its preset names."""
    result = run("submit", "a", "b", "--preset", "nope")
    assert result.exit_code == 2
    assert "web-640" in result.stderr and "audio-aac" in result.stderr


def test_submit_bad_input_prints_the_api_error_and_exits_2(run, tmp_path):
    """A BADINPUT answer prints `error: <message> (BADINPUT)` on stderr, no traceback."""
    f = tmp_path / "opts.json"
    f.write_text(json.dumps({"options": []}))
    result = run("submit", "file:///a", "file:///b", "--options", str(f))
    assert result.exit_code == 2
    assert result.stderr == ("error: Missing/invalid required key+val: "
                             "['job_options'][options] (BADINPUT)\n")
    assert result.stdout == ""


def test_submit_wait_follows_the_job_to_FINISHED(run, feederd):
    """--wait prints the id, one stderr line per state (no tty), then FINISHED; exit 0."""
    result = run("submit", "file:///a", "file:///b", "--preset", "web-640", "--wait", "--poll", "0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{50}", lines[0])
    assert lines[1:] == ["FINISHED", "output: file:///b"]
    assert result.stderr.splitlines() == ["DOWNLOADING -", "ENCODING 0%", "UPLOADING 100%",
                                          "FINISHED 100%"]


def test_submit_wait_exits_1_when_the_job_fails(run, feederd):
    """A job ending in ERROR: the state and its details are printed, exit 1."""
    feederd.script = [("PENDING", None, None), ("ENCODING", 5.0, None),
                      ("ERROR", None, "ffmpeg: Invalid data found when processing input")]
    result = run("submit", "file:///a", "file:///b", "--preset", "web-640", "--wait", "--poll", "0")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        "ERROR: ffmpeg: Invalid data found when processing input")


def test_submit_wait_json_prints_the_final_job(run, feederd):
    """--wait --json prints only the final job as JSON on stdout."""
    result = run("submit", "file:///a", "file:///b", "--preset", "crf-720",
                 "--wait", "--poll", "0", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["job_state"] == "FINISHED" and job["dest_path"] == "file:///b"


def test_submit_json_without_wait_prints_the_id_as_json(run):
    """--json alone prints {"job_id": ...}."""
    result = run("submit", "file:///a", "file:///b", "--preset", "web-640", "--json")
    assert re.fullmatch(r"[0-9a-f]{50}", json.loads(result.stdout)["job_id"])


def test_status_shows_the_job_readably_and_as_json(run, feederd):
    """status prints key/value lines (progress as %); --json the whole job."""
    job_id = feederd.add_job(state="ENCODING", progress=41.6, worker_id="w-1")
    result = run("status", job_id)
    assert result.exit_code == 0, result.output
    assert re.search(r"^job_state\s+ENCODING$", result.stdout, re.M)
    assert re.search(r"^progress\s+42%$", result.stdout, re.M)
    assert re.search(r"^worker_id\s+w-1$", result.stdout, re.M)
    assert json.loads(run("status", job_id, "--json").stdout)["job_id"] == job_id


def test_status_of_an_unknown_job_exits_2(run):
    """NOSUCHJOB is one line on stderr and exit 2."""
    result = run("status", "f" * 50)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no job with id") and "(NOSUCHJOB)" in result.stderr


def test_an_empty_job_id_is_an_error_not_a_traceback(run, feederd):
    """`nommer status ""` prints one error line and exits 2 without asking feederd."""
    result = run("status", "")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: a job id must be")
    assert feederd.requests == []


def test_list_prints_a_table_newest_first(run, feederd):
    """list prints a header and one aligned row per job: id, state, progress, created, src -> dest."""
    old = feederd.add_job(state="FINISHED", progress=100.0)
    new = feederd.add_job(state="ENCODING", progress=12.0, source_path="file:///x.mov",
                          dest_path="s3://b/x.mp4")
    result = run("list")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "PROGRESS", "CREATED"]
    assert first.split() == [new, "ENCODING", "12%", "2026-01-02", "03:04:02",
                             "file:///x.mov", "->", "s3://b/x.mp4"]
    assert second.startswith(old)
    assert first.index("ENCODING") == header.index("STATE")


def test_list_filters_by_state_and_hints_at_the_next_page(run, feederd):
    """--state is sent upper-cased; a next cursor is shown on stderr."""
    for _ in range(3):
        feederd.add_job(state="PENDING")
    result = run("list", "--state", "pending", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert feederd.requests[-1][1] == "/jobs?state=PENDING&limit=2"
    assert len(result.stdout.splitlines()) == 3
    assert "nommer list --cursor 2 --state PENDING" in result.stderr


def test_list_json_and_empty(run, feederd):
    """--json prints jobs and next_cursor; no jobs prints 'no jobs'."""
    assert run("list").stdout == "no jobs\n"
    feederd.add_job()
    data = json.loads(run("list", "--json").stdout)
    assert len(data["jobs"]) == 1 and data["next_cursor"] is None


def test_list_refuses_unknown_states(run, feederd):
    """--state must be one of the job states."""
    assert run("list", "--state", "DONE").exit_code == 2
    assert feederd.requests == []


def test_cancel_then_cancel_again(run, feederd):
    """cancel prints the id and CANCELED; a second cancel is a CONFLICT, exit 2."""
    job_id = feederd.add_job(state="PENDING")
    result = run("cancel", job_id)
    assert (result.exit_code, result.stdout) == (0, f"{job_id} CANCELED\n")
    again = run("cancel", job_id)
    assert again.exit_code == 2 and again.stderr.endswith("(CONFLICT)\n")


def test_wait_command_and_its_timeout(run, feederd):
    """`wait ID` exits 0 on FINISHED; with --timeout on a stuck job it exits 4."""
    done = feederd.add_job(script=[("FINISHED", 100.0, None)])
    assert run("wait", done, "--poll", "0").exit_code == 0
    stuck = feederd.add_job(state="ENCODING", progress=3.0)
    result = run("wait", stuck, "--poll", "0", "--timeout", "0")
    assert result.exit_code == 4
    assert "still ENCODING" in result.stderr


def test_presets_lists_every_preset_with_its_description(run, feederd):
    """`nommer presets` prints feederd's presets (GET /presets), one line each under a header: name,
    what it makes, then description; the 2011 local ones are among them."""
    lines = run("presets").stdout.splitlines()
    assert lines[0].split() == ["NAME", "MAKES", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == [p["name"] for p in FAKE_PRESETS]
    assert set(presets.names()) <= {line.split()[0] for line in lines[1:]}
    assert all(len(line.split()) > 3 for line in lines[1:])
    assert feederd.requests[-1][:2] == ("GET", "/presets")


def test_unreachable_feederd_exits_3_with_advice():
    """Connection refused prints the URL and `make run` on stderr and exits 3, no traceback."""
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--api", url, "status", "a" * 50])
    assert result.exit_code == 3
    assert url in result.stderr and "make run" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_api_url_comes_from_NOMMER_API(feederd):
    """Without --api the NOMMER_API environment variable names feederd."""
    result = CliRunner().invoke(cli, ["health"], env={"NOMMER_API": feederd.url})
    assert result.exit_code == 0
    assert result.stdout == f"{feederd.url}: ok\n"


def test_progress_bar_on_a_terminal_shows_state_and_percent():
    """On a tty the progress display is a tqdm bar described by the job state."""
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    progress = _Progress(file=out)
    progress({"job_state": "ENCODING", "progress": 37.0})
    assert progress.bar.n == 37.0
    assert "ENCODING" in out.getvalue() and "37%" in out.getvalue()
    progress({"job_state": "FINISHED", "progress": None})
    progress.close()
    assert "FINISHED" in out.getvalue() and "100%" in out.getvalue()


def test_main_is_the_entry_point(capsys, feederd):
    """main(argv) runs the command line and exits with its code."""
    with pytest.raises(SystemExit) as info:
        main(["--api", feederd.url, "presets"])
    assert info.value.code == 0
    assert "web-1280" in capsys.readouterr().out
