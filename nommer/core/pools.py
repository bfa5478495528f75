"""Pools: named work queues (``cpu``, ``gpu``, ``large``...), each with its
own workers and fleet. The setting::

    POOLS = {
        "gpu": {"max_workers": 4,
                "fleet": {"EC2_INSTANCE_TYPES": ["g5.xlarge"], "EC2_MARKET": "on-demand"},
                "worker": {"MAX_ENCODING_JOBS_PER_WORKER": 2}},
    }

- ``max_workers``: most workers of the pool (its fleet's maximum: the
  MAX_NUM_WORKERS of a local fleet, MAX_NUM_EC2_INSTANCES of an EC2 one);
  default: that setting's value.
- ``fleet``: settings of the pool's fleet (``FLEET_SETTINGS``: FLEET_BACKEND,
  instance types, market, subnets...), over the global ones.
- ``worker``: settings of the pool's workers (``WORKER_SETTINGS``: jobs per
  worker, ffmpeg limits, scratch...), over the global ones.

The pool ``default`` always exists: it is today's single queue (with no
POOLS, the only pool), and a job that names no pool goes there. Its queue is
NEW_JOB_QUEUE_NAME itself, so an existing deployment keeps its queue; pool
``p``'s queue is ``<NEW_JOB_QUEUE_NAME>_<p>`` (``media_nommer_gpu``). On SQS
each pool queue is split in priority bands (``nommer.core.priority``):
``media_nommer_gpu_high``, ``media_nommer_gpu``, ``media_nommer_gpu_low``.
Every job queue dead-letters to the one dead-letter queue of
NEW_JOB_QUEUE_NAME (``media_nommer_dlq``), which feederd watches.

A job names its pool with ``pool`` (or its preset does); an unknown pool is
refused at submit (400 naming the pools). A worker serves one or more pools
(``twistd workerd --pools cpu,gpu``; default: ``default``); feederd runs one
fleet and one autoscaler per pool, which scales it from the pool's queue.
"""

import re

from nommer.core.priority import BANDS, band_queue

DEFAULT_POOL = "default"
#: A pool name: lower-case letters, digits and '-', starting with a letter.
POOL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,29}$", re.ASCII)
#: Names a pool may not take: its queue would be another queue's band or
#: dead-letter queue (``media_nommer_high`` is the default pool's high band).
RESERVED_NAMES = frozenset({"high", "low", "normal", "dlq", "jstate"})
#: Keys of one pool's entry in POOLS.
POOL_KEYS = ("max_workers", "fleet", "worker")

#: Settings a pool's ``fleet`` may set.
FLEET_SETTINGS = frozenset({
    "FLEET_BACKEND", "MAX_NUM_WORKERS", "MAX_NUM_EC2_INSTANCES", "JOB_OVERFLOW_THRESH",
    "FEEDERD_ALLOW_EC2_LAUNCHES", "EC2_AMI_ID", "EC2_INSTANCE_TYPES", "EC2_MARKET", "EC2_ON_DEMAND_FALLBACK",
    "SPOT_MAX_PRICE", "EC2_SUBNET_IDS", "EC2_SECURITY_GROUP_IDS", "EC2_SECURITY_GROUPS", "EC2_KEY_NAME",
    "EC2_IAM_INSTANCE_PROFILE", "EC2_SPOT_PRICE_PER_HOUR", "EC2_BOOT_TIMEOUT_S",
})
#: Settings a pool's ``worker`` may set.
WORKER_SETTINGS = frozenset({
    "MAX_ENCODING_JOBS_PER_WORKER", "WORKER_MAX_IDLE_S", "WORKER_TERMINATE_WHEN_IDLE", "JOB_LEASE_S",
    "HEARTBEAT_INTERVAL_S", "FFMPEG_BIN", "FFPROBE_BIN", "FFMPEG_TIMEOUT_S", "FFMPEG_KILL_GRACE_S",
    "FFMPEG_RLIMIT_CPU_S", "FFMPEG_RLIMIT_AS_BYTES", "FFMPEG_RLIMIT_FSIZE_BYTES", "FFMPEG_RLIMIT_NPROC",
    "SCRATCH_DIR", "SCRATCH_MIN_FREE_BYTES", "MAX_SOURCE_BYTES", "MAX_OUTPUT_BYTES",
    "MAX_OUTPUT_DURATION_FACTOR", "HTTP_DOWNLOAD_TIMEOUT_S", "PROGRESS_WRITE_INTERVAL_S",
})


class UnknownPool(ValueError):
    """A pool name that POOLS does not define. ``pools`` lists those it does."""

    def __init__(self, name, pools):
        self.name, self.pools = name, list(pools)
        super().__init__(f"no pool named {name!r}; this server's pools: {', '.join(self.pools)}")


