"""The rule of POOLS (each pool's entry checked with the rules of the
settings it overrides) and the checks between POOLS and other settings
(queue names, EC2 needs). See ``nommer.core.pools``."""

from nommer.conf.rules import _Invalid, _gathered
from nommer.core import pools as _pools
from nommer.core.workqueue.base import dead_letter_name

_MAX_QUEUE_NAME = 80


def _overrides(allowed, what):
    def check(value, ctx):
        from nommer.conf import defaults
        from nommer.conf.schema import _rule_for
        if not isinstance(value, dict):
            raise _Invalid(f"expected a dict of setting name -> value ({what})", value)
        out, problems = {}, []
        for name, item in value.items():
            if name not in allowed:
                problems.append((f"[{name!r}]", name, f"not a setting a pool's {what} may set; one of "
                                 + ", ".join(sorted(allowed))))
                continue
            with _gathered(problems, f"[{name!r}]"):
                out[name] = _rule_for(name, getattr(defaults, name))(item, ctx)
        if problems:
            raise _Invalid("", problems=problems)
        return out
    return check


_fleet = _overrides(_pools.FLEET_SETTINGS, "fleet")
_worker = _overrides(_pools.WORKER_SETTINGS, "worker")


def _pools_rule(value, ctx):
    """POOLS: ``{name: {"max_workers": int >= 1, "fleet": {...}, "worker": {...}}}``."""
    if not isinstance(value, dict):
        raise _Invalid("expected a dict of pool name -> {'max_workers', 'fleet', 'worker'}", value)
    out, problems = {}, []
    for name, entry in value.items():
        where = f"[{name!r}]"
        if not isinstance(name, str) or not _pools.POOL_NAME.match(name):
            problems.append((f"{where} (key)", name, "expected a pool name: a lower-case letter, then up to 29 "
                                                     "lower-case letters, digits or '-'"))
            continue
        if name in _pools.RESERVED_NAMES:
            problems.append((f"{where} (key)", name, f"{name!r} is reserved (its queue would be a priority band "
                                                     f"or dead-letter queue); choose another name"))
            continue
        if not isinstance(entry, dict):
            problems.append((where, entry, "expected a dict with max_workers, fleet and worker (each optional)"))
            continue
        checked = {}
        for key, item in entry.items():
            if key not in _pools.POOL_KEYS:
                problems.append((f"{where}[{key!r}]", key, "unknown key; a pool takes " + ", ".join(_pools.POOL_KEYS)))
                continue
            rule = {"fleet": _fleet, "worker": _worker}.get(key)
            if rule is None:  # max_workers
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    problems.append((f"{where}['max_workers']", item, "expected an integer >= 1"))
                    continue
                checked[key] = item
                continue
            with _gathered(problems, f"{where}[{key!r}]"):
                checked[key] = rule(item, ctx)
        out[name] = checked
    if problems:
        raise _Invalid("", problems=problems)
    return out


def _check_pools(values, valid, errors):
    """POOLS against the queue names (no two queues alike, none longer than
    SQS's 80 characters) and, for a pool whose fleet is EC2, what EC2 needs.
    Appends a sentence per problem to ``errors``."""
    if not {"POOLS", "NEW_JOB_QUEUE_NAME", "STATE_CHANGE_QUEUE_NAME"} <= valid:
        return
    pools = values["POOLS"]
    base = values["NEW_JOB_QUEUE_NAME"]
    names = _pools.job_queue_names(base, list(pools))
    taken = {values["STATE_CHANGE_QUEUE_NAME"]: "STATE_CHANGE_QUEUE_NAME", dead_letter_name(base): "the dead-letter queue"}
    for name in names:
        if len(name) > _MAX_QUEUE_NAME:
            errors.append(f"POOLS: the queue {name!r} is longer than {_MAX_QUEUE_NAME} characters (SQS's limit); "
                          f"shorten NEW_JOB_QUEUE_NAME or the pool's name")
        elif name in taken:
            errors.append(f"POOLS: the queue {name!r} of a pool would be {taken[name]}; rename the pool")
        taken.setdefault(name, "another pool's queue")
    for name, entry in pools.items():
        fleet = entry.get("fleet") or {}
        backend = fleet.get("FLEET_BACKEND", values.get("FLEET_BACKEND"))
        if backend != "ec2":
            continue
        if not fleet.get("EC2_AMI_ID", values.get("EC2_AMI_ID")):
            errors.append(f"POOLS[{name!r}]: an 'ec2' fleet needs EC2_AMI_ID (in the pool's fleet or globally)")
        if values.get("WORK_QUEUE_BACKEND") != "sqs":
            errors.append(f"POOLS[{name!r}]: an 'ec2' fleet needs WORK_QUEUE_BACKEND = 'sqs': instances cannot "
                          f"reach a local queue")
        if values.get("JOB_STORE_BACKEND") == "sqlite":
            errors.append(f"POOLS[{name!r}]: an 'ec2' fleet needs JOB_STORE_BACKEND = 'dynamodb' or 'simpledb'")
