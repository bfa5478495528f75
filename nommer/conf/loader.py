"""Loading settings: defaults, overridden by a nomconf module and overrides, every error collected."""

import copy
import difflib
import os

from nommer.conf import defaults as _defaults_module
from nommer.conf.checks import _check_together
from nommer.conf.compat import OBSOLETE, RENAMED
from nommer.conf.rules import _Context, _Invalid
from nommer.conf.schema import _rule_for
from nommer.conf.settings import Settings, _is_secret, redacted
from nommer.conf.source import DEFAULT_CONFIG, _load_config_module, _looks_like_path

__all__ = ["DEFAULT_CONFIG", "DEFAULT_MEDIA_DIR", "ConfigErrors", "Settings", "load_settings", "redacted"]

#: The file root used when FILE_STORAGE_ROOTS is None, relative to the working directory.
DEFAULT_MEDIA_DIR = "media"


def _default_values():
    """{name: value} of every UPPER_CASE name in nommer.conf.defaults (fresh copies)."""
    return {name: copy.deepcopy(getattr(_defaults_module, name))
            for name in dir(_defaults_module) if _is_setting_name(name)}


def _is_setting_name(name):
    """The original's rule (the name is its own upper case), minus helper names
    starting with ``_``."""
    return name.isupper() and not name.startswith("_")


