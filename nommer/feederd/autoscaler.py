"""The autoscaler: gathers numbers, asks the pure capacity policy, tells the
fleet. Runs every AUTOSCALE_INTERVAL_S and at once when poked (after a
submit, or when a worker exits)."""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.states import FINAL_STATES
from nommer.feederd.capacity import workers_to_start


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

    async def _tick(self):
        counts = await self.store.count_by_state()
        unfinished = sum(n for state, n in counts.items() if state not in {s.value for s in FINAL_STATES})
        running, booting = self.fleet.counts()
        n = workers_to_start(unfinished, running, booting, self.settings.MAX_ENCODING_JOBS_PER_WORKER,
                             self.settings.JOB_OVERFLOW_THRESH, self.settings.MAX_NUM_WORKERS)
        if n:
            self.log.info("{unfinished} unfinished jobs, {running} workers (+{booting} booting): starting {n}",
                          unfinished=unfinished, running=running, booting=booting, n=n)
            self.fleet.launch(n)
