"""A Service that long-polls one queue and hands each message to ``handle``.

A message is deleted only after ``handle(message)`` succeeds; if it fails, or
the daemon dies first, the message comes back after its visibility timeout
(at-least-once). Handlers run concurrently, at most ``max_in_flight`` at once.
A failed receive is logged and retried after ``error_backoff_s``: the loop
never dies.
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.workqueue import ReceiptHandleInvalid


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
        self._receipts = {}    # message_id -> latest receipt handle
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
        if self._waiting is not None:
            self._waiting.cancel()
        if self._loop is not None:
            await self._loop
        for d in list(self._in_flight):
            d.cancel()

    async def _run(self):
        while self.running:
            try:
                await self._slots.acquire()
                self._slots.release()
                self._waiting = defer.Deferred.fromCoroutine(self.queue.receive(
                    self.queue_name, max_messages=self.batch_size,
                    visibility_timeout_s=self.visibility_timeout_s, wait_time_s=self.wait_time_s))
                messages = await self._waiting
            except defer.CancelledError:
                return
            except Exception:
                self.log.failure("receiving from {queue} failed; retrying", queue=self.queue_name)
                await task.deferLater(self.clock, self.error_backoff_s)
                continue
            finally:
                self._waiting = None
            for message in messages:
                if message.message_id in self._receipts:
                    # Redelivered while still being handled: only remember the new handle.
                    self._receipts[message.message_id] = message.receipt_handle
                    continue
                self._receipts[message.message_id] = message.receipt_handle
                d = self._slots.run(self._handle_and_delete, message)
                self._in_flight.add(d)
                d.addBoth(self._done, d)

    def _done(self, result, d):
        self._in_flight.discard(d)
        if isinstance(result, Failure) and not result.check(defer.CancelledError):
            self.log.failure("handler failed on {queue}", result, queue=self.queue_name)

    async def _handle_and_delete(self, message):
        try:
            await defer.maybeDeferred(self.handle, message)
            receipt = self._receipts.get(message.message_id, message.receipt_handle)
            try:
                await self.queue.delete(self.queue_name, receipt)
            except ReceiptHandleInvalid:
                self.log.warn("message {message_id} on {queue} was already gone when handled",
                              message_id=message.message_id, queue=self.queue_name)
        finally:
            self._receipts.pop(message.message_id, None)
