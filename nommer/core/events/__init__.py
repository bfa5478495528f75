"""A job's event log: what happened to it, when, and where.

- ``event.py``: ``JobEvent`` and ``EventKind``, one line of the log;
- ``bounds.py``: which events a job's log keeps (MAX_EVENTS_PER_JOB);
- ``message.py``: events announced on the state-change queue;
- ``view.py``: how the API and the stream show one.

Events are recorded by ``nommer.core.ledger.JobLedger.record_event`` (the
ledger itself for submits, state changes, assignments, retries and
progress milestones; the worker for a lost lease; feederd's notifier for
webhook outcomes), stored by the job store (``append_event``,
``list_events``) and served by ``GET /job/<id>/events``.
"""

from nommer.core.events.bounds import DROPPED_FIRST, keeps
from nommer.core.events.event import EventKind, JobEvent
from nommer.core.events.message import event_body, event_of, is_event_body
from nommer.core.events.view import event_to_api

__all__ = ["DROPPED_FIRST", "EventKind", "JobEvent", "event_body", "event_of", "event_to_api", "is_event_body",
           "keeps"]
