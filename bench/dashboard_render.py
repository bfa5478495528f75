"""Dashboard first render: the job table of ``/ui/`` with 10,000 jobs stored, measured in the browser.

A real ``twistd feederd`` (SQLite store; ``FLEET_BACKEND = "none"``, so nothing runs) whose store holds
BENCH_DASHBOARD_JOBS (10,000) jobs made with the Job model: spread over the last seven days, 9,800 final
(FINISHED with an HLS output's file list, ERROR, CANCELED, ABANDONED) and 200 not (150 PENDING, 50
ENCODING with progress), so the stream's snapshot is 250 rows. Headless Debian chromium (Selenium, the
test harness's browser) at 1280x720 with its HTTP cache disabled loads ``/ui/`` BENCH_DASHBOARD_ROUNDS
(5) times, a fresh page each time. Figures, in milliseconds from the navigation's start
(``performance.now()`` in the page):

- **first render**: the job table's first page (50 rows from ``GET /jobs``) drawn (the page's
  ``nommer:jobs`` performance mark): target ≤ 1 s;
- the largest contentful paint (``PerformanceObserver``, ``largest-contentful-paint``);
- the stream's snapshot received and applied to the table (``nommer:snapshot``).

The reference: the same page on an empty store, measured in the same run. Not a test: it never fails
on a number. ``python bench/dashboard_render.py``; ``BENCHMARKS_MD=`` prints only.
"""

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._report import Report, fmt  # noqa: E402
from nommer.core.job import Job  # noqa: E402
from nommer.core.spec import OUTPUTS_NOMMER  # noqa: E402
from tests.browser.harness import chromium_session  # noqa: E402
from tests.e2e.harness import Feederd  # noqa: E402

JOBS = int(os.environ.get("BENCH_DASHBOARD_JOBS", "10000"))
ROUNDS = int(os.environ.get("BENCH_DASHBOARD_ROUNDS", "5"))
OPEN_PENDING, OPEN_ENCODING = 150, 50
TARGET_S = 1.0
SETTINGS = dict(FLEET_BACKEND="none", API_RATE_LIMIT_PER_MINUTE=10**9, MAX_UNFINISHED_JOBS_PER_KEY=10**9)

M3U8 = "application/vnd.apple.mpegurl"

#: What a worker reports for a small hls-h264 job (as GET /job/<id> shows it).
HLS_OUTPUT = {"outputs": [{
    "type": "hls", "name": "master.m3u8", "dir": "stream", "segment_s": 6, "manifest": "stream/master.m3u8",
    "rungs": [{"name": "360p", "width": 640, "height": 360, "codec": "avc1.64001e", "fps": 30.0,
               "bitrate_peak": 943800, "bitrate_average": 801000, "bitrate_target": 730000},
              {"name": "234p", "width": 416, "height": 234, "codec": "avc1.640015", "fps": 30.0,
               "bitrate_peak": 400100, "bitrate_average": 351000, "bitrate_target": 365000}],
    "audio": [{"language": None, "codec": "mp4a.40.2", "channels": 2, "bitrate_average": 132156,
               "bitrate_peak": 132156}],
    "files": [{"path": f"stream/{name}", "bytes": size, "content_type": ctype} for name, size, ctype in (
        ("master.m3u8", 612, M3U8), ("video_360p.m3u8", 240, M3U8), ("video_234p.m3u8", 240, M3U8),
        ("audio_1.m3u8", 181, M3U8),
        ("init-0.m4s", 827, "video/iso.segment"), ("init-1.m4s", 812, "video/iso.segment"),
        ("init-2.m4s", 765, "video/iso.segment"), ("chunk-0-00001.m4s", 600123, "video/iso.segment"),
        ("chunk-1-00001.m4s", 263001, "video/iso.segment"), ("chunk-2-00001.m4s", 99120, "video/iso.segment"))],
    "file_count": 10, "bytes": 966021}], "size_bytes": 966021}


