"""The dashboard (``/ui/``) in headless Debian chromium against a real feederd with real workers.

What a person does with it, through the page only: submit a job from the form (a server preset with
overrides) and watch its progress bar reach 100 % without reloading; open the job's page, read its
event log, point the page at where the outputs are served and play the HLS output in the page; cancel
a running job from the table; retry a failed job from its page; look at the workers and the fleet;
use it by keyboard; read it on a phone; give it an API key once and forget it. Every test ends with
no error in the browser console (``page`` fixture).

Screenshots (1280x720 and 375x812) are written to a temporary directory whose path is printed.
"""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from functools import partial
from http.server import ThreadingHTTPServer

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from nommer.client.api import NommerClient
from nommer.feederd.fleet.base import FleetTrouble
from tests.browser.harness import PLAYER_DIR, VENDOR_DIR, MediaServer, _Handler
from tests.e2e.harness import Feederd
from tests.e2e.test_e2e import OLD_NOMMER, realtime_pass
from tests.e2e.test_e2e_events import create_key
from tests.workerd.media import clip
from tests.workerd.outputs.media import make_source

FINAL = {"FINISHED", "ERROR", "ABANDONED", "CANCELED"}
DESKTOP = (1280, 720)
PHONE = (375, 812)


# --- fixtures --------------------------------------------------------------------------------

class Dashboard:
    """A feederd (and its workers) with the tiny sources the tests use."""

    def __init__(self, root):
        self.root = root
        # Workers stay up between the tests (no cold start for each job); two at once.
        self.feederd = Feederd(root, MAX_NUM_WORKERS=2, WORKER_MAX_IDLE_S=60.0)
        self.short = make_source(root, "short.mp4", width=320, height=180, duration_s=2)
        self.long = os.path.join(root, "long.mp4")
        shutil.copy(clip(seconds=10, size="320x240"), self.long)
        self.shared = {}

    @property
    def ui(self):
        return f"http://127.0.0.1:{self.feederd.port}/ui/"

    def api(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.feederd.port}{path}", timeout=10) as r:
            return json.load(r)


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    dashboard = Dashboard(str(tmp_path_factory.mktemp("dashboard")))
    dashboard.feederd.start()
    yield dashboard
    dashboard.feederd.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, request):
    """The directory the screenshots go to: NOMMER_SCREENSHOT_DIR (CI uploads it) or a temporary one; its
    path is written to the terminal at the end, whatever the output capture."""
    given = os.environ.get("NOMMER_SCREENSHOT_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
    directory = given or str(tmp_path_factory.mktemp("dashboard-screenshots"))
    yield directory
    names = sorted(os.listdir(directory))
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    line = f"dashboard screenshots ({', '.join(names) or 'none'}): {directory}"
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def set_viewport(driver, size):
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def console_errors(driver, allowed=()):
    """SEVERE entries of the browser console since the last call, except those containing one of
    ``allowed``."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


@pytest.fixture
def page(chromium):
    """The session's chromium at 1280x720 with a clean console; after the test the console must hold
    no error (``page.allowed_errors``: substrings of expected ones) and the viewport is reset."""
    chromium.get("about:blank")
    console_errors(chromium)
    set_viewport(chromium, DESKTOP)
    chromium.allowed_errors = ()
    yield chromium
    errors = console_errors(chromium, chromium.allowed_errors)
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    chromium.get("about:blank")
    assert not errors, f"errors in the browser console: {errors}"


def wait(driver, predicate, what, timeout_s=30):
    def attempt(_driver):
        try:
            return predicate()
        except StaleElementReferenceException:
            return False
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(attempt)
    except TimeoutException:
        state = driver.execute_script("return {hash: location.hash, rendered: document.body.dataset.rendered,"
                                      " stream: document.body.dataset.stream,"
                                      " text: document.querySelector('main').innerText.slice(0, 1500)};")
        raise AssertionError(f"no {what} within {timeout_s} s; page: {state}") from None


def shot(driver, artifacts, name):
    path = os.path.join(artifacts, name)
    driver.save_screenshot(path)
    print(f"screenshot: {path}")
    return path


def row_of(driver, job_id):
    found = driver.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')
    return found[0] if found else None


def row_state(driver, job_id):
    """``(state, progress value)`` of the job's row in the table, or None."""
    return driver.execute_script(
        "const tr = document.querySelector(`tr[data-job-id='${arguments[0]}']`);"
        "return tr ? [tr.dataset.state, tr.querySelector('progress').value] : null;", job_id)


def open_ui(driver, dash, route="#/", rendered="jobs"):
    driver.get(dash.ui + route)
    wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == rendered,
         f"the {rendered} view")
    wait(driver, lambda: driver.execute_script("return document.body.dataset.stream") == "live", "a live stream")


