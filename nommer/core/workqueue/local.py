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
"""

import os
import threading
import uuid

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.sqlite import SQLiteDB
from nommer.core.workqueue.base import Message, ReceiptHandleInvalid, WorkQueue, redrive_policies

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        queue         TEXT NOT NULL,
        body          TEXT NOT NULL,
        sent_at       REAL NOT NULL,
        visible_at    REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt       TEXT)""",
    "CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_receipt ON messages (receipt)",
]


class _Abandoned(Exception):
    """A receive was cancelled before its look committed: roll it back."""


class LocalWorkQueue(WorkQueue):
    """Queues as rows of one SQLite file (``<DATA_DIR>/queue.sqlite``).

    ``redrive`` maps a queue name to its ``RedrivePolicy``; ``poll_interval_s``
    is how often an empty long-poll looks again (seconds).
    """

    log = Logger()

    def __init__(self, path, reactor, redrive=None, poll_interval_s=0.02, clock=None):
        self._db = SQLiteDB(path, SCHEMA, reactor)
        self._clock = clock or reactor
        self._redrive = dict(redrive or {})
        self._poll_interval_s = poll_interval_s

    @classmethod
    def from_settings(cls, settings, reactor):
        return cls(os.path.join(settings.DATA_DIR, "queue.sqlite"), reactor,
                   redrive=redrive_policies(settings),
                   poll_interval_s=settings.LOCAL_QUEUE_POLL_INTERVAL_S)

    def send(self, queue, body, delay_s=0):
        now = self._clock.seconds()

        def txn(cur):
            cur.execute("INSERT INTO messages (queue, body, sent_at, visible_at) VALUES (?, ?, ?, ?)",
                        (queue, body, now, now + delay_s))
            return str(cur.lastrowid)
        return self._db.interaction(txn)

    def _receive_once(self, queue, max_messages, visibility_timeout_s):
        policy = self._redrive.get(queue)
        lock = threading.Lock()
        state = {"cancelled": False, "got": None}

        def txn(cur):
            now = self._clock.seconds()  # with the write lock held (see the module docstring)
            got = []
            while len(got) < max_messages:
                cur.execute("SELECT id, body, receive_count, sent_at FROM messages"
                            " WHERE queue = ? AND visible_at <= ? ORDER BY id LIMIT ?",
                            (queue, now, max_messages - len(got)))
                rows = cur.fetchall()
                if not rows:
                    break
                for msg_id, body, count, sent_at in rows:
                    if policy is not None and count >= policy.max_receive_count:
                        cur.execute("UPDATE messages SET queue = ?, receive_count = 0, receipt = NULL,"
                                    " visible_at = ? WHERE id = ?",
                                    (policy.dead_letter_queue, now, msg_id))
                        continue
                    receipt = uuid.uuid4().hex
                    cur.execute("UPDATE messages SET receive_count = ?, receipt = ?, visible_at = ?"
                                " WHERE id = ?", (count + 1, receipt, now + visibility_timeout_s, msg_id))
                    got.append(Message(str(msg_id), receipt, body, count + 1, sent_at))
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
                self._release(queue, [m.receipt_handle for m in got])

        outer = defer.Deferred(cancel)

        def done(result):
            if not outer.called:
                outer.callback(result)  # a Failure errbacks
            elif isinstance(result, Failure) and not result.check(_Abandoned):
                self.log.failure("a cancelled receive on {queue} failed", result, queue=queue)
        self._db.interaction(txn).addBoth(done)
        return outer

    def _release(self, queue, receipts):
        """Make the messages of ``receipts`` visible now (best effort, logged)."""
        marks = ",".join("?" * len(receipts))

        def txn(cur):
            cur.execute(f"UPDATE messages SET visible_at = ? WHERE queue = ? AND receipt IN ({marks})",
                        (self._clock.seconds(), queue, *receipts))
        d = self._db.interaction(txn)
        d.addErrback(lambda f: self.log.failure("releasing {n} message(s) of a cancelled receive on {queue} "
                                                "failed", f, n=len(receipts), queue=queue))

    def _any_visible(self, queue):
        def txn(cur):
            cur.execute("SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1",
                        (queue, self._clock.seconds()))
            return cur.fetchone() is not None
        return self._db.interaction(txn, write=False)

    async def receive(self, queue, max_messages=1, visibility_timeout_s=30, wait_time_s=0):
        deadline = self._clock.seconds() + wait_time_s
        while True:
            got = []
            if await self._any_visible(queue):
                got = await self._receive_once(queue, max_messages, visibility_timeout_s)
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
