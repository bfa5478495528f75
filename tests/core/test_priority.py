"""Priorities (``nommer.core.priority``): the pure rules, the local queue's order and starvation
bound (aging), and SQS's priority bands on moto (a flood of low jobs, then a high one: the high one
is taken next; a band starved past its window is looked at first)."""

import os
import sqlite3

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.priority import (BANDS, DEFAULT_PRIORITY, NORMAL, band_of, band_order, band_queue, check_priority,
                                  overtaken_for_s, rank, starvation_window_s)
from nommer.core.workqueue import RedrivePolicy
from nommer.core.workqueue.local import LocalWorkQueue
from nommer.core.workqueue.sqs import SQSWorkQueue
from tests.aws_server import aws_settings, reset_moto
from tests.helpers import ensure

Q = "media_nommer"
DLQ = "media_nommer_dlq"


class RulesTests(TestCase):

    def test_bands(self):
        """high >= 70, normal 30..69, low < 30; the normal band is the pool's queue itself."""
        self.assertEqual([b.name for b in BANDS], ["high", "normal", "low"])
        self.assertEqual([band_of(p).name for p in (100, 70, 69, 50, 30, 29, 0, None)],
                         ["high", "high", "normal", "normal", "normal", "low", "low", "normal"])
        self.assertEqual([band_queue(Q, b) for b in BANDS], ["media_nommer_high", Q, "media_nommer_low"])
        self.assertEqual(check_priority(None), DEFAULT_PRIORITY)
        for bad in (101, -1, 5.5, True, "50"):
            with self.assertRaises(ValueError):
                check_priority(bad)

    def test_rank_is_effective_priority(self):
        """A smaller rank is a higher effective priority (priority + waited / aging), whatever now is."""
        aging = 10.0
        old_low, new_high = rank(1000.0, 0, aging), rank(1500.0, 100, aging)
        self.assertLess(new_high, old_low)          # waited 500 s = 50 points: still behind 100
        self.assertLess(rank(1000.0, 0, aging), rank(2000.1, 100, aging))  # waited > 1000 s: first
        self.assertEqual(overtaken_for_s(0, aging), 1000.0)
        self.assertEqual(overtaken_for_s(100, aging), 0.0)

    def test_band_order(self):
        """Highest band first, unless a lower band was not looked at for its window."""
        aging = 1.0
        self.assertEqual(starvation_window_s(BANDS[0], aging), 0)
        self.assertEqual(starvation_window_s(NORMAL, aging), 40)
        self.assertEqual(starvation_window_s(BANDS[2], aging), 70)
        now = 1000.0
        fresh = {"high": now, "normal": now - 39, "low": now - 69}
        self.assertEqual([b.name for b in band_order(fresh, now, aging)], ["high", "normal", "low"])
        self.assertEqual([b.name for b in band_order(dict(fresh, low=now - 70), now, aging)],
                         ["low", "high", "normal"])
        both = {"high": now, "normal": now - 100, "low": now - 80}
        self.assertEqual([b.name for b in band_order(both, now, aging)], ["normal", "low", "high"])


class LocalPriorityTests(TestCase):

    def make(self, aging_s=1.0, **kw):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        path = os.path.join(self.mktemp(), "queue.sqlite")
        queue = LocalWorkQueue(path, reactor, redrive={Q: RedrivePolicy(DLQ, 3)}, poll_interval_s=0.01,
                               clock=self.clock, aging_s=aging_s, **kw)
        self.addCleanup(queue.close)
        return queue, path

    @ensure
    async def test_flood_of_low_then_one_high_runs_next(self):
        """200 low jobs wait; a high one sent after them is received first, then the lows oldest first."""
        queue, _ = self.make(aging_s=30.0)
        for i in range(200):
            await queue.send(Q, f"low-{i}", priority=10)
        self.clock.advance(1)
        await queue.send(Q, "high", priority=90)
        [first] = await queue.receive(Q)
        self.assertEqual((first.body, first.queue), ("high", Q))
        got = await queue.receive(Q, max_messages=3)
        self.assertEqual([m.body for m in got], ["low-0", "low-1", "low-2"])

    @ensure
    async def test_starvation_bound_under_sustained_high_load(self):
        """Each second a priority-100 job arrives and one job is taken, so a high job is always
        waiting: a priority-0 job is overtaken, but taken within (100 - 0) * PRIORITY_AGING_S."""
        aging = 1.0
        queue, _ = self.make(aging_s=aging)
        sent_at = self.clock.seconds()
        await queue.send(Q, "low", priority=0)
        taken_at = None
        for _ in range(300):
            self.clock.advance(1)
            await queue.send(Q, "high", priority=100)
            [m] = await queue.receive(Q, visibility_timeout_s=3600)
            if m.body == "low":
                taken_at = self.clock.seconds()
                break
        self.assertIsNotNone(taken_at, "the low job starved")
        waited = taken_at - sent_at
        self.assertGreater(waited, 50)  # the high ones did go first for a while
        self.assertLessEqual(waited, overtaken_for_s(0, aging))

    @ensure
    async def test_receive_over_several_queues(self):
        """A worker of two pools gets their messages in one order (priority, then age), each naming its queue."""
        queue, _ = self.make(aging_s=30.0)
        await queue.send("a", "a-normal")
        await queue.send("b", "b-high", priority=95)
        await queue.send("c", "c-high", priority=100)   # a pool this worker does not serve
        got = await queue.receive(["a", "b"], max_messages=5)
        self.assertEqual([(m.body, m.queue) for m in got], [("b-high", "b"), ("a-normal", "a")])
        await queue.delete(got[0].queue, got[0].receipt_handle)
        self.assertEqual((await queue.depth("b"))["in_flight"], 0)
        self.assertEqual([m.body for m in await queue.receive("c")], ["c-high"])

    @ensure
    async def test_bad_priority_refused(self):
        queue, _ = self.make()
        with self.assertRaises(ValueError):
            await queue.send(Q, "x", priority=101)

    @ensure
    async def test_queue_file_from_before_priorities(self):
        """A queue file without the rank column gets it (its messages ranked as priority 50)."""
        path = os.path.join(self.mktemp(), "queue.sqlite")
        os.makedirs(os.path.dirname(path))
        conn = sqlite3.connect(path)
        conn.execute("""CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL,
                        body TEXT NOT NULL, sent_at REAL NOT NULL, visible_at REAL NOT NULL,
                        receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT)""")
        conn.execute("INSERT INTO messages (queue, body, sent_at, visible_at) VALUES (?, 'old', ?, ?)",
                     (Q, 1_700_000_000.0, 1_700_000_000.0))
        conn.commit()
        conn.close()
        clock = task.Clock()
        clock.advance(1_700_000_010)
        queue = LocalWorkQueue(path, reactor, clock=clock, aging_s=1.0)
        self.addCleanup(queue.close)
        await queue.send(Q, "later-normal")                 # sent 10 s later, same priority: after it
        await queue.send(Q, "later-high", priority=100)     # 50 points more than 10 s of waiting: before it
        got = await queue.receive(Q, max_messages=3)
        self.assertEqual([m.body for m in got], ["later-high", "old", "later-normal"])


