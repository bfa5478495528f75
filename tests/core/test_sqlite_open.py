"""Several connections opening one new SQLite file at once (feederd's store,
queue and registry pools, and its workers', all at start): none fails with
"database is locked" while the file is switched to WAL."""

import sqlite3
import threading

from twisted.internet import reactor

from nommer.core.sqlite import SQLiteDB

SCHEMA = ["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)"]
OPENERS = 8
ROUNDS = 40


def test_connections_opening_one_new_file_at_once(tmp_path):
    """Each connection runs SQLiteDB's open hook (the one adbapi calls) in its own
    thread, released together. Before the WAL switch was retried, 2 rounds in 30
    had an opener fail with "database is locked"."""
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"round{round_}.sqlite")
        db = SQLiteDB(path, SCHEMA, reactor)
        barrier = threading.Barrier(OPENERS)
        errors = []

        def opener():
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            try:
                barrier.wait()
                db._on_open(conn)
            except Exception as e:
                errors.append(repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=opener) for _ in range(OPENERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        db.close()
        assert errors == [], f"round {round_}: {errors}"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
