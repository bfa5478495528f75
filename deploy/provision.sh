#!/usr/bin/env bash
# Provisions a nommer worker image (Debian 12 / Ubuntu 24.04): ffmpeg, bubblewrap (the
# sandbox every ffmpeg runs in), on Ubuntu an AppArmor profile letting bwrap create
# user namespaces, a system user
# `nommer`, a venv at /opt/nommer/venv with nommer in it, the systemd units. Packer
# runs it on the image build instance (deploy/packer); it also runs anywhere under
# --root for CI. Idempotent: running it twice is fine.
#
#   deploy/provision.sh [--root DIR] [--nommer PIP_SPEC] [--skip-apt] [--no-systemd]
#
#   --root DIR         install under DIR (DIR/opt/nommer/venv, DIR/etc/systemd/system, ...)
#                      instead of /; no system user is created. The venv is made for
#                      that path: it does not work once moved.
#   --nommer PIP_SPEC  what pip installs (default: $NOMMER_SPEC, else the pinned release
#                      nommer==NOMMER_VERSION below): a requirement, a wheel, or a
#                      source checkout (built from a clean copy; the checkout is not written).
#   --skip-apt         do not apt-get install ffmpeg, bubblewrap and python3-venv (they must
#                      be there).
#   --no-systemd       install the unit files but do not run systemctl.
#   --python PYTHON    interpreter the venv is made with (default: python3).
#
# The environment's pip settings apply (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, ...).
# Ends with a self-check: ffmpeg/ffprobe run, ffmpeg runs in the sandbox exactly as the
# worker starts it (as the nommer user when installing into /), and the venv's twistd
# knows workerd and feederd.
set -euo pipefail

# The release the image installs by default; tests/deploy checks it equals pyproject.toml's version.
NOMMER_VERSION="0.1.0"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="/"
SPEC="${NOMMER_SPEC:-nommer==${NOMMER_VERSION}}"
SKIP_APT=0
NO_SYSTEMD=0
PYTHON="${PYTHON:-python3}"
UNITS=(nommer-workerd.service nommer-feederd.service)

say() { printf 'provision: %s\n' "$*"; }
die() { printf 'provision: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --nommer) [ $# -ge 2 ] || die "--nommer needs a pip spec"; SPEC="$2"; shift 2 ;;
        --nommer=*) SPEC="${1#*=}"; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --skip-apt) SKIP_APT=1; shift ;;
        --no-systemd) NO_SYSTEMD=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

[ -n "$ROOT" ] || die "--root is empty"
mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
# PREFIX is what goes before absolute paths: "" for the real system, DIR under --root.
if [ "$ROOT" = "/" ]; then PREFIX=""; else PREFIX="$ROOT"; fi
VENV="$PREFIX/opt/nommer/venv"
UNIT_DIR="$PREFIX/etc/systemd/system"
CONF_DIR="$PREFIX/etc/nommer"
STATE_DIR="$PREFIX/var/lib/nommer"

for unit in "${UNITS[@]}"; do
    [ -f "$HERE/systemd/$unit" ] || die "$HERE/systemd/$unit is missing (run this script from its deploy/ folder)"
done
if [ -z "$PREFIX" ] && [ "$(id -u)" -ne 0 ]; then
    die "installing into / needs root (or use --root DIR)"
fi
say "root $ROOT, installing ${SPEC}"

# --- system packages ----------------------------------------------------------------
if [ "$SKIP_APT" -eq 1 ]; then
    say "apt: skipped (--skip-apt)"
else
    [ -n "$PREFIX" ] && say "apt: installs on this machine, not under $ROOT (apt has no --root)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    # The build instance's first boot may still hold the apt lock (cloud-init, unattended-upgrades).
    APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
    say "apt: installing ffmpeg bubblewrap python3-venv"
    "${APT[@]}" update
    "${APT[@]}" install --no-install-recommends ffmpeg bubblewrap util-linux python3-venv ca-certificates
fi

