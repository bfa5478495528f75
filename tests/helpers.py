"""Shared test helpers: settings for a temp dir, async test methods, StubTreq pumping."""

import os

from twisted.internet import defer, reactor, task

from nommer.conf import Settings


def ensure(coro_fn):
    """Let a trial test method be ``async def``."""
    def wrapper(self):
        return defer.Deferred.fromCoroutine(coro_fn(self))
    wrapper.__name__ = coro_fn.__name__
    wrapper.__doc__ = coro_fn.__doc__
    return wrapper


def temp_settings(testcase, **overrides):
    """Settings whose data dir and file root are a fresh temp dir."""
    root = os.path.realpath(testcase.mktemp())
    os.makedirs(root)
    values = dict(DATA_DIR=os.path.join(root, "data"), FILE_STORAGE_ROOTS=[root])
    values.update(overrides)
    settings = Settings.from_overrides(**values)
    return settings, root


async def pumped(stub, d):
    """Wait for a StubTreq Deferred whose resource answers asynchronously
    (our handlers wait on the DB thread): pump the in-memory transport until
    it fires."""
    done = []

    def mark(result):
        done.append(True)
        return result
    d.addBoth(mark)
    while not done:
        stub.flush()
        if done:
            break
        await task.deferLater(reactor, 0.001, lambda: None)
    return await d
