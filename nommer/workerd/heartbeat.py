"""The worker's entry in the worker registry, kept fresh.

``RegistryHeartbeat`` writes a ``WorkerRecord`` (who the worker is, what it
runs, its state) every HEARTBEAT_INTERVAL_S, at once when asked
(``beat_now``), and a last one with state ``exited`` when it stops. A failed
write is logged and the next beat tries again: the loop never stops.
"""

import socket
from importlib import metadata

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nommer.core.worker_registry.base import EXITED, WorkerRecord

#: Longest wait for the last record (state exited) when the service stops, seconds.
STOP_TIMEOUT_S = 5.0


def nommer_version():
    """The installed nommer's version, or ``"unknown"``."""
    try:
        return metadata.version("nommer")
    except metadata.PackageNotFoundError:
        return "unknown"


class RegistryHeartbeat(Service):
    """Heartbeats ``worker`` to ``registry``.

    - ``registry``: a ``WorkerRegistry``, not closed by this service.
    - ``worker``: has ``worker_id`` and ``status()`` (dict of WorkerRecord
      fields: state, jobs, capacity, jobs_done, started_at), e.g. ``Worker``.
    - ``settings``: HEARTBEAT_INTERVAL_S (seconds between writes).
    - ``reactor``: ``IReactorTime``; ``last_seen`` is its ``seconds()``.
    - ``identity``: None (off EC2) or a dict of some of ``instance_id``,
      ``instance_type``, ``availability_zone``, ``market`` (from the
      instance metadata); another key raises TypeError here.
    - ``figures``: None or an ``EncodeFigures``
      (``nommer.workerd.metrics``) whose ``fields()`` (jobs_finished,
      encode seconds, speed, recent encodes) go into every record.

    Writes are serialized (one at a time, in order), so a record written by
    ``beat_now`` is never overwritten by an older one still in flight.
    """

    log = Logger()

    def __init__(self, registry, worker, settings, reactor, identity=None, figures=None):
        self.registry = registry
        self.worker = worker
        self.figures = figures
        self.reactor = reactor
        self.interval_s = settings.HEARTBEAT_INTERVAL_S
        self._base = WorkerRecord(worker_id=worker.worker_id, host=socket.gethostname(),
                                  version=nommer_version(), **(identity or {}))
        self._lock = defer.DeferredLock()
        self._loop = task.LoopingCall(self.beat_now)
        self._loop.clock = reactor

    def record(self, **changes):
        """The WorkerRecord to write now: identity, ``worker.status()``, the
        encode figures, ``last_seen`` = now, then ``changes``."""
        fields = self._base.to_dict()
        fields.update(self.worker.status(), last_seen=self.reactor.seconds())
        if self.figures is not None:
            fields.update(self.figures.fields())
        fields.update(changes)
        return WorkerRecord.from_dict(fields)

    def beat_now(self, **changes):
        """Write the worker's record now (after any write in flight), e.g.
        when its state changed. ``changes`` override record fields. Returns
        a Deferred that fires True once written, False if the write failed
        (logged); it never fails."""
        return self._beat(changes)

    def _beat(self, changes, timeout_s=None):
        d = self._lock.run(lambda: self.registry.heartbeat(self.record(**changes)))
        if timeout_s is not None:
            d.addTimeout(timeout_s, self.reactor)
        return d.addCallbacks(lambda _: True, self._failed)

    def _failed(self, failure):
        self.log.failure("worker {worker_id}: heartbeat to the worker registry failed", failure,
                         worker_id=self._base.worker_id)
        return False

    def startService(self):
        super().startService()
        self._loop.start(self.interval_s, now=True)

    def stopService(self):
        """Stop beating and write a last record with state ``exited`` (best
        effort: given up after STOP_TIMEOUT_S). Returns a Deferred that
        never fails."""
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self._beat({"state": EXITED}, timeout_s=STOP_TIMEOUT_S)
