"""SSE fan-out: 200 subscribers of ``GET /events`` on one feederd while jobs run.

Two figures (issue 12):

1. **Delay**: from a state change being stored to its event reaching every
   subscriber. A real ``twistd feederd`` with its local workers runs
   BENCH_SSE_JOBS tiny jobs (a 2 s 320x240 clip, x264 ultrafast) while
   BENCH_SSE_SUBSCRIBERS (200) streams are open; a subscriber process reads
   all of them (one ``selectors`` loop, raw HTTP/1.0 sockets) and notes when
   each event's last byte arrived on each. Per event: the latest arrival over
   all subscribers minus the event's ``at`` (the writer's clock when it
   recorded the change, right after storing it; same machine, same clock; ms
   precision). p99 over the ``state`` events: target 100 ms. The reference:
   the same run of jobs with one subscriber, first.
2. **Submit throughput** with and without the subscribers: ``wrk -t2 -c8``
   ``POST /job/submit`` for BENCH_SSE_SUBMIT_SECONDS (8 s) against a feederd
   with no fleet (jobs stay PENDING), alternately without and with the 200
   streams open (each submit is an event fanned out to all of them),
   BENCH_SSE_ROUNDS (3) rounds each; ratio of the medians: target 0.9. Every
   subscriber must get every submit's event. Beside it, feederd's CPU time
   per submit (user + system, from /proc) in both cases: steadier than a
   rate when other work shares the machine.

Everything (feederd, workers, ffmpeg, wrk, the subscriber process) shares the
machine's cores: the figures include that contention. Not a test: it never
fails on a number. ``python bench/sse_fanout.py``; ``BENCHMARKS_MD=`` prints
only.
"""

import datetime
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._report import Report, fmt  # noqa: E402
from bench.api_throughput import ensure_wrk, parse_wrk, post_script  # noqa: E402
from tests.e2e.harness import Feederd  # noqa: E402

SUBSCRIBERS = int(os.environ.get("BENCH_SSE_SUBSCRIBERS", "200"))
JOBS = int(os.environ.get("BENCH_SSE_JOBS", "12"))
SUBMIT_SECONDS = int(os.environ.get("BENCH_SSE_SUBMIT_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_SSE_ROUNDS", "3"))
#: Once told to stop, the subscriber process reads on until its streams were silent this long, seconds.
DRAIN_S = 0.5
DELAY_TARGET_S = 0.100
RATIO_TARGET = 0.9
NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
ONE_PASS = [{"outfile_options": [["c:v", "libx264"], ["preset", "ultrafast"], ["c:a", "aac"], ["f", "mp4"]]}]
#: feederd settings for both runs: the caps out of the way of one anonymous caller.
SETTINGS = dict(SSE_MAX_CLIENTS=2000, SSE_MAX_CLIENTS_PER_KEY=2000, API_RATE_LIMIT_PER_MINUTE=10**9,
                MAX_UNFINISHED_JOBS_PER_KEY=10**9)


# --- the subscriber process --------------------------------------------------------


def subscribe(port, n, out_path, light=False):
    """Open ``n`` streams (HTTP/1.0: no chunking) and read them all until
    ``out_path + ".stop"`` exists; ``out_path + ".ready"`` once every stream
    has its snapshot. Writes ``{"meta": {id: [job_id, kind, state, at]},
    "last": {id: latest arrival}, "count": {id: streams that got it},
    "closed": streams the server closed}`` to ``out_path``. ``light``: only
    stream 0 is read message by message (``meta``); the others count their
    job messages (``per_stream``: [count, ...]), which costs the subscriber
    process much less at hundreds of events a second."""
    sel = selectors.DefaultSelector()
    request = f"GET /events HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    streams = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        state = {"i": i, "buf": b"", "head": False, "snapshot": False, "jobs": 0}
        streams.append(state)
        sel.register(s, selectors.EVENT_READ, state)
    meta, last, count = {}, {}, {}
    closed = 0
    ready = False
    quiet_since = None  # once stopped: read on until nothing came for DRAIN_S
    while quiet_since is None or time.monotonic() - quiet_since < DRAIN_S:
        if quiet_since is None and os.path.exists(out_path + ".stop"):
            quiet_since = time.monotonic()
        ready_keys = sel.select(timeout=0.1)
        if ready_keys and quiet_since is not None:
            quiet_since = time.monotonic()
        for key, _ in ready_keys:
            now = time.time()
            state = key.data
            try:
                data = key.fileobj.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                closed += 1
                continue
            buf = state["buf"] + data
            if not state["head"]:
                if b"\r\n\r\n" not in buf:
                    state["buf"] = buf
                    continue
                buf = buf.split(b"\r\n\r\n", 1)[1]
                state["head"] = True
            if light and state["i"] and state["snapshot"]:
                state["jobs"] += buf.count(b"\nevent: job\n")
                state["buf"] = buf[buf.rfind(b"\n\n") + 2:] if b"\n\n" in buf else buf
                state["jobs"] -= state["buf"].count(b"\nevent: job\n")  # counted again when whole
                continue
            *blocks, state["buf"] = buf.split(b"\n\n")
            for block in blocks:
                if not block.startswith(b"id: "):
                    continue  # retry, comments, heartbeats
                head, _, rest = block.partition(b"\n")
                event_id = int(head[4:])
                if rest.startswith(b"event: snapshot"):
                    state["snapshot"] = True
                    continue
                if not rest.startswith(b"event: job"):
                    continue
                state["jobs"] += 1
                last[event_id] = max(last.get(event_id, 0.0), now)
                count[event_id] = count.get(event_id, 0) + 1
                if state["i"] == 0:
                    d = json.loads(rest.split(b"data: ", 1)[1])
                    meta[event_id] = [d["job_id"], d["kind"], d["state"], d["at"]]
        if not ready and all(s["snapshot"] for s in streams):
            ready = True
            open(out_path + ".ready", "w").close()
    with open(out_path, "w") as f:
        json.dump({"meta": meta, "last": last, "count": count, "closed": closed,
                   "per_stream": [s["jobs"] for s in streams]}, f)