def _pools_setting(settings):
    return getattr(settings, "POOLS", None) or {}


def pool_names(settings):
    """Every pool, ``default`` first, then POOLS' others in their order."""
    return [DEFAULT_POOL] + [name for name in _pools_setting(settings) if name != DEFAULT_POOL]


def pool_config(settings, pool):
    """``{"max_workers": int or None, "fleet": {...}, "worker": {...}}`` of
    ``pool``. Raises UnknownPool."""
    check_pool(settings, pool)
    entry = _pools_setting(settings).get(pool) or {}
    return {"max_workers": entry.get("max_workers"), "fleet": dict(entry.get("fleet") or {}),
            "worker": dict(entry.get("worker") or {})}


def check_pool(settings, pool):
    """``pool`` (None: DEFAULT_POOL) if the settings define it; else raises
    UnknownPool naming the pools."""
    pool = DEFAULT_POOL if pool is None else pool
    names = pool_names(settings)
    if pool not in names:
        raise UnknownPool(pool, names)
    return pool


def queue_of(new_job_queue_name, pool):
    """The queue of ``pool`` given NEW_JOB_QUEUE_NAME (see the module docstring)."""
    return new_job_queue_name if pool in (None, DEFAULT_POOL) else f"{new_job_queue_name}_{pool}"


def pool_queue(settings, pool=None):
    """The queue of ``pool`` (None: the default pool). Raises UnknownPool."""
    return queue_of(settings.NEW_JOB_QUEUE_NAME, check_pool(settings, pool))


def pool_queues(settings):
    """``{pool: queue name}`` of every pool, default first."""
    return {pool: queue_of(settings.NEW_JOB_QUEUE_NAME, pool) for pool in pool_names(settings)}


def job_queue_names(new_job_queue_name, pools):
    """Every queue a job of ``pools`` (names; ``default`` is always added)
    may be sent to: each pool's queue and its SQS priority bands, the
    default pool's first."""
    names = []
    for pool in [DEFAULT_POOL] + [p for p in pools if p != DEFAULT_POOL]:
        queue = queue_of(new_job_queue_name, pool)
        names += [band_queue(queue, band) for band in BANDS]
    return names


def all_job_queues(settings):
    """``job_queue_names`` of every pool of ``settings``."""
    return job_queue_names(settings.NEW_JOB_QUEUE_NAME, pool_names(settings))


def _view(settings, overrides):
    from nommer.conf.settings import Settings  # here: nommer.conf's rules import this module
    values = settings.as_dict()
    values.update(overrides)
    return Settings(values, config_path=settings.config_path, cwd=settings.cwd)


def fleet_settings(settings, pool):
    """The Settings of ``pool``'s fleet: the global ones with the pool's
    ``fleet`` entries, ``max_workers`` as MAX_NUM_WORKERS and
    MAX_NUM_EC2_INSTANCES, ``worker`` entries too (a local fleet's workers
    read them; the autoscaler reads MAX_ENCODING_JOBS_PER_WORKER), and
    EC2_FLEET_NAME ``<EC2_FLEET_NAME>-<pool>`` for a pool other than
    ``default`` (its instances' ``nommer:fleet`` tag, so each pool counts its
    own). The default pool with no entry: ``settings`` itself."""
    config = pool_config(settings, pool)
    if pool == DEFAULT_POOL and not any(config.values()):
        return settings
    overrides = dict(config["worker"])
    overrides.update(config["fleet"])
    if config["max_workers"] is not None:
        overrides.update(MAX_NUM_WORKERS=config["max_workers"], MAX_NUM_EC2_INSTANCES=config["max_workers"])
    if pool != DEFAULT_POOL:
        overrides["EC2_FLEET_NAME"] = f"{settings.EC2_FLEET_NAME}-{pool}"
    return _view(settings, overrides)


def worker_settings(settings, pools):
    """The Settings of a worker serving ``pools`` (a list of names): the
    global ones with each pool's ``worker`` entries, in the order given (a
    later pool's value wins). Raises UnknownPool."""
    overrides = {}
    for pool in pools:
        overrides.update(pool_config(settings, pool)["worker"])
    return _view(settings, overrides) if overrides else settings


def parse_pools(text, settings=None):
    """``"cpu,gpu"`` -> ``["cpu", "gpu"]`` (blanks and repeats dropped; empty
    or None: ``["default"]``). With ``settings``, every name must be a pool
    of theirs (else UnknownPool); without, a well-formed name (else
    ValueError)."""
    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip())) or [DEFAULT_POOL]
    for name in names:
        if settings is not None:
            check_pool(settings, name)
        elif not POOL_NAME.match(name):
            raise ValueError(f"{name!r} is not a pool name (lower-case letters, digits and '-')")
    return names
