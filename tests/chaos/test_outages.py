"""Chaos: the job store or the work queue unreachable for a while, mid-run.

Embedded: the SQLite job store or queue file locked from another process
(``BEGIN EXCLUSIVE``): writers wait up to SQLite's busy timeout (30 s), then
fail. AWS: the moto endpoint made unreachable through a TCP relay that goes
down and comes back (restarting moto would lose its state). Either way the
daemons must keep running, their periodic loops must resume, and no job may
be lost.
"""

import collections
import os
import shutil
import time

import pytest

from tests.chaos.harness import (
    FATAL_LOG_MARKERS, OLD_NOMMER, OPTIONS, ChaosFeederd, HealthProbe, TcpProxy, ffprobe, ledger_changes,
    sequence_problems, sqlite_lock)
from tests.workerd.media import clip

#: SQLite's busy timeout in nommer.core.sqlite (seconds): a lock held longer
#: makes the daemons' writes fail instead of wait.
BUSY_TIMEOUT_S = 30.0

SETTINGS = dict(JOB_LEASE_S=3.0, HEARTBEAT_INTERVAL_S=0.5, MAX_JOB_ATTEMPTS=10, MAX_NUM_WORKERS=2,
                RETRY_BACKOFF_S=0.2, WORKER_MAX_IDLE_S=5.0, QUEUE_WAIT_TIME_S=1.0,
                WEBHOOK_BACKOFF_S=0.1, WEBHOOK_MAX_ATTEMPTS=10, AUTOSCALE_INTERVAL_S=0.5)


def submit_batch(feederd, root, hooks, n, tag, seconds=2):
    """Submit ``n`` realtime jobs of a ``seconds`` clip; returns {job_id: dest}."""
    src = os.path.join(root, f"in-{seconds}s.mp4")
    if not os.path.exists(src):
        shutil.copy(clip(seconds=seconds, size="320x240"), src)
    ids = {}
    for k in range(n):
        dest = os.path.join(root, "out", f"{tag}-{k}.mp4")
        job_id = feederd.call(feederd.client.submit, f"file://{src}", f"file://{dest}",
                              {"nommer": OLD_NOMMER, "options": OPTIONS["realtime"]}, notify_url=hooks.url)
        ids[job_id] = dest
    return ids


