"""``JobEvent``: one line of a job's event log (``GET /job/<id>/events``).

Every state change, worker assignment, attempt, lease loss, retry, progress
milestone (each 10 %), webhook delivery outcome and error of a job, with its
UTC time and worker. Stored by the job store beside the job (bounded per
job: MAX_EVENTS_PER_JOB), announced on the state-change queue, and streamed
by feederd (``GET /events``).
"""

import enum

import attr

from nommer.core.records import record_from_dict, record_to_dict


class EventKind(enum.Enum):
    """What an event records."""

    SUBMITTED = "submitted"        # stored PENDING by the API (details: the preset or nommer)
    STATE = "state"                # a state change (state, details)
    ASSIGNED = "assigned"          # a worker took the job (worker_id, attempt)
    LEASE_LOST = "lease_lost"      # the worker lost the job's lease; another may take it
    RETRY = "retry"                # queued again: a transient failure's backoff, or POST /job/<id>/retry
    PROGRESS = "progress"          # a progress milestone: 10, 20, ... 100 (progress)
    WEBHOOK = "webhook"            # a webhook delivery outcome (details: delivered / given up, status)
    ERROR = "error"                # an error worth keeping that did not end the job (details)
    CHUNK = "chunk"                # a chunk of a chunked job planned, taken, done, released or failed
    MERGE = "merge"                # a chunked job's merge began or ended (details)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class JobEvent:
    """One event.

    :ivar job_id: the job's id.
    :ivar at: epoch seconds (float, UTC) of the event, from the writer's clock.
    :ivar kind: ``EventKind``.
    :ivar seq: the event's position in its job's log (1, 2, ...), given by
        the store when it is appended; None before.
    :ivar state: the job's state after the event (``JobState`` value), or None.
    :ivar worker_id: the worker concerned, or None.
    :ivar attempt: the job's attempt count at the event, or None.
    :ivar progress: percent (0..100) for PROGRESS, else None.
    :ivar details: a sentence for a person, or None.
    """

    job_id: str
    at: float
    kind: EventKind = attr.ib(converter=EventKind)
    seq: int = None
    state: str = None
    worker_id: str = None
    attempt: int = None
    progress: float = None
    details: str = None

    def to_dict(self):
        """JSON-able dict (``kind`` as its string value)."""
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict``; unknown keys ignored."""
        return record_from_dict(cls, d)
