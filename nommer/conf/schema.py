"""Which rule each setting obeys: ``RULES``, and a rule from the default's type for the rest."""

import re

from nommer.conf import defaults as _defaults_module
from nommer.conf.compat import ORIGINAL_STORAGE_CLASSES
from nommer.conf.pools_rule import _pools_rule
from nommer.conf.rules import (
    _any_string,
    _anything,
    _backend,
    _bool,
    _cidr,
    _dict_of,
    _dotted,
    _existing_dir,
    _int,
    _Invalid,
    _list_of,
    _optional,
    _path,
    _seconds,
    _str,
    _url,
)
from nommer.core import keys as _keys
from nommer.core import worker_registry as _registry
from nommer.core import store as _store
from nommer.core import workqueue as _workqueue
from nommer.core.classes import canonical_name
from nommer.core.outputs import schema as _job_schema
from nommer.feederd.fleet import backends as _fleets
from nommer.workerd import sandbox as _sandbox


def _names(first, *others):
    """The names of ``first`` (a backend map) that every map in ``others``
    has too, in ``first``'s order."""
    return [name for name in first if all(name in other for other in others)]


#: Backend names, read from the maps the daemons open backends with (each map
#: is importable without importing a backend). JOB_STORE_BACKEND opens a job
#: store, a worker registry and a key store, so its name must be in all three.
_JOB_STORES = _names(_store.BACKENDS, _registry.BACKENDS, _keys.BACKENDS)
_WORK_QUEUES = list(_workqueue.BACKENDS)
_FLEETS = list(_fleets.BACKENDS)
_SANDBOXES = list(_sandbox.MODES)

_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$", re.ASCII)
_URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$", re.ASCII)


def _allowed_nommer(value, ctx):
    path = _dotted(value, ctx)
    canonical = canonical_name(path, getattr(_defaults_module, "NOMMER_ALIASES", {}))
    if canonical != path:
        ctx.warn(f"ALLOWED_NOMMERS: {path!r} is the original's class path; "
                 f"using {canonical!r}")
    return canonical


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


def _preset_problems(error, value):
    """An _Invalid listing a PresetError's problems (each names its file or preset)."""
    return _Invalid("", problems=[("", value, problem) for problem in error.problems])


def _presets_dir(value, ctx):
    """An existing directory whose ``*.json`` presets are each valid -> its
    absolute path. (nommer.core.outputs.presets is imported only when the
    setting is used: it brings jsonschema.)"""
    from nommer.core.outputs.presets import PresetError, read_preset_dir
    path = _existing_dir(value, ctx)
    try:
        read_preset_dir(path)
    except PresetError as e:
        raise _preset_problems(e, value) from None
    return path


def _preset_object(value, ctx):
    from nommer.core.outputs.presets import PresetError, check_preset
    try:
        check_preset(value)
    except PresetError as e:
        raise _preset_problems(e, value) from None
    return value


_PRESET_NAME = re.compile(_job_schema.JOB_SCHEMA["properties"]["preset"]["pattern"])

_POSITIVE_S = _seconds(gt=0)

#: Explicit rules. A name of nommer.conf.defaults with no entry here gets a rule
#: from the type of its default (see _rule_from_default).
RULES = {
    "DATA_DIR": _path,
    "SCRATCH_DIR": _optional(_path, "a path"),
    "JOB_STORE_BACKEND": _backend(_JOB_STORES),
    "WORK_QUEUE_BACKEND": _backend(_WORK_QUEUES),
    "FLEET_BACKEND": _backend(_FLEETS),
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
    "VMAF_FFMPEG_BIN": _optional(_str(), "an executable name or path"),
    "FFMPEG_TIMEOUT_S": _POSITIVE_S,
    "FFMPEG_KILL_GRACE_S": _POSITIVE_S,
    "PROGRESS_WRITE_INTERVAL_S": _POSITIVE_S,
    "CHUNKING_MIN_SOURCE_S": _optional(_POSITIVE_S, "seconds"),
    "CHUNK_TARGET_S": _POSITIVE_S,
    "CHUNK_MIN_S": _POSITIVE_S,
    "CHUNK_MAX_S": _POSITIVE_S,
    "ALLOWED_NOMMERS": _list_of(_allowed_nommer, "dotted class paths"),
    "NOMMER_ALIASES": _dict_of(_dotted, _dotted, "old dotted path -> dotted path"),
    "PRESETS_DIR": _optional(_presets_dir),
    "PRESETS": _dict_of(_str(_PRESET_NAME, "a preset name: lower-case letters, digits, '.', '_' and '-'"),
                        _preset_object, "preset name -> preset object"),
    "STORAGE_BACKENDS": _storage_backends,
    "FILE_STORAGE_ROOTS": _optional(_list_of(_existing_dir, "existing directories", nonempty=True)),
    "HTTP_DOWNLOAD_TIMEOUT_S": _POSITIVE_S,
    "S3_ALLOWED_BUCKETS": _optional(_list_of(_str(re.compile(r"^[a-z0-9][a-z0-9._-]{1,254}$"), "a bucket name"),
                                             "bucket names")),
    "ALLOWED_PRIVATE_NETWORKS": _list_of(_cidr, "networks in CIDR form"),
    "MAX_REQUEST_BODY_BYTES": _int(1024, 64 * 1024 ** 2),
    "API_RATE_LIMIT_PER_MINUTE": _int(1),
    "MAX_UNFINISHED_JOBS_PER_KEY": _int(1),
    "MAX_BATCH_JOBS": _int(1, 10000),
    "PRIORITY_AGING_S": _POSITIVE_S,
    "POOLS": _pools_rule,
    "WEBHOOK_MAX_RESPONSE_BYTES": _int(0),
    "WEBHOOK_SIGNING_SECRET": _optional(_str(re.compile(r"^[!-~]{32,}$"), "at least 32 printable ASCII characters"),
                                        "at least 32 printable ASCII characters"),
    "MAX_EVENTS_PER_JOB": _int(10),
    "SSE_BUFFER_EVENTS": _int(1, 10_000_000),
    "SSE_HEARTBEAT_S": _POSITIVE_S,
    "SSE_MAX_BUFFER_BYTES": _int(4096),
    "SSE_MAX_CLIENTS": _int(1),
    "SSE_MAX_CLIENTS_PER_KEY": _int(1),
    "SSE_SNAPSHOT_JOBS": _int(1, 10_000),
    "SSE_SNAPSHOT_FINAL_JOBS": _int(0, 10_000),
    "SSE_TOKEN_TTL_S": _POSITIVE_S,
    "FFMPEG_SANDBOX": _backend(_SANDBOXES),
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
    "DYNAMODB_EVENTS_TABLE": _optional(_str(re.compile(r"^[A-Za-z0-9_.-]{3,255}$"), "a DynamoDB table name"),
                                       "a DynamoDB table name"),
    "SIMPLEDB_EVENTS_DOMAIN": _optional(_str(what="a domain name"), "a domain name"),
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

