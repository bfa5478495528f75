"""A Service that long-polls one queue and hands each message to ``handle``.

A message is deleted only after ``handle(message)`` succeeds; if it fails, or
the daemon dies first, the message comes back after its visibility timeout
(at-least-once). Handlers run concurrently, at most ``max_in_flight`` at once.
A failed receive is logged and retried after ``error_backoff_s``: the loop
never dies. A failed delete (queue unreachable) is retried with backoff
(``error_backoff_s`` doubling, up to ``lease.MAX_DELETE_BACKOFF_S``) until it
works or the service stops. On stop, the handlers still running are cancelled
and their messages released (visible again at once), so the next daemon
handles them now rather than after a possibly long visibility timeout.

Leases: a message is received with a short visibility timeout
(``visibility_timeout_s``) and, while its handler runs (a webhook retrying
with backoff may take many minutes), its lease is extended every
``visibility_timeout_s / 3`` seconds by the consumer's ``LeaseKeeper``
(``nommer.core.workqueue.lease``, the worker keeps its jobs' leases with
one too). So a daemon killed outright (SIGKILL, no stop) holds its messages
at most one visibility timeout, not for the longest a handler could take.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.retry import retry
from nommer.core.workqueue import LeaseKeeper


class QueueConsumer(Service):
    log = Logger()

    def __init__(self, queue, queue_name, clock, visibility_timeout_s, wait_time_s,
                 max_in_flight=100, batch_size=10, error_backoff_s=1.0):
        self.queue = queue
        self.queue_name = queue_name
        self.clock = clock
        self.visibility_timeout_s = visibility_timeout_s
        self.wait_time_s = wait_time_s
        self.batch_size = batch_size
        self.error_backoff_s = error_backoff_s
        self._slots = defer.DeferredSemaphore(max_in_flight)
        #: The messages being handled (extended until deleted or released).
        self.leases = LeaseKeeper(queue, queue_name, clock, visibility_timeout_s,
                                  error_backoff_s=error_backoff_s)
        self._in_flight = set()  # Deferreds of running handlers
        self._loop = None
        self._waiting = None

    def handle(self, message):
        """Process one message; return a Deferred (or value). Subclasses."""
        raise NotImplementedError

    def startService(self):
        super().startService()
        self._loop = defer.Deferred.fromCoroutine(self._run())

    async def stopService(self):
        super().stopService()
        self.leases.stop()
        if self._waiting is not None:
            self._waiting.cancel()
        # Release what we held: left alone, a message would stay invisible for
        # the rest of its visibility timeout (a minute, extended while handled),
        # delaying it past newer ones after a restart. The releases are issued
        # at once, before anything here waits: the store and queue are closed
        # by a sibling service stopping at the same time, and only work queued
        # before that still runs. A handler that had finished its delete makes
        # its release fail with ReceiptHandleInvalid: fine.
        releases = self.leases.release_all(0)
        for d in list(self._in_flight):
            d.cancel()
        if self._loop is not None:
            await self._loop
        await releases

    async def _run(self):
        while self.running:
            try:
                # A failed receive is retried after error_backoff_s, for ever
                # (the loop never dies); _receive answers None once stopped.
                messages = await retry(
                    self._receive, clock=self.clock, backoff_s=self.error_backoff_s,
                    max_backoff_s=self.error_backoff_s,
                    on_retry=lambda exc, n, pause_s: self.log.failure(
                        "receiving from {queue} failed; retrying", Failure(exc), queue=self.queue_name))
            except defer.CancelledError:
                return
            if messages is None:
                return
            for message in messages:
                if not self.leases.hold(message):
                    continue  # redelivered while still being handled: the new handle is kept
                d = self._slots.run(self._handle_and_delete, message)
                self._in_flight.add(d)
                d.addBoth(self._done, d)

    async def _receive(self):
        """One batch of messages once a slot is free, or None when the
        service stopped meanwhile."""
        try:
            if not self.running:  # stopped while pausing after a failed receive
                return None
            await self._slots.acquire()
            self._slots.release()
            if not self.running:  # stopped while waiting for a free slot
                return None
            self._waiting = defer.Deferred.fromCoroutine(self.queue.receive(
                self.queue_name, max_messages=self.batch_size,
                visibility_timeout_s=self.visibility_timeout_s, wait_time_s=self.wait_time_s))
            return await self._waiting
        finally:
            self._waiting = None

    def _done(self, result, d):
        self._in_flight.discard(d)
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            if self.running:
                self.log.failure("handler failed on {queue}", result, queue=self.queue_name)
            else:  # stopping: the message was released for the next daemon
                self.log.warn("handler on {queue} stopped with the service: {why}", queue=self.queue_name,
                              why=result.getErrorMessage())

    async def _handle_and_delete(self, message):
        try:
            await defer.maybeDeferred(self.handle, message)
            # Retried while the service runs: a message left undeleted would
            # come back after its visibility timeout and be handled again much
            # later (for the notifier: an old state re-sent after newer ones).
            await self.leases.delete(message, retry_while=lambda: self.running)
        finally:
            self.leases.let_go(message)  # a failed handler: the message comes back when its lease ends