def submit_api(dash, **body):
    request = urllib.request.Request(f"http://127.0.0.1:{dash.feederd.port}/job/submit",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)["job_id"]


class _CorsHandler(_Handler):
    """The harness's media handler, answering any origin: the dashboard (feederd's origin) fetches
    playlists and segments from this server with XHR, as it would from a CDN that allows it."""

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Headers", "Range")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")
        super().end_headers()

    def do_OPTIONS(self):
        self.send_response(204)
        self.end_headers()


class CorsMediaServer(MediaServer):
    def start(self):
        handler = partial(_CorsHandler, directory=str(self.root),
                          mounts={"/__player/": str(PLAYER_DIR), "/__vendor/": str(VENDOR_DIR)})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.requests = self.requests
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self


# --- the files ------------------------------------------------------------------------------------

def test_static_files_types_caching_and_no_listing(dash):
    """/ui/ serves the page and its modules with the right Content-Types and Cache-Control, the
    vendored players cacheable, no directory listing, nothing outside the directory; /ui redirects."""
    base = f"http://127.0.0.1:{dash.feederd.port}"

    def fetch(path):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.headers, r.read(), r.url
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read(), path

    status, headers, body, _ = fetch("/ui/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="app.js">' in body
    assert headers["Cache-Control"] == "no-cache"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    js = "text/javascript; charset=utf-8"
    for path, ctype in (("/ui/app.js", js), ("/ui/jobs.js", js), ("/ui/style.css", "text/css; charset=utf-8"),
                        ("/ui/icon.svg", "image/svg+xml")):
        status, headers, _, _ = fetch(path)
        assert (status, headers["Content-Type"], headers["Cache-Control"]) == (200, ctype, "no-cache"), path
    status, headers, body, _ = fetch("/ui/vendor/hls.min.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "public, max-age=86400" and len(body) > 100_000
    for path in ("/ui/vendor/", "/ui/vendor", "/ui/nothing.js", "/ui/%2e%2e/api.py", "/ui/..%2fapi.py"):
        status, _, body, _ = fetch(path)
        assert status == 404 and b"hls.min.js" not in body, path
    status, _, _, url = fetch("/ui")
    assert status == 200 and url.endswith("/ui/")
    # a loopback feederd answers the page only under a loopback name (the API's DNS-rebinding guard)
    request = urllib.request.Request(base + "/ui/", headers={"Host": f"evil.example:{dash.feederd.port}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 421


# --- jobs ---------------------------------------------------------------------------------------

def test_submit_from_the_form_and_watch_progress_reach_100_without_reload(page, dash, artifacts):
    driver = page
    open_ui(driver, dash, "#/submit", rendered="submit")
    Select(driver.find_element(By.ID, "f-preset")).select_by_value("hls-h264")
    assert "HLS" in driver.find_element(By.ID, "f-preset-help").text
    driver.find_element(By.ID, "f-source").send_keys(f"file://{dash.short}")
    driver.find_element(By.ID, "f-dest").send_keys(f"file://{dash.root}/form-out/")
    driver.find_element(By.ID, "f-overrides").send_keys('{"encoder_preset": "ultrafast"}')
    driver.find_element(By.CSS_SELECTOR, "form.submit-form button[type=submit]").click()
    link = wait(driver, lambda: driver.find_elements(By.ID, "submitted-job"), "the submitted job's link")[0]
    job_id = link.get_attribute("data-job-id")
    submitted = dash.api(f"/job/{job_id}")["job"]
    assert submitted["preset"] == "hls-h264"
    assert submitted["outputs"][0]["encoder_preset"] == "ultrafast"

    driver.execute_script("window.noReloadMarker = 42;")
    driver.find_element(By.LINK_TEXT, "See it in the job table").click()
    seen = []

    def finished():
        state = row_state(driver, job_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state and state[0] == "FINISHED" and state[1] == 100
    wait(driver, finished, "the job FINISHED at 100 % in the table", timeout_s=90)
    assert driver.execute_script("return window.noReloadMarker") == 42, "the page was reloaded"
    assert seen[0][0] != "FINISHED", f"the row should have been seen before the end: {seen}"
    assert [s for s, _ in seen][-1] == "FINISHED"
    row = row_of(driver, job_id)
    assert row.find_element(By.CSS_SELECTOR, ".progress-text").text == "100 %"
    assert row.find_element(By.CSS_SELECTOR, ".badge").text == "FINISHED"
    job = dash.api(f"/job/{job_id}")["job"]
    assert job["job_state"] == "FINISHED" and job["progress"] == 100
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Worker"]').text == job["worker_id"]
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Attempts"]').text == str(job["attempts"])
    assert row.find_element(By.CSS_SELECTOR, '[data-label="Ran"]').text.endswith("s")
    dash.shared["form_job"] = job_id
    shot(driver, artifacts, "jobs-1280x720.png")


def test_job_page_shows_the_event_log_and_plays_the_hls_output(page, dash, artifacts):
    driver = page
    job_id = dash.shared.get("form_job")
    if job_id is None:  # run alone: the same job through the API
        job_id = submit_api(dash, source_path=f"file://{dash.short}", dest_path=f"file://{dash.root}/form-out/",
                            preset="hls-h264", overrides={"encoder_preset": "ultrafast"})
        dash.feederd.wait_for(job_id, lambda j: j["job_state"] in FINAL, what="the job's end")
    job = dash.api(f"/job/{job_id}")["job"]
    events = dash.api(f"/job/{job_id}/events")["events"]
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")

    shown = driver.execute_script(
        "return [...document.querySelectorAll('table.events tbody tr')].map(tr => "
        "[Number(tr.cells[0].textContent), tr.dataset.kind]);")
    assert shown == [[e["seq"], e["kind"]] for e in events]
    assert {"submitted", "assigned", "state"} <= {kind for _, kind in shown}
    fields = driver.find_element(By.CSS_SELECTOR, "dl.fields").text
    assert "FINISHED" in fields and job["worker_id"] in fields and "hls-h264" in fields

    # file:// outputs: paths shown, no link and no player until a media base URL is given.
    assert "stream/master.m3u8" in driver.find_element(By.CSS_SELECTOR, ".output").text
    assert not driver.find_elements(By.CSS_SELECTOR, ".output a")
    assert not driver.find_elements(By.CSS_SELECTOR, "button.play")
    with CorsMediaServer(os.path.join(dash.root, "form-out")) as media:
        base = driver.find_element(By.ID, "media-base")
        base.send_keys(media.base_url)
        base.send_keys(Keys.ENTER)
        play = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, 'button.play[data-kind="hls"]'),
                    "the Play HLS button")[0]
        hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, ".output ul.files a")]
        assert media.url("stream/master.m3u8") in hrefs
        assert len(hrefs) == len(job["outputs"][0]["files"])
        assert driver.execute_script("return localStorage.getItem('nommer.mediaBase')")
        play.click()

        def playing():
            return driver.execute_script(
                "const v = document.getElementById('player-video');"
                "return v && v.videoWidth === 320 && v.videoHeight === 180 && (v.currentTime >= 0.5 || v.ended)"
                " && [v.currentTime, v.videoWidth];")
        wait(driver, playing, "the HLS output playing at 320x180", timeout_s=30)
        note = driver.find_element(By.CSS_SELECTOR, "#player p.small").text
        assert "hls.js" in note, note
        assert not driver.find_element(By.CSS_SELECTOR, "#player p.error").text
        assert ("GET", "/stream/master.m3u8", 200) in media.requests
        assert any(path.endswith(".m4s") and status in (200, 206) for _, path, status in media.requests)
        driver.execute_script("window.scrollTo(0, 0)")
        shot(driver, artifacts, "job-1280x720.png")
    driver.execute_script("localStorage.clear()")


def test_job_page_plays_the_dash_output(page, dash):
    """A cmaf-h264 job (HLS and DASH over one set of segments): its DASH MPD plays in the page with
    dash.js, the media base URL given once for the job's destination."""
    driver = page
    job_id = submit_api(dash, source_path=f"file://{dash.short}", dest_path=f"file://{dash.root}/cmaf-out/",
                        preset="cmaf-h264", overrides={"encoder_preset": "ultrafast"})
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    with CorsMediaServer(os.path.join(dash.root, "cmaf-out")) as media:
        base = driver.find_element(By.ID, "media-base")
        base.send_keys(media.base_url, Keys.ENTER)
        play = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, 'button.play[data-kind="dash"]'),
                    "the Play DASH button once the job has finished", timeout_s=90)[0]
        assert driver.find_elements(By.CSS_SELECTOR, 'button.play[data-kind="hls"]')
        play.click()
        wait(driver, lambda: driver.execute_script(
            "const v = document.getElementById('player-video');"
            "return v && v.videoWidth === 320 && (v.currentTime >= 0.5 || v.ended);"),
            "the DASH output playing at 320 px wide", timeout_s=30)
        assert "dash.js" in driver.find_element(By.CSS_SELECTOR, "#player p.small").text
        assert ("GET", "/stream/manifest.mpd", 200) in media.requests
    driver.execute_script("localStorage.clear()")