class Subscribers:
    """The subscriber process, driven from the bench."""

    def __init__(self, port, n, workdir, light=False):
        self.n = n
        self.out = os.path.join(workdir, f"subscribers-{n}-{time.monotonic_ns()}.json")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--subscribe" + "-light" * light,
                                      str(port), str(n), self.out], start_new_session=True)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.out + ".ready"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {n} subscribers did not all get their snapshot")
            time.sleep(0.05)

    def stop(self):
        open(self.out + ".stop", "w").close()
        self.proc.wait(60)
        with open(self.out) as f:
            data = json.load(f)
        return {"meta": {int(k): v for k, v in data["meta"].items()},
                "last": {int(k): v for k, v in data["last"].items()},
                "count": {int(k): v for k, v in data["count"].items()}, "closed": data["closed"],
                "per_stream": data["per_stream"]}


# --- the bench ----------------------------------------------------------------------


def epoch(iso):
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def make_clip(path):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-shortest", path], check=True, timeout=60)


def run_jobs(feederd, root, n, tag):
    """Submit ``n`` jobs a little apart and wait until all are final; their ids."""
    ids = []
    for i in range(n):
        ids.append(feederd.client.submit(f"file://{root}/in.mp4", f"file://{root}/out-{tag}-{i}.mp4",
                                         {"nommer": NOMMER, "options": ONE_PASS}))
        time.sleep(0.2)
    for job_id in ids:
        job = feederd.client.wait(job_id, poll_interval_s=0.2, timeout_s=300)
        if job["job_state"] != "FINISHED":
            raise SystemExit(f"job {job_id} ended {job['job_state']}: {job.get('job_state_details')}")
    time.sleep(1.0)  # the last events on their way
    return ids


def delays(result, job_ids, n):
    """Per event of ``job_ids``: (kind, latest arrival - at); and how many events some stream missed."""
    out, missed = [], 0
    for event_id, (job_id, kind, _state, at) in result["meta"].items():
        if job_id not in job_ids:
            continue
        if result["count"].get(event_id, 0) < n:
            missed += 1
        out.append((kind, result["last"][event_id] - epoch(at)))
    return out, missed


def cpu_s(pid):
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def submit_rate(wrk, url, script, pid):
    """wrk's result, plus ``cpu_per_submit_s``: feederd's CPU seconds per request."""
    argv = [wrk, "-t2", "-c8", f"-d{SUBMIT_SECONDS}s", "--timeout", "5s", "--latency", "-s", script, url]
    before = cpu_s(pid)
    r = parse_wrk(subprocess.run(argv, capture_output=True, text=True, timeout=SUBMIT_SECONDS + 60,
                                 check=True).stdout)
    r["cpu_per_submit_s"] = (cpu_s(pid) - before) / max(1, r["requests"])
    print(f"  {r['rps']:.0f} submits/s, p99 {r['latency'].get(99, 0) * 1000:.1f} ms, {r['non2xx']} non-2xx, "
          f"feederd {r['cpu_per_submit_s'] * 1000:.2f} ms CPU a submit", flush=True)
    return r


