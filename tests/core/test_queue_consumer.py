"""QueueConsumer leases: a message being handled stays invisible however long
its handler takes (the lease is extended), and comes back one visibility
timeout after its consumer stopped extending it (a daemon killed outright)."""

import os
import sqlite3

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.workqueue.local import LocalWorkQueue
from nommer.core.workqueue.consumer import QueueConsumer
from tests.helpers import ensure

QUEUE = "changes"


class Held(QueueConsumer):
    """Handles each message by waiting until the test releases it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handled = []
        self.release = defer.Deferred()

    def handle(self, message):
        self.handled.append(message.body)
        return self.release


class ConsumerLeaseTests(TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.path = path = os.path.join(self.mktemp(), "queue.sqlite")
        self.queue = LocalWorkQueue(path, reactor, clock=self.clock)
        self.addCleanup(self.queue.close)

    async def depth(self):
        return await self.queue.depth(QUEUE)

    def receive_count(self):
        """How many times the queue handed the message out (SQS's ApproximateReceiveCount)."""
        with sqlite3.connect(self.path) as db:
            (count,) = db.execute("SELECT receive_count FROM messages WHERE queue = ?", (QUEUE,)).fetchone()
        return count

    async def advance(self, seconds, step=1.0):
        """Move the fake clock in steps, letting the SQLite thread answer between them."""
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            await task.deferLater(reactor, 0.005)

    async def until(self, check, what):
        for _ in range(400):
            if await check():
                return
            await self.advance(0.1, step=0.1)
        self.fail(f"never: {what}")

    @ensure
    async def test_lease_extended_while_handling_then_deleted(self):
        await self.queue.send(QUEUE, "change-1")
        consumer = Held(self.queue, QUEUE, self.clock, visibility_timeout_s=60.0, wait_time_s=0.5)
        consumer.startService()
        await self.until(lambda: defer.succeed(consumer.handled == ["change-1"]), "the message handled")
        # Ten visibility timeouts later the message is still held, never handed out again.
        await self.advance(600.0, step=5.0)
        self.assertEqual(await self.depth(), {"visible": 0, "in_flight": 1, "delayed": 0})
        self.assertEqual(self.receive_count(), 1, "the lease ran out and the message was handed out again")
        self.assertEqual(consumer.handled, ["change-1"])
        consumer.release.callback(None)

        async def gone():
            d = await self.depth()
            return d["visible"] + d["in_flight"] == 0
        await self.until(gone, "the message deleted")
        await consumer.stopService()

    @ensure
    async def test_killed_consumer_holds_a_message_one_visibility_timeout(self):
        await self.queue.send(QUEUE, "change-1")
        consumer = Held(self.queue, QUEUE, self.clock, visibility_timeout_s=60.0, wait_time_s=0.5)
        consumer.startService()
        await self.until(lambda: defer.succeed(consumer.handled == ["change-1"]), "the message handled")
        # "Killed": it stops extending and never releases (no stopService).
        consumer.leases.stop()
        consumer.running = False
        if consumer._waiting is not None:
            consumer._waiting.cancel()
        await self.advance(55.0)
        self.assertEqual((await self.depth())["visible"], 0)
        await self.advance(25.0)
        self.assertEqual((await self.depth())["visible"], 1, "not back after the visibility timeout")