def test_retry_a_failed_job_from_its_page(page, dash):
    """A job whose source is missing ends in ERROR; once the file is there, Retry on its page queues it
    again and the page follows it to FINISHED, the retry in its event log."""
    driver = page
    missing = os.path.join(dash.root, "late.mp4")
    job_id = submit_api(dash, source_path=f"file://{missing}", dest_path=f"file://{dash.root}/late-out/",
                        preset="hls-h264", overrides={"encoder_preset": "ultrafast"})
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    retry = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, '.view-head button[data-action="retry"]'),
                 "the Retry button of the failed job", timeout_s=60)[0]
    fields = driver.find_element(By.CSS_SELECTOR, "dl.fields").text
    assert "ERROR" in fields
    assert dash.api(f"/job/{job_id}")["job"]["job_state"] == "ERROR"
    shutil.copy(dash.short, missing)
    retry.click()

    def finished():
        return driver.execute_script(
            "const dl = document.querySelector('dl.fields');"
            "return dl.querySelector('.badge').textContent === 'FINISHED'"
            " && dl.querySelector('progress').value === 100;")
    wait(driver, finished, "the retried job FINISHED on its page", timeout_s=90)
    job = dash.api(f"/job/{job_id}")["job"]
    assert job["job_state"] == "FINISHED" and job["retries"] == 1
    logged = [(e["seq"], e["kind"], e["state"]) for e in dash.api(f"/job/{job_id}/events")["events"]]
    assert ("state", "FINISHED") in [(k, s) for _, k, s in logged]

    def log_shown():
        return driver.execute_script(
            "return [...document.querySelectorAll('table.events tbody tr')].map(tr => [Number(tr.cells[0].textContent),"
            " tr.dataset.kind, tr.cells[3].textContent]);")
    wait(driver, lambda: [tuple(r) for r in log_shown()] == logged,
         "the page's event log equal to GET /job/<id>/events")
    kinds = [k for _, k, _ in logged]
    assert "retry" in kinds and kinds.index("retry") < len(kinds) - 1
    assert "retried 1 time" in driver.find_element(By.CSS_SELECTOR, "dl.fields").text
    assert not driver.find_elements(By.CSS_SELECTOR, '.view-head button[data-action]')