def wait_running(feederd, job_ids, timeout_s=60):
    """Wait until one of ``job_ids`` is encoding (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [feederd.call(feederd.client.get, i) for i in job_ids]
        if any(j["job_state"] == "ENCODING" for j in jobs):
            return
        time.sleep(0.1)
    raise AssertionError(f"none of {len(job_ids)} jobs started encoding in {timeout_s} s\n{feederd.log()}")


def after_outage(feederd, root, hooks, tag, n=2):
    """Loops resumed: once every worker has exited (idle), jobs submitted now
    need the autoscaler to start new workers, their slot loops to take the
    jobs, and the notifier to announce them. Returns {job_id: dest}."""
    deadline = time.monotonic() + 90
    while feederd.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not feederd.worker_pids(), "workers did not exit when idle"
    assert feederd.proc.poll() is None, f"feederd died:\n{feederd.log()}"
    return submit_batch(feederd, root, hooks, n, tag)


def check_outcome(feederd, hooks, dests, seconds=2):
    """Every job FINISHED once, its output complete, its webhooks complete and in order."""
    final = feederd.wait_all_final(list(dests), timeout_s=240)
    failed = {i: (j["job_state"], j["job_state_details"]) for i, j in final.items() if j["job_state"] != "FINISHED"}
    assert not failed, f"{failed}\n{feederd.log()}"
    for job_id, dest in dests.items():
        assert float(ffprobe(dest)["format"]["duration"]) == pytest.approx(seconds, abs=0.15)
        assert final[job_id]["output"]["size_bytes"] == os.path.getsize(dest)
    log = feederd.full_log()
    finished = collections.Counter(job for job, _, new in ledger_changes(log) if new == "FINISHED")
    assert {i: finished[i] for i in dests if finished[i] != 1} == {}  # stored once (nobody is killed here)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all("FINISHED" in hooks.states(i) for i in dests):
        time.sleep(0.2)
    time.sleep(1.0)
    problems = {i: (p, hooks.states(i)) for i in dests if (p := sequence_problems(hooks.states(i)))}
    assert problems == {}, problems
    fatal = [m for m in FATAL_LOG_MARKERS if m in log]
    assert not fatal, fatal
    return final


# --- embedded: a SQLite file locked from outside ------------------------------------------

#: (file, seconds held): a few seconds (writers wait), then past the busy
#: timeout (each process's first blocked write fails), and in the long variant
#: past twice the timeout (the writes queued behind it fail too).
QUICK_LOCKS = [("jobs.sqlite", 4.0), ("queue.sqlite", 4.0), ("jobs.sqlite", BUSY_TIMEOUT_S + 3)]
LONG_LOCKS = QUICK_LOCKS + [("queue.sqlite", BUSY_TIMEOUT_S + 3), ("jobs.sqlite", 2 * BUSY_TIMEOUT_S + 3),
                            ("queue.sqlite", 2 * BUSY_TIMEOUT_S + 3), ("jobs.sqlite", 8.0)]


def test_sqlite_locked_for_a_while_loses_nothing(root, hooks, long_run):
    """The job store, then the queue file, locked from outside mid-run (once past the busy timeout): feederd
    keeps answering /health, daemons retry, every job ends FINISHED and later work still runs."""
    feederd = ChaosFeederd(root, **SETTINGS).start()
    probe = HealthProbe(feederd.port)
    dests, episodes = {}, []
    try:
        probe.start()
        for k, (name, hold_s) in enumerate(LONG_LOCKS if long_run else QUICK_LOCKS):
            batch = submit_batch(feederd, root, hooks, 3, f"lock{k}")
            dests.update(batch)
            wait_running(feederd, batch)
            began = time.monotonic()
            with sqlite_lock(os.path.join(feederd.data_dir, name)):
                time.sleep(hold_s)
            episodes.append((name, hold_s, began, time.monotonic()))
        dests.update(after_outage(feederd, root, hooks, "after"))
        final = check_outcome(feederd, hooks, dests)
        probe.stop()

        # /health: an HTTP answer (200, or 503 while a file is locked) to
        # every probe, never a dropped connection, and 200 soon after.
        for name, hold_s, began, ended in episodes:
            during = probe.between(began, ended)
            assert during, f"no /health probe during the {name} lock"
            bad = [a for a in during if a[1] not in (200, 503)]
            assert not bad, (name, bad)
            assert max(a[2] for a in during) <= hold_s + 5, (name, during)
            after = [a for a in probe.between(ended, ended + 10) if a[1] == 200]
            assert after, f"/health not 200 within 10 s of the {name} lock ending: {probe.between(ended, ended + 10)}"
        attempts = collections.Counter(j["attempts"] for j in final.values())
        slowest = [(name, round(max(a[2] for a in probe.between(b, e)), 1)) for name, _, b, e in episodes]
        print(f"\nchaos sqlite locks: {len(dests)} jobs, locks {[(n, h) for n, h, _, _ in episodes]}, "
              f"attempts per job {dict(sorted(attempts.items()))}, slowest /health per lock {slowest} s, "
              f"{len(hooks.posts)} webhooks")
    finally:
        if probe.is_alive():
            probe.stop()
        feederd.stop()


# --- AWS: the endpoint unreachable -------------------------------------------------------

#: Seconds the AWS endpoint is down, one entry per outage.
QUICK_OUTAGES = [8.0]
LONG_OUTAGES = [8.0, 25.0, 3.0]


@pytest.fixture
def moto_proxy():
    from tests.aws_server import moto_endpoint, reset_moto
    endpoint = moto_endpoint()
    reset_moto()
    proxy = TcpProxy(int(endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_aws_endpoint_unreachable_for_a_while_loses_nothing(root, hooks, moto_proxy, long_run):
    """DynamoDB + SQS (moto) unreachable mid-run through a relay taken down then back: feederd and workers
    survive, /health says 503 then 200, every job ends FINISHED and work submitted afterwards still runs."""
    feederd = ChaosFeederd(root, **dict(
        SETTINGS, JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs", AWS_ENDPOINT_URL=moto_proxy.url,
        AWS_REGION="us-east-1", DYNAMODB_JOB_TABLE="nommer_jobs_chaos", CONFIG_S3_BUCKET="nommer-config-chaos",
        HEARTBEAT_INTERVAL_S=1.0)).start(timeout_s=60)
    probe = HealthProbe(feederd.port, every_s=0.5)
    dests, outages = {}, []
    try:
        probe.start()
        for k, down_s in enumerate(LONG_OUTAGES if long_run else QUICK_OUTAGES):
            batch = submit_batch(feederd, root, hooks, 3, f"outage{k}")
            dests.update(batch)
            wait_running(feederd, batch, timeout_s=90)
            began = time.monotonic()
            moto_proxy.down()
            time.sleep(down_s)
            moto_proxy.up()
            outages.append((down_s, began, time.monotonic()))
        dests.update(after_outage(feederd, root, hooks, "after"))
        final = check_outcome(feederd, hooks, dests)
        probe.stop()

        assert feederd.proc.poll() is None, "feederd died"
        for down_s, began, ended in outages:
            during = probe.between(began, ended)
            assert during and all(a[1] in (200, 503) for a in during), during
            assert any(a[1] == 503 for a in probe.between(began, ended + 5)), \
                f"/health never said 503 while the store was unreachable: {during}"
            after = [a for a in probe.between(ended, ended + 30) if a[1] == 200]
            assert after, "/health not 200 within 30 s of the endpoint coming back"
        log = feederd.full_log()
        # Periodic work kept going through the outage: each loop failed over
        # and over (a LoopingCall or TimerService killed by its first error
        # would have logged it once, then fallen silent).
        for what in ("autoscaling failed", "abandoning stale jobs failed", "receiving from media_nommer_jstate failed",
                     "receiving a job failed"):
            assert log.count(what) >= 2, f"{what!r} logged {log.count(what)} time(s)"
        attempts = collections.Counter(j["attempts"] for j in final.values())
        errors = sum("EndpointConnectionError" in line or "Could not connect" in line for line in log.splitlines())
        print(f"\nchaos aws outage: {len(dests)} jobs, endpoint down {[d for d, _, _ in outages]} s, "
              f"attempts per job {dict(sorted(attempts.items()))}, {errors} connection errors logged, "
              f"{len(hooks.posts)} webhooks")
    finally:
        if probe.is_alive():
            probe.stop()
        feederd.stop()
