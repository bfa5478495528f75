"""WorkQueue on SQLite with SQS semantics, for one machine.

Long polling: an empty ``receive`` looks again every
LOCAL_QUEUE_POLL_INTERVAL_S (on the injected clock, never sleeping a thread)
until ``wait_time_s`` runs out, so an idle worker picks a new job up within
that interval. Each look is one indexed query in the DB thread, read-only
(WAL readers never wait for a writer) unless a message is visible: an idle
poller never takes the write lock, so many idle workers do not contend for
it, and a consumer with nothing to receive stays responsive while another
process holds the file locked.

Times (visibility, leases) are read from the clock inside the transaction,
once the write lock is held: a transaction that waited for the lock (another
process writing, or holding the file locked) must not grant a lease that
already ran out while it waited.

Cancelling a ``receive`` cannot stop a look already running in the DB thread;
messages that look leases for a receiver that is gone are released at once
(visible again), not left invisible for their whole visibility timeout.

Priorities (``nommer.core.priority``): each message has a ``rank``,
``sent_at - priority * aging_s`` (PRIORITY_AGING_S), fixed at send; a
receive hands out the visible messages of smallest rank first (highest
effective priority, then oldest), in one indexed query, from one queue or
several (a worker serving several pools). A file made before ``rank``
existed gets the column when first opened (``add_rank_column``), its
messages ranked as priority 50.
"""

