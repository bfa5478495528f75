# -*- test-case-name: tests.core.test_lease -*-
"""Leases on received messages, kept while the work runs: ``LeaseKeeper``.

A message received from a ``WorkQueue`` is leased, not removed (see
``base``): invisible for its visibility timeout, then handed out again unless
it was deleted. Whoever handles messages of one queue holds them through one
``LeaseKeeper`` (feederd's ``QueueConsumer`` for the state-change and
dead-letter queues, the worker's ``AttemptRunner`` for jobs):

* ``hold(message, on_beat=None, on_lost=None, **log_fields)``: from now on
  the lease is extended every ``interval_s`` seconds (a third of the
  visibility timeout unless given; the first extension one interval after
  ``hold``), so a consumer killed outright holds the message at most one
  visibility timeout, not for as long as its work could take. After each
  extension ``on_beat()`` runs (the worker writes its job heartbeat there).
  A receipt handle that is no longer current (``ReceiptHandleInvalid``: the
  lease ran out and another consumer received the message, or it was
  deleted) calls ``on_lost()`` instead, and the beats go on (a redelivery may
  bring a new receipt). A message held already (redelivered while its work
  runs) only has its receipt updated: ``hold`` returns False. With
  ``per_delivery=True`` each delivery (receipt handle) is a lease of its own
  instead: the worker runs a redelivered job as a new attempt, and the older
  attempt's lease, its receipt no longer current, is lost on its next beat;
  every operation then uses the receipt of the delivery it is given.
* ``release(message, visibility_s=0)``: stop extending, and make the message
  visible again ``visibility_s`` seconds from now (0: at once). It never
  fails: a release refused (the message is gone) is fine, one that fails is
  logged (the message comes back when its lease ends anyway).
* ``delete(message, retry_while=None)``: delete it with its latest receipt,
  then stop extending. Gone already is logged and answered False. A failing
  queue is retried, after ``error_backoff_s`` doubling up to
  ``max_delete_backoff_s``, while ``retry_while()`` says so (the lease is
  kept meanwhile, so the message does not come back while still handled);
  otherwise the error is raised (``nommer.core.retry.retry``).
* ``let_go(message)``: stop extending without telling the queue (the work
  failed: the message comes back when its lease ends).
* ``release_all(visibility_s=0)``: release every message held, the requests
  all issued before this returns (a stopping daemon whose queue closes next).
* ``stop()``: stop extending every lease, keeping them held (what a daemon
  killed outright leaves behind; tests use it).

``release``, ``delete`` and ``release_all`` return Deferreds, so requests are
issued when called, and may be awaited.

Queues: every request about a message goes to the queue it came from
(``Message.queue``: a priority band, or one of the pools a worker serves),
or to the keeper's ``queue_name`` when the message does not say.

Rules kept: time comes from ``clock`` (``IReactorTime``; tests drive it with
``task.Clock``); an extension never raises (it runs in a ``LoopingCall``, which
an escaped exception would stop for good): failures of the queue, ``on_beat``
and ``on_lost`` are logged with the message id, the queue and the caller's
``log_fields`` (``job_id``, ``worker_id``) and the beats go on. The
arithmetic (``extend_every_s``; the delete backoff is
``nommer.core.retry.pause_s``) is pure.
"""

import inspect

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.retry import retry
from nommer.core.workqueue.base import ReceiptHandleInvalid

__all__ = ["LeaseKeeper", "MAX_DELETE_BACKOFF_S", "extend_every_s"]

#: Longest pause between two attempts at deleting a message, seconds.
MAX_DELETE_BACKOFF_S = 30.0


def extend_every_s(visibility_timeout_s):
    """Seconds between two extensions of a lease of ``visibility_timeout_s``:
    a third of it, so that two extensions may fail before the lease ends."""
    return visibility_timeout_s / 3


class _Lease:
    """One message held: its key in the keeper, its id, its latest receipt
    handle, what to call on each beat and when the lease is lost, its log
    fields and its loop."""

    def __init__(self, key, message, on_beat, on_lost, log_fields):
        self.key = key
        self.queue = message.queue
        self.message_id = message.message_id
        self.receipt_handle = message.receipt_handle
        self.on_beat = on_beat
        self.on_lost = on_lost
        self.log_fields = log_fields
        self.loop = None

    def stop(self):
        if self.loop is not None and self.loop.running:
            self.loop.stop()