DESCRIPTION = (
    f"A real feederd (SQLite store, no fleet) holding {JOBS:,} jobs of a busy week (9,800 final: FINISHED with "
    f"an HLS output's file list, ERROR, CANCELED, ABANDONED; {OPEN_PENDING} PENDING and {OPEN_ENCODING} ENCODING "
    f"among the newest, so the first page mixes both); headless Debian chromium at 1280x720, HTTP cache off, "
    f"loads /ui/ {ROUNDS} times. Times in the page (performance.now(), from the navigation's start): the job "
    f"table's first page drawn (mark nommer:jobs), the largest contentful paint (PerformanceObserver), the "
    f"stream's snapshot applied (nommer:snapshot). Reference: the same page on an empty store, same run.")


def make_jobs(n, now):
    """``n`` Job objects as a busy week leaves them, newest last."""
    jobs = []
    span_s = 7 * 86400
    open_count = OPEN_PENDING + OPEN_ENCODING
    recent = n - 2 * open_count  # the newest 2 x open_count jobs: every other one still open
    for i in range(n):
        created = now - span_s + span_s * i / n
        common = dict(job_id=f"{i:050x}", source_path=f"s3://masters/title-{i}.mov", dest_path=f"s3://out/title-{i}/",
                      nommer=OUTPUTS_NOMMER, job_options={"preset": "hls-h264", "outputs": []},
                      created_at=created, updated_at=created)
        still_open = i >= recent and (i - recent) % 2 == 0
        rank = (i - recent) // 2  # 0..open_count-1 among the open ones, oldest first
        if still_open and rank >= OPEN_ENCODING:
            jobs.append(Job(job_state="PENDING", **common))
            continue
        started = created + 2.5
        worker = f"i-0{(i % 12):015x}"
        if still_open:
            jobs.append(Job(**dict(common, updated_at=started + 20), job_state="ENCODING", attempts=1,
                            worker_id=worker, started_at=started, progress=float(i % 10 * 10),
                            heartbeat_at=started + 20))
            continue
        kind = i % 100
        state = "FINISHED" if kind < 88 else "ERROR" if kind < 95 else "CANCELED" if kind < 99 else "ABANDONED"
        finished = started + 30 + i % 90
        details = {"ERROR": "ffmpeg exited with status 1: Invalid data found when processing input",
                   "CANCELED": "canceled by request", "ABANDONED": "no heartbeat for 300 s"}.get(state)
        jobs.append(Job(**dict(common, updated_at=finished), job_state=state, job_state_details=details,
                        attempts=1 if state != "ABANDONED" else 3, worker_id=worker, started_at=started,
                        finished_at=finished, progress=100.0 if state == "FINISHED" else 40.0,
                        output=HLS_OUTPUT if state == "FINISHED" else None))
    return jobs


def fill(feederd, n):
    """Put ``n`` jobs in the (stopped) feederd's SQLite store, in one transaction."""
    rows = [(j.job_id, j.job_state.value, j.created_at, j.updated_at, j.owner, json.dumps(j.to_dict()))
            for j in make_jobs(n, time.time())]
    db = sqlite3.connect(os.path.join(feederd.data_dir, "jobs.sqlite"))
    try:
        with db:
            db.executemany("INSERT INTO jobs (job_id, job_state, created_at, updated_at, owner, doc)"
                           " VALUES (?, ?, ?, ?, ?, ?)", rows)
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        db.close()


MEASURE = """
const done = arguments[arguments.length - 1];
const lcp = [];
new PerformanceObserver((list) => lcp.push(...list.getEntries())).observe({type: "largest-contentful-paint",
                                                                          buffered: true});
const mark = (name) => (performance.getEntriesByName(name)[0] || {}).startTime ?? null;
setTimeout(() => done({jobs: mark("nommer:jobs"), snapshot: mark("nommer:snapshot"),
                       lcp: lcp.length ? lcp[lcp.length - 1].startTime : null,
                       rows: document.querySelectorAll("table.jobs tbody tr").length,
                       resources: performance.getEntriesByType("resource").map((e) => [e.name, e.transferSize])}), 50);
"""