import os
import threading
import uuid

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.priority import DEFAULT_PRIORITY, rank
from nommer.core.sqlite import SQLiteDB
from nommer.core.workqueue.base import Message, ReceiptHandleInvalid, WorkQueue, queue_names, redrive_policies

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        queue         TEXT NOT NULL,
        body          TEXT NOT NULL,
        sent_at       REAL NOT NULL,
        visible_at    REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt       TEXT,
        rank          REAL)""",
    "CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt)",
]

#: Made by ``add_rank_column`` once the ``rank`` column exists.
RANK_INDEX = "CREATE INDEX IF NOT EXISTS messages_rank ON messages (queue, rank, id)"
#: Default PRIORITY_AGING_S, seconds per priority point.
DEFAULT_AGING_S = 30.0


def add_rank_column(conn, aging_s):
    """Schema migration, run on each connection after ``SCHEMA``: a
    ``messages`` table made before priorities gets the ``rank`` column, its
    messages ranked as priority 50 (``sent_at - 50 * aging_s``), and the
    index. Under ``BEGIN IMMEDIATE``, so processes opening one old file at
    once add it once."""
    def columns():
        return {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    if "rank" not in columns():
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "rank" not in columns():
                conn.execute("ALTER TABLE messages ADD COLUMN rank REAL")
                conn.execute("UPDATE messages SET rank = sent_at - ? WHERE rank IS NULL",
                             (DEFAULT_PRIORITY * aging_s,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    conn.execute(RANK_INDEX)


class _QueueDB(SQLiteDB):
    """The queue file: ``SCHEMA``, then ``add_rank_column``, at each open."""

    def __init__(self, path, reactor, aging_s):
        self._aging_s = aging_s
        super().__init__(path, SCHEMA, reactor)

    def _on_open(self, conn):
        super()._on_open(conn)
        add_rank_column(conn, self._aging_s)


class _Abandoned(Exception):
    """A receive was cancelled before its look committed: roll it back."""


class LocalWorkQueue(WorkQueue):
    """Queues as rows of one SQLite file (``<DATA_DIR>/queue.sqlite``).

    ``redrive`` maps a queue name to its ``RedrivePolicy``; ``poll_interval_s``
    is how often an empty long-poll looks again (seconds); ``aging_s`` is
    PRIORITY_AGING_S (seconds a waiting message takes to gain one priority
    point; see the module docstring).
    """

    log = Logger()

    def __init__(self, path, reactor, redrive=None, poll_interval_s=0.02, clock=None, aging_s=DEFAULT_AGING_S):
        self._db = _QueueDB(path, reactor, aging_s)
        self._clock = clock or reactor
        self._redrive = dict(redrive or {})
        self._poll_interval_s = poll_interval_s
        self._aging_s = aging_s

    @classmethod
    def from_settings(cls, settings, reactor):
        return cls(os.path.join(settings.DATA_DIR, "queue.sqlite"), reactor,
                   redrive=redrive_policies(settings),
                   poll_interval_s=settings.LOCAL_QUEUE_POLL_INTERVAL_S,
                   aging_s=settings.PRIORITY_AGING_S)

    def send(self, queue, body, delay_s=0, priority=None):
        """Queue ``body`` (str), visible after ``delay_s`` seconds, ranked by
        ``priority`` (0..100; None: 50; ValueError otherwise). Deferred of
        the message id."""
        now = self._clock.seconds()
        position = rank(now, priority, self._aging_s)

        def txn(cur):
            cur.execute("INSERT INTO messages (queue, body, sent_at, visible_at, rank) VALUES (?, ?, ?, ?, ?)",
                        (queue, body, now, now + delay_s, position))
            return str(cur.lastrowid)
        return self._db.interaction(txn)

    def _receive_once(self, queues, max_messages, visibility_timeout_s):
        marks = ",".join("?" * len(queues))
        lock = threading.Lock()
        state = {"cancelled": False, "got": None}

        def txn(cur):
            now = self._clock.seconds()  # with the write lock held (see the module docstring)
            got = []
            while len(got) < max_messages:
                cur.execute("SELECT id, queue, body, receive_count, sent_at FROM messages"
                            f" WHERE queue IN ({marks}) AND visible_at <= ? ORDER BY rank, id LIMIT ?",
                            (*queues, now, max_messages - len(got)))
                rows = cur.fetchall()
                if not rows:
                    break
                for msg_id, queue, body, count, sent_at in rows:
                    policy = self._redrive.get(queue)
                    if policy is not None and count >= policy.max_receive_count:
                        cur.execute("UPDATE messages SET queue = ?, receive_count = 0, receipt = NULL,"
                                    " visible_at = ? WHERE id = ?",
                                    (policy.dead_letter_queue, now, msg_id))
                        continue
                    receipt = uuid.uuid4().hex
                    cur.execute("UPDATE messages SET receive_count = ?, receipt = ?, visible_at = ?"
                                " WHERE id = ?", (count + 1, receipt, now + visibility_timeout_s, msg_id))
                    got.append(Message(str(msg_id), receipt, body, count + 1, sent_at, queue))
            with lock:
                if state["cancelled"] and got:
                    raise _Abandoned()  # rolled back: nobody is waiting for these
                state["got"] = got
            return got

        def cancel(_):
            # Runs on the reactor thread; the Deferred then fails with CancelledError.
            with lock:
                state["cancelled"] = True
                got = state["got"]
            if got:  # leased (committed, or about to be) for nobody: release them
                self._release(queues, [m.receipt_handle for m in got])

        outer = defer.Deferred(cancel)

        def done(result):
            if not outer.called:
                outer.callback(result)  # a Failure errbacks
            elif isinstance(result, Failure) and not result.check(_Abandoned):
                self.log.failure("a cancelled receive on {queue} failed", result, queue=",".join(queues))
        self._db.interaction(txn).addBoth(done)
        return outer

    def _release(self, queues, receipts):
        """Make the messages of ``receipts`` visible now (best effort, logged)."""
        marks = ",".join("?" * len(receipts))

        def txn(cur):
            cur.execute(f"UPDATE messages SET visible_at = ? WHERE receipt IN ({marks})",
                        (self._clock.seconds(), *receipts))
        d = self._db.interaction(txn)
        d.addErrback(lambda f: self.log.failure("releasing {n} message(s) of a cancelled receive on {queue} "
                                                "failed", f, n=len(receipts), queue=",".join(queues)))

    def _any_visible(self, queues):
        marks = ",".join("?" * len(queues))

        def txn(cur):
            cur.execute(f"SELECT 1 FROM messages WHERE queue IN ({marks}) AND visible_at <= ? LIMIT 1",
                        (*queues, self._clock.seconds()))
            return cur.fetchone() is not None
        return self._db.interaction(txn, write=False)

    async def receive(self, queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0):
        """Up to ``max_messages`` visible messages of ``queue`` (a name or a
        list of names), smallest rank first (see the module docstring), each
        leased for ``visibility_timeout_s`` seconds; waits up to
        ``wait_time_s`` for one. Each Message names its queue."""
        queues = queue_names(queue)
        deadline = self._clock.seconds() + wait_time_s
        while True:
            got = []
            if await self._any_visible(queues):
                got = await self._receive_once(queues, max_messages, visibility_timeout_s)
            if got or self._clock.seconds() >= deadline:
                return got
            await task.deferLater(self._clock, min(self._poll_interval_s,
                                                   max(0.0, deadline - self._clock.seconds())))

    def change_visibility(self, queue, receipt_handle, visibility_timeout_s):
        def txn(cur):
            now = self._clock.seconds()  # with the write lock held (see the module docstring)
            cur.execute("UPDATE messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                        (now + visibility_timeout_s, queue, receipt_handle))
            if cur.rowcount != 1:
                raise ReceiptHandleInvalid(receipt_handle)
        return self._db.interaction(txn)

    def delete(self, queue, receipt_handle):
        def txn(cur):
            cur.execute("DELETE FROM messages WHERE queue = ? AND receipt = ?", (queue, receipt_handle))
            if cur.rowcount != 1:
                raise ReceiptHandleInvalid(receipt_handle)
        return self._db.interaction(txn)

    def depth(self, queue):
        now = self._clock.seconds()

        def txn(cur):
            cur.execute(
                "SELECT"
                " COALESCE(SUM(visible_at <= ?), 0),"
                " COALESCE(SUM(visible_at > ? AND receipt IS NOT NULL), 0),"
                " COALESCE(SUM(visible_at > ? AND receipt IS NULL), 0)"
                " FROM messages WHERE queue = ?", (now, now, now, queue))
            visible, in_flight, delayed = cur.fetchone()
            return {"visible": visible, "in_flight": in_flight, "delayed": delayed}
        return self._db.interaction(txn, write=False)

    def close(self):
        self._db.close()
