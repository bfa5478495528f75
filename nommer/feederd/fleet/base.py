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
"""

from twisted.application.service import Service


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
