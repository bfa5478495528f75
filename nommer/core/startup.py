"""Small service helpers shared by both daemons."""

import os
import sys

from twisted.application import service
from twisted.logger import Logger

from botocore.exceptions import BotoCoreError, ClientError

from nommer.conf import ConfigErrors, load_settings
from nommer.conf.remote import load_remote_settings
from nommer.core.aws import error_code
from nommer.core.ledger import JobLedger
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue

log = Logger()


class DaemonService(service.MultiService):
    """The top of a daemon's service tree. ``MultiService`` stops its
    children all at once, so a child that closed the store could do so while
    the API still answers a request; this one closes ``closables`` (the store
    and queue) only after every child's stop has finished."""

    def __init__(self):
        super().__init__()
        self.closables = []

    def stopService(self):
        def close(result):
            for c in self.closables:
                c.close()
            return result
        return super().stopService().addBoth(close)


def load_settings_or_exit(daemon, config, overrides=None):
    """Settings for ``daemon`` ("feederd"/"workerd"), with notes and warnings
    logged. Every configuration problem is reported together and the process
    exits (SystemExit) before any service starts."""
    try:
        if isinstance(config, str) and config.startswith("s3://"):
            settings = load_remote_settings(config, overrides=overrides)
        else:
            settings = load_settings(config, overrides=overrides)
    except ConfigErrors as exc:
        raise SystemExit(f"{daemon}: bad configuration, nothing started:\n{exc}")
    except BotoCoreError as exc:
        raise SystemExit(f"{daemon}: cannot fetch the configuration {config}: {exc}")
    except ClientError as exc:
        raise SystemExit(f"{daemon}: cannot fetch the configuration {config}: {error_code(exc)}: {exc}")
    for note in settings.notes:
        log.info("config: {note}", note=note)
    for warning in settings.warnings:
        log.warn("config: {warning}", warning=warning)
    return settings


def attach_backends(settings, reactor, parent):
    """Open the job store and work queue named by ``settings``; ``parent``
    (a ``DaemonService``) closes them after all its children have stopped.
    Returns ``JobLedger`` over them."""
    store = make_store(settings, reactor)
    queue = make_queue(settings, reactor)
    parent.closables.extend([store, queue])
    return JobLedger(store, queue, settings)


#: Exit status of a daemon that refuses to start (feederd off loopback
#: without an active API key, workerd whose ffmpeg sandbox does not start).
EXIT_REFUSED = 1


def exit_now(status):
    """Leave the process with ``status``: twistd has no other way to return
    a non-zero status once the reactor runs. Called after the reactor's
    shutdown (services stopped, store closed, logs written)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


def refuse_to_start(daemon, reactor, logger=log):
    """A callback ``refuse(message)`` for a check that keeps ``daemon``
    ("feederd"/"workerd") from starting (``on_refuse`` of feederd's
    ``KeyRequirement``, ``on_fatal`` of workerd's ``Worker``): it logs the
    message as critical through ``logger`` (the daemon's tap's), stops the
    reactor and exits with EXIT_REFUSED after the reactor's shutdown."""
    def refuse(message):
        logger.critical("{daemon}: {message}. Not starting.", daemon=daemon, message=message)
        reactor.addSystemEventTrigger("after", "shutdown", exit_now, EXIT_REFUSED)
        # The check may fail before the reactor runs (workerd with bwrap missing: at once).
        reactor.callWhenRunning(reactor.stop)
    return refuse
