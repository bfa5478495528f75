"""Finding and running a nomconf module (a ``.py`` path or a module name) without importing it."""

import os
import sys
import traceback
import types
from importlib.machinery import PathFinder

from nommer.conf.rules import _Invalid

#: The ``--config`` default of both daemons, as in the original. When no module
#: of this name exists the embedded defaults are used (not an error).
DEFAULT_CONFIG = "nomconf"


def _looks_like_path(config):
    return (isinstance(config, os.PathLike) or config.endswith(".py")
            or "/" in config or os.sep in config)


def _find_module_file(name, search_path):
    """Absolute path of the source file of module ``name`` (dotted allowed)
    on ``search_path``, without importing anything; None if there is none.
    Raises _Invalid for a directory without __init__.py."""
    path = search_path
    parts = name.split(".")
    for i, part in enumerate(parts):
        spec = PathFinder.find_spec(part, path)
        if spec is None:
            return None
        if i < len(parts) - 1:
            if spec.submodule_search_locations is None:
                return None
            path = list(spec.submodule_search_locations)
    if not spec.origin or not spec.has_location:
        raise _Invalid(f"module {name!r} is a directory (a namespace package), not a settings module")
    return os.path.abspath(spec.origin)


def _exec_config_file(path):
    """Run a config file in a fresh module (not added to sys.modules, no
    bytecode cache written). Returns the module; raises _Invalid with the
    error and its line on failure."""
    module = types.ModuleType(os.path.splitext(os.path.basename(path))[0].replace(".", "_"))
    module.__file__ = path
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise _Invalid(f"cannot read {path}: {e.strerror or e}") from None
    try:
        code = compile(source, path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except SyntaxError as e:
        raise _Invalid(f"{e.filename or path}, line {e.lineno}: syntax error: {e.msg}") from None
    except (Exception, SystemExit) as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f", line {frames[-1].lineno}" if frames else ""
        raise _Invalid(f"{path}{where}: running it raised {type(e).__name__}: {e}") from None
    return module


def _load_config_module(config, cwd):
    """(module or None, absolute path or None) for ``config``; raises _Invalid."""
    if config is None:
        return None, None
    if isinstance(config, types.ModuleType):
        path = getattr(config, "__file__", None)
        return config, os.path.abspath(path) if path else None
    if not isinstance(config, (str, os.PathLike)):
        raise _Invalid(f"config must be a path to a .py file or a module name, not {config!r}")
    if _looks_like_path(config):
        path = os.path.abspath(os.path.join(cwd, os.fspath(config)))
        if not os.path.exists(path):
            raise _Invalid(f"config file {path} does not exist")
        if not os.path.isfile(path):
            raise _Invalid(f"config {path} is not a file")
        return _exec_config_file(path), path
    if not all(part.isidentifier() for part in config.split(".")):
        raise _Invalid(f"config {config!r} is neither a path to a .py file nor a module name")
    path = _find_module_file(config, [cwd] + [p or os.getcwd() for p in sys.path])
    if path is None:
        if config == DEFAULT_CONFIG:
            return None, None
        raise _Invalid(f"config module {config!r} could not be found in {cwd} or on sys.path "
                       f"(give a path to a .py file or an importable module name)")
    if not path.endswith(".py"):
        raise _Invalid(f"config module {config!r} is {path}, not a .py source file")
    return _exec_config_file(path), path

