"""The WorkQueue interface, with SQS semantics. Every backend passes
``tests/core/queue_contract.py``.

A received message is leased, not removed: it stays invisible for the
visibility timeout, then comes back unless it was deleted. Each receive bumps
its receive count and issues a new receipt handle; only the latest handle can
extend (``change_visibility``) or ``delete`` it. A queue with a redrive policy
moves a message to its dead-letter queue instead of delivering it a
``max_receive_count + 1``-th time (SQS maxReceiveCount).
"""

import attr


@attr.s(auto_attribs=True, frozen=True)
class Message:
    """One received message. ``receive_count`` includes this receive;
    ``sent_at`` is epoch seconds."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float


@attr.s(auto_attribs=True, frozen=True)
class RedrivePolicy:
    dead_letter_queue: str
    max_receive_count: int


class ReceiptHandleInvalid(Exception):
    """The receipt handle is no longer current: the lease expired and another
    consumer received the message, or it was deleted."""


def dead_letter_name(queue_name):
    """Name of a queue's dead-letter queue."""
    return f"{queue_name}_dlq"


def redrive_policies(settings):
    """The redrive policies of nommer's queues: new jobs are dead-lettered
    after MAX_JOB_ATTEMPTS receives. State changes are never dead-lettered."""
    q = settings.NEW_JOB_QUEUE_NAME
    return {q: RedrivePolicy(dead_letter_name(q), settings.MAX_JOB_ATTEMPTS)}


class WorkQueue:
    """Interface of a work queue (documentation; backends subclass it).
    Every method returns a Deferred.

    - ``send(queue, body, delay_s=0) -> message_id``; body is a str.
    - ``receive(queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0)
      -> list[Message]``: oldest first; waits up to ``wait_time_s`` seconds for
      at least one message (long polling), returns [] if none came.
    - ``change_visibility(queue, receipt_handle, visibility_timeout_s)``:
      the message becomes visible again that many seconds from now (0 =
      release it at once). Raises ``ReceiptHandleInvalid``.
    - ``delete(queue, receipt_handle)``: raises ``ReceiptHandleInvalid``.
    - ``depth(queue) -> {"visible": n, "in_flight": n, "delayed": n}``
      (approximate, as SQS's attributes).
    """

    def send(self, queue, body, delay_s=0):
        raise NotImplementedError

    def receive(self, queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0):
        raise NotImplementedError

    def change_visibility(self, queue, receipt_handle, visibility_timeout_s):
        raise NotImplementedError

    def delete(self, queue, receipt_handle):
        raise NotImplementedError

    def depth(self, queue):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
