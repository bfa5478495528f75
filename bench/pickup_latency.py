"""Pick-up latency: how long a job waits between submit and an idle worker
starting it (``started_at - created_at``), with real daemons.

Starts feederd with FLEET_BACKEND = "none" and one workerd by hand, so the
worker is idle and long-polling when each job arrives; submits tiny jobs one
after another and prints the figures. Not a test: it never fails on a number.
"""

import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.e2e.harness import TWISTD, Feederd  # noqa: E402
from tests.workerd.media import clip  # noqa: E402

JOBS = int(os.environ.get("BENCH_JOBS", "20"))


def ts(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def main():
    root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-"))
    src = os.path.join(root, "in.mp4")
    shutil.copy(clip(seconds=1, size="320x240"), src)
    feederd = Feederd(root, FLEET_BACKEND="none", QUEUE_WAIT_TIME_S=20.0, WORKER_MAX_IDLE_S=600.0).start()
    worker = subprocess.Popen([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "workerd", "--local",
                               "--worker-id", "bench-worker", "--config", feederd.config],
                              cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
               "options": [{"outfile_options": [["c", "copy"], ["f", "mp4"]]}]}
    try:
        pickups, totals = [], []
        for i in range(JOBS + 1):
            job_id = feederd.client.submit(f"file://{src}", f"file://{root}/out{i}.mp4", options)
            job = feederd.client.wait(job_id, poll_interval_s=0.01, timeout_s=60)
            assert job["job_state"] == "FINISHED", job
            if i == 0:
                continue  # the first one also pays for the worker's start-up
            pickups.append(ts(job["started_at"]) - ts(job["created_at"]))
            totals.append(ts(job["finished_at"]) - ts(job["created_at"]))
            time.sleep(0.05)  # let the worker go back to waiting on an empty queue
        q = statistics.quantiles(pickups, n=20)
        print(f"jobs: {len(pickups)} (stream copy of a 1 s clip, one idle worker)")
        print(f"pick-up latency ms: median {statistics.median(pickups) * 1000:.1f}  "
              f"p95 {q[18] * 1000:.1f}  max {max(pickups) * 1000:.1f}")
        print(f"submit to FINISHED ms: median {statistics.median(totals) * 1000:.1f}  max {max(totals) * 1000:.1f}")
    finally:
        worker.terminate()
        worker.wait(30)
        feederd.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
