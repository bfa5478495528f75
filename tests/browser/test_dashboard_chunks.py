"""The job page's Chunks section in headless Debian chromium, against a real feederd and two real workers.

A chunked job (an 8 s four-scene source cut into ~2 s chunks) is opened as soon as it is submitted: the
Chunks table appears when the plan is made, follows the chunks through the event stream without a reload,
and ends with one row per chunk of the job document (span, frames, attempts, worker as the API says),
every one FINISHED at 100 %; a finished chunk's row is never rebuilt by later updates, and a field being
typed in keeps the focus. It reads as cards at a phone's
375 px. A job encoded whole (``"chunking": false``) has no Chunks section. The console stays free of errors
(``page`` fixture).
"""

import os

import pytest
from selenium.webdriver.common.by import By

from tests.browser.test_dashboard import (DESKTOP, FINAL, PHONE, console_errors, open_ui, set_viewport, shot,
                                          submit_api, wait, wider_than_viewport)
from tests.e2e.harness import Feederd
from tests.workerd.chunks.sources import make_scenes

MP4 = {"type": "mp4", "name": "video.mp4", "crf": 23, "encoder_preset": "veryfast"}


class ChunksDashboard:
    """A feederd with two workers (kept up between the jobs) and the scenes source."""

    def __init__(self, root):
        self.root = root
        self.feederd = Feederd(root, MAX_NUM_WORKERS=2, WORKER_MAX_IDLE_S=60.0)
        self.source = make_scenes(root, width=320, height=180, duration_s=8)

    @property
    def ui(self):
        return f"http://127.0.0.1:{self.feederd.port}/ui/"

    def job(self, job_id):
        return self.feederd.client.get(job_id)


@pytest.fixture(scope="module")
def dash(tmp_path_factory):
    dashboard = ChunksDashboard(str(tmp_path_factory.mktemp("dashboard-chunks")))
    dashboard.feederd.start()
    yield dashboard
    dashboard.feederd.stop()


