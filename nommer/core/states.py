"""Job states and the transition table every store enforces.

The names are the original media-nommer's seven plus CANCELED. A write that
breaks the table is refused (``IllegalTransition``), so a late worker cannot
resurrect a finished job and two daemons cannot both finish the same one.

Transitions (``*`` = any in-progress state: DOWNLOADING, ENCODING, UPLOADING)::

    PENDING -> DOWNLOADING            a worker took the job
    *       -> DOWNLOADING            another worker took it after a lease expired
    DOWNLOADING -> ENCODING -> UPLOADING -> FINISHED
    *       -> PENDING                released back to the queue (shutdown, transient failure)
    PENDING, * -> ERROR | ABANDONED | CANCELED
    FINISHED, ERROR, ABANDONED, CANCELED: final, nothing leaves them...

...except by a retry (``POST /job/<id>/retry``): ERROR, ABANDONED or
CANCELED -> PENDING (``RETRY_TRANSITIONS``), allowed only in a write that
says so (``check_transition(..., retry=True)``; the stores pass it when the
write adds one to the job's ``retries``). A worker's write never does, so a
late worker still cannot resurrect a job, and nothing ever leaves FINISHED.

A state may also be rewritten to itself (progress updates, heartbeats).
"""

import enum


class JobState(str, enum.Enum):
    PENDING = "PENDING"
    DOWNLOADING = "DOWNLOADING"
    ENCODING = "ENCODING"
    UPLOADING = "UPLOADING"
    FINISHED = "FINISHED"
    ERROR = "ERROR"
    ABANDONED = "ABANDONED"
    CANCELED = "CANCELED"

    def __str__(self):
        return self.value

    @property
    def is_final(self):
        return self in FINAL_STATES


IN_PROGRESS_STATES = frozenset({JobState.DOWNLOADING, JobState.ENCODING, JobState.UPLOADING})
FINAL_STATES = frozenset({JobState.FINISHED, JobState.ERROR, JobState.ABANDONED, JobState.CANCELED})
#: The original's FINISHED_STATES (CANCELED did not exist).
ORIGINAL_FINISHED_STATES = ("FINISHED", "ERROR", "ABANDONED")

_ENDINGS = {JobState.ERROR, JobState.ABANDONED, JobState.CANCELED}

TRANSITIONS = {
    JobState.PENDING: {JobState.DOWNLOADING} | _ENDINGS,
    JobState.DOWNLOADING: {JobState.DOWNLOADING, JobState.ENCODING, JobState.PENDING} | _ENDINGS,
    JobState.ENCODING: {JobState.DOWNLOADING, JobState.UPLOADING, JobState.PENDING} | _ENDINGS,
    JobState.UPLOADING: {JobState.DOWNLOADING, JobState.FINISHED, JobState.PENDING} | _ENDINGS,
    JobState.FINISHED: set(),
    JobState.ERROR: set(),
    JobState.ABANDONED: set(),
    JobState.CANCELED: set(),
}


#: The edges only a retry may take (see the module docstring).
RETRY_TRANSITIONS = {
    JobState.ERROR: {JobState.PENDING},
    JobState.ABANDONED: {JobState.PENDING},
    JobState.CANCELED: {JobState.PENDING},
}
#: States a job may be retried from.
RETRYABLE_STATES = frozenset(RETRY_TRANSITIONS)


class IllegalTransition(Exception):
    """A state write that the transition table refuses."""

    def __init__(self, job_id, current, wanted):
        self.job_id, self.current, self.wanted = job_id, JobState(current), JobState(wanted)
        super().__init__(f"job {job_id}: cannot go from {self.current} to {self.wanted}")


def check_transition(job_id, current, wanted, retry=False):
    """Raise ``IllegalTransition`` unless ``current -> wanted`` is in the table
    (with ``retry``: in ``RETRY_TRANSITIONS``, and only there).

    Writing a non-final state onto itself is always allowed (progress updates).
    """
    current, wanted = JobState(current), JobState(wanted)
    if retry:
        if wanted not in RETRY_TRANSITIONS.get(current, ()):
            raise IllegalTransition(job_id, current, wanted)
        return
    if current == wanted and not current.is_final:
        return
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(job_id, current, wanted)
