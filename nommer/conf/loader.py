"""Loading and validating settings: defaults overridden by a nomconf module.

``load_settings(config, overrides, cwd)`` reads the UPPER_CASE names of a
nomconf module (a ``.py`` file or an importable module name), checks each one
against ``nommer.conf.defaults`` and the rules below, and returns an immutable
``Settings``. Every problem is collected and reported together in one
``ConfigErrors``; nothing stops at the first.

Settings files written for the original media-nommer still load: renamed
settings are mapped onto their new names (``RENAMED``), settings that no longer
apply are accepted with a warning (``OBSOLETE``), and the original's storage
backend classes are mapped to ours. Warnings never stop start-up; they are
returned on ``Settings.warnings`` for the daemons to log.
"""

import copy
import difflib
import ipaddress
import math
import os
import re
import sys
import traceback
import types
from importlib.machinery import PathFinder

from nommer.conf import defaults as _defaults_module

#: The ``--config`` default of both daemons, as in the original. When no module
#: of this name exists the embedded defaults are used (not an error).
DEFAULT_CONFIG = "nomconf"
#: The file root used when FILE_STORAGE_ROOTS is None, relative to the working directory.
DEFAULT_MEDIA_DIR = "media"

#: Original media-nommer name -> new name (same meaning, same value).
RENAMED = {
    "SQS_NEW_JOB_QUEUE_NAME": "NEW_JOB_QUEUE_NAME",
    "SQS_JOB_STATE_CHANGE_QUEUE_NAME": "STATE_CHANGE_QUEUE_NAME",
    "MAX_ENCODING_JOBS_PER_EC2_INSTANCE": "MAX_ENCODING_JOBS_PER_WORKER",
    "FEEDERD_AUTO_SCALE_INTERVAL": "AUTOSCALE_INTERVAL_S",
    "FEEDERD_PRUNE_JOBS_INTERVAL": "PRUNE_JOBS_INTERVAL_S",
    "FEEDERD_ABANDON_INACTIVE_JOBS_THRESH": "ABANDON_INACTIVE_JOBS_S",
    "NOMMERD_MAX_INACTIVITY": "WORKER_MAX_IDLE_S",
    "NOMMERD_TERMINATE_WHEN_IDLE": "WORKER_TERMINATE_WHEN_IDLE",
    "NOMMERD_HEARTBEAT_INTERVAL": "HEARTBEAT_INTERVAL_S",
    # A single instance type; becomes a one-element list (see _convert_alias).
    "EC2_INSTANCE_TYPE": "EC2_INSTANCE_TYPES",
}

_LONG_POLLED = ("queues are long-polled (QUEUE_WAIT_TIME_S), so there is no "
                "poll interval; ignored")

#: Original media-nommer settings that no longer apply -> why (shown as a warning).
OBSOLETE = {
    "FEEDERD_JOB_STATE_CHANGE_CHECK_INTERVAL": _LONG_POLLED,
    "NOMMERD_NEW_JOB_CHECK_INTERVAL": _LONG_POLLED,
    "NOMMERD_QTFASTSTART_BIN_PATH": ("qtfaststart runs as a library inside the "
                                     "worker, not as an executable; ignored"),
}

#: The original's storage backend classes -> ours (STORAGE_BACKENDS values).
ORIGINAL_STORAGE_CLASSES = {
    "media_nommer.core.storage_backends.file.FileBackend": "nommer.core.storage.file.FileStorage",
    "media_nommer.core.storage_backends.http.HTTPBackend": "nommer.core.storage.http.HTTPStorage",
    "media_nommer.core.storage_backends.s3.S3Backend": "nommer.core.storage.s3.S3Storage",
}

#: A setting whose name contains one of these is a secret: ``redacted`` hides it
#: and error messages do not echo its value.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN")

_DOTTED_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$", re.ASCII)
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$", re.ASCII)
_URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$", re.ASCII)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")


def _default_values():
    """{name: value} of every UPPER_CASE name in nommer.conf.defaults (fresh copies)."""
    return {name: copy.deepcopy(getattr(_defaults_module, name))
            for name in dir(_defaults_module) if _is_setting_name(name)}


