# -*- test-case-name: tests.core.test_storage_roots -*-
"""The file:// roots may hold none of nommer's own files.

A job may read anything under ``FILE_STORAGE_ROOTS`` (as a source) and write
anything there (as a destination). A root that contains the job store, the
scratch space, the settings file or nommer's code would let a caller read the
job store (other callers' jobs, key hashes), overwrite the settings or the
code and so run their own on the next start. So both daemons refuse to start
when a root is, or is an ancestor of, any of:

* ``DATA_DIR`` (job store, queue, key store) and ``SCRATCH_DIR`` (every job's
  working files); a root *inside* the scratch directory is refused too (other
  jobs' files would be readable);
* the settings file (``settings.config_path``);
* nommer's code: the ``nommer`` package, the ``twisted/plugins`` directories
  holding its ``feederd``/``workerd`` plugins, the source checkout holding
  them (a directory with ``setup.py`` or ``pyproject.toml``), and the
  site-packages directories of the running Python; a root *inside* any of
  these but the checkout is refused too (a job could write a module there).

``check_roots(settings)`` (pure but for ``realpath`` and looking at which
files exist) returns the problems; ``enforce_roots(daemon, settings)`` is
what the daemons call at start: it creates the default media directory when
missing (feederd) and exits with every problem listed.
"""

import os
import sys
import sysconfig

from nommer.conf.loader import DEFAULT_MEDIA_DIR
from nommer.core.paths import is_within

__all__ = ["check_roots", "default_media_dir", "enforce_roots", "protected_paths"]


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def default_media_dir(settings):
    """The root used when FILE_STORAGE_ROOTS is not set: ``<cwd>/media``."""
    cwd = getattr(settings, "cwd", None) or os.getcwd()
    return os.path.join(_real(cwd), DEFAULT_MEDIA_DIR)


def _code_paths():
    """[(what, real path)] of nommer's code and the Python it runs on."""
    import nommer

    found = []
    package = _real(os.path.dirname(nommer.__file__))
    found.append(("nommer's code", package))
    checkout = os.path.dirname(package)
    if any(os.path.exists(os.path.join(checkout, f)) for f in ("setup.py", "pyproject.toml")):
        found.append(("nommer's source checkout", checkout))
    try:
        import twisted.plugins
        plugin_dirs = list(twisted.plugins.__path__)
    except ImportError:  # pragma: no cover - Twisted is a dependency
        plugin_dirs = []
    for d in plugin_dirs:
        if any(os.path.exists(os.path.join(d, f)) for f in ("feederd.py", "workerd.py")):
            found.append(("nommer's twistd plugins", _real(d)))
    paths = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        if paths.get(key):
            found.append(("the Python packages nommer runs on", _real(paths[key])))
    if sys.prefix != sys.base_prefix:
        found.append(("the Python environment nommer runs in", _real(sys.prefix)))
    return found


def protected_paths(settings):
    """[(what, real path)] no file root may contain (see the module docstring)."""
    found = []
    data_dir = getattr(settings, "DATA_DIR", None)
    if data_dir:
        found.append(("DATA_DIR (the job store and queue)", _real(data_dir)))
    scratch = getattr(settings, "SCRATCH_DIR", None) or (
        os.path.join(data_dir, "scratch") if data_dir else None)
    if scratch:
        found.append(("SCRATCH_DIR (every job's working files)", _real(scratch)))
    config_path = getattr(settings, "config_path", None)
    if config_path and os.path.exists(config_path):  # not a remote config's deleted download
        found.append(("the settings file", _real(config_path)))
    found += _code_paths()
    seen, unique = set(), []
    for what, path in found:
        if (what, path) not in seen:
            seen.add((what, path))
            unique.append((what, path))
    return unique


def _roots(settings):
    roots = getattr(settings, "FILE_STORAGE_ROOTS", None)
    if roots is None:
        roots = [default_media_dir(settings)]
    return [_real(r) for r in roots]


def check_roots(settings):
    """Problems with ``settings.FILE_STORAGE_ROOTS``: list of str, one per
    offending root, each saying what of nommer's the root contains and how to
    fix it; empty when none."""
    problems = []
    protected = protected_paths(settings)
    scratch = next((p for w, p in protected if w.startswith("SCRATCH_DIR")), None)
    # (Inside the checkout is fine: ./media of `make run` is there.)
    code_paths = [(what, path) for what, path in _code_paths() if what != "nommer's source checkout"]
    for root in _roots(settings):
        inside = [f"{what} at {path}" for what, path in protected if is_within(path, root)]
        if inside:
            media = os.path.join(root, DEFAULT_MEDIA_DIR)
            problems.append(
                f"FILE_STORAGE_ROOTS entry {root} contains {'; '.join(inside)}. Jobs may read "
                f"and write anything under a root, so they could read or overwrite these. Give "
                f"media a directory of its own (e.g. FILE_STORAGE_ROOTS = [{media!r}]), or move "
                f"what is listed out of {root}")
        code = next((f"{what} at {path}" for what, path in code_paths
                     if root != path and is_within(root, path)), None)
        if code:
            problems.append(
                f"FILE_STORAGE_ROOTS entry {root} lies inside {code}: a job could write a module "
                f"there that runs at the next start. Use a directory outside it")
        if scratch and root != scratch and is_within(root, scratch):
            problems.append(
                f"FILE_STORAGE_ROOTS entry {root} lies inside SCRATCH_DIR ({scratch}): jobs could "
                f"read other jobs' working files. Use a directory outside {scratch}")
    return problems


def enforce_roots(daemon, settings, create_default=False):
    """At a daemon's start: with ``create_default`` (feederd), create the
    default media directory (``<cwd>/media``, used when FILE_STORAGE_ROOTS is
    not set) when missing; configured roots must exist already (the settings
    loader checks). Then exit (SystemExit, every problem listed) if a root
    contains one of nommer's own files (``check_roots``).

    @param daemon: "feederd" or "workerd", for the message.
    @return: the list of roots created (real paths).
    """
    problems = check_roots(settings)
    if problems:
        raise SystemExit(f"{daemon}: FILE_STORAGE_ROOTS would expose nommer's own files, "
                         f"nothing started:\n" + "\n".join(f"  {p}" for p in problems))
    created = []
    if create_default:
        default = default_media_dir(settings)
        for root in getattr(settings, "FILE_STORAGE_ROOTS", None) or [default]:
            if _real(root) == default and not os.path.isdir(default):
                try:
                    os.makedirs(default, exist_ok=True)
                except OSError as e:
                    raise SystemExit(f"{daemon}: cannot create the media directory {default}: "
                                     f"{e.strerror or e}") from None
                created.append(default)
    return created