def load_once(driver, url):
    """One fresh page load; the page's figures (ms) once the table and the snapshot are in."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = driver.execute_script("return !!(window.nommerUi && window.nommerUi.firstRender.jobs"
                                      " && window.nommerUi.firstRender.snapshot)")
        if ready:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the dashboard did not render its jobs and snapshot within 30 s")
    return driver.execute_async_script(MEASURE)


def measure(feederd, driver, rounds):
    url = f"http://127.0.0.1:{feederd.port}/ui/"
    return [load_once(driver, url) for _ in range(rounds)]


def sizes(port):
    """Bytes of GET /jobs?limit=50 and of the stream's snapshot message."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs?limit=50", timeout=30) as r:
        page = len(r.read())
    request = urllib.request.Request(f"http://127.0.0.1:{port}/events")
    with urllib.request.urlopen(request, timeout=30) as r:
        buf = b""
        while b"event: snapshot" not in buf or not buf.split(b"event: snapshot", 1)[1].count(b"\n\n"):
            buf += r.read1(65536)
    snapshot = buf.split(b"event: snapshot", 1)[1].split(b"\n\n", 1)[0]
    return page, len(snapshot)


def main():
    report = Report("Dashboard first render with 10,000 jobs (bench/dashboard_render.py)", DESCRIPTION)
    with tempfile.TemporaryDirectory(prefix="nommer-bench-dash-") as tmp:
        empty_root, full_root = os.path.join(tmp, "empty"), os.path.join(tmp, "full")
        os.makedirs(empty_root)
        os.makedirs(full_root)
        empty = Feederd(empty_root, **SETTINGS)
        full = Feederd(full_root, **SETTINGS)
        started = []
        try:
            full.start()  # creates the store's tables
            full.stop()
            t0 = time.monotonic()
            stored = fill(full, JOBS)
            fill_s = time.monotonic() - t0
            for daemon in (empty, full):
                daemon.start()
                started.append(daemon)
            page_bytes, snapshot_bytes = sizes(full.port)
            with chromium_session() as driver:
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": 1280, "height": 720, "deviceScaleFactor": 1, "mobile": False})
                driver.execute_cdp_cmd("Network.enable", {})
                driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
                measure(empty, driver, 1)  # the browser's own warm-up (first page of the session)
                reference = measure(empty, driver, ROUNDS)
                runs = measure(full, driver, ROUNDS)
        finally:
            for daemon in started:
                daemon.stop()

    def med(samples, key):
        values = [s[key] for s in samples if s[key] is not None]
        return statistics.median(values) / 1000 if values else None

    first = [r["jobs"] / 1000 for r in runs]
    report.figure(f"first render, {stored:,} jobs stored: median of {ROUNDS} loads", statistics.median(first), "s",
                  target=TARGET_S)
    report.figure("first render, slowest load", max(first), "s", target=TARGET_S)
    report.ratio("first render: 10,000 jobs / empty store (medians)", statistics.median(first), med(reference, "jobs"),
                 unit="s")
    report.row("largest contentful paint, median (10,000 jobs / empty)",
               f"{fmt(med(runs, 'lcp'), 's')} / {fmt(med(reference, 'lcp'), 's')}")
    report.row("snapshot received and applied, median (10,000 jobs / empty)",
               f"{fmt(med(runs, 'snapshot'), 's')} / {fmt(med(reference, 'snapshot'), 's')}")
    report.row("rows drawn on the first page", str(runs[0]["rows"]))
    report.row("GET /jobs?limit=50 / the snapshot message",
               f"{page_bytes / 1000:.1f} kB / {snapshot_bytes / 1000:.1f} kB "
               f"({OPEN_PENDING + OPEN_ENCODING} open + the last final jobs)")
    per_load = ", ".join(f"{v:.3f}" for v in first)
    per_load_empty = ", ".join(f"{r['jobs'] / 1000:.3f}" for r in reference)
    report.note(f"per-load first render (s): {per_load}; empty store: {per_load_empty}")
    files = len([name for name, _ in runs[0]["resources"] if "/ui/" in name])
    report.note(f"{stored:,} jobs written to the SQLite store in {fill_s:.1f} s (one transaction); HTTP cache "
                f"disabled, so each load fetches the page's {files} files again.")
    report.note("headless chromium, feederd and this script share the machine's 2 cores with the other work on it.")
    report.write()


if __name__ == "__main__":
    main()