def _is_setting_name(name):
    """The original's rule (the name is its own upper case), minus helper names
    starting with ``_``."""
    return name.isupper() and not name.startswith("_")


def _is_secret(name):
    return bool(_SECRET_NAME.search(name.upper()))


# --- errors -------------------------------------------------------------------

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


class _Invalid(Exception):
    """A value does not fit its rule. ``problems`` is a list of
    (suffix, value, text): suffix locates an item (``[2]``, ``['s3']``) and text
    says what is wrong, usually "expected ..."."""

    def __init__(self, text, value=None, suffix="", problems=None):
        super().__init__(text)
        self.problems = problems if problems is not None else [(suffix, value, text)]


# --- rules ----------------------------------------------------------------------
#
# A rule is ``check(value, ctx) -> normalised value`` raising _Invalid. ``ctx``
# carries cwd and a warn(str) callable.

class _Context:
    def __init__(self, cwd, warn):
        self.cwd = cwd
        self.warn = warn


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(x):
    return repr(int(x)) if float(x).is_integer() else repr(x)


def _seconds(gt=None, ge=None, le=None, what="a number of seconds"):
    """A finite number (int or float, not bool) -> float."""
    bounds = []
    if gt is not None:
        bounds.append(f"> {_fmt(gt)}")
    if ge is not None:
        bounds.append(f">= {_fmt(ge)}")
    if le is not None:
        bounds.append(f"<= {_fmt(le)}")
    expected = f"expected {what}" + (" " + " and ".join(bounds) if bounds else "")

    def check(value, ctx):
        if not _is_number(value) or not math.isfinite(value):
            raise _Invalid(expected, value)
        if ((gt is not None and not value > gt) or (ge is not None and not value >= ge)
                or (le is not None and not value <= le)):
            raise _Invalid(expected, value)
        return float(value)
    return check


