"""The synchronous client against a real HTTP server (tests/client/conftest.py)."""

import json
import re
import socket

import pytest

import nommer.client
from nommer.client.api import (
    FFMPEG_NOMMER,
    APIError,
    APIResponse,
    BadInput,
    Conflict,
    ConnectionFailed,
    InvalidInputError,
    NommerClient,
    NoSuchJob,
    WaitTimeout,
    job_options_from,
)
from tests.processes import free_port


@pytest.fixture
def client(feederd):
    return NommerClient(feederd.url, timeout_s=5)


class FakeTime:
    """A clock that only moves when the client sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_submit_posts_the_original_body_as_json(client, feederd, web640):
    """submit sends source, dest, notify_url and job_options as a JSON body and returns the id."""
    job_id = client.submit("file:///a.mov", "file:///b.mp4", web640,
                           notify_url="http://hook.example/x")
    assert re.fullmatch(r"[0-9a-f]{50}", job_id)
    method, path, headers, body = feederd.requests[-1]
    assert (method, path) == ("POST", "/job/submit")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "source_path": "file:///a.mov", "dest_path": "file:///b.mp4",
        "notify_url": "http://hook.example/x", "job_options": web640,
    }


def test_submit_sends_null_notify_url_by_default(client, feederd, web640):
    """Without notify_url the body carries an explicit null, like the original client."""
    client.submit("file:///a.mov", "file:///b.mp4", web640)
    assert json.loads(feederd.requests[-1][3])["notify_url"] is None


def test_bad_input_raises_BadInput_with_the_servers_words(client):
    """A 400 BADINPUT answer becomes BadInput carrying status, code and message."""
    with pytest.raises(BadInput) as info:
        client.submit("file:///a.mov", "", {"nommer": FFMPEG_NOMMER, "options": [{}]})
    err = info.value
    assert (err.status, err.error_code) == (400, "BADINPUT")
    assert err.message == "Missing/invalid required key+val: ['dest_path']"
    assert isinstance(err, APIError)


def test_get_returns_the_job_dict(client, feederd):
    """get returns the "job" object of the answer."""
    job_id = feederd.add_job(state="ENCODING", progress=42.0)
    job = client.get(job_id)
    assert job["job_id"] == job_id
    assert (job["job_state"], job["progress"]) == ("ENCODING", 42.0)


def test_unknown_job_raises_NoSuchJob(client):
    """A 404 NOSUCHJOB answer becomes NoSuchJob."""
    with pytest.raises(NoSuchJob) as info:
        client.get("f" * 50)
    assert (info.value.status, info.value.error_code) == (404, "NOSUCHJOB")


def test_job_ids_are_quoted_into_the_path(client, feederd):
    """An id with a slash stays one path segment instead of reaching another route."""
    with pytest.raises(NoSuchJob):
        client.get("../health")
    assert feederd.requests[-1][1] == "/job/..%2Fhealth"


def test_empty_job_id_is_refused_before_any_request(client, feederd):
    """get("") raises InvalidInputError (a ValueError) and sends nothing."""
    with pytest.raises(InvalidInputError):
        client.get("")
    assert feederd.requests == []


def test_list_passes_state_limit_cursor_and_returns_the_next_cursor(client, feederd):
    """list sends its filters as query parameters and returns (jobs, next_cursor)."""
    ids = [feederd.add_job(state="PENDING") for _ in range(3)]
    feederd.add_job(state="FINISHED")
    jobs, cursor = client.list(state="pending", limit=2)
    assert [j["job_id"] for j in jobs] == [ids[2], ids[1]]
    assert cursor == "2"
    assert feederd.requests[-1][1] == "/jobs?state=PENDING&limit=2"
    jobs, cursor = client.list(state="PENDING", limit=2, cursor=cursor)
    assert [j["job_id"] for j in jobs] == [ids[0]]
    assert cursor is None


def test_iter_jobs_follows_cursors_to_the_end(client, feederd):
    """iter_jobs yields every job, newest first, over several pages."""
    ids = [feederd.add_job() for _ in range(5)]
    assert [j["job_id"] for j in client.iter_jobs(page_size=2)] == ids[::-1]
    assert sum(1 for r in feederd.requests if r[1].startswith("/jobs")) == 3


def test_cancel_returns_the_canceled_job_then_conflicts(client, feederd):
    """cancel returns the job in CANCELED; cancelling it again is a Conflict (409)."""
    job_id = feederd.add_job(state="ENCODING")
    assert client.cancel(job_id)["job_state"] == "CANCELED"
    assert feederd.requests[-1][:2] == ("POST", f"/job/{job_id}/cancel")
    with pytest.raises(Conflict) as info:
        client.cancel(job_id)
    assert (info.value.status, info.value.error_code) == (409, "CONFLICT")


def test_health_returns_the_answer(client):
    """health returns feederd's whole answer."""
    assert client.health()["status"] == "ok"


def test_wait_polls_until_final_and_reports_every_poll(feederd):
    """wait calls on_update on each poll, sleeps the poll interval between, returns the final job."""
    fake = FakeTime()
    client = NommerClient(feederd.url, sleep=fake.sleep, clock=fake.clock)
    job_id = feederd.add_job(script=[("DOWNLOADING", None, None), ("ENCODING", 30.0, None),
                                     ("FINISHED", 100.0, "done")])
    seen = []
    job = client.wait(job_id, poll_interval_s=2.5, on_update=lambda j: seen.append(
        (j["job_state"], j["progress"])))
    assert seen == [("DOWNLOADING", None), ("ENCODING", 30.0), ("FINISHED", 100.0)]
    assert job["job_state_details"] == "done"
    assert fake.sleeps == [2.5, 2.5]


