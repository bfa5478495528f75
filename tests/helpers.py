"""Shared test helpers: settings for a temp dir, async test methods, StubTreq pumping."""

import functools
import inspect
import os

from twisted.internet import defer, reactor, task

from nommer.conf import Settings


def ensure(coro_fn):
    """Let a trial test method be ``async def``: trial gets a Deferred."""
    @functools.wraps(coro_fn)
    def wrapper(*args, **kwargs):
        return defer.Deferred.fromCoroutine(coro_fn(*args, **kwargs))
    return wrapper


async def eventually(check, timeout_s=10.0, what="condition"):
    """Wait for ``check()`` (a value or an awaitable) to be truthy: an event
    in another part of the system, not a timer. Returns that value."""
    deadline = reactor.seconds() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)


def doc_two_pass():
    """The 2011 media-nommer documentation's two-pass job options, as written then."""
    video = [["vcodec", "libx264"], ["preset", "medium"], ["vprofile", "baseline"], ["b", "400k"],
             ["vf", "yadif,scale='640:trunc(ow/a/2)*2'"]]
    return [
        {"outfile_options": video + [["pass", "1"], ["f", "mp4"], ["an", None]]},
        {"outfile_options": video + [["pass", "2"], ["acodec", "libfaac"], ["ab", "128k"], ["ar", "48000"],
                                     ["async", "480"], ["ac", "2"], ["f", "mp4"]],
         "move_atom_to_front": True},
    ]


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
