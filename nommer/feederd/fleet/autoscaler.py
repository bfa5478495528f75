"""The autoscaler: gathers numbers, asks the pure capacity policy, tells the
fleet. Runs every AUTOSCALE_INTERVAL_S and at once when poked (after a
submit, or when a worker exits).

A tick: the fleet's ``housekeeping()`` if it has one (the EC2 fleet
terminates instances that never came up or went silent), the unfinished
job count, the fleet's ``counts()``, the policy with the fleet's
``max_workers``, then ``launch(n)``. Fleet calls may return plain values
(LocalFleet) or Deferreds (Ec2Fleet); ticks never overlap, so a launch under
way is counted before the next decision.

Pools (``nommer.core.pools``): feederd runs one autoscaler per pool, over
the pool's fleet and with the pool's settings; with more than one pool each
counts its jobs from its own queue (``queue_backlog``: messages waiting,
in flight or delayed) instead of the store's unfinished jobs, which do not
say which pool they belong to."""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.states import FINAL_STATES
from nommer.feederd.fleet.base import FleetUnavailable
from nommer.feederd.fleet.capacity import workers_to_start


async def queue_backlog(queue, queue_name):
    """The jobs of one pool: the messages of its queue ``queue_name``
    waiting, in flight (running) or delayed (a retry's backoff), from
    ``queue.depth``. SQS's counts are approximate (they lag by up to a
    minute)."""
    depth = await queue.depth(queue_name)
    return depth["visible"] + depth["in_flight"] + depth["delayed"]


class Autoscaler(TimerService):
    """Every AUTOSCALE_INTERVAL_S (and when poked): how many workers to
    start for ``fleet``. ``unfinished`` (optional): a callable returning the
    number of jobs to serve (or a Deferred of it); default: the store's
    jobs not in a final state. ``pool``: the pool's name, for the log."""

    log = Logger()

    def __init__(self, store, fleet, settings, clock, unfinished=None, pool=None):
        super().__init__(settings.AUTOSCALE_INTERVAL_S, self.tick)
        self.clock = clock
        self.store = store
        self.fleet = fleet
        self.settings = settings
        self.pool = pool
        self._unfinished = unfinished
        self._running_tick = None
        self._again = False

    def poke(self):
        """Evaluate now (coalesced with a tick already running)."""
        if self.running:
            self.tick()

    def tick(self):
        """One evaluation; never raises (an escaped error stops the timer)."""
        if self._running_tick is not None:
            self._again = True
            return self._running_tick
        d = self._running_tick = defer.Deferred.fromCoroutine(self._tick())
        d.addErrback(lambda f: self.log.failure("autoscaling failed; will retry next tick", f))

        def done(_):
            self._running_tick = None
            if self._again:
                self._again = False
                self.tick()
        d.addBoth(done)
        return d

    @property
    def max_workers(self):
        """The fleet's maximum (MAX_NUM_EC2_INSTANCES for EC2, MAX_NUM_WORKERS
        locally); MAX_NUM_WORKERS for a fleet that does not say."""
        return getattr(self.fleet, "max_workers", self.settings.MAX_NUM_WORKERS)

    async def _tick(self):
        housekeeping = getattr(self.fleet, "housekeeping", None)
        if housekeeping is not None:
            try:
                await defer.maybeDeferred(housekeeping)
            except Exception:
                self.log.failure("fleet housekeeping failed; going on with this tick")
        if self._unfinished is not None:
            unfinished = await defer.maybeDeferred(self._unfinished)
        else:
            counts = await self.store.count_by_state()
            unfinished = sum(n for state, n in counts.items() if state not in {s.value for s in FINAL_STATES})
        try:
            running, booting, *leaving = await defer.maybeDeferred(self.fleet.counts)
        except FleetUnavailable as e:
            self.log.error("{unfinished} unfinished jobs{in_pool}, fleet unknown ({error}): no launch this tick",
                           unfinished=unfinished, error=str(e), in_pool=self._in_pool(), pool=self.pool)
            return
        n = workers_to_start(unfinished, running, booting, self.settings.MAX_ENCODING_JOBS_PER_WORKER,
                             self.settings.JOB_OVERFLOW_THRESH, self.max_workers, leaving=sum(leaving))
        if n:
            self.log.info("{unfinished} unfinished jobs{in_pool}, {running} workers (+{booting} booting, {leaving} "
                          "leaving): starting {n}", unfinished=unfinished, running=running, booting=booting,
                          leaving=sum(leaving), n=n, in_pool=self._in_pool(), pool=self.pool)
            await defer.maybeDeferred(self.fleet.launch, n)

    def _in_pool(self):
        return f" in pool {self.pool}" if self.pool else ""
