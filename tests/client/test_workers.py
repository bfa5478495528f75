"""`NommerClient.workers()` and `nommer workers` against the stand-in feederd (tests/client/conftest.py).
The real endpoint is tested in tests/feederd/test_api_workers.py (with the client over a real socket)."""

import json

import pytest
from click.testing import CliRunner

from nommer.client.api import APIError, NommerClient
from nommer.client.cli import _duration, cli

JOB = "3f9c" + "0" * 46


def worker(worker_id, **kw):
    w = {"worker_id": worker_id, "state": "running", "jobs": [], "capacity": 1, "jobs_done": 0, "host": "h",
         "version": "0.1.0", "instance_id": None, "instance_type": None, "availability_zone": None,
         "market": None, "started_at": 1.0, "last_seen": 2.0, "current_jobs": [], "seen_s_ago": 3.2,
         "alive": True}
    w.update(kw)
    return w


@pytest.fixture
def run(feederd):
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, ["--api", feederd.url, *args])


def test_client_returns_the_workers_list(feederd):
    """workers() GETs /workers and returns the list as sent."""
    feederd.workers = [worker("a"), worker("b", state="exited", alive=False)]
    assert NommerClient(feederd.url, timeout_s=5).workers() == feederd.workers
    assert feederd.requests[-1][:2] == ("GET", "/workers")


def test_client_raises_the_503_of_a_feederd_without_registry(feederd):
    """The API's NOREGISTRY answer is an APIError with its code and status."""
    feederd.next_error = (503, "application/json", json.dumps(
        {"success": False, "error_code": "NOREGISTRY", "message": "this feederd has no worker registry"}).encode())
    with pytest.raises(APIError) as raised:
        NommerClient(feederd.url, timeout_s=5).workers()
    assert (raised.value.status, raised.value.error_code) == (503, "NOREGISTRY")


def test_table_of_local_workers(run, feederd):
    """Local workers: id, state (silent ones marked), jobs running/capacity, seen ago, running jobs
    with progress; no uptime/cost columns without instances."""
    feederd.workers = [
        worker("host-1-w0", jobs=[JOB], capacity=2, seen_s_ago=4.7,
               current_jobs=[{"job_id": JOB, "job_state": "ENCODING", "progress": 42.4}]),
        worker("host-1-w1", state="draining", seen_s_ago=725.0, alive=False),
        worker("host-2-w0", state="exited", seen_s_ago=90000.0, alive=False),
    ]
    result = run("workers")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WORKER", "STATE", "TYPE", "JOBS", "SEEN", "RUNNING"]
    assert lines[1].split() == ["host-1-w0", "running", "-", "1/2", "4s", "ago", JOB, "ENCODING", "42%"]
    assert lines[2].split() == ["host-1-w1", "draining", "(silent)", "-", "0/1", "12m05s", "ago", "-"]
    assert lines[3].split() == ["host-2-w0", "exited", "-", "0/1", "1d01h", "ago", "-"]
    assert len(lines) == 4


def test_table_with_instances_shows_uptime_and_cost(run, feederd):
    """With a cloud fleet, each worker's instance type, uptime and cost appear."""
    feederd.workers = [
        worker("i-0abc", instance_id="i-0abc", instance_type="c7i.large", market="spot",
               instance={"instance_id": "i-0abc", "uptime_s": 3725.0, "cost_usd": 0.0421}),
        worker("host-1-w0"),
    ]
    result = run("workers")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["WORKER", "STATE", "TYPE", "JOBS", "SEEN", "UPTIME", "COST", "RUNNING"]
    assert lines[1].split() == ["i-0abc", "running", "c7i.large", "0/1", "3s", "ago", "1h02m", "$0.042", "-"]
    assert lines[2].split() == ["host-1-w0", "running", "-", "0/1", "3s", "ago", "-", "-", "-"]


def test_json_and_empty(run, feederd):
    """--json prints the list as the API gave it; no workers says so."""
    assert run("workers").stdout == "no workers\n"
    feederd.workers = [worker("a", current_jobs=[{"job_id": JOB, "job_state": "UPLOADING", "progress": None}])]
    result = run("workers", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == feederd.workers


def test_duration():
    """Durations read at a glance: two units at most, never negative (clock skew)."""
    assert [_duration(s) for s in (None, -1, 0, 59.9, 60, 3599, 3600, 86399, 86400 * 3 + 3600 * 4)] == \
        ["-", "0s", "0s", "59s", "1m00s", "59m59s", "1h00m", "23h59m", "3d04h"]