def _int(minimum=None, maximum=None):
    """An int (not bool) within [minimum, maximum]."""
    if minimum is not None and maximum is not None:
        expected = f"expected an integer from {minimum} to {maximum}"
    elif minimum is not None:
        expected = f"expected an integer >= {minimum}"
    else:
        expected = "expected an integer"

    def check(value, ctx):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(expected, value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _Invalid(expected, value)
        return value
    return check


def _bool(value, ctx):
    if not isinstance(value, bool):
        raise _Invalid("expected True or False", value)
    return value


def _str(pattern=None, what="a non-empty string"):
    def check(value, ctx):
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise _Invalid(f"expected {what}", value)
        return value
    return check


def _any_string(what):
    def check(value, ctx):
        if not isinstance(value, str):
            raise _Invalid(f"expected {what}", value)
        return value
    return check


def _optional(rule, what=None):
    """None, or whatever ``rule`` accepts. With ``what``, a bad value is
    reported as "expected None or <what>"; without, ``rule``'s own problems
    are reported."""
    def check(value, ctx):
        if value is None:
            return None
        try:
            return rule(value, ctx)
        except _Invalid:
            if what is None:
                raise
            raise _Invalid(f"expected None or {what}", value) from None
    return check


def _path(value, ctx):
    """A non-empty str or os.PathLike -> str (not resolved here)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _Invalid("expected a path (a non-empty string)", value)
    return value


def _url(value, ctx):
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+", value):
        raise _Invalid("expected an http:// or https:// URL", value)
    return value


def _cidr(value, ctx):
    """A network such as "10.0.0.0/8" or "fd00::/8" (host bits allowed) -> str."""
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        raise _Invalid("expected a network in CIDR form such as '10.0.0.0/8'", value) from None
    return value


def _list_of(item_rule, what, nonempty=False):
    """A list (or tuple) whose items pass ``item_rule`` -> list. Every bad item
    is reported."""
    def check(value, ctx):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list of {what}", value)
        if nonempty and not value:
            raise _Invalid(f"expected a non-empty list of {what}", value)
        out, problems = [], []
        for i, item in enumerate(value):
            try:
                out.append(item_rule(item, ctx))
            except _Invalid as e:
                problems += [(f"[{i}]{s}", v, t) for s, v, t in e.problems]
        if problems:
            raise _Invalid("", problems=problems)
        return out
    return check


def _dict_of(key_rule, value_rule, what):
    def check(value, ctx):
        if not isinstance(value, dict):
            raise _Invalid(f"expected a dict of {what}", value)
        out, problems = {}, []
        for k, v in value.items():
            try:
                k2 = key_rule(k, ctx)
            except _Invalid as e:
                problems += [(f"[{k!r}] (key)", k, t) for _, _, t in e.problems]
                continue
            try:
                out[k2] = value_rule(v, ctx)
            except _Invalid as e:
                problems += [(f"[{k!r}]{s}", bad, t) for s, bad, t in e.problems]
        if problems:
            raise _Invalid("", problems=problems)
        return out
    return check


_dotted = _str(_DOTTED_PATH, "a dotted path such as 'package.module.Class'")


def _backend(available, planned):
    """A backend name: one of ``available``; names in ``planned`` ({name: when})
    are known but not built yet and get their own message."""
    names = ", ".join(repr(n) for n in available)

    def check(value, ctx):
        if value in available:
            return value
        if value in planned:
            raise _Invalid(f"not available yet ({planned[value]}); available: {names}", value)
        raise _Invalid(f"expected one of {names}", value)
    return check


def _existing_dir(value, ctx):
    """An existing directory -> its absolute, symlink-free path (relative
    paths are taken against cwd)."""
    path = _path(value, ctx)
    full = os.path.realpath(os.path.join(ctx.cwd, path))
    if not os.path.isdir(full):
        raise _Invalid(f"expected an existing directory ({full} is not one)", value)
    return full


def _allowed_nommer(value, ctx):
    path = _dotted(value, ctx)
    aliases = getattr(_defaults_module, "NOMMER_ALIASES", {})
    if path in aliases:
        ctx.warn(f"ALLOWED_NOMMERS: {path!r} is the original's class path; "
                 f"using {aliases[path]!r}")
        return aliases[path]
    return path


def _storage_backends(value, ctx):
    """URI scheme -> dotted class path; the original's classes are mapped to
    ours (one warning lists them)."""
    mapped = []
    known = ", ".join(repr(p) for p in sorted(set(ORIGINAL_STORAGE_CLASSES.values())))

    def storage_class(path, ctx):
        path = _dotted(path, ctx)
        if path in ORIGINAL_STORAGE_CLASSES:
            mapped.append(f"{path} -> {ORIGINAL_STORAGE_CLASSES[path]}")
            return ORIGINAL_STORAGE_CLASSES[path]
        if path.startswith("media_nommer."):
            raise _Invalid(f"a media_nommer class with no nommer equivalent; expected one of {known}",
                           path)
        return path

    checked = _dict_of(_str(_URI_SCHEME, "a URI scheme in lower case such as 'file'"),
                       storage_class, "URI scheme -> dotted class path")(value, ctx)
    if mapped:
        ctx.warn("STORAGE_BACKENDS names the original media_nommer storage classes; "
                 "mapped to nommer's: " + ", ".join(dict.fromkeys(mapped)))
    return checked


_POSITIVE_S = _seconds(gt=0)

#: Explicit rules. A name of nommer.conf.defaults with no entry here gets a rule
#: from the type of its default (see _rule_from_default).
RULES = {
    "DATA_DIR": _path,
    "SCRATCH_DIR": _optional(_path, "a path"),
    "JOB_STORE_BACKEND": _backend(["sqlite", "dynamodb", "simpledb"], {}),
    "WORK_QUEUE_BACKEND": _backend(["local", "sqs"], {}),
    "FLEET_BACKEND": _backend(["local", "ec2", "none"], {}),
    "API_PORT": _int(1, 65535),
    # '' (all interfaces) is allowed, so not _str().
    "API_INTERFACE": _any_string("an interface address such as '127.0.0.1' ('' for all)"),
    "NEW_JOB_QUEUE_NAME": _str(_QUEUE_NAME, "a queue name: 1-80 letters, digits, '-' or '_'"),
    "STATE_CHANGE_QUEUE_NAME": _str(_QUEUE_NAME, "a queue name: 1-80 letters, digits, '-' or '_'"),
    "JOB_LEASE_S": _POSITIVE_S,
    "HEARTBEAT_INTERVAL_S": _POSITIVE_S,
    "MAX_JOB_ATTEMPTS": _int(1),
    "QUEUE_WAIT_TIME_S": _seconds(gt=0, le=20),
    "LOCAL_QUEUE_POLL_INTERVAL_S": _POSITIVE_S,
    # A backoff of 0 is meaningful (retry at once), so >= 0 here.
    "RETRY_BACKOFF_S": _seconds(ge=0),
    "MAX_NUM_WORKERS": _int(1),
    "MAX_ENCODING_JOBS_PER_WORKER": _int(1),
    "JOB_OVERFLOW_THRESH": _int(0),
    "AUTOSCALE_INTERVAL_S": _POSITIVE_S,
    "WORKER_MAX_IDLE_S": _POSITIVE_S,
    "WORKER_TERMINATE_WHEN_IDLE": _bool,
    "PRUNE_JOBS_INTERVAL_S": _POSITIVE_S,
    "ABANDON_INACTIVE_JOBS_S": _POSITIVE_S,
    "WEBHOOK_MAX_ATTEMPTS": _int(1),
    "WEBHOOK_BACKOFF_S": _seconds(ge=0),
    "WEBHOOK_TIMEOUT_S": _POSITIVE_S,
    "FFMPEG_BIN": _str(what="an executable name or path"),
    "FFPROBE_BIN": _str(what="an executable name or path"),
    "FFMPEG_TIMEOUT_S": _POSITIVE_S,
    "FFMPEG_KILL_GRACE_S": _POSITIVE_S,
    "PROGRESS_WRITE_INTERVAL_S": _POSITIVE_S,
    "ALLOWED_NOMMERS": _list_of(_allowed_nommer, "dotted class paths"),
    "NOMMER_ALIASES": _dict_of(_dotted, _dotted, "old dotted path -> dotted path"),
    "STORAGE_BACKENDS": _storage_backends,
    "FILE_STORAGE_ROOTS": _optional(_list_of(_existing_dir, "existing directories", nonempty=True)),
    "HTTP_DOWNLOAD_TIMEOUT_S": _POSITIVE_S,
    "S3_ALLOWED_BUCKETS": _optional(_list_of(_str(re.compile(r"^[a-z0-9][a-z0-9._-]{1,254}$"), "a bucket name"),
                                             "bucket names")),
    "ALLOWED_PRIVATE_NETWORKS": _list_of(_cidr, "networks in CIDR form"),
    "MAX_REQUEST_BODY_BYTES": _int(1024, 64 * 1024 ** 2),
    "API_RATE_LIMIT_PER_MINUTE": _int(1),
    "MAX_UNFINISHED_JOBS_PER_KEY": _int(1),
    "WEBHOOK_MAX_RESPONSE_BYTES": _int(0),
    "FFMPEG_SANDBOX": _backend(["bwrap", "none"], {}),
    "BWRAP_BIN": _str(what="an executable name or path"),
    "FFMPEG_RLIMIT_CPU_S": _int(1),
    "FFMPEG_RLIMIT_AS_BYTES": _int(64 * 1024 ** 2),
    "FFMPEG_RLIMIT_FSIZE_BYTES": _int(1024 ** 2),
    "FFMPEG_RLIMIT_NPROC": _int(16),
    "MAX_SOURCE_BYTES": _int(1),
    "MAX_OUTPUT_BYTES": _int(1024),
    "MAX_OUTPUT_DURATION_FACTOR": _seconds(ge=1, what="a factor"),
    "SCRATCH_MIN_FREE_BYTES": _int(0),
    "DYNAMODB_KEY_TABLE": _str(re.compile(r"^[A-Za-z0-9_.-]{3,255}$"), "a DynamoDB table name"),
    "SIMPLEDB_KEY_DOMAIN": _str(what="a domain name"),
    "AWS_ACCESS_KEY_ID": _optional(_str(), "a string"),
    "AWS_SECRET_ACCESS_KEY": _optional(_str(), "a string"),
    "AWS_REGION": _optional(_str(what="a region name such as 'us-east-1'"),
                            "a region name such as 'us-east-1'"),
    "AWS_ENDPOINT_URL": _optional(_url, "an http:// or https:// URL"),
    "AWS_ENDPOINT_URLS": _dict_of(_str(what="a service name such as 's3'"), _url, "service -> endpoint URL"),
    "AWS_MAX_THREADS": _int(1, 256),
    "AWS_CREATE_RESOURCES": _bool,
    "DYNAMODB_JOB_TABLE": _str(re.compile(r"^[A-Za-z0-9_.-]{3,255}$"), "a DynamoDB table name"),
    "DYNAMODB_JOB_TTL_S": _optional(_seconds(gt=0), "a number of seconds > 0"),
    "S3_SERVER_SIDE_ENCRYPTION": _optional(_str(re.compile(r"^(AES256|aws:kms|aws:kms:dsse)$"), "'AES256' or 'aws:kms'"),
                                           "'AES256' or 'aws:kms'"),
    "S3_SSE_KMS_KEY_ID": _optional(_str(), "a KMS key id or ARN"),
    "S3_STORAGE_CLASS": _optional(_str(re.compile(r"^[A-Z_]+$"), "an S3 storage class such as 'STANDARD_IA'"),
                                  "an S3 storage class such as 'STANDARD_IA'"),
    "JOB_CREDENTIALS_KEY": _optional(_str(re.compile(r"^[A-Za-z0-9_-]{43}=$"), "a Fernet key (44 urlsafe base64 characters)"),
                                     "a Fernet key"),
    "CONFIG_S3_BUCKET": _str(what="a bucket name"),
    "SIMPLEDB_JOB_STATE_DOMAIN": _str(what="a domain name"),
    "SIMPLEDB_EC2_NOMMER_STATE_DOMAIN": _str(what="a domain name"),
    "EC2_KEY_NAME": _optional(_str(), "a key pair name"),
    "EC2_SECURITY_GROUPS": _list_of(_str(what="a security group name"), "security group names"),
    "EC2_AMI_ID": _optional(_str(what="an AMI id such as 'ami-0123456789abcdef0'"),
                            "an AMI id such as 'ami-0123456789abcdef0'"),
    "EC2_INSTANCE_TYPES": _list_of(_str(what="an instance type such as 'c7i.large'"),
                                   "instance types", nonempty=True),
    "MAX_NUM_EC2_INSTANCES": _int(1),
    "FEEDERD_ALLOW_EC2_LAUNCHES": _bool,
    "WORKER_HEARTBEAT_TIMEOUT_S": _POSITIVE_S,
    "WORKER_FORGET_AFTER_S": _POSITIVE_S,
    "DYNAMODB_WORKER_TABLE": _str(re.compile(r"^[A-Za-z0-9_.-]{3,255}$"), "a DynamoDB table name"),
    "EC2_METADATA_URL": _url,
    "EC2_SUBNET_IDS": _list_of(_str(re.compile(r"^subnet-[0-9a-f]+$"), "a subnet id such as 'subnet-0123abcd'"),
                               "subnet ids"),
    "EC2_SECURITY_GROUP_IDS": _list_of(_str(re.compile(r"^sg-[0-9a-f]+$"), "a security group id such as 'sg-0123abcd'"),
                                       "security group ids"),
    "EC2_IAM_INSTANCE_PROFILE": _optional(_str(what="an instance profile name or ARN"),
                                          "an instance profile name or ARN"),
    "EC2_MARKET": _str(re.compile(r"^(spot|on-demand)$"), "'spot' or 'on-demand'"),
    "SPOT_MAX_PRICE": _optional(_str(re.compile(r"^[0-9]+(\.[0-9]+)?$"), "a price in USD per hour as a string, such as '0.05'"),
                                "a price in USD per hour as a string, such as '0.05'"),
    "EC2_ON_DEMAND_FALLBACK": _bool,
    "EC2_FLEET_NAME": _str(re.compile(r"^[A-Za-z0-9_.:/=+@-]{1,128}$"), "a tag value: letters, digits and _.:/=+@-"),
    "EC2_BOOT_TIMEOUT_S": _POSITIVE_S,
    "EC2_SPOT_PRICE_PER_HOUR": _optional(_seconds(gt=0, what="a price in USD per hour"), "a price in USD per hour"),
    "SPOT_INTERRUPTION_POLL_S": _POSITIVE_S,
}


def _anything(value, ctx):
    return value


def _rule_from_default(name, default):
    """A rule from a default's type, for settings without an explicit rule."""
    if isinstance(default, bool):
        return _bool
    if isinstance(default, int):
        return _int(1) if name.startswith("MAX_") or name.endswith("_ATTEMPTS") else _int()
    if isinstance(default, float):
        return _POSITIVE_S if name.endswith("_S") else _seconds(what="a number")
    if isinstance(default, str):
        return _any_string("a string")
    if isinstance(default, (list, tuple)):
        return _list_of(_anything, "values")
    if isinstance(default, dict):
        return _dict_of(_anything, _anything, "values")
    return _anything


def _rule_for(name, default):
    rule = RULES.get(name)
    return rule if rule is not None else _rule_from_default(name, default)


# --- settings -------------------------------------------------------------------

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


# --- finding and running the config module ------------------------------------------

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


# --- load_settings ---------------------------------------------------------------

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


def _check_together(values, valid, labels, errors):
    """Rules between settings; only checked when each setting is valid alone."""
    if {"HEARTBEAT_INTERVAL_S", "JOB_LEASE_S"} <= valid:
        beat, lease = values["HEARTBEAT_INTERVAL_S"], values["JOB_LEASE_S"]
        if beat > lease / 3:
            errors.append(
                f"{_labelled(labels, 'HEARTBEAT_INTERVAL_S', beat)} is more than a third of "
                f"{_labelled(labels, 'JOB_LEASE_S', lease)}: a worker extends its lease at every "
                f"heartbeat, so it must beat at least three times per lease; use "
                f"HEARTBEAT_INTERVAL_S <= {_fmt(lease / 3)} or JOB_LEASE_S >= {_fmt(beat * 3)}")
    if {"HEARTBEAT_INTERVAL_S", "ABANDON_INACTIVE_JOBS_S"} <= valid:
        beat, abandon = values["HEARTBEAT_INTERVAL_S"], values["ABANDON_INACTIVE_JOBS_S"]
        if abandon <= beat:
            errors.append(
                f"{_labelled(labels, 'ABANDON_INACTIVE_JOBS_S', abandon)} is not more than "
                f"{_labelled(labels, 'HEARTBEAT_INTERVAL_S', beat)}: healthy jobs would be "
                f"abandoned between two heartbeats")


    if "FLEET_BACKEND" in valid and values["FLEET_BACKEND"] == "ec2":
        label, where = labels["FLEET_BACKEND"]
        fleet = f"{label} = 'ec2'{where}"
        if "EC2_AMI_ID" in valid and not values["EC2_AMI_ID"]:
            errors.append(f"{fleet} needs EC2_AMI_ID: the image workers boot from (see deploy/packer)")
        if "WORK_QUEUE_BACKEND" in valid and values["WORK_QUEUE_BACKEND"] != "sqs":
            errors.append(f"{fleet} needs WORK_QUEUE_BACKEND = 'sqs': instances cannot reach a local queue")
        if "JOB_STORE_BACKEND" in valid and values["JOB_STORE_BACKEND"] == "sqlite":
            errors.append(f"{fleet} needs JOB_STORE_BACKEND = 'dynamodb' or 'simpledb': "
                          f"instances cannot reach a local SQLite store")


def _labelled(labels, name, value):
    label, where = labels[name]
    return f"{label} = {_fmt(value)}{where}"


def _resolve_paths(values, valid, cwd):
    if "DATA_DIR" in valid:
        values["DATA_DIR"] = os.path.abspath(os.path.join(cwd, values["DATA_DIR"]))
        if "SCRATCH_DIR" in valid:
            scratch = values["SCRATCH_DIR"]
            values["SCRATCH_DIR"] = (os.path.join(values["DATA_DIR"], "scratch") if scratch is None
                                     else os.path.abspath(os.path.join(cwd, scratch)))
    if "FILE_STORAGE_ROOTS" in valid and values["FILE_STORAGE_ROOTS"] is None:
        values["FILE_STORAGE_ROOTS"] = [os.path.join(os.path.realpath(cwd), DEFAULT_MEDIA_DIR)]
