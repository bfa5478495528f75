"""Playback of HLS and DASH ladders in a real browser: Debian's headless chromium driven by Selenium.

Three pieces, usable from any test:

* :class:`MediaServer` serves a directory over HTTP on 127.0.0.1 (a free port, a background thread), with the test
  page (``player.html``) under ``/__player/`` and the vendored hls.js / dash.js (``nommer/feederd/ui/vendor/``)
  under ``/__vendor/``: one origin, so no CORS and no network. Content-Types come from nommer's own table
  (:func:`nommer.core.storage.content_types.content_type_for_name`); byte ranges are served (206), so
  single-file / byte-range manifests play too.
* :func:`start_chromium` / :func:`chromium_session` start headless chromium through ``/usr/bin/chromedriver``
  (``--no-sandbox``: CI runs as root; autoplay allowed; audio muted). ``tests/browser/conftest.py`` wraps it in
  the session fixture ``chromium``, which quits the browser at the end.
* :func:`check_playback` loads the page with an HLS master (hls.js) or a DASH MPD (dash.js), forces each rung in
  turn with automatic switching off, and asserts that the ``<video>`` plays it: ``videoWidth``/``videoHeight``
  are the rung's and ``currentTime`` advances. Every wait polls with a timeout (``WebDriverWait``); a failure's
  message carries the page state, the player's error events, the page's and the browser's console errors and
  the HTTP requests that failed.

Codecs: Debian's chromium is built with the proprietary codecs, so H.264 and AAC play in MSE
(:func:`browser_facts` tells; ``tests/browser/test_playback_fixture.py`` asserts it). HEVC does not: chromium
decodes it only through a platform (hardware) decoder, and Debian's chromium 156, headless, answers
``MediaSource.isTypeSupported`` with false for ``hvc1``/``hev1``. So HEVC ladders are not played here; check
them with ffprobe instead.
"""

import contextlib
import io
import os
import re
import shutil
import signal
import threading
import time
import urllib.parse
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nommer.feederd
from nommer.core.storage.content_types import content_type_for_name

#: The directory holding player.html (this package).
PLAYER_DIR = Path(__file__).resolve().parent
#: The vendored hls.min.js and dash.all.min.js (``make vendor-js`` refreshes them).
VENDOR_DIR = Path(nommer.feederd.__file__).resolve().parent / "ui" / "vendor"
#: Debian's launcher and driver (``make test-deps`` installs the packages chromium and chromium-driver).
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: MIME types with codecs as an HLS master / an MPD declares them, for :func:`browser_facts`.
H264_AAC_TYPES = ('video/mp4; codecs="avc1.42c01e"', 'video/mp4; codecs="avc1.4d401e"',
                  'video/mp4; codecs="avc1.64001f"', 'audio/mp4; codecs="mp4a.40.2"')
HEVC_TYPES = ('video/mp4; codecs="hvc1.1.6.L93.B0"', 'video/mp4; codecs="hev1.1.6.L93.B0"')


class _Handler(SimpleHTTPRequestHandler):
    """Serves ``directory`` plus ``mounts`` (URL prefix -> directory); Content-Type from nommer's table; byte
    ranges; no caching; every request noted in ``server.requests`` instead of printed."""

    def __init__(self, *args, directory, mounts, **kwargs):
        self.mounts = mounts
        super().__init__(*args, directory=directory, **kwargs)

    def translate_path(self, path):
        for prefix, directory in self.mounts.items():
            if path.startswith(prefix):
                root, self.directory = self.directory, directory
                try:
                    return super().translate_path("/" + path[len(prefix):])
                finally:
                    self.directory = root
        return super().translate_path(path)

    def send_head(self):
        if self.path.startswith("/__player/") and urllib.parse.urlsplit(self.path).path != "/__player/player.html":
            self.send_error(HTTPStatus.NOT_FOUND, "only player.html is served under /__player/")
            return None
        return self._send_file_head()

    def guess_type(self, path):
        return content_type_for_name(os.fspath(path))

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def _send_file_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (self.headers.get("Range") or "").strip())
        path = self.translate_path(self.path)
        if not match or match.groups() == ("", "") or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, last = match.groups()
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        if start >= size or start > end:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def log_request(self, code="-", size="-"):
        self.server.requests.append((self.command, self.path, int(code) if str(code).isdigit() else code))

    def log_message(self, format, *args):
        pass


