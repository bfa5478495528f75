"""JobStore on one SQLite file (WAL), shared by feederd and its local workers.

Table ``jobs``: the job as a JSON document (``doc``) plus the columns the
indexes need: ``job_state``, ``created_at``, ``updated_at`` and ``owner``
(the submitting API key's ``key_id``, NULL for anonymous jobs). ``owner``
came later: a database made before it gets the column (NULL: jobs stored
before API keys have no owner) and its indexes when first opened
(``add_owner_column``).

Table ``job_events``: each job's event log, one row per kept event keyed
``(job_id, seq)``, the event as JSON (``doc``). ``append_event`` reads the
job's last ``seq`` and inserts the next one in one write transaction
(``BEGIN IMMEDIATE``), so two writers never get the same ``seq``.
"""

import json
import os

import attr
from twisted.internet import defer

from nommer.core.errors import NoSuchJob
from nommer.core.events import JobEvent, keeps
from nommer.core.job import Job
from nommer.core.sqlite import IntegrityError, SQLiteDB
from nommer.core.states import FINAL_STATES, JobState
from nommer.core.store.base import JobStore, apply_change, decode_cursor, encode_cursor, event_limit

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id     TEXT PRIMARY KEY,
        job_state  TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        doc        TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at DESC, job_id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (job_state, created_at DESC, job_id DESC)",
    """CREATE TABLE IF NOT EXISTS job_events (
        job_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        doc    TEXT NOT NULL,
        PRIMARY KEY (job_id, seq))""",
]

#: Made by ``add_owner_column`` once the ``owner`` column exists.
OWNER_INDEXES = [
    "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at DESC, job_id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_by_owner_state ON jobs (owner, job_state, created_at DESC, job_id DESC)",
]

_FINAL = tuple(s.value for s in FINAL_STATES)
#: Placeholders for ``_FINAL`` in ``NOT IN (...)``.
_FINAL_MARKS = ",".join("?" * len(_FINAL))


def _row_to_job(doc):
    return Job.from_dict(json.loads(doc))


def _columns(conn):
    return {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}


def add_owner_column(conn):
    """Schema migration, run on each connection right after ``SCHEMA``:
    add the ``owner`` column to a ``jobs`` table made before it (existing
    jobs get NULL: no owner) and create its indexes. Under ``BEGIN
    IMMEDIATE``, so feederd and its workers opening one old file at once
    add it once."""
    if "owner" not in _columns(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "owner" not in _columns(conn):
                conn.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    for statement in OWNER_INDEXES:
        conn.execute(statement)


class _JobsDB(SQLiteDB):
    """The jobs file: ``SCHEMA``, then ``add_owner_column``, at each open."""

    def _on_open(self, conn):
        super()._on_open(conn)
        add_owner_column(conn)


class SQLiteJobStore(JobStore):
    """Jobs as JSON documents in ``<DATA_DIR>/jobs.sqlite``, with the state and
    times also in columns for the indexes, and their event logs. ``clock``
    provides ``seconds()``; ``max_events`` bounds each job's log
    (MAX_EVENTS_PER_JOB)."""

    def __init__(self, path, reactor, clock=None, max_events=500):
        self._db = _JobsDB(path, SCHEMA, reactor)
        self._clock = clock or reactor
        self.max_events = max_events

    @classmethod
    def from_settings(cls, settings, reactor):
        return cls(os.path.join(settings.DATA_DIR, "jobs.sqlite"), reactor,
                   max_events=settings.MAX_EVENTS_PER_JOB)

    def create(self, job):
        now = self._clock.seconds()
        job = attr.evolve(job, created_at=now, updated_at=now)

        def txn(cur):
            try:
                cur.execute(
                    "INSERT INTO jobs (job_id, job_state, created_at, updated_at, owner, doc)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (job.job_id, job.job_state.value, job.created_at, job.updated_at, job.owner,
                     json.dumps(job.to_dict())))
            except IntegrityError:
                raise ValueError(f"a job with id {job.job_id} already exists")
            return job
        return self._db.interaction(txn)

    def get(self, job_id):
        def txn(cur):
            cur.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,))
            row = cur.fetchone()
            if row is None:
                raise NoSuchJob(job_id)
            return _row_to_job(row[0])
        return self._db.interaction(txn, write=False)

    def modify(self, job_id, fn):
        now = self._clock.seconds()

        def txn(cur):
            cur.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,))
            row = cur.fetchone()
            if row is None:
                raise NoSuchJob(job_id)
            old = _row_to_job(row[0])
            new = apply_change(old, fn(old), now)
            cur.execute(
                "UPDATE jobs SET job_state = ?, updated_at = ?, owner = ?, doc = ? WHERE job_id = ?",
                (new.job_state.value, new.updated_at, new.owner, json.dumps(new.to_dict()), job_id))
            return new
        return self._db.interaction(txn)

    def list(self, state=None, limit=50, cursor=None, owner=None):
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if state is not None:
            where.append("job_state = ?")
            args.append(JobState(state).value)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
            args += [created_at, created_at, job_id]
        sql = "SELECT doc FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, job_id DESC LIMIT ?"
        args.append(int(limit) + 1)

        def txn(cur):
            cur.execute(sql, args)
            jobs = [_row_to_job(r[0]) for r in cur.fetchall()]
            next_cursor = None
            if len(jobs) > limit:
                jobs = jobs[:limit]
                next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].job_id)
            return jobs, next_cursor
        return self._db.interaction(txn, write=False)

    def list_unfinished(self):
        def txn(cur):
            cur.execute(f"SELECT doc FROM jobs WHERE job_state NOT IN ({_FINAL_MARKS})"
                        " ORDER BY created_at, job_id", _FINAL)
            return [_row_to_job(r[0]) for r in cur.fetchall()]
        return self._db.interaction(txn, write=False)

    def count_unfinished(self, owner):
        def txn(cur):
            cur.execute(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND job_state NOT IN ({_FINAL_MARKS})",
                        (owner, *_FINAL))
            return cur.fetchone()[0]
        return self._db.interaction(txn, write=False)

    def count_by_state(self):
        def txn(cur):
            cur.execute("SELECT job_state, COUNT(*) FROM jobs GROUP BY job_state")
            return dict(cur.fetchall())
        return self._db.interaction(txn, write=False)

    def append_event(self, event):
        """Deferred[JobEvent|None]: ``event`` stored at its job's next
        ``seq`` (read and written in one transaction), or None when the
        log's bound drops it (``nommer.core.events.bounds``)."""
        def txn(cur):
            cur.execute("SELECT MAX(seq) FROM job_events WHERE job_id = ?", (event.job_id,))
            count = cur.fetchone()[0] or 0
            if not keeps(event.kind, count, self.max_events):
                return None
            stored = attr.evolve(event, seq=count + 1)
            cur.execute("INSERT INTO job_events (job_id, seq, doc) VALUES (?, ?, ?)",
                        (stored.job_id, stored.seq, json.dumps(stored.to_dict())))
            return stored
        return self._db.interaction(txn)

    def list_events(self, job_id, after_seq=0, limit=500):
        """Deferred[list[JobEvent]]: the job's events after ``after_seq``,
        ascending, at most ``limit``. ValueError for after_seq < 0 or limit < 1."""
        try:
            after_seq, limit = event_limit(after_seq, limit)
        except ValueError as exc:
            return defer.fail(exc)

        def txn(cur):
            cur.execute("SELECT doc FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                        (job_id, after_seq, limit))
            return [JobEvent.from_dict(json.loads(r[0])) for r in cur.fetchall()]
        return self._db.interaction(txn, write=False)

    def close(self):
        self._db.close()