class LeaseKeeper:
    """The leases on the messages one consumer holds on one queue (see the
    module docstring).

    :param queue: a ``WorkQueue``.
    :param queue_name: the queue the messages came from.
    :param clock: ``IReactorTime``.
    :param visibility_timeout_s: each extension makes the message invisible
        that many seconds from then.
    :param interval_s: seconds between two extensions;
        ``extend_every_s(visibility_timeout_s)`` when None.
    :param error_backoff_s: first pause before retrying a failed delete.
    :param max_delete_backoff_s: longest pause between two delete attempts.
    :param log_fields: fields every log event carries (e.g. ``worker_id``).
    :param per_delivery: False: a message is one lease whatever its
        deliveries (a redelivery updates the receipt); True: each delivery
        is a lease of its own (see the module docstring).
    """

    log = Logger()

    def __init__(self, queue, queue_name, clock, visibility_timeout_s, *, interval_s=None,
                 error_backoff_s=1.0, max_delete_backoff_s=MAX_DELETE_BACKOFF_S, log_fields=None,
                 per_delivery=False):
        self.queue = queue
        self.queue_name = queue_name
        self.clock = clock
        self.visibility_timeout_s = visibility_timeout_s
        self.interval_s = extend_every_s(visibility_timeout_s) if interval_s is None else interval_s
        self.error_backoff_s = error_backoff_s
        self.max_delete_backoff_s = max_delete_backoff_s
        self.log_fields = dict(log_fields or {})
        self.per_delivery = per_delivery
        self._held = {}  # _key(message) -> _Lease

    # -- holding -------------------------------------------------------------------

    def hold(self, message, *, on_beat=None, on_lost=None, **log_fields):
        """Keep the lease on ``message`` (a ``Message``) until it is deleted,
        released or let go. ``on_beat()`` runs after each extension,
        ``on_lost()`` when its receipt is no longer current; either may
        return an awaitable; neither may rely on raising (logged, ignored).
        ``log_fields`` go into this message's log events.

        Returns True if the message is newly held, False if it was held
        already (redelivered while its work runs: only the receipt handle is
        updated, the first ``hold``'s callbacks stay).
        """
        key = self._key(message)
        lease = self._held.get(key)
        if lease is not None:
            lease.receipt_handle = message.receipt_handle
            return False
        lease = self._held[key] = _Lease(key, message, on_beat, on_lost, log_fields)
        lease.loop = task.LoopingCall(self._extend, lease)
        lease.loop.clock = self.clock
        lease.loop.start(self.interval_s, now=False).addErrback(self._loop_died, lease)
        return True

    def _key(self, message):
        return message.receipt_handle if self.per_delivery else message.message_id

    def _lease(self, message):
        """The lease of ``message`` (a ``Message``, or a ``_Lease`` itself), or None."""
        if isinstance(message, _Lease):
            return message
        return self._held.get(self._key(message))

    def is_held(self, message):
        """Whether ``message``'s lease is kept (see ``per_delivery``)."""
        lease = self._lease(message)
        return lease is not None and self._held.get(lease.key) is lease

    def __len__(self):
        return len(self._held)

    def receipt_handle(self, message):
        """The latest receipt handle of ``message``: its lease's, else its own."""
        lease = self._lease(message)
        return message.receipt_handle if lease is None else lease.receipt_handle

    def queue_of(self, message):
        """The queue ``message`` (a ``Message`` or a lease) came from: its
        own ``queue``, else the keeper's ``queue_name``."""
        return getattr(message, "queue", None) or self.queue_name

    def let_go(self, message):
        """Stop extending the lease on ``message`` (if held), leaving the
        queue alone: the message comes back when its lease ends."""
        lease = self._lease(message)
        if lease is not None:
            lease.stop()
            if self._held.get(lease.key) is lease:
                del self._held[lease.key]

    def stop(self):
        """Stop extending every lease; the messages stay held."""
        for lease in self._held.values():
            lease.stop()

    async def _extend(self, lease):
        """One beat: extend, then ``on_beat`` (or ``on_lost``). Never raises."""
        try:
            await self.queue.change_visibility(self.queue_of(lease), lease.receipt_handle,
                                               self.visibility_timeout_s)
        except ReceiptHandleInvalid:
            if lease.on_lost is not None:
                await self._call(lease.on_lost, lease, "on_lost")
            return
        except Exception:
            self.log.failure("extending the lease of message {message_id} on {queue} failed",
                             **self._fields(lease))
        if lease.on_beat is not None:
            await self._call(lease.on_beat, lease, "on_beat")

    async def _call(self, callback, lease, what):
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.failure("{what} of the lease of message {message_id} on {queue} failed",
                             what=what, **self._fields(lease))

    def _loop_died(self, failure, lease):
        # Unreachable unless _extend has a bug: say so rather than go silent.
        self.log.failure("the lease of message {message_id} on {queue} is no longer extended",
                         failure, **self._fields(lease))

    def _fields(self, message, extra=None):
        """Log fields about ``message`` (a ``Message`` or a ``_Lease``): the
        keeper's, its lease's, ``extra``, its id and the queue."""
        lease = self._lease(message)
        fields = dict(self.log_fields)
        if lease is not None:
            fields.update(lease.log_fields)
        fields.update(extra or {})
        fields.update(message_id=message.message_id, queue=self.queue_of(message))
        return fields

    # -- ending ---------------------------------------------------------------------

    def release(self, message, visibility_s=0, **log_fields):
        """Stop extending the lease on ``message`` (a ``Message``, or a lease
        from ``release_all``'s snapshot) and make it visible again
        ``visibility_s`` seconds from now. Returns a Deferred firing None
        once done; it never fails (see the module docstring)."""
        return defer.Deferred.fromCoroutine(self._release(message, visibility_s, log_fields))

    async def _release(self, message, visibility_s, log_fields):
        receipt = self.receipt_handle(message)
        queue = self.queue_of(message)
        fields = self._fields(message, log_fields)
        self.let_go(message)
        try:
            await self.queue.change_visibility(queue, receipt, visibility_s)
        except ReceiptHandleInvalid:
            pass  # deleted meanwhile, or another consumer has it now: not ours to release
        except Exception:
            self.log.failure("releasing message {message_id} on {queue} (visible again in "
                             "{visibility_s} s) failed; it comes back when its lease ends",
                             visibility_s=visibility_s, **fields)

    def release_all(self, visibility_s=0):
        """Release every message held (requests issued now). Returns a
        Deferred firing once all are done; it never fails."""
        held = list(self._held.values())
        return defer.DeferredList([self.release(lease, visibility_s) for lease in held])

    def delete(self, message, *, retry_while=None, **log_fields):
        """Delete ``message`` with its latest receipt handle, then stop
        extending its lease. Returns a Deferred firing True once deleted,
        False if it was gone already (logged).

        A queue failure is retried after a doubling backoff while
        ``retry_while()`` is true (never when it is None); else it is raised.
        """
        return defer.Deferred.fromCoroutine(self._delete(message, retry_while, log_fields))

    async def _delete(self, message, retry_while, log_fields):
        fields = self._fields(message, log_fields)

        async def delete_once():
            try:
                await self.queue.delete(self.queue_of(message), self.receipt_handle(message))
                return True
            except ReceiptHandleInvalid:
                self.log.warn("message {message_id} on {queue} was gone when deleted (its lease "
                              "ran out and another consumer received it, or it was deleted)",
                              **fields)
                return False

        try:
            return await retry(
                delete_once, clock=self.clock, backoff_s=self.error_backoff_s,
                max_backoff_s=self.max_delete_backoff_s,
                # Never without retry_while; checked after each failure.
                retry_while=retry_while or (lambda: False),
                on_retry=lambda exc, n, pause_s: self.log.failure(
                    "deleting message {message_id} from {queue} failed; retrying in {backoff_s} s",
                    Failure(exc), backoff_s=pause_s, **fields))
        finally:
            self.let_go(message)
