"""Fleets on this machine: ``LocalFleet`` starts ``twistd workerd --local``
child processes (FLEET_BACKEND = "local", the default); ``NoFleet`` starts
nothing (FLEET_BACKEND = "none": workers are started by someone else).
Both implement ``nommer.feederd.fleet.base.Fleet``.
"""

import os
import socket
import sys

from twisted.internet import defer, protocol
from twisted.logger import Logger

from nommer.core.pools import DEFAULT_POOL
from nommer.feederd.fleet.base import Fleet

TWISTD = "from twisted.scripts.twistd import run; run()"


def workerd_argv(settings, worker_id, pool=None):
    """argv of one local workerd, with feederd's config file if it has one,
    serving ``pool`` (``--pools``) when it is not the default pool."""
    argv = [sys.executable, "-c", TWISTD, "--pidfile=", "-n", "workerd", "--local", "--worker-id", worker_id]
    if settings.config_path:
        argv += ["--config", settings.config_path]
    if pool not in (None, DEFAULT_POOL):
        argv += ["--pools", pool]
    return argv


class _WorkerProcess(protocol.ProcessProtocol):
    log = Logger()

    def __init__(self, fleet, worker_id):
        self.fleet = fleet
        self.worker_id = worker_id
        self.ended = defer.Deferred()
        self._partial = b""

    def outReceived(self, data):
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.log.info("[{worker_id}] {line}", worker_id=self.worker_id,
                          line=line.decode("utf-8", "replace"))

    errReceived = outReceived

    def processEnded(self, reason):
        code = getattr(reason.value, "exitCode", None)
        self.log.info("worker {worker_id} exited ({code})", worker_id=self.worker_id, code=code)
        self.fleet._ended(self)
        self.ended.callback(code)


class LocalFleet(Fleet):
    """Workers as child processes. ``on_change()`` is called when one exits
    (so the autoscaler can replace it if jobs wait). On stop, each worker gets
    SIGTERM (finish the current job); after ``stop_grace_s`` seconds a second
    SIGTERM (release it to the queue), then SIGKILL.

    ``pool``: the pool its workers serve (``nommer.core.pools``; None or
    ``default``: the default pool); another pool's workers are started with
    ``--pools POOL`` and named ``<host>-<pid>-<pool>-w<n>``."""

    log = Logger()

    def __init__(self, settings, reactor, argv_for=None, stop_grace_s=30.0, on_change=None, pool=None):
        self.settings = settings
        self.reactor = reactor
        self.pool = pool
        if argv_for is None:
            def argv_for(settings, worker_id):
                return workerd_argv(settings, worker_id, pool)
        self._argv_for = argv_for
        self.stop_grace_s = stop_grace_s
        self.on_change = on_change
        #: Most workers there may be (the autoscaler's M): MAX_NUM_WORKERS.
        self.max_workers = settings.MAX_NUM_WORKERS
        self._workers = {}
        self._serial = 0

    def counts(self):
        """(running, booting): every live child counts as running."""
        return len(self._workers), 0

    def worker_ids(self):
        return sorted(self._workers)

    def launch(self, n):
        """Start ``n`` workers; returns their ids."""
        ids = []
        for _ in range(n):
            self._serial += 1
            in_pool = f"-{self.pool}" if self.pool not in (None, DEFAULT_POOL) else ""
            worker_id = f"{socket.gethostname()}-{os.getpid()}{in_pool}-w{self._serial}"
            proc = _WorkerProcess(self, worker_id)
            self.reactor.spawnProcess(proc, sys.executable, self._argv_for(self.settings, worker_id),
                                      env=os.environ.copy(), path=os.getcwd())
            self._workers[worker_id] = proc
            ids.append(worker_id)
            self.log.info("started worker {worker_id}", worker_id=worker_id)
        return ids

    def _ended(self, proc):
        self._workers.pop(proc.worker_id, None)
        if self.running and self.on_change is not None:
            self.on_change()

    def _signal_all(self, sig):
        for proc in list(self._workers.values()):
            try:
                proc.transport.signalProcess(sig)
            except Exception:
                pass

    async def stopService(self):
        super().stopService()
        if not self._workers:
            return
        ended = defer.DeferredList([p.ended for p in self._workers.values()])
        self._signal_all("TERM")
        timer = self.reactor.callLater(self.stop_grace_s, self._signal_all, "TERM")
        killer = self.reactor.callLater(self.stop_grace_s + 10, self._signal_all, "KILL")
        await ended
        for call in (timer, killer):
            if call.active():
                call.cancel()


class NoFleet(Fleet):
    """FLEET_BACKEND = "none": workers are started by someone else."""

    #: Nothing is ever started here.
    max_workers = 0

    def counts(self):
        return 0, 0

    def worker_ids(self):
        return []

    def launch(self, n):
        return []

