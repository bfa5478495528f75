"""LeaseKeeper: leases extended every third of the visibility timeout on a
fake clock, beats and lost leases, releases, deletes retried with backoff,
and nothing escaping the periodic extension."""

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from nommer.core.workqueue import ReceiptHandleInvalid
from nommer.core.workqueue.base import Message
from nommer.core.retry import pause_s
from nommer.core.workqueue.lease import MAX_DELETE_BACKOFF_S, LeaseKeeper, extend_every_s

QUEUE = "jobs"


def message(message_id="m-1", receipt="r-1"):
    return Message(message_id=message_id, receipt_handle=receipt, body="job-1", receive_count=1, sent_at=0.0)


class FakeQueue:
    """Records ``(operation, receipt, argument)`` calls; ``fail[operation]``
    is a list of exceptions the next calls raise (None: succeed);
    ``hold_answers`` makes calls wait until the test fires ``pending``."""

    def __init__(self):
        self.calls = []
        self.fail = {"change_visibility": [], "delete": []}
        self.hold_answers = False
        self.pending = []

    def _answer(self, operation):
        errors = self.fail[operation]
        error = errors.pop(0) if errors else None
        if self.hold_answers:
            d = defer.Deferred()
            self.pending.append(d)
            return d.addCallback(lambda _: self._raise(error))
        return defer.maybeDeferred(self._raise, error)

    @staticmethod
    def _raise(error):
        if error is not None:
            raise error

    def change_visibility(self, queue, receipt_handle, visibility_timeout_s):
        assert queue == QUEUE
        self.calls.append(("change_visibility", receipt_handle, visibility_timeout_s))
        return self._answer("change_visibility")

    def delete(self, queue, receipt_handle):
        assert queue == QUEUE
        self.calls.append(("delete", receipt_handle, None))
        return self._answer("delete")


class LeaseArithmeticTests(SynchronousTestCase):
    """The pure parts."""

    def test_extend_every_third(self):
        """A lease is extended every third of its visibility timeout."""
        self.assertEqual(extend_every_s(60.0), 20.0)
        self.assertEqual(extend_every_s(0.6), 0.6 / 3)

    def test_delete_backoff_doubles_up_to_the_cap(self):
        """The pause between failed deletes doubles, capped at MAX_DELETE_BACKOFF_S."""
        # The pause after the second failed delete (LeaseKeeper.delete's retry).
        self.assertEqual(pause_s(2, 1.0, MAX_DELETE_BACKOFF_S), 2.0)
        self.assertEqual(pause_s(2, 20.0, MAX_DELETE_BACKOFF_S), MAX_DELETE_BACKOFF_S)
        self.assertEqual(pause_s(2, 3.0, 5.0), 5.0)


class LeaseKeeperTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.queue = FakeQueue()
        self.events = []
        self.keeper = self.make()

    def make(self, **kwargs):
        keeper = LeaseKeeper(self.queue, QUEUE, self.clock, 60.0, **kwargs)
        keeper.log = Logger(observer=self.events.append)
        return keeper

    def extensions(self):
        return [c for c in self.queue.calls if c[0] == "change_visibility" and c[2] == 60.0]

    def failures(self):
        return [e for e in self.events if "log_failure" in e]

    def test_extended_every_third_of_the_timeout_from_hold(self):
        """The first extension comes a third of the visibility timeout after hold, then one each third."""
        self.clock.advance(7.0)
        self.assertTrue(self.keeper.hold(message()))
        self.clock.advance(19.9)
        self.assertEqual(self.extensions(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.extensions(), [("change_visibility", "r-1", 60.0)])
        self.clock.pump([20.0, 20.0])
        self.assertEqual(len(self.extensions()), 3)

    def test_interval_given(self):
        """interval_s overrides the third (the worker beats every HEARTBEAT_INTERVAL_S)."""
        keeper = self.make(interval_s=5.0)
        keeper.hold(message())
        self.clock.pump([5.0, 5.0, 5.0])
        self.assertEqual(len(self.extensions()), 3)

    def test_beat_after_each_extension(self):
        """on_beat runs after each extension, awaited when it returns a Deferred."""
        beats = []
        self.keeper.hold(message(), on_beat=lambda: beats.append(self.clock.seconds()) or defer.succeed(None))
        self.clock.advance(20.0)
        self.clock.advance(20.0)
        self.assertEqual(beats, [20.0, 40.0])

    def test_lost_lease_calls_on_lost_not_on_beat_and_goes_on(self):
        """A receipt no longer current calls on_lost instead of on_beat; the next beat still comes."""
        beats, lost = [], []
        self.queue.fail["change_visibility"] = [ReceiptHandleInvalid("gone")]
        self.keeper.hold(message(), on_beat=lambda: beats.append(1), on_lost=lambda: lost.append(1))
        self.clock.advance(20.0)
        self.assertEqual((beats, lost), ([], [1]))
        self.clock.advance(20.0)
        self.assertEqual((beats, lost), ([1], [1]))
        self.assertEqual(self.failures(), [])

    def test_failed_extension_logged_with_context_and_beat_still_runs(self):
        """A queue failure while extending is logged with the message, queue and caller's fields;
        the beat runs and the loop goes on."""
        beats = []
        self.queue.fail["change_visibility"] = [RuntimeError("queue down")]
        self.keeper.hold(message(), on_beat=lambda: beats.append(1), job_id="job-1", worker_id="w-1")
        self.clock.advance(20.0)
        [failure] = self.failures()
        self.assertEqual((failure["message_id"], failure["queue"], failure["job_id"], failure["worker_id"]),
                         ("m-1", QUEUE, "job-1", "w-1"))
        self.assertEqual(beats, [1])
        self.clock.advance(20.0)
        self.assertEqual(len(self.extensions()), 2)
        self.assertEqual(beats, [1, 1])

    def test_callbacks_raising_never_stop_the_beats(self):
        """on_beat and on_lost raising (or failing asynchronously) are logged; extensions go on."""
        def boom():
            raise ValueError("bug in the caller")
        self.queue.fail["change_visibility"] = [None, ReceiptHandleInvalid("gone")]
        self.keeper.hold(message(), on_beat=lambda: defer.fail(ValueError("async")), on_lost=boom)
        self.clock.advance(20.0)
        self.clock.advance(20.0)
        self.clock.advance(20.0)
        self.assertEqual(len(self.extensions()), 3)
        self.assertEqual([e["what"] for e in self.failures()], ["on_beat", "on_lost", "on_beat"])

    def test_redelivered_message_keeps_the_newer_receipt(self):
        """Holding a message held already only updates its receipt: later extensions and the delete use it."""
        self.assertTrue(self.keeper.hold(message(receipt="r-1")))
        self.assertFalse(self.keeper.hold(message(receipt="r-2")))
        self.assertEqual(len(self.keeper), 1)
        self.clock.advance(20.0)
        self.assertEqual(self.extensions(), [("change_visibility", "r-2", 60.0)])
        self.assertTrue(self.successResultOf(self.keeper.delete(message(receipt="r-1"))))
        self.assertEqual(self.queue.calls[-1], ("delete", "r-2", None))

    def test_release_stops_extending_and_sets_the_visibility(self):
        """release makes the message visible after the given seconds and ends its extensions."""
        self.keeper.hold(message())
        self.assertIsNone(self.successResultOf(self.keeper.release(message(), 5.0)))
        self.assertEqual(self.queue.calls, [("change_visibility", "r-1", 5.0)])
        self.assertFalse(self.keeper.is_held(message()))
        self.clock.advance(100.0)
        self.assertEqual(self.extensions(), [])

    def test_release_never_fails(self):
        """A release refused (gone) is quiet; a queue failure is logged; neither fails the Deferred."""
        self.queue.fail["change_visibility"] = [ReceiptHandleInvalid("gone"), RuntimeError("down")]
        self.successResultOf(self.keeper.release(message()))
        self.assertEqual(self.failures(), [])
        self.successResultOf(self.keeper.release(message(), job_id="job-1"))
        [failure] = self.failures()
        self.assertEqual((failure["job_id"], failure["visibility_s"]), ("job-1", 0))

    def test_release_all_issues_every_request_at_once(self):
        """release_all sends every release before any answer comes, then fires when all are done."""
        self.keeper.hold(message("m-1", "r-1"))
        self.keeper.hold(message("m-2", "r-2"))
        self.queue.hold_answers = True
        d = self.keeper.release_all()
        self.assertEqual(sorted(self.queue.calls), [("change_visibility", "r-1", 0),
                                                    ("change_visibility", "r-2", 0)])
        self.assertNoResult(d)
        for pending in self.queue.pending:
            pending.callback(None)
        self.successResultOf(d)
        self.assertEqual(len(self.keeper), 0)

    def test_delete_gone_already(self):
        """Deleting a message whose receipt is no longer current answers False with a warning."""
        self.keeper.hold(message(), job_id="job-1")
        self.queue.fail["delete"] = [ReceiptHandleInvalid("gone")]
        self.assertFalse(self.successResultOf(self.keeper.delete(message())))
        [warning] = self.events
        self.assertEqual(warning["job_id"], "job-1")
        self.assertFalse(self.keeper.is_held(message()))

    def test_delete_failure_raised_without_retry(self):
        """Without retry_while a failing delete raises at once, and the lease is no longer extended."""
        self.keeper.hold(message())
        self.queue.fail["delete"] = [RuntimeError("down")]
        self.failureResultOf(self.keeper.delete(message()), RuntimeError)
        self.assertFalse(self.keeper.is_held(message()))

    def test_delete_retried_with_backoff_keeping_the_lease(self):
        """A failing delete is retried after 1, 2, 4... s while retry_while says so; the lease is
        extended meanwhile; it stops with the error once retry_while says no."""
        keeper = self.make(error_backoff_s=1.0, max_delete_backoff_s=4.0)
        keeper.hold(message())
        self.queue.fail["delete"] = [RuntimeError("down")] * 100
        running = [True]
        d = keeper.delete(message(), retry_while=lambda: running[0])
        deletes_at = [0.0]
        for _ in range(4):
            before = len([c for c in self.queue.calls if c[0] == "delete"])
            while len([c for c in self.queue.calls if c[0] == "delete"]) == before:
                self.clock.advance(0.5)
            deletes_at.append(self.clock.seconds())
        self.assertEqual(deletes_at, [0.0, 1.0, 3.0, 7.0, 11.0])
        self.assertNoResult(d)
        self.assertTrue(keeper.is_held(message()))
        self.clock.advance(20.0)  # the lease is still kept while the delete is retried
        self.assertTrue(self.extensions())
        running[0] = False
        self.clock.advance(4.0)
        self.failureResultOf(d, RuntimeError)
        self.assertFalse(keeper.is_held(message()))

    def test_delete_succeeds_after_retries(self):
        """The delete that finally works answers True and ends the lease."""
        self.keeper.hold(message())
        self.queue.fail["delete"] = [RuntimeError("down")]
        d = self.keeper.delete(message(), retry_while=lambda: True)
        self.clock.advance(1.0)
        self.assertTrue(self.successResultOf(d))
        self.assertFalse(self.keeper.is_held(message()))
        self.clock.advance(100.0)
        self.assertEqual(self.extensions(), [])

    def test_let_go_and_stop(self):
        """let_go ends one lease without a queue call; stop ends every extension, the messages stay held."""
        self.keeper.hold(message("m-1", "r-1"))
        self.keeper.hold(message("m-2", "r-2"))
        self.keeper.let_go(message("m-1", "r-1"))
        self.assertFalse(self.keeper.is_held(message()))
        self.keeper.stop()
        self.clock.advance(100.0)
        self.assertEqual(self.queue.calls, [])
        self.assertTrue(self.keeper.is_held(message("m-2", "r-2")))

    def test_per_delivery_each_delivery_is_its_own_lease(self):
        """With per_delivery, a redelivered message is a second lease with its own receipt and
        callbacks; deleting the first delivery uses its own receipt and leaves the second held."""
        keeper = self.make(per_delivery=True)
        beats = []
        self.assertTrue(keeper.hold(message(receipt="r-1"), on_beat=lambda: beats.append("first")))
        self.assertTrue(keeper.hold(message(receipt="r-2"), on_beat=lambda: beats.append("second")))
        self.assertFalse(keeper.hold(message(receipt="r-2")))
        self.assertEqual(len(keeper), 2)
        self.clock.advance(20.0)
        self.assertEqual(sorted(c[1] for c in self.extensions()), ["r-1", "r-2"])
        self.assertEqual(sorted(beats), ["first", "second"])
        self.queue.fail["delete"] = [ReceiptHandleInvalid("superseded")]
        self.assertFalse(self.successResultOf(keeper.delete(message(receipt="r-1"))))
        self.assertEqual(self.queue.calls[-1], ("delete", "r-1", None))
        self.assertFalse(keeper.is_held(message(receipt="r-1")))
        self.assertTrue(keeper.is_held(message(receipt="r-2")))
