"""The Fleet interface: where workers come from, as the autoscaler sees it.

A fleet is a ``Service`` (started and stopped with feederd) that starts
workers and counts them. Backends subclass ``Fleet`` and are chosen by
FLEET_BACKEND in ``nommer.feederd.tap``: ``local`` (``LocalFleet``, child
processes on this machine, ``nommer.feederd.fleet.local``), ``ec2``
(``Ec2Fleet``, instances, ``nommer.feederd.fleet.ec2``) and ``none``
(``NoFleet``: someone else starts the workers). Every backend passes
``tests/feederd/fleet_contract.py``, which also checks that each public
method keeps the signature written here.

Each call may return a plain value or a Deferred of it (the autoscaler wraps
every call in ``maybeDeferred``).

A fleet that cannot start workers says why in ``trouble`` (a
``FleetTrouble``: AWS's error code and reason, and since when), shown by
``GET /health``, ``GET /workers`` and ``/metrics``; ``launch_failures()``
counts the refused launches by code.
"""

import datetime

import attr
from twisted.application.service import Service


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class FleetTrouble:
    """Why the fleet cannot start workers now (see ``Fleet.trouble``).

    - ``code``: AWS's error code (``InvalidGroup.NotFound``,
      ``VcpuLimitExceeded``, ``InsufficientInstanceCapacity``...) or one of
      nommer's (``LaunchesDisabled``);
    - ``message``: what was refused and AWS's reason, one sentence;
    - ``since``: epoch seconds of the first failure of the uninterrupted run
      of failures this one belongs to;
    - ``during``: ``"launch"`` (starting workers) or ``"list"`` (counting
      them, e.g. DescribeInstances refused).
    """

    code: str
    message: str
    since: float
    during: str = "launch"

    def to_dict(self):
        """``{"code", "message", "since" (ISO 8601 UTC), "since_epoch_s", "during"}``:
        the shape of ``/health``'s ``fleet.trouble``."""
        when = datetime.datetime.fromtimestamp(self.since, datetime.timezone.utc)
        return {"code": self.code, "message": self.message,
                "since": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "since_epoch_s": self.since, "during": self.during}


class FleetUnavailable(Exception):
    """A fleet could not tell its counts this time (e.g. an AWS call
    failed); the autoscaler logs it and tries again next tick."""


class Fleet(Service):
    """Interface of a fleet (documentation and defaults; backends subclass it).

    - ``max_workers`` (int): most workers there may be, running, booting and
      leaving together (the capacity policy's M).
    - ``on_change`` (callable or None): set by feederd to the autoscaler's
      ``poke``; a fleet calls it when it changes on its own (a worker
      process exits) and may leave it uncalled when the autoscaler's next
      tick will see the change anyway.
    - ``stopService()``: waits for calls under way. What happens to the
      workers is the backend's: local children are asked to stop (warm, then
      cold), EC2 instances live on and end themselves when idle.
    """

    #: Most workers there may be (the autoscaler's M).
    max_workers = 0
    #: Called when the fleet changes on its own; see the class docstring.
    on_change = None

    def counts(self):
        """``(running, booting)`` or ``(running, booting, leaving)``, ints >= 0:
        workers taking jobs, started but not up yet, and on their way out
        (no capacity, but still counted against ``max_workers``). Raises
        ``FleetUnavailable`` when the numbers cannot be had this time (the
        autoscaler skips the tick); nothing else."""
        raise NotImplementedError

    def launch(self, n):
        """Start ``n`` (>= 0) workers; returns the ids of those started (a list
        of str, possibly shorter than ``n``: what could not be started is
        logged, and the next tick asks again)."""
        raise NotImplementedError

    def worker_ids(self):
        """Ids of the workers the fleet knows of now (sorted list of str, for
        ``/health``); synchronous."""
        raise NotImplementedError

    def housekeeping(self):
        """Called first in every autoscaler tick: end workers that will never
        be of use (an EC2 instance that never came up, or went silent).
        Never raises; returns None (or a Deferred of None). The default has
        nothing to do."""
        return None

    def instances(self):
        """The fleet's machines for ``GET /workers`` (a list of dicts; see
        ``Ec2Fleet.instances``), or None when the fleet has none of its own to
        show (the default)."""
        return None

    # --- trouble: why workers cannot be started, for /health and /metrics ---

    #: The current ``FleetTrouble`` or None (all is well). Set and cleared by
    #: the backend through ``report_trouble`` / ``clear_trouble``.
    trouble = None

    def launch_failures(self):
        """``{code: n}``: refused launch requests since start, by error code
        (``nommer_fleet_launch_failures_total``); a new dict."""
        return dict(getattr(self, "_launch_failures", {}))

    def report_trouble(self, code, message, now, during="launch", count=True):
        """Record that starting (``during="launch"``) or counting
        (``"list"``) workers failed with ``code`` and ``message`` at ``now``
        (epoch seconds): ``trouble`` becomes a ``FleetTrouble`` whose
        ``since`` is kept from the trouble already there, if any. With
        ``count``, a launch failure of ``code`` is counted
        (``launch_failures``). Returns the ``FleetTrouble``."""
        if count and during == "launch":
            failures = self.__dict__.setdefault("_launch_failures", {})
            failures[code] = failures.get(code, 0) + 1
        since = self.trouble.since if self.trouble is not None else now
        self.trouble = FleetTrouble(code=code, message=message, since=since, during=during)
        return self.trouble

    def clear_trouble(self, during=None):
        """All is well again: forget the trouble (only one found while
        ``during``, when given: a good listing does not clear a refused
        launch)."""
        if self.trouble is not None and (during is None or self.trouble.during == during):
            self.trouble = None
