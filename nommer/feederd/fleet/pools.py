"""One fleet and one autoscaler per pool (``nommer.core.pools``), and
``PoolFleets``, which stands for all of them where feederd shows "the fleet"
(``/health``, ``/workers``, ``/metrics``).

Each pool's fleet is built by ``make_fleet`` from the pool's fleet settings
(``fleet_settings``: its FLEET_BACKEND, instance types, market, maximum,
EC2_FLEET_NAME ``<name>-<pool>``...), and its autoscaler (pure policy,
``nommer.feederd.fleet.capacity``) decides with the pool's numbers: jobs per
worker and overflow from the pool's settings, the jobs from the pool's
queue when there is more than one pool (``autoscaler.queue_backlog``), else
from the store as before. With no POOLS this is exactly the one fleet and
one autoscaler feederd always had.
"""

import attr
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.pools import DEFAULT_POOL, fleet_settings, pool_names, pool_queue
from nommer.feederd.fleet.autoscaler import Autoscaler, queue_backlog
from nommer.feederd.fleet.backends import make_fleet
from nommer.feederd.fleet.base import Fleet


class PoolFleets(MultiService, Fleet):
    """The fleets of every pool as one ``Fleet`` (a service whose children
    are the pools' fleets and, after ``autoscale``, their autoscalers).

    - ``fleets``: ``{pool: Fleet}``, default first; ``autoscalers``:
      ``{pool: Autoscaler}``.
    - ``worker_ids()``: every pool's, sorted; ``instances()``: every pool's
      instance dicts, each with its ``pool`` (None when no pool's fleet has
      instances of its own); ``max_workers``: the sum.
    - ``trouble``: the first pool's trouble (its message names the pool
      when it is not the default); ``launch_failures()``: summed by code.
    - ``counts()`` sums the pools'; ``launch(n)`` launches in the default
      pool (the autoscalers launch in their own pool's fleet).
    - ``poke()``: every autoscaler evaluates now (after a submit).
    """

    log = Logger()

    def __init__(self, settings, reactor, registry, build=make_fleet):
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.fleets = {}
        self.autoscalers = {}
        for pool in pool_names(settings):
            fleet = build(fleet_settings(settings, pool), reactor, registry, pool=pool)
            fleet.setServiceParent(self)
            self.fleets[pool] = fleet

    def autoscale(self, store, queue, clock):
        """Make each pool's autoscaler (children of this service; each
        fleet's ``on_change`` pokes its own). Returns self (``poke`` pokes
        them all)."""
        several = len(self.fleets) > 1
        for pool, fleet in self.fleets.items():
            unfinished = None
            if several:
                name = pool_queue(self.settings, pool)

                def unfinished(name=name):
                    return defer.Deferred.fromCoroutine(queue_backlog(queue, name))
            autoscaler = Autoscaler(store, fleet, fleet_settings(self.settings, pool), clock,
                                    unfinished=unfinished, pool=pool if several else None)
            autoscaler.setServiceParent(self)
            fleet.on_change = autoscaler.poke
            self.autoscalers[pool] = autoscaler
        return self

    def poke(self):
        """Every pool's autoscaler evaluates now (coalesced with a tick under way)."""
        for autoscaler in self.autoscalers.values():
            autoscaler.poke()

    @property
    def max_workers(self):
        return sum(getattr(f, "max_workers", 0) for f in self.fleets.values())

    def counts(self):
        async def total():
            sums = [0, 0, 0]
            for fleet in self.fleets.values():
                for i, n in enumerate(await defer.maybeDeferred(fleet.counts)):
                    sums[i] += n
            return tuple(sums)
        return defer.Deferred.fromCoroutine(total())

    def launch(self, n):
        return self.fleets[DEFAULT_POOL].launch(n)

    def worker_ids(self):
        return sorted(w for fleet in self.fleets.values() for w in fleet.worker_ids())

    def housekeeping(self):
        return None  # each pool's autoscaler runs its own fleet's

    def instances(self):
        out, any_list = [], False
        for pool, fleet in self.fleets.items():
            instances = fleet.instances()  # synchronous: the last listing (Fleet.instances)
            if instances is None:
                continue
            any_list = True
            out += [dict(i, pool=pool) for i in instances]
        return out if any_list else None

    @property
    def trouble(self):
        for pool, fleet in self.fleets.items():
            trouble = getattr(fleet, "trouble", None)
            if trouble is not None:
                if pool == DEFAULT_POOL:
                    return trouble
                return attr.evolve(trouble, message=f"pool {pool}: {trouble.message}")
        return None

    def launch_failures(self):
        total = {}
        for fleet in self.fleets.values():
            failures = fleet.launch_failures() if hasattr(fleet, "launch_failures") else {}
            for code, n in failures.items():
                total[code] = total.get(code, 0) + n
        return total