def test_cancel_a_running_job_from_the_table(page, dash, artifacts):
    driver = page
    open_ui(driver, dash)
    job_id = dash.feederd.client.submit(f"file://{dash.long}", f"file://{dash.root}/canceled.mp4",
                                        {"nommer": OLD_NOMMER, "options": realtime_pass()})
    wait(driver, lambda: (row_state(driver, job_id) or [None])[0] == "ENCODING", "the job ENCODING in the table",
         timeout_s=60)
    # progress arrives live, every 10 %
    wait(driver, lambda: row_state(driver, job_id)[0] == "ENCODING" and 20 <= row_state(driver, job_id)[1] < 100,
         "the job's progress bar at 20 % or more", timeout_s=30)
    shot(driver, artifacts, "jobs-live-1280x720.png")
    row = row_of(driver, job_id)
    cancel = row.find_element(By.CSS_SELECTOR, 'button[data-action="cancel"]')
    assert cancel.get_attribute("aria-label") == f"Cancel job {job_id[:10]}"
    assert not row.find_elements(By.CSS_SELECTOR, 'button[data-action="retry"]')
    cancel.click()
    wait(driver, lambda: row_state(driver, job_id)[0] == "CANCELED", "the row CANCELED")
    assert "canceled" in driver.find_element(By.ID, "flash").text.lower()
    job = dash.api(f"/job/{job_id}")["job"]
    assert job["job_state"] == "CANCELED" and job["progress"] < 100
    row = row_of(driver, job_id)
    assert not row.find_elements(By.CSS_SELECTOR, 'button[data-action="cancel"]')
    assert row.find_elements(By.CSS_SELECTOR, 'button[data-action="retry"]'), "a canceled job can be retried"
    time.sleep(1.0)  # the worker's late writes must not bring the row back
    assert row_state(driver, job_id)[0] == "CANCELED"
    assert not os.path.exists(os.path.join(dash.root, "canceled.mp4"))


