"""``twistd workerd``: one worker taking jobs from the queue."""

from twisted.application import service
from twisted.internet import reactor as default_reactor
from twisted.logger import Logger
from twisted.python import usage

from nommer.conf import DEFAULT_CONFIG, ConfigErrors, load_settings
from nommer.core.ledger import JobLedger
from nommer.core.lifecycle import Closer
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.workerd.worker import Worker

log = Logger()


class Options(usage.Options):
    optFlags = [["local", "l", "not on EC2: skip the instance metadata (as in the original)"]]
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "nomconf module name or path to a nomconf.py file"],
        ["worker-id", None, None, "name of this worker in logs and job records (default: host-pid)"],
    ]



def build(settings, reactor=default_reactor, worker_id=None):
    top = service.MultiService()
    store = make_store(settings, reactor)
    queue = make_queue(settings, reactor)
    Closer(store, queue).setServiceParent(top)
    Worker(JobLedger(store, queue, settings), settings, reactor, worker_id=worker_id).setServiceParent(top)
    return top


def makeService(options):
    try:
        settings = load_settings(options["config"])
    except ConfigErrors as exc:
        raise SystemExit(f"workerd: bad configuration, nothing started:\n{exc}")
    for note in settings.notes:
        log.info("config: {note}", note=note)
    for warning in settings.warnings:
        log.warn("config: {warning}", warning=warning)
    return build(settings, worker_id=options["worker-id"])
