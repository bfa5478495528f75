"""A Service that long-polls one queue and hands each message to ``handle``.

A message is deleted only after ``handle(message)`` succeeds; if it fails, or
the daemon dies first, the message comes back after its visibility timeout
(at-least-once). Handlers run concurrently, at most ``max_in_flight`` at once.
A failed receive is logged and retried after ``error_backoff_s``: the loop
never dies. A failed delete (queue unreachable) is retried with backoff
(``error_backoff_s`` doubling, up to ``MAX_DELETE_BACKOFF_S``) until it works
or the service stops. On stop, the handlers still running are cancelled and
their messages released (visible again at once), so the next daemon handles
them now rather than after a possibly long visibility timeout.

Leases: a message is received with a short visibility timeout
(``visibility_timeout_s``) and, while its handler runs (a webhook retrying
with backoff may take many minutes), the consumer extends it every
``visibility_timeout_s / 3`` seconds, as a worker does for a job. So a
daemon killed outright (SIGKILL, no stop) holds its messages at most one
visibility timeout, not for the longest a handler could take.
"""

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.workqueue import ReceiptHandleInvalid

#: Longest pause between two attempts at deleting a handled message, seconds.
MAX_DELETE_BACKOFF_S = 30.0


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
        self._extender = task.LoopingCall(self._extend_leases)
        self._extender.clock = clock

    def handle(self, message):
        """Process one message; return a Deferred (or value). Subclasses."""
        raise NotImplementedError

    def startService(self):
        super().startService()
        self._loop = defer.Deferred.fromCoroutine(self._run())
        self._extender.start(self.visibility_timeout_s / 3, now=False)

    async def _extend_leases(self):
        """Extend the visibility of every message being handled (never raises:
        it runs in a LoopingCall). A failure is logged; the message may then
        come back while still handled, which ``_run`` notices."""
        for message_id, receipt in list(self._receipts.items()):
            try:
                await self.queue.change_visibility(self.queue_name, receipt, self.visibility_timeout_s)
            except ReceiptHandleInvalid:
                pass  # deleted meanwhile, or redelivered: the newer receipt is extended next time
            except Exception:
                self.log.failure("extending the lease of message {message_id} on {queue} failed",
                                 message_id=message_id, queue=self.queue_name)

    async def stopService(self):
        super().stopService()
        if self._extender.running:
            self._extender.stop()
        if self._waiting is not None:
            self._waiting.cancel()
        held = dict(self._receipts)  # message_id -> receipt of messages being handled
        for d in list(self._in_flight):
            d.cancel()
        # Release what we held: left alone, a message would stay invisible for
        # the rest of its visibility timeout (a minute, extended while handled),
        # delaying it past newer ones after a restart. The releases are issued
        # at once, before anything here waits: the store and queue are closed
        # by a sibling service stopping at the same time, and only work queued
        # before that still runs. A handler that had finished its delete makes
        # its release fail with ReceiptHandleInvalid: fine.
        releases = [defer.Deferred.fromCoroutine(self._release(message_id, receipt))
                    for message_id, receipt in held.items()]
        if self._loop is not None:
            await self._loop
        await defer.DeferredList(releases)

    async def _release(self, message_id, receipt):
        try:
            await self.queue.change_visibility(self.queue_name, receipt, 0)
        except ReceiptHandleInvalid:
            pass
        except Exception:
            self.log.failure("releasing message {message_id} on {queue} failed; it comes back after "
                             "its visibility timeout", message_id=message_id, queue=self.queue_name)

    async def _run(self):
        while self.running:
            try:
                await self._slots.acquire()
                self._slots.release()
                if not self.running:  # stopped while waiting for a free slot
                    return
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
            if self.running:
                self.log.failure("handler failed on {queue}", result, queue=self.queue_name)
            else:  # stopping: the message was released for the next daemon
                self.log.warn("handler on {queue} stopped with the service: {why}", queue=self.queue_name,
                              why=result.getErrorMessage())

    async def _handle_and_delete(self, message):
        try:
            await defer.maybeDeferred(self.handle, message)
            await self._delete(message)
        finally:
            self._receipts.pop(message.message_id, None)

    async def _delete(self, message):
        """Delete a handled message, retrying while the queue fails: a message
        left undeleted would come back after its visibility timeout and be
        handled again much later (for the notifier: an old state re-sent
        after newer ones)."""
        backoff_s = self.error_backoff_s
        while True:
            receipt = self._receipts.get(message.message_id, message.receipt_handle)
            try:
                return await self.queue.delete(self.queue_name, receipt)
            except ReceiptHandleInvalid:
                self.log.warn("message {message_id} on {queue} was already gone when handled",
                              message_id=message.message_id, queue=self.queue_name)
                return
            except Exception:
                if not self.running:
                    raise
                self.log.failure("deleting handled message {message_id} from {queue} failed; "
                                 "retrying in {backoff_s} s", message_id=message.message_id,
                                 queue=self.queue_name, backoff_s=backoff_s)
            await task.deferLater(self.clock, backoff_s)
            backoff_s = min(backoff_s * 2, MAX_DELETE_BACKOFF_S)
