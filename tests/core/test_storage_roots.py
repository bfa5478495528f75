"""FILE_STORAGE_ROOTS may hold none of nommer's own files: check_roots, and
both daemons refusing to start (real twistd processes)."""

import os
import subprocess
import sys

import pytest

import nommer
from nommer.conf import Settings, load_settings
from nommer.core.storage.roots import check_roots, enforce_roots
from tests.e2e.harness import TWISTD


def test_separate_dirs_pass(tmp_path):
    """Media, data and scratch side by side: no problem."""
    (tmp_path / "media").mkdir()
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[str(tmp_path / "media")],
                                DATA_DIR=str(tmp_path / "data"))
    assert check_roots(s) == []


@pytest.mark.parametrize("layout,root_name,words", [
    ("root-above-both", ".", ["DATA_DIR", "SCRATCH_DIR"]),
    ("root-is-data", "data", ["DATA_DIR"]),
    ("root-is-scratch", "scratch", ["SCRATCH_DIR"]),
    ("root-inside-scratch", "scratch/x", ["lies inside SCRATCH_DIR"]),
])
def test_roots_holding_data_or_scratch_refused(tmp_path, layout, root_name, words):
    """A root equal to or above DATA_DIR / SCRATCH_DIR, or inside SCRATCH_DIR, is one problem naming it."""
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    for d in (data, scratch, scratch / "x"):
        d.mkdir()
    root = os.path.realpath(tmp_path / root_name)
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[root], DATA_DIR=str(data), SCRATCH_DIR=str(scratch))
    problems = check_roots(s)
    assert len(problems) == 1, problems
    assert f"entry {root} " in problems[0]
    for word in words:
        assert word in problems[0], problems


def test_root_holding_the_config_refused(tmp_path):
    """The settings file under a root is a problem."""
    config = tmp_path / "nomconf_x.py"
    config.write_text(f"DATA_DIR = {str(tmp_path.parent / (tmp_path.name + '-data'))!r}\n"
                      f"FILE_STORAGE_ROOTS = [{str(tmp_path)!r}]\n")
    s = load_settings(str(config))
    [problem] = check_roots(s)
    assert "the settings file" in problem and str(config) in problem


def test_root_holding_nommers_code_refused(tmp_path):
    """The nommer package's parent (the checkout here) as a root is a problem naming the code."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(nommer.__file__)))
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[checkout], DATA_DIR=str(tmp_path / "data"))
    [problem] = check_roots(s)
    assert "nommer's code" in problem and "FILE_STORAGE_ROOTS = [" in problem


@pytest.mark.parametrize("inside", ["package", "plugins", "site-packages"])
def test_root_inside_nommers_code_refused(tmp_path, inside):
    """A root *inside* the code (a subpackage of nommer, the twistd plugins, a package of the
    Python environment) is refused too: a job writing a .py file there runs it at the next
    start of a daemon."""
    import sysconfig

    import twisted.plugins
    package = os.path.dirname(os.path.realpath(nommer.__file__))
    root = {"package": os.path.join(package, "workerd"),
            "plugins": os.path.realpath(list(twisted.plugins.__path__)[0]),
            "site-packages": os.path.join(os.path.realpath(sysconfig.get_paths()["purelib"]),
                                          "twisted")}[inside]
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[root], DATA_DIR=str(tmp_path / "data"))
    problems = check_roots(s)
    assert len(problems) == 1, problems
    assert f"entry {root} lies inside" in problems[0], problems


def test_media_dir_inside_the_checkout_passes(tmp_path):
    """A directory of the checkout beside the package (./media of `make run`; tests/ here,
    which exists) is fine."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(nommer.__file__)))
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[os.path.join(checkout, "tests")],
                                DATA_DIR=str(tmp_path / "data"))
    assert check_roots(s) == []


def test_default_media_dir_created_only_by_feederd(tmp_path):
    """The default root (<cwd>/media) is created by enforce_roots(create_default=True), not otherwise."""
    s = load_settings(None, overrides={"DATA_DIR": str(tmp_path / "data")}, cwd=str(tmp_path))
    assert s.FILE_STORAGE_ROOTS == [str(tmp_path / "media")]
    assert enforce_roots("workerd", s) == []
    assert not (tmp_path / "media").exists()
    assert enforce_roots("feederd", s, create_default=True) == [str(tmp_path / "media")]
    assert (tmp_path / "media").is_dir()


def test_enforce_roots_exits_with_every_problem(tmp_path):
    s = Settings.from_overrides(FILE_STORAGE_ROOTS=[str(tmp_path)], DATA_DIR=str(tmp_path / "data"))
    with pytest.raises(SystemExit) as exc:
        enforce_roots("feederd", s)
    assert "feederd" in str(exc.value) and "DATA_DIR" in str(exc.value) and "SCRATCH_DIR" in str(exc.value)


@pytest.mark.parametrize("daemon", ["feederd", "workerd"])
def test_daemons_refuse_to_start(tmp_path, daemon):
    """twistd feederd / workerd --local with a root holding DATA_DIR exit at once, saying why; no store is made."""
    config = tmp_path / "nomconf_roots.py"
    config.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nFILE_STORAGE_ROOTS = [{str(tmp_path)!r}]\n"
                      "FLEET_BACKEND = 'none'\n")
    argv = [sys.executable, "-c", TWISTD, "--pidfile=", "-n", "--logfile=-", daemon, "--config", str(config)]
    if daemon == "workerd":
        argv.append("--local")
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "FILE_STORAGE_ROOTS" in out and "DATA_DIR" in out and "the settings file" in out, out[-3000:]
    assert not (tmp_path / "data" / "jobs.sqlite").exists()


def test_feederd_creates_default_media_dir(tmp_path):
    """twistd feederd with no FILE_STORAGE_ROOTS creates ./media and starts (then is stopped)."""
    from tests.processes import free_port
    import signal
    import time
    import urllib.request
    port = free_port()
    config = tmp_path / "nomconf_media.py"
    config.write_text(f"DATA_DIR = {str(tmp_path / 'data')!r}\nFLEET_BACKEND = 'none'\n")
    proc = subprocess.Popen([sys.executable, "-c", TWISTD, "--pidfile=", "-n", "--logfile=-", "feederd",
                             "--config", str(config), "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.1)
        assert (tmp_path / "media").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