class MediaServer:
    """An HTTP server for one directory, on 127.0.0.1 and a free port, in a background thread.

    ``root`` (a path) is served at ``/``; the test page at ``/__player/player.html``; the vendored players at
    ``/__vendor/``. Use it as a context manager (or :meth:`start` / :meth:`stop`). ``requests`` lists every
    request served as ``(method, path, status)``, oldest first.
    """

    def __init__(self, root):
        self.root = Path(root).resolve()
        self.requests = []
        self._httpd = None
        self._thread = None

    def start(self):
        """Bind and serve; returns self. Raises ``OSError`` when no loopback port can be bound."""
        handler = partial(_Handler, directory=str(self.root),
                          mounts={"/__player/": str(PLAYER_DIR), "/__vendor/": str(VENDOR_DIR)})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.requests = self.requests
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="media-server", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        """``http://127.0.0.1:<port>/``"""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def url(self, path=""):
        """The URL of ``path`` (relative to ``root``, ``/`` separated; quoted here)."""
        return self.base_url + urllib.parse.quote(str(path).lstrip("/"))

    def failed_requests(self, since=0):
        """The requests answered with a status of 400 or more, as ``(method, path, status)``; from the
        ``since``-th request on (``len(server.requests)`` taken earlier)."""
        return [r for r in self.requests[since:] if isinstance(r[2], int) and r[2] >= 400]


def start_chromium():
    """Start headless Debian chromium under chromedriver and return the ``selenium.webdriver.Chrome``.

    The caller must ``quit()`` it (or use :func:`chromium_session` / the ``chromium`` fixture). Raises
    ``RuntimeError`` naming the missing package when chromium or chromedriver is not installed, and Selenium's
    ``WebDriverException`` when the browser does not start.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            raise RuntimeError(f"{path} is missing: install the Debian package {package} (make test-deps)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions", "--no-first-run",
                "--window-size=800,600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def _process_table():
    """``{pid: (parent pid, start time in clock ticks)}`` of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid):
    """The processes descended from ``pid``, as a set of ``(pid, start time)`` (the start time tells a
    process from a later one that reuses its pid)."""
    table = _process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in table.items() if parent in frontier} - {p for p, _ in found}
        found |= {(child, table[child][1]) for child in frontier}
    return found


def _alive(processes):
    table = _process_table()
    return sorted(pid for pid, started in processes if pid in table and table[pid][1] == started)


@contextlib.contextmanager
def chromium_session(grace_s=5.0):
    """``with chromium_session() as driver:`` — :func:`start_chromium`, and ``quit()`` on the way out.

    After ``quit()`` it checks that no process of this browser is left: every process descended from its
    chromedriver just before ``quit()`` must exit within ``grace_s`` seconds; those that do not are killed
    and ``RuntimeError`` lists them.
    """
    driver = start_chromium()
    try:
        yield driver
    finally:
        processes = _descendants(driver.service.process.pid)
        driver.quit()
        deadline = time.monotonic() + grace_s
        while (left := _alive(processes)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise RuntimeError(f"chromium processes {left} outlived driver.quit() by {grace_s:g} s; killed them")


def _page_url(server, kind, manifest_url, rung=None, bitrate=None):
    query = {"kind": kind, "src": manifest_url, "rung": rung, "bitrate": bitrate}
    return (server.url("__player/player.html") + "?"
            + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}))


def _state(driver):
    return driver.execute_script("return window.nommerPlayer ? window.nommerPlayer.state() : null;")


def _browser_console(driver):
    try:
        return [f"{e.get('level')}: {e.get('message')}" for e in driver.get_log("browser")
                if e.get("level") in ("SEVERE", "WARNING")]
    except Exception as e:  # the log endpoint is a chromedriver extension; say so rather than hide the failure
        return [f"(no browser log: {e})"]


def _diagnosis(driver, server, state, since=0):
    lines = []
    if state:
        shown = {k: state.get(k) for k in ("kind", "rung", "ready", "fatal", "levels", "level", "automatic",
                                           "currentTime", "videoWidth", "videoHeight", "sizes", "paused", "ended",
                                           "readyState", "duration", "versions")}
        lines.append(f"page state: {shown}")
        lines += [f"player error: {e}" for e in state.get("errors") or []]
        lines += [f"page console {e}" for e in state.get("log") or []]
    else:
        lines.append("page state: none (player.html did not run)")
    lines += [f"browser console {e}" for e in _browser_console(driver)]
    lines += [f"HTTP {status} for {method} {path}" for method, path, status in server.failed_requests(since)]
    return "\n  ".join([""] + lines)


def browser_facts(driver, server, types=H264_AAC_TYPES + HEVC_TYPES):
    """What the browser and the vendored players are: loads the test page without a manifest.

    Returns ``{"user_agent": str, "versions": {"hls": hls.js version, "dashjs": dash.js version},
    "supports": {mime_type: bool}}`` where ``supports`` is ``MediaSource.isTypeSupported`` for each MIME type
    (with codecs) of ``types``. ``server`` is a started :class:`MediaServer` (it serves the page).
    """
    driver.get(_page_url(server, None, None))
    return driver.execute_script(
        "return {user_agent: navigator.userAgent, versions: window.nommerPlayer.state().versions,"
        " supports: window.nommerPlayer.supports(arguments[0])};", list(types))


