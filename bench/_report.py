"""Shared reporting for the benchmarks in bench/: machine info, figures and ratios, and
the dated sections of BENCHMARKS.md at the repo root.

API (all a bench script needs)::

    from _report import Report, fmt     # `python bench/x.py` puts bench/ first on sys.path

    report = Report("pick-up latency", "what is measured, in one or two sentences")
    report.figure("p50 embedded", 0.0123, "s", target=0.050)            # ok = value <= target
    report.figure("throughput", 850, "jobs/s", target=500, higher_is_better=True)
    report.figure("RSS idle", 31.2, "MB")                                # no target: just printed
    report.row("p50 / p95", f"{fmt(0.0121, 's')} / {fmt(0.0305, 's')}")  # preformatted value
    report.ratio("wall time / pool wall time", 61.3, 60.1, unit="s", target=1.03)
    report.note("anything else worth a line")
    report.write()        # prints the section and appends it to BENCHMARKS.md

Every figure should be a ratio against a reference measured in the same run (machines are
noisy): ``ratio(name, value, reference)`` prints ``value / reference`` and both absolute
numbers, and judges ``value / reference`` against ``target``. ``figure(..., ok=True/False)``
overrides the judgement when the target is not a plain "<=" or ">=".

``machine_info()`` returns a dict (cores, RAM, ffmpeg, Python, git commit, ...) and
``machine_line()`` the one-line form printed at the head of every section.

Running the whole suite: ``python bench/_report.py run [bench/x.py ...]`` (what ``make bench``
does) writes one dated heading and machine line to BENCHMARKS.md, then runs every
``bench/*.py`` not starting with ``_`` (each with a time limit, ``BENCH_TIMEOUT_S``, default
300 s); each script's ``Report.write()`` appends its section under that heading. A script that
writes no report gets its printed output appended verbatim; one that fails or times out gets a
line saying so. Run on its own (``python bench/x.py``), a script's ``write()`` adds its own
dated heading. ``BENCHMARKS_MD`` overrides the file (``BENCHMARKS_MD=`` with nothing: print
only, append nothing).
"""

import datetime
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
_RUN_ENV = "NOMMER_BENCH_RUN"  # set by `_report.py run`: the heading is already written
_WROTE_ENV = "NOMMER_BENCH_WROTE"  # a file a script touches when it wrote a report

__all__ = ["Report", "machine_info", "machine_line", "fmt", "benchmarks_md"]


def benchmarks_md():
    """The file sections are appended to, or None to print only."""
    path = os.environ.get("BENCHMARKS_MD", BENCHMARKS_MD)
    return path or None


