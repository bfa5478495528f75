"""How many events one job's log keeps (MAX_EVENTS_PER_JOB), and which.

A job's log is bounded so that a job stuck in a loop (a receiver that never
answers, a job retried many times, a chatty nommer) cannot grow the store
without end. The rule every store applies when an event is appended to a
log already holding ``count`` events:

- below ``max_events``: every event is kept;
- from ``max_events`` to ``2 * max_events``: only the events that say what
  happened to the job (SUBMITTED, STATE, ASSIGNED, LEASE_LOST, RETRY,
  ERROR) are kept; PROGRESS milestones and WEBHOOK outcomes are dropped;
- from ``2 * max_events`` on: nothing more is kept.

A dropped event is not stored and gets no ``seq`` (``append_event`` answers
None), so the kept events' ``seq`` stay 1, 2, 3 ... without gaps, and the
count of a log is the ``seq`` of its last event. Every event is still
announced on the state-change queue (the live stream sees it).
"""

from nommer.core.events.event import EventKind

#: Kinds dropped first once a log holds MAX_EVENTS_PER_JOB events.
DROPPED_FIRST = frozenset({EventKind.PROGRESS, EventKind.WEBHOOK})


def keeps(kind, count, max_events):
    """Whether an event of ``kind`` (an ``EventKind``) is stored in a log
    already holding ``count`` events, under a bound of ``max_events``
    (see the module docstring)."""
    if count < max_events:
        return True
    if count < 2 * max_events:
        return EventKind(kind) not in DROPPED_FIRST
    return False
