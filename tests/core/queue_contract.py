"""The WorkQueue contract: mixed into one TestCase per backend.

A backend test case provides ``make_queue(clock, redrive)`` returning a fresh,
empty queue whose times come from ``clock``, and may override ``advance(s)``:
let ``s`` seconds pass for the queue, returning a Deferred. The default
advances the test's ``task.Clock``; a queue keeping real time (SQS) waits on
the reactor instead. So that both work, times are small whole seconds (SQS
visibility timeouts and delays are whole seconds), and each check is placed so
that real latencies only add margin: "still hidden" is checked at least a
second before the deadline, "visible again" after the whole timeout has been
advanced past the call that set it. Long-poll waits use the real reactor (a
message sent meanwhile ends the wait).
"""

from twisted.internet import defer, reactor, task

from nommer.core.workqueue import ReceiptHandleInvalid, RedrivePolicy
from tests.helpers import ensure

Q = "media_nommer"
DLQ = "media_nommer_dlq"


class WorkQueueContract:

    #: SQS moves a message to the dead-letter queue with its receive count
    #: (its first receive there is maxReceiveCount + 1); the local queue restarts at 1.
    dead_letter_keeps_receive_count = False

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.queue = self.make_queue(self.clock, {Q: RedrivePolicy(DLQ, 3)})
        self.addCleanup(self.queue.close)

    def advance(self, seconds):
        """Let ``seconds`` pass for ``self.queue`` (Deferred)."""
        self.clock.advance(seconds)
        return defer.succeed(None)

    @ensure
    async def test_send_receive_fifo(self):
        """Messages come back oldest first with a receive count of 1."""
        for body in ("a", "b", "c"):
            await self.queue.send(Q, body)
        got = await self.queue.receive(Q, max_messages=2, visibility_timeout_s=30)
        self.assertEqual([m.body for m in got], ["a", "b"])
        self.assertEqual([m.receive_count for m in got], [1, 1])
        self.assertEqual(len({m.receipt_handle for m in got}), 2)

    @ensure
    async def test_received_message_is_invisible_until_timeout(self):
        """A leased message is hidden for the visibility timeout, then redelivered
        with a new receipt and a higher receive count."""
        await self.queue.send(Q, "job1")
        [first] = await self.queue.receive(Q, visibility_timeout_s=2)
        self.assertEqual(await self.queue.receive(Q, visibility_timeout_s=2), [])
        await self.advance(1)
        self.assertEqual(await self.queue.receive(Q, visibility_timeout_s=2), [])
        await self.advance(1)
        [again] = await self.queue.receive(Q, visibility_timeout_s=2)
        self.assertEqual(again.body, "job1")
        self.assertEqual(again.receive_count, 2)
        self.assertNotEqual(again.receipt_handle, first.receipt_handle)

    @ensure
    async def test_extend_lease(self):
        """change_visibility pushes the reappearance back."""
        await self.queue.send(Q, "job1")
        [m] = await self.queue.receive(Q, visibility_timeout_s=2)
        await self.advance(1)
        await self.queue.change_visibility(Q, m.receipt_handle, 2)
        await self.advance(1)
        self.assertEqual(await self.queue.receive(Q), [])  # the first lease would have ended here
        await self.advance(1)
        self.assertEqual(len(await self.queue.receive(Q)), 1)

    @ensure
    async def test_release_with_zero_visibility(self):
        """change_visibility(0) hands the message back at once."""
        await self.queue.send(Q, "job1")
        [m] = await self.queue.receive(Q, visibility_timeout_s=60)
        await self.queue.change_visibility(Q, m.receipt_handle, 0)
        [again] = await self.queue.receive(Q)
        self.assertEqual(again.body, "job1")

    @ensure
    async def test_stale_receipt_refused(self):
        """After redelivery the old receipt can neither extend nor delete."""
        await self.queue.send(Q, "job1")
        [old] = await self.queue.receive(Q, visibility_timeout_s=1)
        await self.advance(1)
        [new] = await self.queue.receive(Q, visibility_timeout_s=1)
        with self.assertRaises(ReceiptHandleInvalid):
            await self.queue.change_visibility(Q, old.receipt_handle, 30)
        with self.assertRaises(ReceiptHandleInvalid):
            await self.queue.delete(Q, old.receipt_handle)
        await self.queue.delete(Q, new.receipt_handle)
        await self.advance(1)  # past the new lease: only a deleted message stays away
        self.assertEqual(await self.queue.receive(Q), [])

    @ensure
    async def test_delay(self):
        """A message sent with a delay stays hidden until then."""
        await self.queue.send(Q, "later", delay_s=1)
        self.assertEqual(await self.queue.receive(Q), [])
        self.assertEqual((await self.queue.depth(Q))["delayed"], 1)
        await self.advance(1)
        self.assertEqual([m.body for m in await self.queue.receive(Q)], ["later"])

    @ensure
    async def test_dead_letter_after_max_receives(self):
        """The fourth receive of a message with maxReceiveCount 3 moves it to the DLQ."""
        await self.queue.send(Q, "poison")
        for attempt in (1, 2, 3):
            [m] = await self.queue.receive(Q, visibility_timeout_s=1)
            self.assertEqual(m.receive_count, attempt)
            await self.advance(1)
        self.assertEqual(await self.queue.receive(Q), [])
        self.assertEqual(await self.queue.depth(Q), {"visible": 0, "in_flight": 0, "delayed": 0})
        [dead] = await self.queue.receive(DLQ)
        self.assertEqual(dead.body, "poison")
        self.assertEqual(dead.receive_count, 4 if self.dead_letter_keeps_receive_count else 1)

    @ensure
    async def test_queues_are_separate_and_depth(self):
        """Queues do not see each other's messages; depth counts visible and in flight."""
        await self.queue.send(Q, "a")
        await self.queue.send(Q, "b")
        await self.queue.send("other", "x")
        await self.queue.receive(Q, visibility_timeout_s=30)
        self.assertEqual(await self.queue.depth(Q), {"visible": 1, "in_flight": 1, "delayed": 0})
        self.assertEqual([m.body for m in await self.queue.receive("other")], ["x"])

    @ensure
    async def test_long_poll_returns_when_a_message_arrives(self):
        """A receive waiting up to 30 s returns as soon as a message is sent."""
        queue = self.make_queue(reactor, {})
        self.addCleanup(queue.close)
        waiting = defer.Deferred.fromCoroutine(queue.receive(Q, wait_time_s=30))
        self.assertFalse(waiting.called)
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(waiting.called)
        await queue.send(Q, "now")
        got = await waiting
        self.assertEqual([m.body for m in got], ["now"])