class ConfigErrors(Exception):
    """The settings are invalid.

    ``errors``: list of str, one per problem, each naming the setting, the
    value and what is expected. ``warnings``: list of str collected before
    giving up (they are not why it failed). ``source``: absolute path of the
    config file, or None. ``str()`` is a header line followed by every error
    (then every warning), one per line.
    """

    def __init__(self, errors, warnings=(), source=None):
        self.errors = list(errors)
        self.warnings = list(warnings)
        self.source = source
        super().__init__(self.errors, self.warnings, source)

    def __str__(self):
        where = f" in {self.source}" if self.source else ""
        count = len(self.errors)
        lines = [f"{count} problem{'s' if count != 1 else ''} with the settings{where}:"]
        lines += [f"  {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class _Given:
    """A value given by the user. Errors name it ``label`` (the name as
    written, e.g. "NOMMERD_HEARTBEAT_INTERVAL (now HEARTBEAT_INTERVAL_S)") and
    add ``where`` ("" for the config module, " (in overrides)")."""

    def __init__(self, value, label, where):
        self.value = value
        self.label = label
        self.where = where


def _show(name, value):
    """A value as shown in an error: repr, shortened; secrets are not shown."""
    if _is_secret(name) and value is not None:
        return f"<hidden {type(value).__name__}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _collect(raw, origin, known, errors, warnings, notes):
    """Map the names of one source (a module's or the overrides' {name:
    value}) onto settings. Returns {setting: _Given}."""
    where = "" if origin == "module" else f" (in {origin})"
    given, via_alias = {}, {}
    candidates = sorted(set(known) | set(RENAMED) | set(OBSOLETE))
    for name, value in raw.items():
        if name in known:
            target, label = name, name
        elif name in RENAMED:
            target = RENAMED[name]
            label = f"{name} (now {target})"
            if target == "EC2_INSTANCE_TYPES":
                if not isinstance(value, str) or not value:
                    errors.append(f"{label} = {_show(name, value)}{where}: expected an instance type "
                                  f"such as 'c7i.large' (a string)")
                    continue
                value = [value]
            notes.append(f"{name} is the original media-nommer name of {target}; "
                         f"using {target} = {_show(target, value)}")
            via_alias[target] = name
        elif name in OBSOLETE:
            warnings.append(f"{name} no longer applies: {OBSOLETE[name]}")
            continue
        else:
            hint = difflib.get_close_matches(name.upper(), candidates, n=1, cutoff=0.75)
            if hint and hint[0] in RENAMED:
                hint_text = f"; did you mean {hint[0]} (now {RENAMED[hint[0]]})?"
            elif hint:
                hint_text = f"; did you mean {hint[0]}?"
            else:
                hint_text = ""
            helper = (" (a helper value in a nomconf may be named in lower case or start with '_')"
                      if origin == "module" and not hint else "")
            errors.append(f"{name}{where}: unknown setting{hint_text}{helper}")
            continue
        if target in given:
            old, new = (name, target) if name in RENAMED else (via_alias[target], target)
            errors.append(f"{old} and {new} are both set{where}; {old} is the original "
                          f"media-nommer name of {new}: keep only {new}")
            given[target] = None  # conflicting: neither value is used
            continue
        given[target] = _Given(value, label, where)
    return {k: v for k, v in given.items() if v is not None}


def load_settings(config=None, overrides=None, cwd=None):
    """Defaults, overridden by a nomconf module, overridden by ``overrides``.

    ``config``: None (defaults only); a path to a ``.py`` file (relative to
    ``cwd``; any extension is read as Python); a module name found in ``cwd``
    or on sys.path (``"nomconf"``, ``"myproj.nomconf"``; the module is run
    fresh, not imported into sys.modules); or an already imported module. The
    name ``"nomconf"`` (``DEFAULT_CONFIG``) is allowed not to exist: then the
    defaults apply. Any other config that cannot be found is an error.

    ``overrides``: {name: value} applied on top (e.g. from command-line
    options); same names and rules as a nomconf.

    ``cwd``: directory relative paths are resolved against (default: the
    process's working directory). DATA_DIR and SCRATCH_DIR become absolute
    (SCRATCH_DIR None -> DATA_DIR/scratch); FILE_STORAGE_ROOTS None -> [cwd];
    its entries are absolute and symlink-free.

    Returns a Settings. Raises ConfigErrors listing every problem: unknown
    names (with a did-you-mean), wrong types and values, an original name set
    together with its new name, cross-setting rules (HEARTBEAT_INTERVAL_S <=
    JOB_LEASE_S / 3, ABANDON_INACTIVE_JOBS_S > HEARTBEAT_INTERVAL_S), a config
    that cannot be found or that raises when run.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    errors, warnings, notes = [], [], []
    try:
        module, config_path = _load_config_module(config, cwd)
    except _Invalid as e:
        source = None
        if isinstance(config, (str, os.PathLike)) and _looks_like_path(config):
            source = os.path.abspath(os.path.join(cwd, os.fspath(config)))
        raise ConfigErrors([e.problems[0][2]], source=source) from None

    values = _default_values()
    known = set(values)
    given = {}
    if module is not None:
        raw = {n: getattr(module, n) for n in dir(module) if _is_setting_name(n)}
        given.update(_collect(raw, "module", known, errors, warnings, notes))
    if overrides:
        if not all(isinstance(k, str) for k in overrides):
            raise TypeError("overrides must be a dict with str keys")
        given.update(_collect(dict(overrides), "overrides", known, errors, warnings, notes))

    ctx = _Context(cwd, warnings.append)
    valid = set()
    labels = {name: (name, "") for name in values}
    for name in values:
        item = given.get(name)
        raw_value = item.value if item else values[name]
        if item:
            labels[name] = (item.label, item.where)
        try:
            values[name] = _rule_for(name, values[name])(raw_value, ctx)
            valid.add(name)
        except _Invalid as e:
            label, where = labels[name]
            for suffix, bad, text in e.problems:
                errors.append(f"{label}{suffix} = {_show(name, bad)}{where}: {text}")

    _check_together(values, valid, labels, errors)
    _resolve_paths(values, valid, cwd)

    if errors:
        raise ConfigErrors(errors, warnings, source=config_path)
    return Settings(values, config_path=config_path, cwd=cwd, warnings=warnings, notes=notes)


def _resolve_paths(values, valid, cwd):
    if "DATA_DIR" in valid:
        values["DATA_DIR"] = os.path.abspath(os.path.join(cwd, values["DATA_DIR"]))
        if "SCRATCH_DIR" in valid:
            scratch = values["SCRATCH_DIR"]
            values["SCRATCH_DIR"] = (os.path.join(values["DATA_DIR"], "scratch") if scratch is None
                                     else os.path.abspath(os.path.join(cwd, scratch)))
    if "FILE_STORAGE_ROOTS" in valid and values["FILE_STORAGE_ROOTS"] is None:
        values["FILE_STORAGE_ROOTS"] = [os.path.join(os.path.realpath(cwd), DEFAULT_MEDIA_DIR)]
