"""``NommerClient.events()`` and ``nommer watch`` against a scripted event
stream server (a thread on loopback): parsing, the key sent, reconnecting
with Last-Event-ID after a drop, waiting out a 503 on a reconnection,
errors of the first connection raised, the CLI's lines and exit code."""

import http.server
import json
import threading

import pytest

from nommer.client.api import ConnectionFailed, NoSuchJob, NommerClient, Unauthorized
from tests.helpers import cli_against

JOB = "a" * 50
KEY = "nmk_0123456789abcdef_" + "Ab-_" * 10 + "xyz"


def frame(event_id, name, data):
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()


def job_event(event_id, kind, state, progress=None, worker="w1"):
    return frame(event_id, "job", {"job_id": JOB, "kind": kind, "state": state, "at": "2026-01-02T03:04:05.000Z",
                                   "seq": event_id - 100, "worker_id": worker, "attempt": 1, "progress": progress,
                                   "details": None,
                                   "job": {"job_id": JOB, "job_state": state, "progress": progress, "attempts": 1,
                                           "worker_id": worker}})


SNAPSHOT = frame(100, "snapshot", {"jobs": [{"job_id": JOB, "job_state": "PENDING", "progress": None, "attempts": 0,
                                             "worker_id": None, "updated_at": "2026-01-02T03:04:00.000Z"}],
                                   "truncated": False, "last_event_id": 100})


class Script:
    """What each successive connection gets: (status, headers, chunks, close_after)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []  # (path, headers: an http.client.HTTPMessage)


@pytest.fixture
def server():
    holder = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            script = holder["script"]
            script.requests.append((self.path, self.headers))  # case-insensitive
            status, chunks = script.answers.pop(0) if script.answers else (503, [b'{"success": false}'])
            self.send_response(status)
            if status == 200:
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            else:
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()

    def start(*answers):
        holder["script"] = Script(answers)
        return holder["script"]
    start.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield start
    srv.shutdown()
    srv.server_close()


def client(url, sleeps=None):
    return NommerClient(url, timeout_s=5, api_key=KEY, sleep=(sleeps.append if sleeps is not None else None))


def test_events_parsed_and_resumed_after_a_drop(server):
    """Snapshot then job events as dicts (event, id, data); after the stream drops, the client waits the
    server's retry and reconnects with Last-Event-ID of the last event, with its key and filters."""
    script = server((200, [b"retry: 1500\n: hello\n\n", SNAPSHOT, job_event(101, "state", "DOWNLOADING")]),
                    (200, [job_event(102, "progress", "ENCODING", 50.0), job_event(103, "state", "FINISHED")]))
    sleeps = []
    got = []
    for event in client(server.url, sleeps).events(job_id=JOB, state=["encoding", "FINISHED"]):
        got.append(event)
        if len(got) == 4:
            break
    assert [(e["event"], e["id"]) for e in got] == [("snapshot", 100), ("job", 101), ("job", 102), ("job", 103)]
    assert got[0]["jobs"][0]["job_id"] == JOB and got[2]["progress"] == 50.0 and got[3]["job"]["job_state"] == "FINISHED"
    (path1, headers1), (path2, headers2) = script.requests
    assert path1 == path2 == f"/events?job_id={JOB}&state=ENCODING%2CFINISHED"
    assert "Last-Event-ID" not in headers1 and headers2["Last-Event-ID"] == "101"
    assert headers1["Authorization"] == headers2["Authorization"] == f"Bearer {KEY}"
    assert headers1["Accept"] == "text/event-stream"
    assert sleeps == [2.0]  # sseclient does not report a data-less retry: the default, the same 2 s


def test_a_reconnection_waits_out_503_and_resumes(server):
    """A reconnection answered 503 (feederd stopping, too many streams) is tried again; the given
    last_event_id is sent from the first connection on."""
    script = server((200, [job_event(101, "state", "ENCODING")]), (503, [b'{"success": false, "error_code": '
                                                                         b'"TOOMANYSTREAMS", "message": "full"}']),
                    (200, [job_event(102, "state", "FINISHED")]))
    stream = client(server.url, []).events(last_event_id=100)
    assert [next(stream)["id"], next(stream)["id"]] == [101, 102]
    stream.close()
    assert [h.get("Last-Event-ID") for _, h in script.requests] == ["100", "101", "101"]


def test_first_connection_errors_are_raised(server):
    """401 and 404 answer the first connection with the client's own errors; nothing to reach: ConnectionFailed."""
    server((401, [b'{"success": false, "error_code": "UNAUTHORIZED", "message": "no key"}']),
           (404, [b'{"success": false, "error_code": "NOSUCHJOB", "message": "no such job"}']))
    with pytest.raises(Unauthorized):
        next(client(server.url).events())
    with pytest.raises(NoSuchJob):
        next(client(server.url).events(job_id=JOB))
    with pytest.raises(ConnectionFailed):
        next(NommerClient("http://127.0.0.1:9", timeout_s=2).events())


def test_no_reconnect_ends_the_generator(server):
    """reconnect=False: the generator ends when the stream does."""
    server((200, [SNAPSHOT, job_event(101, "state", "ENCODING")]))
    assert [e["id"] for e in client(server.url).events(reconnect=False)] == [100, 101]


def test_watch_prints_one_line_per_event_and_exits_with_the_job(server):
    """`nommer watch ID`: the snapshot's row then one line per event (time, job id, kind, state, progress,
    worker); it ends when the job does, exit 0 for FINISHED (1 otherwise)."""
    server((200, [SNAPSHOT, job_event(101, "state", "ENCODING", None), job_event(102, "progress", "ENCODING", 40.0),
                  job_event(103, "state", "FINISHED", 100.0), job_event(104, "webhook", "FINISHED")]))
    run = cli_against(server.url)
    result = run("watch", JOB, env={"NOMMER_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split() for line in lines] == [
        ["2026-01-02", "03:04:00", JOB, "snapshot", "PENDING", "-", "-"],
        ["2026-01-02", "03:04:05", JOB, "state", "ENCODING", "-", "w1"],
        ["2026-01-02", "03:04:05", JOB, "progress", "ENCODING", "40%", "w1"],
        ["2026-01-02", "03:04:05", JOB, "state", "FINISHED", "100%", "w1"]]
    server((200, [SNAPSHOT, job_event(101, "state", "ERROR")]))
    result = run("watch", JOB, "--json")
    assert result.exit_code == 1, result.output
    assert [json.loads(line)["event"] for line in result.output.splitlines()] == ["snapshot", "job"]