def test_filter_by_state_and_pages(page, dash):
    driver = page
    jobs = dash.api("/jobs?limit=500")["jobs"]
    assert jobs, "the tests before made jobs"
    open_ui(driver, dash)
    ids = driver.execute_script(
        "return [...document.querySelectorAll('table.jobs tbody tr')].map(tr => tr.dataset.jobId)")
    assert ids == [j["job_id"] for j in jobs], "newest first, as GET /jobs"
    Select(driver.find_element(By.ID, "state-filter")).select_by_value("FINISHED")
    wait(driver, lambda: "state=FINISHED" in driver.current_url and driver.execute_script(
        "return document.body.dataset.rendered === 'jobs' && !!document.querySelector('table.jobs tbody tr')"
        " && [...document.querySelectorAll('table.jobs tbody tr')].every(tr => tr.dataset.state === 'FINISHED')"),
        "the FINISHED jobs only")
    finished = [j["job_id"] for j in jobs if j["job_state"] == "FINISHED"]
    wait(driver, lambda: driver.execute_script(
        "return [...document.querySelectorAll('table.jobs tbody tr')].map(tr => tr.dataset.jobId)") == finished,
        "every FINISHED job")


# --- workers and fleet ----------------------------------------------------------------------------

def test_workers_page_lists_the_real_workers(page, dash):
    driver = page
    if not dash.api("/workers")["workers"]:  # run alone: a job brings a worker up
        job_id = submit_api(dash, source_path=f"file://{dash.short}", dest_path=f"file://{dash.root}/w-out/",
                            preset="hls-h264", overrides={"encoder_preset": "ultrafast"})
        dash.feederd.wait_for(job_id, lambda j: j["job_state"] in FINAL, what="the job's end")
    open_ui(driver, dash, "#/workers", rendered="workers")
    workers = dash.api("/workers")["workers"]
    assert workers
    shown = driver.execute_script(
        "return [...document.querySelectorAll('table.workers tbody tr')].map(tr => tr.cells[0].textContent);")
    assert sorted(shown) == sorted(w["worker_id"] for w in workers)
    text = driver.find_element(By.ID, "main").text
    assert "local" in text and "Fleet trouble" not in text


