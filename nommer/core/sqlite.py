"""A SQLite database reached through Twisted's ``adbapi`` pool.

Every query runs in the pool's single thread, never on the reactor thread.
Several processes (feederd and its workers) share one file: WAL journaling
lets readers run beside the writer, and writers wait up to ``busy_timeout_s``
for each other. Read-modify-write interactions start with ``BEGIN IMMEDIATE``
so two processes cannot both read, then both write.
"""

import os
import sqlite3

from twisted.enterprise import adbapi
from twisted.internet import defer

from nommer.core.retry import retry_sync

#: Pause between two tries at switching a file to WAL while it is locked, seconds.
WAL_RETRY_S = 0.01


class SQLiteDB:
    """One SQLite file and the thread that talks to it.

    ``schema`` is a list of idempotent DDL statements run once at open.
    ``interaction(fn, *args)`` runs ``fn(cursor, *args)`` in one transaction
    and returns a Deferred of its result; an exception rolls it back.
    """

    def __init__(self, path, schema, reactor, busy_timeout_s=30.0):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._schema = list(schema)
        self._busy_timeout_s = busy_timeout_s
        self._closed = False
        self._pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, isolation_level=None,
            timeout=busy_timeout_s, cp_min=1, cp_max=1, cp_noisy=False,
            cp_openfun=self._on_open, cp_reactor=reactor)

    def _on_open(self, conn):
        self._use_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in self._schema:
            conn.execute(statement)

    def _use_wal(self, conn):
        """Put the file in WAL mode (it stays so: later opens only check).
        Switching the journal mode can fail at once with "database is locked"
        while another connection opens the same file (SQLite does not call the
        busy handler for it), so it is retried for up to ``busy_timeout_s``
        seconds, in the pool's thread, every WAL_RETRY_S."""
        def switch():
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")

        retry_sync(switch, backoff_s=WAL_RETRY_S, max_backoff_s=WAL_RETRY_S, deadline_s=self._busy_timeout_s,
                   retry_on=lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e))

    def interaction(self, fn, *args, write=True):
        """Run ``fn(cursor, *args)`` in one transaction (``BEGIN IMMEDIATE`` when
        ``write``, so the write lock is taken before anything is read). Fails
        with ``DatabaseClosed`` once ``close()`` was called."""
        if self._closed:
            return defer.fail(DatabaseClosed(f"{self.path} is closed"))

        def run(txn):
            cursor = txn  # adbapi's Transaction proxies the DB-API cursor
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(cursor, *args)
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            return result
        return self._pool.runInteraction(run)

    def close(self):
        if not self._closed:
            self._closed = True
            self._pool.close()


class DatabaseClosed(Exception):
    """A query on a database that was closed (daemon shutting down)."""


IntegrityError = sqlite3.IntegrityError