def test_wait_returns_jobs_that_end_badly(feederd):
    """An ERROR job is final: wait returns it rather than raising."""
    client = NommerClient(feederd.url, sleep=lambda s: None)
    job_id = feederd.add_job(script=[("ERROR", None, "ffmpeg exited 1")])
    job = client.wait(job_id, poll_interval_s=0)
    assert (job["job_state"], job["job_state_details"]) == ("ERROR", "ffmpeg exited 1")


def test_wait_times_out_with_the_last_job_seen(feederd):
    """A job stuck in ENCODING makes wait raise WaitTimeout after timeout_s, never oversleeping."""
    fake = FakeTime()
    client = NommerClient(feederd.url, sleep=fake.sleep, clock=fake.clock)
    job_id = feederd.add_job(state="ENCODING", progress=10.0)
    with pytest.raises(WaitTimeout) as info:
        client.wait(job_id, poll_interval_s=4, timeout_s=10)
    assert info.value.job["job_state"] == "ENCODING"
    assert fake.sleeps == [4, 4, 2]
    assert "still ENCODING after 10 s" in str(info.value)


def test_connection_refused_names_the_url_and_the_fix():
    """No server on the port -> ConnectionFailed naming the URL and `make run`."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed) as info:
        NommerClient(url, timeout_s=5).health()
    assert url in str(info.value)
    assert "make run" in str(info.value)
    assert "refused" in str(info.value).lower()


def test_a_server_that_never_answers_times_out():
    """A listener that accepts nothing -> ConnectionFailed after timeout_s, saying so."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
        with pytest.raises(ConnectionFailed) as info:
            NommerClient(url, timeout_s=0.3).health()
    assert "no answer within 0.3 s" in str(info.value)


def test_a_non_json_error_page_becomes_APIError(client, feederd):
    """An HTML 500 page becomes APIError(500, "HTTP_500") with a short excerpt."""
    feederd.next_error = (500, "text/html", b"<html><body>Internal\n  Server Error</body></html>")
    with pytest.raises(APIError) as info:
        client.get("a" * 50)
    assert (info.value.status, info.value.error_code) == (500, "HTTP_500")
    assert "Internal Server Error" in info.value.message


def test_an_original_style_failure_with_status_200_still_raises(client, feederd, web640):
    """The 2011 server answered errors with 200 and success false: that is an APIError too."""
    feederd.next_error = (200, "text/html", b'{"success": false, "message": "nope"}')
    with pytest.raises(APIError) as info:
        client.submit("file:///a", "file:///b", web640)
    assert (info.value.status, info.value.message) == (200, "nope")


def test_a_success_answer_that_is_not_json_is_an_error(client, feederd):
    """200 with a non-JSON body is APIError BADRESPONSE, not a crash in json."""
    feederd.next_error = (200, "text/plain", b"hello")
    with pytest.raises(APIError) as info:
        client.health()
    assert info.value.error_code == "BADRESPONSE"


def test_base_url_without_scheme_or_with_trailing_slash(feederd):
    """"127.0.0.1:PORT/" is understood as http://127.0.0.1:PORT."""
    hostport = feederd.url.split("://", 1)[1]
    client = NommerClient(hostport + "/")
    assert client.base_url == feederd.url
    assert client.health()["success"] is True


def test_job_options_from_accepts_a_list_of_passes_or_a_full_object():
    """A bare list gets the FFmpeg nommer; a full object keeps its own; anything else is refused."""
    passes = [{"outfile_options": [["f", "mp4"]]}]
    assert job_options_from(passes) == {"nommer": FFMPEG_NOMMER, "options": passes}
    custom = {"nommer": "x.Y", "options": passes}
    assert job_options_from(custom) == custom
    assert job_options_from({"options": passes})["nommer"] == FFMPEG_NOMMER
    with pytest.raises(ValueError):
        job_options_from({"outfile_options": []})


# --- the original client's shape ---------------------------------------------


def test_compat_connect_and_job_submit(feederd, web640):
    """connect(host).job_submit returns an APIResponse with the id, like media_nommer_api."""
    conn = nommer.client.connect(feederd.url)
    response = conn.job_submit("file:///a.mov", "file:///b.mp4", web640)
    assert isinstance(response, APIResponse)
    assert response.is_success()
    assert re.fullmatch(r"[0-9a-f]{50}", response.data["job_id"])
    assert json.loads(response.raw_response) == response.data
    assert feederd.requests[-1][:2] == ("POST", "/job/submit")


@pytest.mark.parametrize("missing", ["source_path", "dest_path", "job_options"])
def test_compat_job_submit_refuses_falsy_required_arguments(feederd, web640, missing):
    """A falsy source, dest or job_options raises InvalidInputError and sends nothing."""
    args = {"source_path": "file:///a", "dest_path": "file:///b", "job_options": web640}
    args[missing] = "" if missing != "job_options" else {}
    with pytest.raises(InvalidInputError, match=missing):
        nommer.client.connect(feederd.url).job_submit(**args)
    assert feederd.requests == []


def test_compat_error_answers_are_unsuccessful_responses(feederd):
    """A 400 from today's server is an unsuccessful APIResponse, as the 2011 200 answer was."""
    response = nommer.client.connect(feederd.url).job_submit(
        "file:///a", "file:///b", {"nommer": FFMPEG_NOMMER})
    assert not response.is_success()
    assert "options" in response.data["message"]
    assert response.data["error_code"] == "BADINPUT"
