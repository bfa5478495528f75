"""``twistd feederd``: the job API, notifier, reaper, autoscaler and fleet."""

from twisted.application import service, strports
from twisted.internet import reactor as default_reactor
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from nommer.conf import DEFAULT_CONFIG, ConfigErrors, load_settings
from nommer.core.ledger import JobLedger
from nommer.core.lifecycle import Closer
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from nommer.feederd.autoscaler import Autoscaler
from nommer.feederd.fleet import LocalFleet, NoFleet
from nommer.feederd.notifier import Notifier
from nommer.feederd.reaper import Abandoner, DeadLetterWatcher

log = Logger()


class Options(usage.Options):
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "nomconf module name or path to a nomconf.py file"],
        ["port", "p", None, "TCP port of the JSON API (default: API_PORT, 8001)", int],
        ["interface", "i", None, "interface to listen on (default: API_INTERFACE, 127.0.0.1)"],
    ]


def load(options):
    """Settings from the options; every config problem reported together."""
    overrides = {}
    if options["port"] is not None:
        overrides["API_PORT"] = options["port"]
    if options["interface"] is not None:
        overrides["API_INTERFACE"] = options["interface"]
    try:
        settings = load_settings(options["config"], overrides=overrides)
    except ConfigErrors as exc:
        raise SystemExit(f"feederd: bad configuration, nothing started:\n{exc}")
    for note in settings.notes:
        log.info("config: {note}", note=note)
    for warning in settings.warnings:
        log.warn("config: {warning}", warning=warning)
    return settings



def build(settings, reactor=default_reactor):
    """The feederd service tree (a MultiService) for ``settings``."""
    top = service.MultiService()
    store = make_store(settings, reactor)
    queue = make_queue(settings, reactor)
    Closer(store, queue).setServiceParent(top)
    ledger = JobLedger(store, queue, settings)

    if settings.FLEET_BACKEND == "local":
        fleet = LocalFleet(settings, reactor)
    else:
        fleet = NoFleet()
    fleet.setServiceParent(top)
    autoscaler = Autoscaler(store, fleet, settings, reactor)
    autoscaler.clock = reactor
    autoscaler.setServiceParent(top)
    fleet.on_change = autoscaler.poke

    for svc in (Notifier(ledger, settings, reactor), DeadLetterWatcher(ledger, settings, reactor),
                Abandoner(ledger, settings, reactor)):
        svc.setServiceParent(top)

    api = JobAPI(ledger, settings, on_submit=autoscaler.poke,
                 health_extra=lambda: {"workers": fleet.worker_ids(), "fleet": settings.FLEET_BACKEND})
    endpoint = f"tcp:{settings.API_PORT}:interface={settings.API_INTERFACE}"
    site = strports.service(endpoint, Site(api.resource()))
    site.setServiceParent(top)
    log.info("feederd: API on http://{iface}:{port}/, data in {data_dir}, fleet {fleet}",
             iface=settings.API_INTERFACE, port=settings.API_PORT, data_dir=settings.DATA_DIR,
             fleet=settings.FLEET_BACKEND)
    return top


def makeService(options):
    return build(load(options))
