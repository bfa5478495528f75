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


def apply_change(old, new, now):
    """The rules every backend applies when ``modify`` replaces ``old`` by ``new``.

    Refuses (``IllegalTransition``) a state change the table forbids and
    stamps ``updated_at``; ``finished_at`` is set on entering a final state.
    Returns the job to store.
    """
    check_transition(old.job_id, old.job_state, new.job_state)
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
    - ``close() -> Deferred|None``.

    ``aws_pool``: the ``nommer.core.aws.AWS`` pool an AWS backend makes its
    calls in (None for SQLite), for a sibling store to share (the API keys).
    """

    aws_pool = None

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

    def close(self):
        raise NotImplementedError
