"""The systemd units in deploy/systemd: what the worker boot relies on
(feederd's user data writes the environment file and enables the unit), the
twistd command line, and `systemd-analyze verify` when it is installed."""

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nommer.feederd.fleet import userdata

UNIT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
WORKERD = UNIT_DIR / "nommer-workerd.service"
FEEDERD = UNIT_DIR / "nommer-feederd.service"


class _Collect(dict):
    """A key given twice (Environment=) keeps every value, one per line."""

    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def parse_unit(path):
    parser = configparser.RawConfigParser(strict=False, dict_type=_Collect, delimiters=("=",),
                                          comment_prefixes=("#", ";"), empty_lines_in_values=False,
                                          interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return {name: {key: value.split("\n") for key, value in parser.items(name)}
            for name in parser.sections()}


def one(unit, section, key):
    values = unit[section][key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


@pytest.mark.parametrize("path, daemon", [(WORKERD, "workerd"), (FEEDERD, "feederd")])
def test_service_basics(path, daemon):
    unit = parse_unit(path)
    service = unit["Service"]
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert argv[0] == "/opt/nommer/venv/bin/twistd"
    # Foreground, no pidfile, logs to stdout (journald), then the daemon and its config.
    assert argv[1:5] == ["--nodaemon", "--pidfile=", "--logfile=-", daemon]
    assert argv[5:7] == ["--config", "${NOMMER_CONFIG}"]
    assert argv[7] == f"$NOMMER_{daemon.upper()}_OPTS" and len(argv) == 8
    assert one(unit, "Service", "User") == "nommer"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec") == "5"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    # SIGTERM to twistd only: ffmpeg keeps running through a warm stop.
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/nommer"
    assert one(unit, "Service", "StandardOutput") == "journal"
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "ReadWritePaths") == "/var/lib/nommer"
    assert one(unit, "Service", "PrivateTmp") == "yes"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # The options variable has an empty default, so an env file without it is fine.
    assert f"NOMMER_{daemon.upper()}_OPTS=" in service["Environment"]


def test_worker_unit_reads_what_feederd_user_data_writes():
    unit = parse_unit(WORKERD)
    assert WORKERD.name == userdata.WORKERD_UNIT
    assert one(unit, "Service", "EnvironmentFile") == userdata.ENV_FILE_PATH
    # Enabled in the image, it starts only on an instance whose user data wrote the file.
    assert one(unit, "Unit", "ConditionPathExists") == userdata.ENV_FILE_PATH
    # Never after cloud-final.service: its runcmd `systemctl enable --now` would wait for us.
    after = one(unit, "Unit", "After").split()
    assert "cloud-init.service" in after and "cloud-final.service" not in after
    env = userdata.parse_env_file(userdata.render_env_file(
        {"NOMMER_CONFIG": "s3://bucket/nomconf.py", "AWS_DEFAULT_REGION": "eu-west-1"}))
    assert "NOMMER_CONFIG" in env


def test_warm_stop_has_time_to_finish_a_job():
    timeout = one(parse_unit(WORKERD), "Service", "TimeoutStopSec")
    assert timeout == "1h"


def test_feederd_unit_reads_etc_nommer():
    unit = parse_unit(FEEDERD)
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/nommer/feederd.env"
    assert "NOMMER_CONFIG=/etc/nommer/nomconf.py" in unit["Service"]["Environment"]
    assert one(unit, "Unit", "ConditionPathExists") == "/etc/nommer/nomconf.py"


@pytest.mark.parametrize("daemon", ["workerd", "feederd"])
def test_twistd_accepts_the_command_line(daemon, tmp_path):
    """ExecStart's options as this checkout's twistd parses them (with --help
    at the end, so nothing starts)."""
    path = WORKERD if daemon == "workerd" else FEEDERD
    argv = shlex.split(one(parse_unit(path), "Service", "ExecStart"))
    twistd = Path(sys.executable).with_name("twistd")
    argv = [str(twistd)] + [str(tmp_path / "nomconf.py") if a == "${NOMMER_CONFIG}" else a
                            for a in argv[1:] if not a.startswith("$NOMMER_")] + ["--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--config" in proc.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path):
    """Verified in a scratch root holding the system's own units (for
    multi-user.target and friends) and an executable at ExecStart's path."""
    system_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                         if (p / "multi-user.target").exists()), None)
    if system_units is None:
        pytest.skip("no systemd unit directory with multi-user.target")
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    twistd = tmp_path / "opt/nommer/venv/bin/twistd"
    twistd.parent.mkdir(parents=True)
    twistd.write_text("#!/bin/sh\n")
    twistd.chmod(0o755)
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    units = [shutil.copy(p, unit_dir / p.name) for p in (WORKERD, FEEDERD)]
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={tmp_path}", *map(str, units)],
                          capture_output=True, text=True, timeout=120)
    # verify exits 0 on unknown keys and bad values, only saying so: any word is a failure.
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


#: The namespaces bubblewrap creates for the ffmpeg sandbox (--unshare-all).
SANDBOX_NAMESPACES = {"user", "mnt", "pid", "ipc", "uts", "net", "cgroup"}


@pytest.mark.parametrize("path", [WORKERD, FEEDERD])
def test_hardening_leaves_room_for_the_ffmpeg_sandbox(path):
    """Workers (and feederd's local workers) build a bwrap sandbox as the nommer user:
    the unit must allow its namespaces, the netlink socket bwrap brings the sandbox's
    loopback up with, and must not cover parts of /proc (see the next test)."""
    unit = parse_unit(path)
    namespaces = one(unit, "Service", "RestrictNamespaces")
    assert namespaces not in ("yes", "true", "1") and not namespaces.startswith("~"), namespaces
    assert SANDBOX_NAMESPACES <= set(namespaces.split()), namespaces
    assert "AF_NETLINK" in one(unit, "Service", "RestrictAddressFamilies").split()
    assert one(unit, "Service", "ProtectKernelTunables") == "no"
    assert one(unit, "Service", "ProtectKernelLogs") == "no"
    assert "ProtectProc" not in unit["Service"] and "PrivateUsers" not in unit["Service"]


def _sandbox_argv():
    from types import SimpleNamespace

    from nommer.conf import defaults
    from nommer.workerd.sandbox import Sandbox
    settings = SimpleNamespace(**{k: getattr(defaults, k) for k in dir(defaults) if k.isupper()})
    # The command line of a worker running as the unprivileged service user (as on EC2).
    return Sandbox(settings, as_root=False).wrap(["/bin/true"]).argv


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("runuser") is None,
                    reason="needs root, unshare and runuser")
def test_covering_proc_sys_as_protect_kernel_tunables_does_stops_an_unprivileged_sandbox():
    """Why ProtectKernelTunables stays off: with /proc/sys covered by a read-only bind mount
    (what systemd does for it), the worker's sandbox cannot start as an ordinary user; with
    nothing covered it does."""
    import pwd
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no unprivileged user nobody on this machine")
    sandbox = shlex.join(_sandbox_argv())
    plain = f"mount --make-rprivate / && runuser -u nobody -- env -i {sandbox}"
    covered = ("mount --make-rprivate / && mount --bind /proc/sys /proc/sys && "
               f"mount -o remount,bind,ro /proc/sys && runuser -u nobody -- env -i {sandbox}")
    ok = subprocess.run(["unshare", "-m", "sh", "-c", plain], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(["unshare", "-m", "sh", "-c", covered], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "proc" in refused.stderr, refused.stderr
