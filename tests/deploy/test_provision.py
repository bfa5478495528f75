"""deploy/provision.sh for real, under a temporary --root: a venv made and
nommer pip-installed from this checkout (dependencies from PyPI; pip's cache
makes it quick), the units installed, the self-check passed; then again, to
show it is idempotent."""

import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "deploy" / "provision.sh"
UNITS = ("nommer-workerd.service", "nommer-feederd.service")


def provision(root, *args, timeout=900):
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(PROVISION), "--root", str(root), "--nommer", str(REPO), "--skip-apt", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    proc.duration_s = time.monotonic() - started
    assert proc.returncode == 0, f"provision.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-root")
    first = provision(root, "--no-systemd")
    print(f"provision.sh first run: {first.duration_s:.1f} s")
    return root, first


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_twistd_of_the_venv_knows_both_daemons(provisioned):
    root, _ = provisioned
    twistd = root / "opt/nommer/venv/bin/twistd"
    listing = run([str(twistd), "--help"])
    assert listing.returncode == 0, listing.stderr
    plugins = re.findall(r"^    (\S+)", listing.stdout, re.M)
    assert "workerd" in plugins and "feederd" in plugins
    for daemon in ("workerd", "feederd"):
        helped = run([str(twistd), daemon, "--help"])
        assert helped.returncode == 0, helped.stderr
        assert "--config" in helped.stdout


def test_nommer_command_works(provisioned):
    root, _ = provisioned
    helped = run([str(root / "opt/nommer/venv/bin/nommer"), "--help"])
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout


def test_nommer_is_installed_into_the_venv_not_linked_to_the_checkout(provisioned):
    root, _ = provisioned
    python = root / "opt/nommer/venv/bin/python"
    where = run([str(python), "-c", "import nommer, importlib.metadata as m; "
                 "print(nommer.__file__); print(m.version('nommer'))"])
    assert where.returncode == 0, where.stderr
    path, version = where.stdout.split()
    assert Path(path).is_relative_to(root / "opt/nommer/venv")
    assert version == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_units_and_directories_are_under_the_root(provisioned):
    root, first = provisioned
    for unit in UNITS:
        installed = root / "etc/systemd/system" / unit
        assert installed.read_text() == (REPO / "deploy/systemd" / unit).read_text()
    assert (root / "etc/nommer").is_dir() and (root / "var/lib/nommer").is_dir()
    # cloud-init writes it on each instance; the image never ships one.
    assert not (root / "etc/nommer/workerd.env").exists()
    # --no-systemd: nothing enabled.
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()
    for check in ("ffmpeg -version", "ffprobe -version", "ffmpeg in the bwrap sandbox",
                  "twistd workerd --help", "twistd feederd --help"):
        assert f"check: {check} ok" in first.stdout


def test_second_run_reuses_the_venv(provisioned):
    root, _ = provisioned
    marker = root / "opt/nommer/venv/kept-by-second-run"
    marker.write_text("")
    second = provision(root, "--no-systemd")
    print(f"provision.sh second run: {second.duration_s:.1f} s")
    assert "exists" in second.stdout and marker.exists()
    twistd = run([str(root / "opt/nommer/venv/bin/twistd"), "workerd", "--help"])
    assert twistd.returncode == 0, twistd.stderr


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_systemctl_enables_the_worker_unit_offline_under_the_root(provisioned):
    root, _ = provisioned
    provision(root)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "nommer-workerd.service") == "/etc/systemd/system/nommer-workerd.service"
    assert not (wants / "nommer-feederd.service").exists()


def test_default_spec_is_the_pinned_release_of_pyproject():
    pinned = re.search(r'^NOMMER_VERSION="([^"]+)"$', PROVISION.read_text(), re.M).group(1)
    assert pinned == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert 'SPEC="${NOMMER_SPEC:-nommer==${NOMMER_VERSION}}"' in PROVISION.read_text()


def test_bad_arguments_are_refused_clearly(tmp_path):
    proc = subprocess.run(["bash", str(PROVISION), "--root", str(tmp_path), "--frobnicate"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "unknown argument: --frobnicate" in proc.stderr
    assert not (tmp_path / "opt").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck not installed (make test-deps installs it)")
def test_shellcheck_is_clean():
    proc = subprocess.run(["shellcheck", "--severity=style", str(PROVISION)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
