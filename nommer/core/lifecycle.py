"""Small service helpers shared by both daemons."""

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


class Closer(service.Service):
    """Closes the store and queue when stopped. Attach it first to a
    MultiService: children stop in reverse order, so it closes them last,
    after every service that uses them has stopped."""

    def __init__(self, *closables):
        self.closables = closables

    def stopService(self):
        super().stopService()
        for c in self.closables:
            c.close()


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
    """Open the job store and work queue named by ``settings``, and attach a
    ``Closer`` for them to ``parent`` (first, so they are closed last).
    Returns ``JobLedger`` over them."""
    store = make_store(settings, reactor)
    queue = make_queue(settings, reactor)
    Closer(store, queue).setServiceParent(parent)
    return JobLedger(store, queue, settings)