# What GET /workers and GET /health answer for an EC2 fleet whose launches are refused (shapes of
# Ec2Fleet.instances, FleetTrouble.to_dict and fleet_status): a local feederd cannot make one.
EC2_WORKERS = {
    "success": True,
    "fleet": {"backend": "ec2", "launch_failures": {"InvalidGroup.NotFound": 3},
              "trouble": FleetTrouble(code="InvalidGroup.NotFound", since=1767261600.0,
                                      message="RunInstances of 1 x c7i.large (spot) in subnet-1 refused: The security "
                                              "group 'sg-0123' does not exist (run nommer aws setup)").to_dict()},
    "workers": [{"worker_id": "i-0aaa", "state": "running", "jobs": [], "capacity": 1, "jobs_done": 4,
                 "host": "ip-10-0-0-5",
                 "instance_id": "i-0aaa", "instance_type": "c7i.large", "market": "spot", "started_at": 1767258000.0,
                 "last_seen": 1767261590.0, "jobs_finished": 4, "last_encode_speed": 3.25, "current_jobs": [],
                 "seen_s_ago": 2.5, "alive": True}],
    "instances": [
        {"instance_id": "i-0aaa", "instance_type": "c7i.large", "availability_zone": "us-east-1a", "market": "spot",
         "state": "running", "launched_at": 1767258000.0, "uptime_s": 3600.0, "price_per_hour": 0.0312,
         "cost_usd": 0.0312, "registered": True, "pool": "default"},
        {"instance_id": "i-0bbb", "instance_type": "g5.xlarge", "availability_zone": "us-east-1b",
         "market": "on-demand",
         "state": "pending", "launched_at": 1767261000.0, "uptime_s": 600.0, "price_per_hour": 1.006,
         "cost_usd": 0.16766667, "registered": False, "pool": "gpu"}],
}


def test_fleet_instances_spot_cost_and_trouble_are_shown(page, dash):
    """The fleet view of an EC2 fleet (its answers stubbed in the page, shaped as feederd's): every
    instance with its market, uptime and cost; the trouble with AWS's reason, also as the banner of
    every page (from /health)."""
    driver = page
    health = {"success": True, "status": "ok", "jobs": {}, "queue": {}, "fleet": EC2_WORKERS["fleet"]}
    script = ("const answers = %s; const realFetch = window.fetch.bind(window);"
              "window.fetch = (url, init) => { const path = new URL(url, location.href).pathname;"
              "  if (path in answers) return Promise.resolve(new Response(JSON.stringify(answers[path]),"
              "    {status: 200, headers: {'Content-Type': 'application/json'}}));"
              "  return realFetch(url, init); };" % json.dumps({"/workers": EC2_WORKERS, "/health": health}))
    added = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    try:
        open_ui(driver, dash, "#/workers", rendered="workers")
        wait(driver, lambda: driver.find_element(By.ID, "trouble").is_displayed(), "the fleet trouble banner")
        banner = driver.find_element(By.ID, "trouble").text
        assert "InvalidGroup.NotFound" in banner and "does not exist" in banner
        rows = driver.execute_script(
            "return [...document.querySelectorAll('table.instances tbody tr')].map(tr =>"
            " Object.fromEntries([...tr.cells].map(td => [td.dataset.label, td.textContent])));")
        assert [(r["Instance"], r["Market"], r["Uptime"], r["Cost"], r["Pool"]) for r in rows] == [
            ("i-0aaa", "spot", "1 h 00 min", "$0.03", "default"),
            ("i-0bbb", "on-demand", "10 min 00 s", "$0.17", "gpu")]
        main = driver.find_element(By.ID, "main").text
        assert "$1.04 an hour now; $0.20 so far" in main
        assert "InvalidGroup.NotFound: 3" in main
        assert "3.25× real time" in main
        open_ui(driver, dash, "#/")
        wait(driver, lambda: driver.find_element(By.ID, "trouble").is_displayed(), "the banner on the job table")
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})


