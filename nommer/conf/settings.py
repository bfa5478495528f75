"""The read-only ``Settings`` and ``redacted``, their view with every secret hidden."""

import copy
import difflib
import re

#: A setting whose name contains one of these is a secret: ``redacted`` hides it
#: and error messages do not echo its value.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN")
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def _is_secret(name):
    return bool(_SECRET_NAME.search(name.upper()))


class Settings:
    """Validated, read-only settings.

    Every UPPER_CASE setting is an attribute (``settings.API_PORT``); list and
    dict values are handed out as copies, so nothing can change a loaded
    Settings. Setting or deleting an attribute raises AttributeError.

    Besides the settings:
      * ``config_path``: absolute path of the config file loaded, or None;
      * ``cwd``: the directory relative paths were resolved against;
      * ``warnings``: list of str (obsolete settings, mapped class paths...)
        for the daemons to log as warnings;
      * ``notes``: list of str (original names mapped to new ones) to log at
        info level.

    Build one with ``load_settings`` or ``Settings.from_overrides``.
    """

    def __init__(self, values, config_path=None, cwd=None, warnings=(), notes=()):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "config_path", config_path)
        object.__setattr__(self, "cwd", cwd)
        object.__setattr__(self, "_warnings", tuple(warnings))
        object.__setattr__(self, "_notes", tuple(notes))

    @classmethod
    def from_overrides(cls, **overrides):
        """Defaults overridden by keyword arguments, validated like a nomconf
        (``Settings.from_overrides(API_PORT=8080)``); raises ConfigErrors."""
        from nommer.conf.loader import load_settings
        return load_settings(None, overrides=overrides)

    @property
    def warnings(self):
        """Warnings from loading (list of str, a copy)."""
        return list(self._warnings)

    @property
    def notes(self):
        """Info-level notes from loading (list of str, a copy)."""
        return list(self._notes)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        values = object.__getattribute__(self, "_values")
        try:
            value = values[name]
        except KeyError:
            hint = difflib.get_close_matches(name, list(values), n=1, cutoff=0.75)
            raise AttributeError(f"no setting named {name}"
                                 + (f"; did you mean {hint[0]}?" if hint else "")) from None
        return copy.deepcopy(value) if isinstance(value, (list, dict)) else value

    def __setattr__(self, name, value):
        raise AttributeError(f"Settings are read-only (tried to set {name})")

    def __delattr__(self, name):
        raise AttributeError(f"Settings are read-only (tried to delete {name})")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._values))

    def as_dict(self):
        """{name: value} of every setting (a deep copy). Contains secrets: use
        ``redacted(settings)`` for anything that is logged or shown."""
        return copy.deepcopy(self._values)

    def __repr__(self):
        return f"<Settings config_path={self.config_path!r} ({len(self._values)} settings)>"


def redacted(settings):
    """``as_dict()`` of a Settings (or a plain dict of settings) with every
    secret (AWS_SECRET_ACCESS_KEY, any name containing SECRET, PASSWORD or
    TOKEN) shown as ``"***"`` when set, and passwords in URLs
    (``scheme://user:pass@host``) hidden. Safe to log."""
    values = settings.as_dict() if isinstance(settings, Settings) else copy.deepcopy(dict(settings))
    out = {}
    for name, value in values.items():
        if _is_secret(name) and value is not None:
            out[name] = "***"
        else:
            out[name] = _hide_url_passwords(value)
    return out


def _hide_url_passwords(value):
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1***@", value)
    if isinstance(value, list):
        return [_hide_url_passwords(v) for v in value]
    if isinstance(value, dict):
        return {k: _hide_url_passwords(v) for k, v in value.items()}
    return value