@pytest.fixture
def page(chromium):
    """As tests/browser/test_dashboard.py's: 1280x720, a clean console before, none of its errors after."""
    chromium.get("about:blank")
    console_errors(chromium)
    set_viewport(chromium, DESKTOP)
    yield chromium
    errors = console_errors(chromium)
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    chromium.get("about:blank")
    assert not errors, f"errors in the browser console: {errors}"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    given = os.environ.get("NOMMER_SCREENSHOT_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
    return given or str(tmp_path_factory.mktemp("dashboard-chunks-screenshots"))


def chunk_table(driver):
    """The Chunks table as the page shows it: {"heading", "caption", "rows": [{index, state, cells by
    data-label, progress value}]}, or None when the page has no Chunks section."""
    return driver.execute_script("""
        const section = document.querySelector('section[aria-labelledby="h-chunks"]');
        if (!section) return null;
        const table = section.querySelector('table.chunks');
        return {
          heading: section.querySelector('h2#h-chunks').textContent,
          caption: table.querySelector('caption').textContent,
          cards: table.classList.contains('cards-on-phone'),
          note: section.querySelector('#chunks-note').textContent,
          rows: [...table.tBodies[0].rows].map(tr => {
            const cells = {};
            for (const c of tr.cells) cells[c.dataset.label] = c.textContent.trim();
            return {index: Number(tr.dataset.index), state: tr.dataset.state, cells,
                    progress: tr.querySelector('progress').value,
                    progressLabel: tr.querySelector('progress').getAttribute('aria-label')};
          }),
        };""")


def span(chunk):
    return f"{chunk['start_s']:.1f}–{chunk['end_s']:.1f} s"


def test_chunk_table_follows_a_chunked_job_live_to_finished(page, dash, artifacts):
    driver = page
    job_id = submit_api(dash, source_path=f"file://{dash.source}", dest_path=f"file://{dash.root}/chunked/",
                        outputs=[MP4], chunking={"target_s": 2, "min_s": 1})
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    driver.execute_script("window.noReloadMarker = 7;")
    # A person typing in the media base field while the job runs: the live updates must not take the focus.
    base = driver.find_element(By.ID, "media-base")
    base.click()
    base.send_keys("https://cdn.example")

    seen = []  # the chunk states shown, each time they changed

    def done():
        # Every element that showed a FINISHED chunk, counted by chunk: a finished chunk never changes, so
        # the later updates of the job must keep its row as it is (one element per chunk, to the end).
        driver.execute_script(
            "window.finishedRows = window.finishedRows || {};"
            "for (const tr of document.querySelectorAll('table.chunks tbody tr[data-state=FINISHED]')) {"
            "  if (!tr.nommerSeen) { tr.nommerSeen = true;"
            "    finishedRows[tr.dataset.index] = (finishedRows[tr.dataset.index] || 0) + 1; } }")
        table = chunk_table(driver)
        if table:
            states = [r["state"] for r in table["rows"]]
            if not seen or seen[-1] != states:
                seen.append(states)
        state = driver.execute_script("return document.querySelector('dl.fields .badge').textContent")
        return (state in FINAL and table and table["rows"] and all(s == "FINISHED" for s in seen[-1])
                and state)

    final_state = wait(driver, done, "the job and every chunk FINISHED on the page", timeout_s=120)
    job = dash.job(job_id)
    assert final_state == job["job_state"] == "FINISHED", job
    assert driver.execute_script("return window.noReloadMarker") == 7, "the page was reloaded"
    assert seen and any(s != "FINISHED" for s in seen[0]), f"the table was only seen at the end: {seen}"

    chunks = job["chunks"]
    assert len(chunks) >= 3, chunks  # 8 s at a 2 s target
    table = chunk_table(driver)
    assert table["heading"] == "Chunks" and table["caption"] and table["cards"]
    assert len(table["rows"]) == len(chunks)
    assert table["note"].startswith(f"{len(chunks)} of {len(chunks)} chunks finished")
    for row, chunk in zip(table["rows"], chunks):
        assert row["index"] == chunk["index"]
        assert row["state"] == "FINISHED" and row["cells"]["State"] == "FINISHED"
        assert row["cells"]["Chunk"] == str(chunk["index"])
        assert row["cells"]["Span"] == span(chunk)
        assert row["cells"]["Frames"] == str(chunk["frames"])
        assert row["cells"]["Attempts"] == str(chunk["attempts"])
        assert row["cells"]["Worker"] == (chunk["worker_id"] or "—")
        assert row["progress"] == 100 and row["cells"]["Progress"] == "100 %"
        assert row["progressLabel"] == f"Progress of chunk {chunk['index']}"
    assert sum(c["frames"] for c in chunks) == 8 * 24
    assert [r["index"] for r in table["rows"]] == list(range(len(chunks)))

    done()
    kept = driver.execute_script("return window.finishedRows")
    assert kept == {str(c["index"]): 1 for c in chunks}, f"finished chunks' rows were rebuilt: {kept}"
    active = driver.execute_script("const e = document.activeElement; return [e.id, e.value];")
    assert active == ["media-base", "https://cdn.example"], f"the live updates moved the focus: {active}"
    driver.execute_script("window.scrollTo(0, 0)")
    shot(driver, artifacts, "job-chunks-1280x720.png")

    # A phone's 375 px: the rows become cards, each cell saying its column; nothing scrolls sideways.
    set_viewport(driver, PHONE)
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    wait(driver, lambda: chunk_table(driver), "the Chunks table at phone width")
    layout = driver.execute_script(
        "const tr = document.querySelector('table.chunks tbody tr');"
        "return {scroll: document.documentElement.scrollWidth, row: getComputedStyle(tr).display,"
        " label: getComputedStyle(tr.querySelector('td'), '::before').content,"
        " card: tr.getBoundingClientRect().width};")
    assert layout["scroll"] <= 375, f"sideways scrolling on a phone: {layout} {wider_than_viewport(driver)}"
    assert layout["row"] == "block" and layout["label"] == '"Span"' and 300 <= layout["card"] <= 375, layout
    driver.execute_script("document.getElementById('h-chunks').scrollIntoView()")
    shot(driver, artifacts, "job-chunks-375x812.png")


def test_a_job_encoded_whole_has_no_chunks_section(page, dash):
    driver = page
    job_id = submit_api(dash, source_path=f"file://{dash.source}", dest_path=f"file://{dash.root}/whole/",
                        outputs=[MP4], chunking=False)
    open_ui(driver, dash, f"#/job/{job_id}", rendered="job")
    wait(driver, lambda: driver.execute_script("return document.querySelector('dl.fields .badge').textContent")
         in FINAL, "the job's end on the page", timeout_s=90)
    job = dash.job(job_id)
    assert job["job_state"] == "FINISHED" and job["chunks"] is None, job
    assert chunk_table(driver) is None
    assert not driver.find_elements(By.CSS_SELECTOR, "table.chunks")
    headings = [e.text for e in driver.find_elements(By.TAG_NAME, "h2")]
    assert "Outputs" in headings and "Chunks" not in headings, headings