# --- keyboard, phone --------------------------------------------------------------------------------

def focused(driver):
    return driver.execute_script(
        "const e = document.activeElement; const s = getComputedStyle(e);"
        "return {tag: e.tagName, id: e.id, cls: e.className, text: e.textContent.trim().slice(0, 40),"
        " href: e.getAttribute('href'), outline: s.outlineStyle, width: parseFloat(s.outlineWidth)};")


def test_keyboard_only(page, dash):
    """Skip link, the nav and a job's page reached and opened with Tab and Enter, focus always visible
    (an outline of 2 px or more), the new page's heading focused."""
    driver = page
    if not dash.api("/jobs?limit=1")["jobs"]:
        submit_api(dash, source_path=f"file://{dash.root}/nowhere.mp4", dest_path=f"file://{dash.root}/x/",
                   preset="hls-h264")
    open_ui(driver, dash)
    wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "a.job-link"), "a job in the table")
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    f = focused(driver)
    assert f["id"] == "skip" and f["outline"] == "solid" and f["width"] >= 2, f
    for _ in range(30):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        f = focused(driver)
        assert f["outline"] != "none" and f["width"] >= 2, f"focus not visible on {f}"
        if f["href"] == "#/submit":
            break
    else:
        raise AssertionError("Tab never reached the Submit link")
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == "submit", "the form")
    assert focused(driver)["tag"] == "H1"
    driver.back()
    wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == "jobs"
         and driver.find_elements(By.CSS_SELECTOR, "a.job-link"), "the table again")
    for _ in range(40):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        f = focused(driver)
        if "job-link" in (f["cls"] or ""):
            break
    else:
        raise AssertionError("Tab never reached a job link")
    assert f["width"] >= 2
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == "job", "the job page")
    assert focused(driver)["tag"] == "H1"
    assert driver.execute_script("return location.hash").startswith("#/job/")


