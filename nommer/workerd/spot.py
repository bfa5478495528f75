"""A spot instance's warnings, watched: interruption notice and rebalance
recommendation.

``SpotWatcher`` polls the instance metadata (``nommer.workerd.imds``) every
SPOT_INTERRUPTION_POLL_S. A spot interruption notice interrupts the worker
(``Worker.interrupt``: its jobs released to the queue at once, then it
exits); a rebalance recommendation drains it (``Worker.drain``: the warm
shutdown). What the worker does then is ``nommer.workerd.worker``'s; its
exit on EC2 (own instance terminated) is ``nommer.workerd.terminate``.

Sources: the EC2 user guide, "Spot Instance interruption notices" and "EC2
instance rebalance recommendations".
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger


class SpotWatcher(Service):
    """Polls IMDS every SPOT_INTERRUPTION_POLL_S seconds (a LoopingCall on
    ``reactor``, first poll at start) for the two signals EC2 gives a spot
    instance before taking it back:

    - a spot interruption notice (``meta-data/spot/instance-action``, about
      two minutes ahead): ``worker.interrupt(reason)`` once -- running jobs
      are stopped and released to the queue at once, the worker exits -- and
      polling ends.
    - a rebalance recommendation (``meta-data/events/recommendations/
      rebalance``, often well before any notice): ``worker.drain(reason)``
      once: no new job, the running ones finish, then the worker exits (and
      on EC2 terminates its instance). Draining rather than ignoring it: a
      job that finishes before the interruption loses nothing, where one cut
      by the notice is encoded again from the start; the price is a
      replacement instance booting sooner (feederd's autoscaler starts one
      when the queue needs it). Polling goes on for the notice, which then
      interrupts the draining worker.

    A failed poll (IMDS unreachable, slow) is logged (the first, then every
    12th in a row) and the next one runs on time; polling never stops by
    itself before a notice. ``on_state_change()``, if given, is called after
    ``interrupt``/``drain``: pass it only for a worker built without its own
    ``on_state_change`` (the worker calls that one itself), else the registry
    is written twice.
    """

    log = Logger()

    def __init__(self, metadata, worker, settings, reactor, on_state_change=None):
        self.metadata = metadata
        self.worker = worker
        self.settings = settings
        self.reactor = reactor
        self.on_state_change = on_state_change
        self.notice = None          # the instance-action dict, once seen
        self.rebalance = None       # the rebalance dict, once seen
        self.failures = 0           # failed polls in a row
        self.polls = 0              # polls done (failed or not)
        self._loop = None
        self._loop_done = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(self.settings.SPOT_INTERRUPTION_POLL_S, now=True)
        self._loop_done.addErrback(lambda f: self.log.failure("spot watcher loop died", f))

    def stopService(self):
        """Stops polling; the Deferred fires once a poll under way is over."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._loop_done

    async def _poll(self):
        """One look at IMDS. Never raises (it runs in a LoopingCall)."""
        try:
            await self._look()
        finally:
            self.polls += 1

    async def _look(self):
        try:
            notice = await self.metadata.spot_notice()
            if notice is not None:
                return self._interrupted(notice)
            if self.rebalance is None:
                recommendation = await self.metadata.rebalance_recommendation()
                if recommendation is not None:
                    self._rebalance(recommendation)
        except Exception as exc:
            self.failures += 1
            if self.failures % 12 == 1:
                self.log.warn("spot watcher: polling instance metadata failed ({n} in a row), retrying in "
                              "{interval} s: {why}", n=self.failures, why=str(exc),
                              interval=self.settings.SPOT_INTERRUPTION_POLL_S, worker_id=self.worker.worker_id)
            return
        if self.failures:
            self.log.info("spot watcher: instance metadata readable again after {n} failed poll(s)",
                          n=self.failures, worker_id=self.worker.worker_id)
            self.failures = 0

    def _interrupted(self, notice):
        self.notice = notice
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        reason = f"spot interruption notice: {notice.get('action')} at {notice.get('time')}"
        self.log.warn("worker {worker_id}: {reason}", worker_id=self.worker.worker_id, reason=reason)
        self._call("interrupt", reason)

    def _rebalance(self, recommendation):
        self.rebalance = recommendation
        reason = f"rebalance recommendation at {recommendation.get('noticeTime')}"
        self.log.warn("worker {worker_id}: {reason}; draining (finishing running jobs, taking no new one)",
                      worker_id=self.worker.worker_id, reason=reason)
        self._call("drain", reason)

    def _call(self, method, reason):
        try:
            getattr(self.worker, method)(reason)
        except Exception:
            self.log.failure("worker.{method} failed", method=method, worker_id=self.worker.worker_id)
        if self.on_state_change is not None:
            d = defer.maybeDeferred(self.on_state_change)
            d.addErrback(lambda f: self.log.failure("reporting the worker's state failed", f,
                                                    worker_id=self.worker.worker_id))
