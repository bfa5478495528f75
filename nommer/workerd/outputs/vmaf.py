"""Finding an ffmpeg that can compute VMAF (one built with libvmaf).

Debian's ffmpeg has no libvmaf; PSNR and SSIM work with it, VMAF does not.
The optional extra ``pip install 'nommer[vmaf]'`` installs the
``imageio-ffmpeg`` wheel, whose static ffmpeg has libvmaf and its built-in
models (``vmaf_v0.6.1``, ``vmaf_v0.6.1neg``, ``vmaf_4k_v0.6.1``); that
binary is GPLv3 (see the README's "Quality" section).

``find_vmaf_ffmpeg(settings)`` is asked by feederd at submit (a job asking
for VMAF is refused with ``HOW_TO_ENABLE`` when it answers None) and by the
worker before a job that needs it. The answer for each binary is cached
(keyed by its resolved path, size and modification time), so only the first
question runs the binary (``-filters``, a few milliseconds).
"""

import os
import shutil
import subprocess

#: How to get VMAF, in every message that refuses it.
HOW_TO_ENABLE = ("VMAF needs an ffmpeg built with libvmaf: pip install 'nommer[vmaf]' "
                 "(the imageio-ffmpeg wheel, GPLv3), or set VMAF_FFMPEG_BIN")
#: Seconds the ``-filters`` check may take.
CHECK_TIMEOUT_S = 20.0

#: {(real path, size, mtime_ns): has libvmaf}
_cache = {}


def _resolve(name):
    """Absolute real path of an executable name or path, or None."""
    found = shutil.which(name) if name else None
    return os.path.realpath(found) if found else None


def has_libvmaf(path):
    """True when the ffmpeg at ``path`` (absolute) lists the ``libvmaf``
    filter in ``-filters``; False when it does not, cannot run, or is not
    there. Cached per binary (path, size, mtime)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _cache:
        try:
            done = subprocess.run([path, "-hide_banner", "-filters"], capture_output=True,
                                  timeout=CHECK_TIMEOUT_S, env={"PATH": "/usr/bin:/bin"})
            listed = done.stdout.decode(errors="replace").splitlines()
            _cache[key] = done.returncode == 0 and any(
                line.split()[1:2] == ["libvmaf"] for line in listed if line.strip())
        except (OSError, subprocess.SubprocessError):
            _cache[key] = False
    return _cache[key]


def _imageio_ffmpeg():
    """The imageio-ffmpeg wheel's ffmpeg (resolved path), or None when the
    package is not installed or finds none."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return _resolve(imageio_ffmpeg.get_ffmpeg_exe())
    except (RuntimeError, OSError):
        return None


def search(settings):
    """``(path, None)`` of the VMAF-capable ffmpeg, or ``(None, reason)``:
    ``reason`` a sentence saying what was looked at. VMAF_FFMPEG_BIN when
    set (and nothing else: a wrong setting is not papered over), else the
    imageio-ffmpeg wheel's binary."""
    configured = getattr(settings, "VMAF_FFMPEG_BIN", None)
    if configured:
        path = _resolve(configured)
        if path is None:
            return None, f"VMAF_FFMPEG_BIN ({configured}) is not an executable"
        if not has_libvmaf(path):
            return None, f"VMAF_FFMPEG_BIN ({configured}) has no libvmaf filter"
        return path, None
    path = _imageio_ffmpeg()
    if path is None:
        return None, "imageio-ffmpeg is not installed and VMAF_FFMPEG_BIN is not set"
    if not has_libvmaf(path):
        return None, f"the ffmpeg imageio-ffmpeg gives ({path}) has no libvmaf filter"
    return path, None


def find_vmaf_ffmpeg(settings):
    """Absolute path of an ffmpeg with libvmaf, or None: VMAF_FFMPEG_BIN if
    set (None when it is missing or lacks libvmaf), else the imageio-ffmpeg
    wheel's binary when that package is installed and its binary has
    libvmaf. Runs each candidate once (``has_libvmaf``, cached)."""
    return search(settings)[0]