def main():
    wrk = ensure_wrk()
    root = os.path.realpath(tempfile.mkdtemp(prefix="nommer-bench-sse-"))
    media = os.path.join(root, "media")
    os.makedirs(media)
    report = Report("SSE fan-out (GET /events)",
                    f"{SUBSCRIBERS} streams of `GET /events` on one real `twistd feederd` (SQLite store, local "
                    f"queue), read by one subscriber process. Delay: {JOBS} tiny jobs run by 2 local workers; "
                    "per event, the latest arrival over all streams minus the event's `at` (stored). "
                    f"Throughput: `wrk -t2 -c8 -d{SUBMIT_SECONDS}s` POST /job/submit on a feederd without "
                    "workers, alternately without and with the streams open.")
    feederd = None
    try:
        make_clip(os.path.join(media, "in.mp4"))
        feederd = Feederd(media, MAX_NUM_WORKERS=2, WORKER_MAX_IDLE_S=120.0, **SETTINGS).start()
        print("warm-up job", flush=True)
        run_jobs(feederd, media, 2, "warm")
        figures = {}
        for n in (1, SUBSCRIBERS):
            print(f"{JOBS} jobs with {n} subscriber(s)", flush=True)
            subs = Subscribers(feederd.port, n, root)
            ids = run_jobs(feederd, media, JOBS, f"n{n}")
            result = subs.stop()
            found, missed = delays(result, set(ids), n)
            state = [d for kind, d in found if kind == "state"]
            every = [d for _, d in found]
            figures[n] = (state, every, missed, result["closed"])
            print(f"  {len(every)} events ({len(state)} state): p50 {fmt(pct(state, 50), 's')}, "
                  f"p99 {fmt(pct(state, 99), 's')}, max {fmt(max(state), 's')}; missed {missed}", flush=True)
        state, every, missed, closed = figures[SUBSCRIBERS]
        ref_state = figures[1][0]
        report.figure(f"p99 delay, state change stored -> event at every one of {SUBSCRIBERS} subscribers "
                      f"({len(state)} state events)", pct(state, 99), "s", target=DELAY_TARGET_S)
        report.ratio(f"p99 delay with {SUBSCRIBERS} subscribers / with 1", pct(state, 99), pct(ref_state, 99),
                     unit="s")
        report.row("p50 / max delay, state events", f"{fmt(pct(state, 50), 's')} / {fmt(max(state), 's')}")
        report.row(f"p99 delay, every event of the jobs ({len(every)}: submitted, state, assigned, progress...)",
                   fmt(pct(every, 99), "s"))
        report.figure("events some subscriber missed; streams the server closed", missed + closed, "",
                      target=0)
        feederd.stop()
        feederd = None

        quiet = os.path.join(root, "quiet")
        os.makedirs(quiet)
        feederd = Feederd(quiet, FLEET_BACKEND="none", **SETTINGS).start()
        body = json.dumps({"source_path": f"file://{quiet}/in.mp4", "dest_path": f"file://{quiet}/out.mp4",
                           "notify_url": None, "job_options": {"nommer": NOMMER, "options": ONE_PASS}})
        script = post_script(os.path.join(root, "post.lua"), body)
        url = f"http://127.0.0.1:{feederd.port}/job/submit"
        for _ in range(30):
            urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), method="POST"), timeout=5).read()
        without, with_subs, lost = [], [], 0
        cpu_without, cpu_with = [], []
        for rnd in range(ROUNDS):
            print(f"round {rnd + 1}: without subscribers", flush=True)
            r = submit_rate(wrk, url, script, feederd.proc.pid)
            without.append(r["rps"])
            cpu_without.append(r["cpu_per_submit_s"])
            print(f"round {rnd + 1}: with {SUBSCRIBERS} subscribers", flush=True)
            subs = Subscribers(feederd.port, SUBSCRIBERS, root, light=True)
            r = submit_rate(wrk, url, script, feederd.proc.pid)
            time.sleep(1.0)
            result = subs.stop()
            with_subs.append(r["rps"])
            cpu_with.append(r["cpu_per_submit_s"])
            seen = len(result["meta"])  # stream 0's job messages: one per submit
            short = sum(1 for count in result["per_stream"] if count < seen)
            lost += short + result["closed"]
            print(f"  {seen} submit events at stream 0; {short} streams got fewer, {result['closed']} closed",
                  flush=True)
        report.ratio(f"submits/s with {SUBSCRIBERS} subscribers / without (medians of {ROUNDS} rounds)",
                     statistics.median(with_subs), statistics.median(without), unit="req/s", target=RATIO_TARGET,
                     higher_is_better=True)
        report.row("submits/s per round, without / with", " ; ".join(f"{a:.0f} / {b:.0f}"
                                                                     for a, b in zip(without, with_subs)))
        report.ratio(f"feederd CPU per submit without / with {SUBSCRIBERS} subscribers (medians)",
                     statistics.median(cpu_without), statistics.median(cpu_with), unit="s")
        report.figure("streams that missed a submit event or were closed (all rounds)", lost, "", target=0)
        report.note(f"{os.cpu_count()} CPUs shared by feederd, its workers and ffmpeg, wrk and the subscriber "
                    "process (and whatever else runs on the machine): the delays include waiting for a core.")
        report.note("Where the delay goes: the writer stores the change and announces the event on the "
                    "state-change queue (SQLite here, polled every LOCAL_QUEUE_POLL_INTERVAL_S = 20 ms by "
                    "feederd's notifier), the hub reads the job from the store for a state event, then writes "
                    "the streams at most every 50 ms (events_hub.FLUSH_INTERVAL_S), each in one send.")
    finally:
        if feederd is not None:
            feederd.stop()
    report.write()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1].startswith("--subscribe"):
        subscribe(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], light=sys.argv[1].endswith("-light"))
    else:
        main()