def _run(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    """Cores, RAM, CPU model, kernel, ffmpeg, Python, git commit, 1-min load average."""
    info = {"cores": os.cpu_count()}
    try:
        with open("/proc/meminfo") as f:
            kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        info["ram_gb"] = round(kb / 1024 / 1024, 1)
    except (OSError, AttributeError):
        info["ram_gb"] = None
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else ""
    except OSError:
        pass
    info["cpu"] = cpu or platform.processor() or platform.machine()
    info["kernel"] = platform.release()
    first = _run(["ffmpeg", "-hide_banner", "-version"]).splitlines()
    m = re.match(r"ffmpeg version (\S+)", first[0]) if first else None
    info["ffmpeg"] = m.group(1) if m else "not found"
    info["python"] = platform.python_version()
    try:
        info["load"] = round(os.getloadavg()[0], 2)  # other work on the machine: noise
    except OSError:
        info["load"] = None
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"])
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    info["git"] = (commit + ("+dirty" if dirty else "")) if commit else "unknown"
    return info


def machine_line(info=None):
    i = info or machine_info()
    return (f"{i['cores']} cores ({i['cpu']}), {i['ram_gb']} GB RAM, Linux {i['kernel']}, "
            f"ffmpeg {i['ffmpeg']}, Python {i['python']}, git {i['git']}, load average {i['load']} at start")


def fmt(value, unit=""):
    """A number with about 3-4 significant figures and its unit; seconds below 1 s in ms."""
    if value is None:
        return "n/a"
    if unit == "s" and abs(value) < 1:
        value, unit = value * 1000, "ms"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _now_heading():
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _append(text):
    path = benchmarks_md()
    if not path:
        return
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a") as f:
        if new:
            f.write("# Benchmarks\n\nAppended by `make bench` (bench/_report.py); newest at the bottom. "
                    "Figures are ratios against a reference measured in the same run, with the "
                    "absolute numbers beside them.\n")
        f.write(text)


def _heading(info):
    return f"\n## {_now_heading()}\n\nMachine: {machine_line(info)}\n"


class Report:
    """One benchmark's section: figures, ratios, notes; ``write()`` prints and appends it."""

    def __init__(self, title, description=""):
        self.title = title
        self.description = description
        self.rows = []  # (name, value text, target text, verdict)
        self.notes = []
        self.started = time.monotonic()

    @staticmethod
    def _verdict(value, target, ok, higher_is_better):
        if ok is None and target is not None and value is not None:
            ok = value >= target if higher_is_better else value <= target
        return {True: "met", False: "NOT met", None: ""}[ok]

    def figure(self, name, value, unit="", target=None, ok=None, higher_is_better=False):
        """An absolute figure. With ``target``: met when value <= target (>= with
        ``higher_is_better``); ``ok`` overrides the judgement. Returns ok/None."""
        verdict = self._verdict(value, target, ok, higher_is_better)
        target_text = "" if target is None else ("≥ " if higher_is_better else "≤ ") + fmt(target, unit)
        self.rows.append((name, fmt(value, unit), target_text, verdict))
        return {"met": True, "NOT met": False}.get(verdict)

    def ratio(self, name, value, reference, unit="", target=None, ok=None, higher_is_better=False):
        """``value / reference``, shown with both absolute numbers; ``target`` applies to the
        ratio. Returns the ratio (None when the reference is 0 or missing)."""
        r = value / reference if value is not None and reference else None
        verdict = self._verdict(r, target, ok, higher_is_better)
        target_text = "" if target is None else ("≥ " if higher_is_better else "≤ ") + f"{target:g}"
        shown = "n/a" if r is None else f"{r:.3f}"
        self.rows.append((name, f"{shown} ({fmt(value, unit)} / {fmt(reference, unit)})", target_text, verdict))
        return r

    def row(self, name, text, target="", verdict=""):
        """A row with a value already formatted (e.g. "12.1 ms / 30.5 ms"); no judgement
        unless ``verdict`` ("met", "NOT met") is given."""
        self.rows.append((name, text, target, verdict))

    def note(self, text):
        self.notes.append(text)

    def render(self):
        lines = [f"\n### {self.title}\n"]
        if self.description:
            lines.append(f"{self.description}\n")
        if self.rows:
            lines.append("| figure | value | target | |")
            lines.append("|---|---|---|---|")
            for cells in self.rows:
                lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        for n in self.notes:
            lines.append(f"\n- {n}" if n is self.notes[0] else f"- {n}")
        try:
            load = f", load average {os.getloadavg()[0]:.2f} at the end"
        except OSError:
            load = ""
        lines.append(f"\n_(took {time.monotonic() - self.started:.0f} s{load})_\n")
        return "\n".join(lines) + "\n"

    def write(self):
        """Print the section and append it to BENCHMARKS.md (with a dated heading and the
        machine line of its own when not run by ``_report.py run``)."""
        text = self.render()
        under_run = os.environ.get(_RUN_ENV)
        if not under_run:
            text = _heading(machine_info()) + text
        print(text, flush=True)
        _append(text)
        marker = os.environ.get(_WROTE_ENV)
        if marker:
            open(marker, "a").close()


def run_all(scripts=None):
    """Write a dated heading, run each bench script with a time limit, append what it says."""
    import glob
    import tempfile
    scripts = scripts or sorted(p for p in glob.glob(os.path.join(ROOT, "bench", "*.py"))
                                if not os.path.basename(p).startswith("_"))
    timeout = float(os.environ.get("BENCH_TIMEOUT_S", "300"))
    info = machine_info()
    print(f"Machine: {machine_line(info)}", flush=True)
    _append(_heading(info))
    failed = []
    t0 = time.monotonic()
    for script in scripts:
        name = os.path.relpath(script, ROOT)
        print(f"== {name}", flush=True)
        fd, marker = tempfile.mkstemp(prefix="nommer-bench-wrote-")
        os.close(fd)
        os.unlink(marker)
        env = dict(os.environ, **{_RUN_ENV: "1", _WROTE_ENV: marker})
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out = []
        try:
            import threading

            def pump():
                for line in proc.stdout:
                    out.append(line)
                    sys.stdout.write(line)
                    sys.stdout.flush()
            t = threading.Thread(target=pump, daemon=True)
            t.start()
            rc = proc.wait(timeout=timeout)
            t.join(5)
            status = None if rc == 0 else f"exited with status {rc} after {time.monotonic() - started:.0f} s"
        except subprocess.TimeoutExpired:
            # SIGINT first: KeyboardInterrupt runs the script's finally blocks, which stop the
            # daemons it started in sessions of their own; then TERM, then KILL its group.
            import signal
            for sig, grace in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, None)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            status = f"timed out after {timeout:.0f} s"
        wrote = os.path.exists(marker)
        if wrote:
            os.unlink(marker)
        if not wrote:
            tail = "".join(out[-40:]).rstrip()
            _append(f"\n### {name}\n\n```\n{tail}\n```\n")
        if status:
            failed.append(name)
            _append(f"\n**{name} {status}.**\n")
            print(f"!! {name} {status}", flush=True)
    _append(f"\n_Whole run: {time.monotonic() - t0:.0f} s._\n")
    print(f"== done in {time.monotonic() - t0:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "run":
        sys.exit(run_all([os.path.abspath(p) for p in sys.argv[2:]] or None))
    print(__doc__)