def wider_than_viewport(driver):
    """The elements sticking out of a phone's 375 px on the right, or whose content overflows them (tag,
    class, right edge, text)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 375"
        " || (e.clientWidth && e.scrollWidth > e.clientWidth + 1))"
        ".map(e => [e.tagName, e.className, Math.round(e.getBoundingClientRect().right), e.textContent.slice(0, 60)])"
        ".slice(-8);")


def test_phone_width_tables_become_cards(page, dash, artifacts):
    driver = page
    if not dash.api("/jobs?limit=1")["jobs"]:
        submit_api(dash, source_path=f"file://{dash.root}/nowhere.mp4", dest_path=f"file://{dash.root}/x/",
                   preset="hls-h264")
    set_viewport(driver, PHONE)
    open_ui(driver, dash)
    wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr"), "a job card")
    layout = driver.execute_script(
        "const tr = document.querySelector('table.jobs tbody tr');"
        "return {scroll: document.documentElement.scrollWidth, width: innerWidth,"
        " row: getComputedStyle(tr).display,"
        " head: document.querySelector('table.jobs thead').getBoundingClientRect().width,"
        " label: getComputedStyle(tr.querySelector('td'), '::before').content,"
        " card: tr.getBoundingClientRect().width};")
    assert layout["width"] == 375
    assert layout["scroll"] <= 375, f"the page scrolls sideways on a phone: {layout} {wider_than_viewport(driver)}"
    assert layout["row"] == "block" and layout["head"] <= 1 and layout["label"] == '"State"', layout
    assert 300 <= layout["card"] <= 375
    shot(driver, artifacts, "jobs-375x812.png")
    job_id = driver.find_element(By.CSS_SELECTOR, "table.jobs tbody tr").get_attribute("data-job-id")
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 375, wider_than_viewport(driver)
    shot(driver, artifacts, "job-375x812.png")


# --- the API key -----------------------------------------------------------------------------------

def test_the_key_is_asked_once_kept_for_the_tab_and_forgotten(page, tmp_path):
    """With a key created, the API refuses anonymous calls but the page itself loads; it asks for the
    key once, keeps it in sessionStorage (a reload does not ask again), sends it (the stream too) and
    forgets it on request; a key without admin sees the workers page refuse politely."""
    driver = page
    driver.allowed_errors = ("401 (Unauthorized)", "403 (Forbidden)")
    feederd = Feederd(str(tmp_path), FLEET_BACKEND="none")
    key = create_key(feederd, "viewer", "read,submit,cancel")
    feederd.start()
    try:
        ui = f"http://127.0.0.1:{feederd.port}/ui/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{feederd.port}/jobs", timeout=10)
        assert refused.value.code == 401
        driver.get(ui)
        panel = driver.find_element(By.ID, "key-panel")
        wait(driver, panel.is_displayed, "the key prompt")
        assert driver.switch_to.active_element.get_attribute("id") == "api-key"
        assert driver.find_element(By.CSS_SELECTOR, "label[for=api-key]").text == "API key"
        driver.switch_to.active_element.send_keys(key, Keys.ENTER)
        wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == "jobs", "the jobs")
        wait(driver, lambda: driver.execute_script("return document.body.dataset.stream") == "live", "the stream")
        assert not panel.is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('nommer.apiKey')") == key
        assert driver.execute_script("return localStorage.getItem('nommer.apiKey')") is None
        job_id = NommerClient(feederd.client.base_url, timeout_s=10, api_key=key).submit(
            f"file://{tmp_path}/a.mp4", f"file://{tmp_path}/a-out/", preset="hls-h264")
        wait(driver, lambda: row_of(driver, job_id), "the new job, live, with the key")

        driver.refresh()
        wait(driver, lambda: driver.execute_script("return document.body.dataset.rendered") == "jobs"
             and row_of(driver, job_id), "the jobs after a reload, without asking again")
        assert not driver.find_element(By.ID, "key-panel").is_displayed()

        driver.get(ui + "#/workers")
        wait(driver, lambda: "admin scope" in driver.find_element(By.ID, "main").text, "the admin-only note")
        driver.find_element(By.ID, "forget-key").click()
        wait(driver, lambda: driver.find_element(By.ID, "key-panel").is_displayed(), "the prompt after forgetting")
        assert driver.execute_script("return sessionStorage.getItem('nommer.apiKey')") is None
        assert not driver.find_element(By.ID, "forget-key").is_displayed()
    finally:
        driver.get("about:blank")
        feederd.stop()


def test_the_stream_comes_back_after_a_feederd_restart(page, tmp_path):
    """feederd restarts: the page's stream token dies with it (tokens live in its memory), so the page
    asks the new feederd for a token, resumes after its last event (answered by a fresh snapshot) and
    shows jobs submitted after the restart, live, without a reload."""
    driver = page
    driver.allowed_errors = ("ERR_CONNECTION_REFUSED", "401 (Unauthorized)", "/events?token=")
    feederd = Feederd(str(tmp_path), FLEET_BACKEND="none")
    feederd.start()
    try:
        before = submit_api_to(feederd, tmp_path)
        driver.get(f"http://127.0.0.1:{feederd.port}/ui/")
        wait(driver, lambda: driver.execute_script("return document.body.dataset.stream") == "live"
             and row_of(driver, before), "the first job, live")
        driver.execute_script("window.noReloadMarker = 7;")
        feederd.stop()
        wait(driver, lambda: driver.execute_script("return document.body.dataset.stream") != "live",
             "the stream noticing feederd is gone")
        feederd.start()
        wait(driver, lambda: driver.execute_script("return document.body.dataset.stream") == "live",
             "the stream back", timeout_s=30)
        after = submit_api_to(feederd, tmp_path)
        wait(driver, lambda: row_of(driver, after), "a job submitted after the restart, live")
        assert row_of(driver, before), "the jobs from before are still listed"
        assert driver.execute_script("return window.noReloadMarker") == 7
    finally:
        driver.get("about:blank")
        feederd.stop()


def submit_api_to(feederd, root):
    return feederd.client.submit(f"file://{root}/in.mp4", f"file://{root}/out/", preset="hls-h264")