class SQSPriorityTests(TestCase):
    """The SQS backend with the default pool's queue split in bands, on moto."""

    timeout = 60

    def setUp(self):
        reset_moto()
        self.settings, _ = aws_settings(self)
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)

    def make(self, banded=(Q,), aging_s=1.0):
        redrive = {band_queue(q, b): RedrivePolicy(DLQ, 3) for q in banded for b in BANDS}
        queue = SQSWorkQueue(self.settings, reactor, redrive=redrive, clock=self.clock, banded=banded,
                             aging_s=aging_s)
        self.addCleanup(queue.close)
        return queue

    @ensure
    async def test_flood_of_low_then_one_high_runs_next(self):
        """30 low jobs in the low band, then a high one: the next receive takes the high one from
        media_nommer_high; depth sums the bands; a lease on a band message works through its queue."""
        queue = self.make()
        await queue.send_batch(Q, [f"low-{i}" for i in range(30)], priority=10)
        await queue.send(Q, "normal")
        await queue.send(Q, "high", priority=90)
        self.assertEqual((await queue.depth(Q))["visible"], 32)
        [m] = await queue.receive(Q, visibility_timeout_s=30)
        self.assertEqual((m.body, m.queue), ("high", "media_nommer_high"))
        await queue.change_visibility(m.queue, m.receipt_handle, 60)
        await queue.delete(m.queue, m.receipt_handle)
        [n] = await queue.receive(Q, visibility_timeout_s=30)
        self.assertEqual((n.body, n.queue), ("normal", Q))
        [low] = await queue.receive(Q, visibility_timeout_s=30)
        self.assertEqual(low.queue, "media_nommer_low")
        self.assertEqual((await queue.depth(Q)), {"visible": 29, "in_flight": 2, "delayed": 0})

    @ensure
    async def test_starved_band_is_looked_at_first_after_its_window(self):
        """High jobs keep coming; once the low band has not been looked at for its window (70 s at
        PRIORITY_AGING_S = 1), a receive takes from it first; then high goes first again."""
        queue = self.make()
        await queue.send(Q, "low", priority=0)
        for i in range(4):
            await queue.send(Q, f"high-{i}", priority=100)
        [first] = await queue.receive(Q, visibility_timeout_s=600)
        self.assertTrue(first.body.startswith("high"))
        self.clock.advance(69)
        [second] = await queue.receive(Q, visibility_timeout_s=600)
        self.assertTrue(second.body.startswith("high"), second)
        self.clock.advance(1)
        [third] = await queue.receive(Q, visibility_timeout_s=600)
        self.assertEqual(third.body, "low")
        [fourth] = await queue.receive(Q, visibility_timeout_s=600)
        self.assertTrue(fourth.body.startswith("high"))

    @ensure
    async def test_pools_queues_are_separate(self):
        """A worker of the gpu pool receives gpu jobs only; one of both pools gets both."""
        gpu = "media_nommer_gpu"
        queue = self.make(banded=(Q, gpu))
        await queue.send(Q, "cpu-job")
        await queue.send(gpu, "gpu-job", priority=80)
        [m] = await queue.receive(gpu, visibility_timeout_s=30)
        self.assertEqual((m.body, m.queue), ("gpu-job", "media_nommer_gpu_high"))
        self.assertEqual(await queue.receive(gpu), [])
        [c] = await queue.receive([gpu, Q], visibility_timeout_s=30)
        self.assertEqual((c.body, c.queue), ("cpu-job", Q))
