"""``twistd feederd``: the job API, notifier, reaper, autoscaler and fleet."""

from twisted.internet import reactor as default_reactor
from twisted.logger import Logger
from twisted.python import usage

from nommer.conf import DEFAULT_CONFIG
from nommer.core.keys import open_key_store
from nommer.core.startup import DaemonService, attach_backends, load_settings_or_exit, refuse_to_start
from nommer.core.worker_registry import make_registry
from nommer.core.outputs.presets import PresetError, load_presets
from nommer.workerd.outputs.vmaf import find_vmaf_ffmpeg
from nommer.core.storage.roots import enforce_roots
from nommer.feederd.api import JobAPI
from nommer.feederd.auth import KeyRequirement
from nommer.feederd.fleet.pools import PoolFleets
from nommer.feederd.bodycap import capped_request_factory
from nommer.feederd.inflight import InFlightSite, InFlightRequests
from nommer.feederd.listen import ApiListener
from nommer.feederd.metrics import FeederMetrics, fleet_status
from nommer.feederd.notifier import Notifier
from nommer.feederd.sse import EventStreams, make_hub
from nommer.feederd.worker_config import ConfigPublisher
from nommer.feederd.reaper import Abandoner, DeadLetterWatcher, RegistryPruner

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
    return load_settings_or_exit("feederd", options["config"], overrides)


def build(settings, reactor=default_reactor):
    """The feederd service tree (a MultiService) for ``settings``."""
    top = DaemonService()
    ledger = attach_backends(settings, reactor, top)
    store = ledger.store

    registry = make_registry(settings, reactor)
    top.closables.append(registry)
    # API keys beside the job store (its AWS pool, when it has one); closed after the store.
    keys = open_key_store(settings, reactor=reactor, pool=store.aws_pool)
    top.closables.append(keys)
    KeyRequirement(keys, settings, refuse_to_start("feederd", reactor, log)).setServiceParent(top)
    # One fleet and one autoscaler per pool (nommer.core.pools; with no POOLS, the one of
    # old); ``fleet`` stands for all of them, ``autoscaler.poke`` pokes them all.
    fleet = PoolFleets(settings, reactor, registry)
    fleet.setServiceParent(top)
    autoscaler = fleet.autoscale(store, ledger.queue, reactor)

    # The live event stream (GET /events): the notifier hands the hub every job event.
    hub = make_hub(store, settings, reactor)
    hub.setServiceParent(top)
    notifier = Notifier(ledger, settings, reactor, on_event=hub.publish)
    for svc in (notifier, DeadLetterWatcher(ledger, settings, reactor),
                Abandoner(ledger, settings, reactor), RegistryPruner(registry, settings, reactor)):
        svc.setServiceParent(top)

    if settings.WORK_QUEUE_BACKEND == "sqs":
        ConfigPublisher(settings, reactor).setServiceParent(top)

    # Prometheus metrics (GET /metrics); reads the worker registry between scrapes too.
    metrics = FeederMetrics(store, ledger.queue, settings, registry=registry, fleet=fleet, clock=reactor,
                            webhook_failures=lambda: getattr(notifier, "webhook_failures", 0))
    metrics.setServiceParent(top)
    api = JobAPI(ledger, settings, on_submit=autoscaler.poke,
                 health_extra=lambda: {"workers": fleet.worker_ids(), "fleet": fleet_status(settings, fleet)},
                 registry=registry, clock=reactor, keys=keys, events=EventStreams(hub, store, settings, reactor),
                 fleet_view=fleet.instances, metrics=metrics, fleet_status=lambda: fleet_status(settings, fleet))
    # Bodies over MAX_REQUEST_BODY_BYTES are refused before they are read or spooled.
    site = InFlightSite(api.resource(), requestFactory=capped_request_factory(settings.MAX_REQUEST_BODY_BYTES))
    # A port in use stops feederd with one line, not a traceback (listen.ApiListener).
    ApiListener(reactor, settings.API_PORT, settings.API_INTERFACE, site).setServiceParent(top)
    InFlightRequests(site, reactor).setServiceParent(top)
    log.info("feederd: API on http://{iface}:{port}/, data in {data_dir}, fleet {fleet}",
             iface=settings.API_INTERFACE, port=settings.API_PORT, data_dir=settings.DATA_DIR,
             fleet=settings.FLEET_BACKEND)
    return top


def makeService(options):
    settings = load(options)
    # file:// roots: ./media created when it is the default; none may hold nommer's own files.
    enforce_roots("feederd", settings, create_default=True)
    # Server presets (built-in, PRESETS_DIR, PRESETS) checked once, at start: a bad one is the
    # operator's to fix, not a 500 at the first submit that names it.
    try:
        load_presets(settings)
    except PresetError as e:
        raise SystemExit(f"feederd: {e.message}; nothing started") from None
    # The VMAF-capable ffmpeg is looked up (``ffmpeg -filters``) before the reactor runs, so
    # the submit-time check (quality with vmaf) finds the answer cached, never spawning on it.
    find_vmaf_ffmpeg(settings)
    return build(settings)