def check_playback(driver, server, kind, manifest_url, expected_rungs, *, advance_s=1.0, timeout_s=20.0):
    """Play a ladder in the browser, each rung forced in turn, and assert that every rung plays at its size.

    ``kind`` is ``"hls"`` (``manifest_url`` is a master playlist, played by hls.js) or ``"dash"`` (an MPD, played
    by dash.js); ``manifest_url`` is a URL on ``server`` (:meth:`MediaServer.url`). ``expected_rungs`` is the
    ladder's video sizes as ``[(width, height), ...]`` in pixels, in any order: the player's list of video
    levels must hold exactly these sizes (rungs of the same size are each forced once).

    First the page parses the manifest and lists the player's levels. Then, for each expected rung in the order
    given, a fresh page pins the player to that level before it loads any media (hls.js: ``startLevel`` and
    ``loadLevel``; dash.js: ``initialBitrate`` and ``setQualityFor``; automatic switching off in both) and plays
    from the start; the harness waits until ``videoWidth``/``videoHeight`` are the rung's, the player reports
    that level, and ``currentTime`` has advanced by ``advance_s`` seconds since the first frame was shown. Every
    frame presented must have had the rung's size (``requestVideoFrameCallback``). A fresh page per rung,
    rather than a switch mid-stream, because chromium keeps showing the frames it already took from the
    buffer up to the next keyframe after a switch, which on a clip shorter than a GOP is all of it. Each wait
    is bounded by ``timeout_s`` seconds (``WebDriverWait`` polling every 0.1 s).

    Returns one dict per expected rung: ``{"index": the player's level index, "width", "height": pixels of the
    video element, "currentTime": seconds reached, "level": the level the player reported, "sizes": the frame
    sizes shown, as "WxH" strings}``. Raises ``AssertionError`` on a fatal player error, a level list that
    differs from ``expected_rungs``, or a rung that does not play at its size in time; the message carries the
    page state, the player's error events, the console errors and the failed HTTP requests.
    """
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    if kind not in ("hls", "dash"):
        raise ValueError(f"kind must be 'hls' or 'dash', not {kind!r}")
    last = {"state": None}
    since = len(server.requests)
    _browser_console(driver)   # drains what earlier pages logged: a failure reports this check's only

    def fail(why):
        raise AssertionError(f"{kind} playback of {manifest_url}: {why}"
                             f"{_diagnosis(driver, server, last['state'], since)}")

    def poll():
        state = last["state"] = _state(driver)
        if state and state["fatal"]:
            fail(f"the player gave up: {state['fatal']}")
        return state

    def wait(predicate, what):
        try:
            return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(lambda _d: predicate())
        except TimeoutException:
            fail(f"no {what} within {timeout_s:g} s")

    driver.get(_page_url(server, kind, manifest_url))
    state = wait(lambda: (s := poll()) and s["ready"] and s, "parsed manifest")
    levels = [(lv["width"], lv["height"]) for lv in state["levels"]]
    bitrates = [lv["bitrate"] for lv in state["levels"]]
    expected = [(int(w), int(h)) for w, h in expected_rungs]
    if sorted(levels) != sorted(expected):
        fail(f"the player's video levels are {levels}, expected {expected}")

    unused = list(range(len(levels)))
    seen = []
    for width, height in expected:
        index = next(i for i in unused if levels[i] == (width, height))
        unused.remove(index)
        size = f"{width}x{height}"
        driver.get(_page_url(server, kind, manifest_url, rung=index, bitrate=bitrates[index]))
        start = {}

        def at_rung():
            s = poll()
            if not s or not s["ready"] or not s["sizes"]:
                return False
            if s["sizes"] != [size]:
                fail(f"rung {index} ({size}) showed frames of sizes {s['sizes']}")
            if s["automatic"]:
                fail(f"rung {index} ({size}): automatic level switching is still on")
            if (s["videoWidth"], s["videoHeight"]) != (width, height) or s["level"] != index:
                return False
            t = s["currentTime"]
            if "t" not in start:
                start["t"] = t
            if t >= start["t"] + advance_s:
                return s
            if s["ended"]:
                fail(f"rung {index} ({size}) ended at {t:.3f} s, before playing {advance_s:g} s "
                     f"(from {start['t']:.3f} s)")
            return False

        s = wait(at_rung, f"playback of rung {index} at {size} advancing {advance_s:g} s")
        seen.append({"index": index, "width": s["videoWidth"], "height": s["videoHeight"],
                     "currentTime": s["currentTime"], "level": s["level"], "sizes": s["sizes"]})
    return seen
