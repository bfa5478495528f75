"""Coroutines behind nommer's Deferred-returning interfaces.

The job store, the worker registry and the key store promise Deferreds
(``store.get(job_id).addCallback(...)`` works, and so does ``await``);
their AWS backends are written as coroutines. ``@deferred`` turns an
``async def`` method into one that returns ``Deferred.fromCoroutine`` of it:
the coroutine starts at once, and an exception it raises before its first
``await`` (a validation error, say) is a failed Deferred, never a raise.
``gather`` runs coroutines side by side.
"""

import functools

from twisted.internet import defer


def deferred(coroutine_function):
    """Decorator: ``coroutine_function(...)`` returns a Deferred of its coroutine's result."""
    @functools.wraps(coroutine_function)
    def start(*args, **kwargs):
        return defer.Deferred.fromCoroutine(coroutine_function(*args, **kwargs))
    return start


async def gather(coroutines):
    """The results of ``coroutines`` (an iterable), in order, all started at
    once; the first failure is raised as itself (the others' are consumed)."""
    try:
        return await defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in coroutines],
                                         consumeErrors=True)
    except defer.FirstError as e:
        e.subFailure.raiseException()
