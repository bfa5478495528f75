"""The JobStore interface. Every backend passes ``tests/core/store_contract.py``.

All methods return Deferreds. Times are epoch seconds from the store's clock.
"""

import base64
import json

import attr

from nommer.core.states import FINAL_STATES, check_transition


def encode_cursor(created_at, job_id):
    """Opaque pagination cursor for ``list``: the sort key of the last job shown."""
    raw = json.dumps([created_at, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor):
    """Inverse of ``encode_cursor``; raises ValueError on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        return float(created_at), str(job_id)
    except Exception as exc:
        raise ValueError(f"not a cursor this server issued: {cursor!r}") from exc


def page_limit(limit):
    """``list``'s ``limit`` as an int; ValueError unless it is at least 1."""
    limit = int(limit)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return limit


def event_limit(after_seq, limit):
    """``list_events``' arguments checked: ``(after_seq, limit)`` as ints;
    ValueError unless ``after_seq >= 0`` and ``limit >= 1``."""
    after_seq = int(after_seq)
    if after_seq < 0:
        raise ValueError(f"after_seq must be at least 0, not {after_seq}")
    return after_seq, page_limit(limit)


def apply_change(old, new, now):
    """The rules every backend applies when ``modify`` replaces ``old`` by ``new``.

    Refuses (``IllegalTransition``) a state change the table forbids and
    stamps ``updated_at``; ``finished_at`` is set on entering a final state.
    A write adding one to ``retries`` is a retry: it may only take a job from
    ERROR, ABANDONED or CANCELED to PENDING (``RETRY_TRANSITIONS``); any
    other change of ``retries`` is refused (ValueError).
    Returns the job to store.
    """
    retry = new.retries == old.retries + 1
    if new.retries != old.retries and not retry:
        raise ValueError("modify may only change retries by adding one (a retry)")
    check_transition(old.job_id, old.job_state, new.job_state, retry=retry)
    if new.job_id != old.job_id or new.created_at != old.created_at:
        raise ValueError("modify may not change job_id or created_at")
    changes = {"updated_at": now}
    if new.job_state in FINAL_STATES and new.finished_at is None:
        changes["finished_at"] = now
    return attr.evolve(new, **changes)


class JobStore:
    """Interface of a job store (documentation; backends subclass it).

    - ``create(job) -> Deferred[Job]``: store a new job (created_at/updated_at
      stamped). A duplicate job_id raises ``ValueError``.
    - ``get(job_id) -> Deferred[Job]``: raises ``NoSuchJob``.
    - ``modify(job_id, fn) -> Deferred[Job]``: atomically replace the job with
      ``fn(job)`` (a pure function run once under the store's lock; it may
      raise to abort). The change passes ``apply_change``: an illegal state
      transition raises ``IllegalTransition``; raises ``NoSuchJob``.
    - ``list(state=None, limit=50, cursor=None, owner=None) -> Deferred[(jobs, next_cursor)]``:
      newest first; ``state`` a JobState or None for all; ``owner`` a key_id
      (only the jobs that key submitted) or None for every job, whoever
      submitted it; ``next_cursor`` is None on the last page (pages and
      cursors are of the filtered listing). A bad cursor raises ``ValueError``.
    - ``list_unfinished() -> Deferred[list[Job]]``: every job not in a final
      state, oldest first.
    - ``count_unfinished(owner) -> Deferred[int]``: how many jobs not in a
      final state the API key ``owner`` (a key_id) has.
    - ``count_by_state() -> Deferred[dict[str, int]]``.
    - ``append_event(event) -> Deferred[JobEvent|None]``: add a
      ``nommer.core.events.JobEvent`` to its job's log, at the next
      position: the stored event (``seq`` 1, 2, ... allocated atomically
      with the write, so concurrent writers never share one), or None when
      the log's bound drops it (``nommer.core.events.bounds``: past
      ``max_events`` only SUBMITTED/STATE/ASSIGNED/LEASE_LOST/RETRY/ERROR
      events are kept, past twice that none). The event's own ``seq`` is
      ignored. The store does not check that the job exists.
    - ``list_events(job_id, after_seq=0, limit=500) -> Deferred[list[JobEvent]]``:
      the job's events with ``seq > after_seq``, ascending, at most
      ``limit`` (>= 1, else ValueError); [] for a job without events.
      A job's events go when the job goes (DynamoDB: the job table's TTL).
    - ``close() -> Deferred|None``.

    ``max_events``: the bound of a job's log (MAX_EVENTS_PER_JOB).

    ``aws_pool``: the ``nommer.core.aws.AWS`` pool an AWS backend makes its
    calls in (None for SQLite), for a sibling store to share (the API keys).
    """

    aws_pool = None
    max_events = 500

    def create(self, job):
        raise NotImplementedError

    def get(self, job_id):
        raise NotImplementedError

    def modify(self, job_id, fn):
        raise NotImplementedError

    def list(self, state=None, limit=50, cursor=None, owner=None):
        raise NotImplementedError

    def list_unfinished(self):
        raise NotImplementedError

    def count_unfinished(self, owner):
        raise NotImplementedError

    def count_by_state(self):
        raise NotImplementedError

    def append_event(self, event):
        raise NotImplementedError

    def list_events(self, job_id, after_seq=0, limit=500):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
