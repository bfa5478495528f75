# -*- test-case-name: tests.core.test_retry -*-
"""Retrying with backoff, written once: ``retry`` (on a reactor clock) and
``retry_sync`` (in a thread), both on tenacity.

Every retry loop of nommer goes through here: the notifier's webhooks, a
lease's deletes, a queue consumer's and a worker's failed receives, workerd's
wait for the instance identity, the DynamoDB table wait and SQLite's switch
to WAL. What varies is said with keywords:

* ``backoff_s``: the pause before the second attempt; each later pause is
  doubled, at most ``max_backoff_s`` (None: no cap). A fixed pause is
  ``max_backoff_s=backoff_s``. The pause before attempt ``n + 1`` is
  ``pause_s(n, backoff_s, max_backoff_s)`` (pure).
* when to stop: after ``attempts`` attempts, once ``deadline_s`` seconds
  have passed since the first attempt began (checked after a failed attempt,
  before pausing: the last attempt may start up to one pause before the
  deadline), or when ``retry_while()`` answers false after a failure; any of
  them. None of them: retried for ever.
* ``retry_on``: which failures are retried: an exception class, a tuple of
  them, or a predicate ``retry_on(exc) -> bool``. Any other failure is raised
  at once. ``defer.CancelledError`` never is: a cancelled operation stops,
  it is not retried behind its canceller's back.
* ``on_retry(exc, attempt, pause_s)``: called after failed attempt number
  ``attempt`` (1 for the first), before pausing ``pause_s`` seconds; for
  logging (an exception it raises ends the retries).

When the retries stop, the last attempt's exception is raised as it was
(not wrapped in tenacity's ``RetryError``). ``fn()`` may return a value, a
Deferred or a coroutine; its result is returned.

Time: ``retry`` pauses on ``clock`` (``IReactorTime``, a ``task.Clock`` in
tests) and measures ``deadline_s`` with ``clock.seconds()``; nothing blocks
the reactor. ``retry_sync`` is for code already in a thread (the SQLite
pool's): it pauses with ``sleep`` and measures with ``clock`` (default
``time.sleep``, ``time.monotonic``).
"""

import inspect
import time

import tenacity
from twisted.internet import defer, task

__all__ = ["pause_s", "retry", "retry_sync"]

#: Doubling stops growing the pause after this many steps (2.0 ** 1100 overflows).
_MAX_DOUBLINGS = 1000


def pause_s(attempt, backoff_s, max_backoff_s=None):
    """Seconds to pause after failed attempt number ``attempt`` (1 for the
    first): ``backoff_s`` doubled ``attempt - 1`` times, at most
    ``max_backoff_s`` (None: no cap)."""
    pause = backoff_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS)
    return pause if max_backoff_s is None else min(pause, max_backoff_s)


def _retried(retry_on):
    """A predicate of an exception: ``retry_on`` asks it to be retried and it
    is not a ``CancelledError``."""
    if isinstance(retry_on, type) or isinstance(retry_on, tuple):
        classes = retry_on
        retry_on = lambda exc: isinstance(exc, classes)  # noqa: E731
    return lambda exc: not isinstance(exc, defer.CancelledError) and bool(retry_on(exc))


def _policy(seconds, attempts, deadline_s, backoff_s, max_backoff_s, retry_on, retry_while, on_retry):
    """tenacity's keyword arguments for these rules; ``seconds()`` reads the
    clock the deadline is measured with."""
    stops = []
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    if deadline_s is not None:
        started = seconds()
        stops.append(lambda rs: seconds() - started >= deadline_s)
    if retry_while is not None:
        stops.append(lambda rs: not retry_while())
    policy = {
        "stop": tenacity.stop_any(*stops) if stops else tenacity.stop_never,
        "wait": lambda rs: pause_s(rs.attempt_number, backoff_s, max_backoff_s),
        "retry": tenacity.retry_if_exception(_retried(retry_on)),
        "reraise": True,
    }
    if on_retry is not None:
        policy["before_sleep"] = lambda rs: on_retry(rs.outcome.exception(), rs.attempt_number,
                                                     rs.next_action.sleep)
    return policy


async def retry(fn, *, clock, backoff_s, max_backoff_s=None, attempts=None, deadline_s=None,
                retry_on=Exception, retry_while=None, on_retry=None):
    """``fn()``'s result, calling it again after a pause on ``clock`` while
    it fails as ``retry_on`` says and no stop rule holds (see the module
    docstring for each keyword). Raises the last attempt's exception."""
    async def attempt():
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        return result

    retrying = tenacity.AsyncRetrying(
        sleep=lambda seconds: task.deferLater(clock, seconds),
        **_policy(clock.seconds, attempts, deadline_s, backoff_s, max_backoff_s, retry_on, retry_while,
                  on_retry))
    return await retrying(attempt)


def retry_sync(fn, *, backoff_s, max_backoff_s=None, attempts=None, deadline_s=None, retry_on=Exception,
               retry_while=None, on_retry=None, sleep=time.sleep, clock=time.monotonic):
    """``retry`` for code running in a thread (never on the reactor thread):
    pauses with ``sleep(seconds)``, measures ``deadline_s`` with ``clock()``."""
    retrying = tenacity.Retrying(
        sleep=sleep,
        **_policy(clock, attempts, deadline_s, backoff_s, max_backoff_s, retry_on, retry_while, on_retry))
    return retrying(fn)
