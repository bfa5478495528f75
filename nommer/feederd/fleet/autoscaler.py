"""The autoscaler: gathers numbers, asks the pure capacity policy, tells the
fleet. Runs every AUTOSCALE_INTERVAL_S and at once when poked (after a
submit, or when a worker exits).

A tick: the fleet's ``housekeeping()`` if it has one (the EC2 fleet
terminates instances that never came up or went silent), the unfinished
job count, the fleet's ``counts()``, the policy with the fleet's
``max_workers``, then ``launch(n)``. Fleet calls may return plain values
(LocalFleet) or Deferreds (Ec2Fleet); ticks never overlap, so a launch under
way is counted before the next decision."""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.states import FINAL_STATES
from nommer.feederd.fleet.base import FleetUnavailable
from nommer.feederd.fleet.capacity import workers_to_start


class Autoscaler(TimerService):
    log = Logger()

    def __init__(self, store, fleet, settings, clock):
        super().__init__(settings.AUTOSCALE_INTERVAL_S, self.tick)
        self.clock = clock
        self.store = store
        self.fleet = fleet
        self.settings = settings
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
        counts = await self.store.count_by_state()
        unfinished = sum(n for state, n in counts.items() if state not in {s.value for s in FINAL_STATES})
        try:
            running, booting, *leaving = await defer.maybeDeferred(self.fleet.counts)
        except FleetUnavailable as e:
            self.log.error("{unfinished} unfinished jobs, fleet unknown ({error}): no launch this tick",
                           unfinished=unfinished, error=str(e))
            return
        n = workers_to_start(unfinished, running, booting, self.settings.MAX_ENCODING_JOBS_PER_WORKER,
                             self.settings.JOB_OVERFLOW_THRESH, self.max_workers, leaving=sum(leaving))
        if n:
            self.log.info("{unfinished} unfinished jobs, {running} workers (+{booting} booting, {leaving} leaving): "
                          "starting {n}", unfinished=unfinished, running=running, booting=booting,
                          leaving=sum(leaving), n=n)
            await defer.maybeDeferred(self.fleet.launch, n)
