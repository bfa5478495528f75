"""nommer.core.retry: the one retry-with-backoff helper, on a task.Clock."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from nommer.core.retry import pause_s, retry, retry_sync


class Flaky:
    """A callable failing with the given exceptions in turn, then answering
    ``result``; it records the clock's time of each call."""

    def __init__(self, clock, failures, result="done", deferred=False):
        self.clock = clock
        self.failures = list(failures)
        self.result = result
        self.deferred = deferred
        self.calls = []

    def __call__(self):
        self.calls.append(self.clock.seconds())
        if self.failures:
            exc = self.failures.pop(0)
            if self.deferred:
                return defer.fail(exc)
            raise exc
        return defer.succeed(self.result) if self.deferred else self.result


class RetryTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()

    def run_retry(self, fn, **kwargs):
        kwargs.setdefault("backoff_s", 1.0)
        return defer.Deferred.fromCoroutine(retry(fn, clock=self.clock, **kwargs))

    def test_pauses_double_up_to_the_cap(self):
        """The pause after attempt n is backoff_s doubled n - 1 times, at most max_backoff_s."""
        self.assertEqual([pause_s(n, 1.0, 4.0) for n in range(1, 6)], [1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual([pause_s(n, 2.0) for n in range(1, 4)], [2.0, 4.0, 8.0])
        self.assertEqual(pause_s(10_000, 0.5, 30.0), 30.0)  # no overflow after many attempts
        self.assertEqual(pause_s(3, 5.0, 5.0), 5.0)       # a fixed pause

    def test_retried_on_the_clock_until_it_works(self):
        """Failures are retried after 1, 2, 4 s of the injected clock; the result comes back."""
        fn = Flaky(self.clock, [RuntimeError("down")] * 3)
        d = self.run_retry(fn)
        self.assertEqual(fn.calls, [0.0])
        self.clock.advance(0.9)
        self.assertEqual(fn.calls, [0.0])
        self.clock.pump([0.1, 2.0, 4.0])
        self.assertEqual(fn.calls, [0.0, 1.0, 3.0, 7.0])
        self.assertEqual(self.successResultOf(d), "done")

    def test_deferred_results_and_failures(self):
        """fn may answer a Deferred: its failure is retried like an exception, its value returned."""
        fn = Flaky(self.clock, [RuntimeError("down")], result=7, deferred=True)
        d = self.run_retry(fn)
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), 7)

    def test_attempts_then_the_last_error_as_it_was(self):
        """After `attempts` attempts the last exception itself is raised (not a RetryError)."""
        errors = [RuntimeError("one"), RuntimeError("two"), RuntimeError("three")]
        fn = Flaky(self.clock, errors)
        d = self.run_retry(fn, attempts=2)
        self.clock.pump([1.0, 10.0])
        self.assertIs(self.failureResultOf(d, RuntimeError).value, errors[1])
        self.assertEqual(fn.calls, [0.0, 1.0])

    def test_deadline_on_the_clock(self):
        """deadline_s is measured with clock.seconds() after a failed attempt, before pausing."""
        fn = Flaky(self.clock, [RuntimeError("down")] * 10)
        d = self.run_retry(fn, backoff_s=2.0, max_backoff_s=2.0, deadline_s=5.0)
        self.clock.pump([2.0] * 5)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(fn.calls, [0.0, 2.0, 4.0, 6.0])

    def test_retry_while(self):
        """retry_while() is asked after each failure: false stops with that failure."""
        fn = Flaky(self.clock, [RuntimeError("down")] * 10)
        going = [True]
        d = self.run_retry(fn, retry_while=lambda: going[0])
        self.clock.pump([1.0, 2.0])
        self.assertNoResult(d)
        going[0] = False
        self.clock.advance(4.0)
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(fn.calls, [0.0, 1.0, 3.0, 7.0])

    def test_retry_on_classes_and_predicates(self):
        """A failure retry_on does not match is raised at once, by class or by predicate."""
        fn = Flaky(self.clock, [KeyError("k")])
        self.failureResultOf(self.run_retry(fn, retry_on=(ValueError, OSError)), KeyError)
        fn = Flaky(self.clock, [ValueError("no")])
        self.failureResultOf(self.run_retry(fn, retry_on=lambda e: str(e) != "no"), ValueError)
        fn = Flaky(self.clock, [ValueError("yes")])
        d = self.run_retry(fn, retry_on=lambda e: str(e) != "no")
        self.clock.advance(1.0)
        self.assertEqual(self.successResultOf(d), "done")

    def test_cancelled_is_never_retried(self):
        """A CancelledError ends the retries at once, even with retry_on=Exception."""
        fn = Flaky(self.clock, [defer.CancelledError()])
        self.failureResultOf(self.run_retry(fn), defer.CancelledError)
        self.assertEqual(fn.calls, [0.0])

    def test_cancelling_the_pause(self):
        """Cancelling the retry while it pauses stops it: fn is not called again."""
        fn = Flaky(self.clock, [RuntimeError("down")])
        d = self.run_retry(fn)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.clock.advance(10.0)
        self.assertEqual(fn.calls, [0.0])

    def test_on_retry_sees_each_failure_and_pause(self):
        """on_retry(exc, attempt, pause_s) runs before each pause, not after the last failure."""
        errors = [RuntimeError(str(n)) for n in range(3)]
        seen = []
        d = self.run_retry(Flaky(self.clock, errors), attempts=3, max_backoff_s=1.5,
                           on_retry=lambda exc, n, pause: seen.append((exc, n, pause)))
        self.clock.pump([1.0, 1.5])
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(seen, [(errors[0], 1, 1.0), (errors[1], 2, 1.5)])


class RetrySyncTests(SynchronousTestCase):

    def test_sleeps_and_deadline(self):
        """retry_sync pauses with the given sleep and measures the deadline with the given clock."""
        now = [0.0]
        sleeps = []

        def sleep(s):
            sleeps.append(s)
            now[0] += s

        calls = []

        def fn():
            calls.append(now[0])
            raise OSError("locked")

        with self.assertRaises(OSError):
            retry_sync(fn, backoff_s=0.5, max_backoff_s=0.5, deadline_s=1.2, sleep=sleep, clock=lambda: now[0])
        self.assertEqual(calls, [0.0, 0.5, 1.0, 1.5])
        self.assertEqual(sleeps, [0.5, 0.5, 0.5])

    def test_result_and_not_retried(self):
        """A result comes back; an error retry_on does not match is raised without sleeping."""
        answers = [OSError("x"), 3]

        def fn():
            a = answers.pop(0)
            if isinstance(a, Exception):
                raise a
            return a

        sleeps = []
        self.assertEqual(retry_sync(fn, backoff_s=0.1, retry_on=OSError, sleep=sleeps.append), 3)
        self.assertEqual(sleeps, [0.1])
        with self.assertRaises(KeyError):
            retry_sync(lambda: {}["k"], backoff_s=0.1, retry_on=OSError, sleep=sleeps.append)
        self.assertEqual(sleeps, [0.1])