# --- AppArmor: bwrap may create user namespaces (Ubuntu 23.10+) ---------------------------
# Ubuntu restricts unprivileged user namespaces to programs whose AppArmor profile says
# `userns`; without one, the worker's sandbox cannot start as the nommer user. Debian 12
# has no such restriction (the file is harmless there). Ubuntu's own profile for bwrap,
# when present, is left alone.
APPARMOR_DIR="$PREFIX/etc/apparmor.d"
if [ -d "$APPARMOR_DIR" ] || [ -e /proc/sys/kernel/apparmor_restrict_unprivileged_userns ]; then
    if grep -lqs '^profile .*/usr/bin/bwrap' "$APPARMOR_DIR"/* 2>/dev/null \
            && [ ! -e "$APPARMOR_DIR/nommer-bwrap" ]; then
        say "apparmor: a profile for /usr/bin/bwrap exists; kept"
    else
        mkdir -p "$APPARMOR_DIR"
        cat > "$APPARMOR_DIR/nommer-bwrap" <<'PROFILE'
# Installed by nommer's provision.sh: bubblewrap (the sandbox of nommer's ffmpeg) may
# create the user namespace it confines ffmpeg in. Otherwise unconfined, as before.
abi <abi/4.0>,
include <tunables/global>

profile nommer-bwrap /usr/bin/bwrap flags=(unconfined) {
  userns,
  include if exists <local/nommer-bwrap>
}
PROFILE
        say "apparmor: $APPARMOR_DIR/nommer-bwrap (userns for /usr/bin/bwrap)"
        if [ -z "$PREFIX" ] && command -v apparmor_parser >/dev/null \
                && [ -e /sys/kernel/security/apparmor/profiles ]; then
            apparmor_parser -r "$APPARMOR_DIR/nommer-bwrap" || die "apparmor_parser refused $APPARMOR_DIR/nommer-bwrap"
            say "apparmor: profile nommer-bwrap loaded"
        fi
    fi
fi

# --- user and directories ------------------------------------------------------------
if [ -z "$PREFIX" ]; then
    if id -u nommer >/dev/null 2>&1; then
        say "user nommer: exists"
    else
        say "user nommer: creating (system user, home /var/lib/nommer, no login)"
        useradd --system --user-group --home-dir /var/lib/nommer --no-create-home \
            --shell /usr/sbin/nologin --comment "nommer encoding daemons" nommer
    fi
fi
mkdir -p "$CONF_DIR" "$STATE_DIR" "$PREFIX/opt/nommer" "$UNIT_DIR"
chmod 0755 "$CONF_DIR"
chmod 0750 "$STATE_DIR"
if [ -z "$PREFIX" ]; then chown nommer:nommer "$STATE_DIR"; fi

# --- venv and nommer ----------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    say "venv $VENV: exists"
else
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install python3, or pass --python)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
    say "venv $VENV: creating with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "could not make a venv (apt-get install python3-venv)"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)
# The real image keeps no pip cache; elsewhere (CI) pip's cache makes the second run quick.
[ -z "$PREFIX" ] && PIP+=(--no-cache-dir)

INSTALL_FROM="$SPEC"
BUILD_COPY=""
cleanup() { if [ -n "$BUILD_COPY" ]; then rm -rf "$BUILD_COPY"; fi; }
trap cleanup EXIT
if [ -d "$SPEC" ]; then
    [ -f "$SPEC/pyproject.toml" ] || die "$SPEC is a directory without pyproject.toml"
    # setuptools builds in the source tree (build/, *.egg-info): build a clean copy instead, so a
    # stale build/ never leaks into the install and the checkout is left as it was.
    BUILD_COPY="$(mktemp -d "${TMPDIR:-/tmp}/nommer-src.XXXXXX")"
    say "nommer: copying the checkout $SPEC to build it"
    tar -C "$SPEC" --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./nommer-data --exclude=./.pytest_cache \
        --exclude=./.hypothesis --exclude=dropin.cache -cf - . | tar -C "$BUILD_COPY" -xf -
    INSTALL_FROM="$BUILD_COPY"
fi
say "pip: installing $SPEC into $VENV"
"${PIP[@]}" install --quiet "$INSTALL_FROM"
say "nommer: $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("nommer"))') installed"

# --- systemd units -----------------------------------------------------------------
for unit in "${UNITS[@]}"; do
    install -m 0644 "$HERE/systemd/$unit" "$UNIT_DIR/$unit"
    say "unit: $UNIT_DIR/$unit"
done
if [ "$NO_SYSTEMD" -eq 1 ]; then
    say "systemctl: skipped (--no-systemd); nommer-workerd.service is installed, not enabled"
elif ! command -v systemctl >/dev/null; then
    die "systemctl not found (use --no-systemd)"
elif [ -n "$PREFIX" ]; then
    # Offline enable: creates the WantedBy symlinks under DIR.
    systemctl --root="$ROOT" enable nommer-workerd.service
    say "systemctl: nommer-workerd.service enabled under $ROOT"
else
    # Only reload a running systemd (a container or chroot has none).
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    # Enabled in the image, it starts only where cloud-init wrote /etc/nommer/workerd.env
    # (ConditionPathExists): the image build itself and a boot without user data start nothing.
    systemctl enable nommer-workerd.service
    say "systemctl: nommer-workerd.service enabled (starts when /etc/nommer/workerd.env exists)"
fi
if [ -e "$CONF_DIR/workerd.env" ]; then
    say "warning: $CONF_DIR/workerd.env exists; an image must not ship it (cloud-init writes it)"
fi

# --- self-check -----------------------------------------------------------------------
check() {
    local what="$1"; shift
    if "$@" >/dev/null 2>&1; then
        say "check: $what ok"
    else
        "$@" 2>&1 | tail -n 20 >&2 || true
        die "check failed: $what ($*)"
    fi
}
check "ffmpeg -version" ffmpeg -version
check "ffprobe -version" ffprobe -version
# ffmpeg in the sandbox, built by the installed nommer from its default settings, as the
# service user when installing into / (the case user namespaces matter for).
SANDBOX_CHECK='
import subprocess, sys, types
from nommer.conf import defaults
from nommer.workerd.sandbox import Sandbox
settings = types.SimpleNamespace(**{k: getattr(defaults, k) for k in dir(defaults) if k.isupper()})
launch = Sandbox(settings).wrap(["ffmpeg", "-hide_banner", "-version"])
sys.exit(subprocess.run(launch.argv, env=launch.env, cwd=launch.cwd).returncode)
'
if [ -z "$PREFIX" ] && command -v runuser >/dev/null; then
    check "ffmpeg in the bwrap sandbox as nommer" runuser -u nommer -- "$VENV/bin/python" -c "$SANDBOX_CHECK"
else
    check "ffmpeg in the bwrap sandbox" "$VENV/bin/python" -c "$SANDBOX_CHECK"
fi
# As root this also writes twisted/plugins/dropin.cache into the venv, which the services
# (read-only /opt under ProtectSystem=strict) could not write themselves.
check "twistd workerd --help" "$VENV/bin/twistd" workerd --help
check "twistd feederd --help" "$VENV/bin/twistd" feederd --help
check "nommer --help" "$VENV/bin/nommer" --help
say "done: $VENV ($("$VENV/bin/python" --version 2>&1)), units in $UNIT_DIR"
