"""WorkerRegistry on the job store's SQLite file (``<DATA_DIR>/jobs.sqlite``).

Table ``workers``: ``worker_id`` TEXT PRIMARY KEY, ``last_seen`` REAL (epoch
seconds, indexed: ``list`` and ``forget_older_than`` read it), ``doc`` TEXT
(``WorkerRecord.to_dict()`` as JSON: lists, None and floats round-trip exactly).
"""

import json
import os

from nommer.core.worker_registry.base import WorkerRecord, WorkerRegistry
from nommer.core.sqlite import SQLiteDB

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS workers (
        worker_id TEXT PRIMARY KEY,
        last_seen REAL NOT NULL,
        doc       TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS workers_by_last_seen ON workers (last_seen DESC, worker_id)",
]


def _record(doc):
    return WorkerRecord.from_dict(json.loads(doc))


class SQLiteWorkerRegistry(WorkerRegistry):
    """Worker records in the ``workers`` table of the SQLite file at ``path``
    (its own ``SQLiteDB`` pool beside the job store's; WAL lets both, and the
    workers' processes, share the file). Every method returns a Deferred (see
    ``WorkerRegistry``); a closed registry fails with ``DatabaseClosed``.
    ``list`` orders ties of ``last_seen`` by worker_id."""

    def __init__(self, path, reactor):
        self._db = SQLiteDB(path, SCHEMA, reactor)

    @classmethod
    def from_settings(cls, settings, reactor):
        """On the job store's file, ``<DATA_DIR>/jobs.sqlite``."""
        return cls(os.path.join(settings.DATA_DIR, "jobs.sqlite"), reactor)

    def heartbeat(self, record):
        def txn(cur):
            cur.execute("INSERT OR REPLACE INTO workers (worker_id, last_seen, doc) VALUES (?, ?, ?)",
                        (record.worker_id, float(record.last_seen), json.dumps(record.to_dict())))
        return self._db.interaction(txn)

    def get(self, worker_id):
        def txn(cur):
            cur.execute("SELECT doc FROM workers WHERE worker_id = ?", (worker_id,))
            row = cur.fetchone()
            if row is None:
                raise KeyError(worker_id)
            return _record(row[0])
        return self._db.interaction(txn, write=False)

    def list(self):
        def txn(cur):
            cur.execute("SELECT doc FROM workers ORDER BY last_seen DESC, worker_id")
            return [_record(row[0]) for row in cur.fetchall()]
        return self._db.interaction(txn, write=False)

    def remove(self, worker_id):
        def txn(cur):
            cur.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
        return self._db.interaction(txn)

    def forget_older_than(self, t):
        def txn(cur):
            cur.execute("DELETE FROM workers WHERE last_seen < ?", (float(t),))
            return cur.rowcount
        return self._db.interaction(txn)

    def close(self):
        self._db.close()
