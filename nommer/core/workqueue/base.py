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
    ``sent_at`` is epoch seconds. ``queue`` is the queue it was received
    from, which ``change_visibility`` and ``delete`` must be given: the one
    asked for, or, for a receive over several queues or a pool queue split
    in priority bands (SQS), the one that held it. None from a backend that
    does not say (then: the queue asked for)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float
    queue: str = None


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
    after MAX_JOB_ATTEMPTS receives, from every job queue (each pool's, and
    on SQS each of its priority bands: ``nommer.core.pools``) to the one
    dead-letter queue of NEW_JOB_QUEUE_NAME. State changes are never
    dead-lettered."""
    from nommer.core.pools import all_job_queues
    policy = RedrivePolicy(dead_letter_name(settings.NEW_JOB_QUEUE_NAME), settings.MAX_JOB_ATTEMPTS)
    return {name: policy for name in all_job_queues(settings)}


def queue_names(queue):
    """``queue`` (a name, or a list/tuple of names) as a list of names."""
    return [queue] if isinstance(queue, str) else list(queue)


class WorkQueue:
    """Interface of a work queue (documentation; backends subclass it).
    Every method returns a Deferred.

    - ``send(queue, body, delay_s=0, priority=None) -> message_id``; body is
      a str; ``priority`` 0..100 (None: 50) orders a job queue's messages
      (``nommer.core.priority``: the local queue by aging, SQS by band
      queues); other queues ignore it.
    - ``receive(queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0)
      -> list[Message]``: ``queue`` a name or a list of names (a worker
      serving several pools); highest priority first, then oldest; waits up
      to ``wait_time_s`` seconds for at least one message (long polling),
      returns [] if none came. Each message says which queue it came from
      (``Message.queue``).
    - ``change_visibility(queue, receipt_handle, visibility_timeout_s)``:
      the message becomes visible again that many seconds from now (0 =
      release it at once). Raises ``ReceiptHandleInvalid``.
    - ``delete(queue, receipt_handle)``: raises ``ReceiptHandleInvalid``.
    - ``depth(queue) -> {"visible": n, "in_flight": n, "delayed": n}``
      (approximate, as SQS's attributes).
    """

    def send(self, queue, body, delay_s=0, priority=None):
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
