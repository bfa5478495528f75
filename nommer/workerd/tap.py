"""``twistd workerd``: one worker taking jobs from the queue.

With ``--local`` (feederd's local fleet, or a machine you run yourself) the
worker is named by ``--worker-id`` or host-pid and exits by itself when idle.
Without it the worker is on an EC2 instance: it reads its identity from the
instance metadata (IMDSv2, EC2_METADATA_URL or ``--metadata-url``), takes the
instance id as its name, heartbeats it to the worker registry, watches for a
spot interruption notice (spot instances), and when idle terminates its own
instance before exiting.

A worker serves the pools named by ``--pools`` (``cpu,gpu``; else the
environment's NOMMER_POOLS, which an EC2 pool's user data sets; else
``default``), with their ``worker`` settings (``nommer.core.pools``); a
pool the settings do not define stops it at once, naming the pools.

Either way the worker first checks that the ffmpeg sandbox starts
(``nommer.workerd.sandbox.check``); when it does not, workerd logs why and
how to fix it and exits with status 1 (systemd restarts it a few times, then
gives up; feederd's local fleet logs the exit status).
"""

import os

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet import reactor as default_reactor
from twisted.logger import Logger
from twisted.python import usage

from nommer.conf import DEFAULT_CONFIG
from nommer.core.aws import AWS
from nommer.core.pools import UnknownPool, parse_pools, worker_settings
from nommer.core.retry import retry
from nommer.core.startup import DaemonService, attach_backends, load_settings_or_exit, refuse_to_start
from nommer.core.worker_registry import make_registry
from nommer.core.storage.roots import enforce_roots
from nommer.workerd.heartbeat import RegistryHeartbeat
from nommer.workerd.imds import InstanceMetadata, MetadataUnavailable
from nommer.workerd.spot import SpotWatcher
from nommer.workerd.terminate import exit_on_ec2
from nommer.workerd.worker import Worker

log = Logger()

#: Attempts at reading the instance identity at boot, and the pause between
#: two, seconds (the metadata service can lag the first seconds of a boot).
IDENTITY_ATTEMPTS = 5
IDENTITY_RETRY_S = 2.0


class Options(usage.Options):
    optFlags = [["local", "l", "not on EC2: skip the instance metadata (as in the original)"]]
    optParameters = [
        ["config", "c", DEFAULT_CONFIG, "nomconf module name, path to a nomconf.py file, or s3://bucket/key"],
        ["worker-id", None, None, "name of this worker in logs and job records "
                                  "(default: host-pid; on EC2 the instance id)"],
        ["metadata-url", None, None, "base URL of the instance metadata service (default: EC2_METADATA_URL)"],
        ["pools", None, None, "the pools to take jobs from, comma-separated (default: $NOMMER_POOLS, "
                              "else 'default')"],
    ]


def _open_backends(settings, reactor, top):
    """(JobLedger, worker registry) for ``settings``; ``top`` closes them."""
    ledger = attach_backends(settings, reactor, top)
    registry = make_registry(settings, reactor)
    top.closables.append(registry)
    return ledger, registry


def _attach_worker(top, settings, reactor, ledger, registry, worker_id, identity=None, on_exit=None, pools=None):
    worker = Worker(ledger, settings, reactor, worker_id=worker_id, on_exit=on_exit,
                    on_fatal=refuse_to_start("workerd", reactor, log), pools=pools)
    heartbeat = RegistryHeartbeat(registry, worker, settings, reactor, identity=identity,
                                  figures=worker.attempts.figures)
    worker.on_state_change = heartbeat.beat_now
    heartbeat.setServiceParent(top)
    worker.setServiceParent(top)
    return worker, heartbeat


def build(settings, reactor=default_reactor, worker_id=None, pools=None):
    """The service tree of a local worker (``--local``) serving ``pools``
    (names; None: ``default``) with their worker settings."""
    top = DaemonService()
    ledger, registry = _open_backends(settings, reactor, top)
    _attach_worker(top, _pool_settings(settings, pools), reactor, ledger, registry, worker_id, pools=pools)
    return top


def _pool_settings(settings, pools):
    return worker_settings(settings, pools) if pools else settings


class Ec2Boot(Service):
    """Starts the worker once the instance identity is known.

    Reads the identity (IMDSv2; IDENTITY_ATTEMPTS tries), then adds the
    worker, its registry heartbeat and, on a spot instance, the
    ``SpotWatcher`` to ``top``. The worker's exit terminates the instance
    (``exit_on_ec2``). If the metadata cannot be read the process stops
    with the reason logged; the instance, never registered, is terminated by
    feederd after EC2_BOOT_TIMEOUT_S."""

    def __init__(self, top, settings, reactor, metadata_url, worker_id=None, pools=None):
        self.top = top
        self.pools = pools
        settings = _pool_settings(settings, pools)
        self.settings = settings
        self.reactor = reactor
        self.metadata_url = metadata_url
        self.worker_id = worker_id
        self.ledger, self.registry = _open_backends(settings, reactor, top)
        self.booted = None

    def startService(self):
        super().startService()
        self.booted = defer.Deferred.fromCoroutine(self._boot())
        self.booted.addErrback(self._failed)

    def _failed(self, failure):
        failure.trap(MetadataUnavailable)
        log.error("workerd: cannot read the instance metadata ({why}). Not on EC2? Start with --local. Stopping.",
                  why=failure.getErrorMessage())
        self.reactor.stop()

    async def _identity(self, metadata):
        return await retry(
            metadata.identity, clock=self.reactor, attempts=IDENTITY_ATTEMPTS, backoff_s=IDENTITY_RETRY_S,
            max_backoff_s=IDENTITY_RETRY_S, retry_on=MetadataUnavailable,
            on_retry=lambda exc, n, pause_s: log.warn(
                "instance metadata not available yet ({why}); retrying in {s} s", why=str(exc),
                s=IDENTITY_RETRY_S))

    async def _boot(self):
        s, reactor = self.settings, self.reactor
        metadata = InstanceMetadata(self.metadata_url, reactor)
        identity = await self._identity(metadata)
        instance_id = identity["instance_id"]
        log.info("workerd on EC2: instance {instance_id} ({instance_type}, {market}, {az})",
                 instance_id=instance_id, instance_type=identity["instance_type"], market=identity["market"],
                 az=identity["availability_zone"])
        aws = AWS(s, reactor, name="workerd-ec2")
        self.top.closables.append(aws)
        heartbeat = None

        def on_exit(reason):
            return defer.Deferred.fromCoroutine(exit_on_ec2(
                worker, aws, instance_id, reason, reactor,
                before_terminate=heartbeat.beat_now if heartbeat is not None else None))

        record_identity = {k: identity[k] for k in ("instance_id", "instance_type", "availability_zone", "market")}
        worker, heartbeat = _attach_worker(self.top, s, reactor, self.ledger, self.registry,
                                           self.worker_id or instance_id, identity=record_identity,
                                           on_exit=on_exit, pools=self.pools)
        if identity["market"] == "spot":
            SpotWatcher(metadata, worker, s, reactor).setServiceParent(self.top)
        return worker


def build_ec2(settings, reactor=default_reactor, metadata_url=None, worker_id=None, pools=None):
    """The service tree of a worker on an EC2 instance (``pools`` as in ``build``)."""
    top = DaemonService()
    Ec2Boot(top, settings, reactor, metadata_url or settings.EC2_METADATA_URL, worker_id,
            pools=pools).setServiceParent(top)
    return top


def pools_of(options, settings, environ=os.environ):
    """The pools a workerd serves: ``--pools``, else NOMMER_POOLS, else
    ``["default"]``. A pool ``settings`` do not define: SystemExit naming
    the pools."""
    text = options["pools"] if options["pools"] is not None else environ.get("NOMMER_POOLS")
    try:
        return parse_pools(text, settings)
    except UnknownPool as e:
        raise SystemExit(f"workerd: {e}; nothing started") from None


def makeService(options):
    settings = load_settings_or_exit("workerd", options["config"])
    enforce_roots("workerd", settings)  # no file:// root may hold nommer's own files
    pools = pools_of(options, settings)
    if options["local"]:
        return build(settings, worker_id=options["worker-id"], pools=pools)
    return build_ec2(settings, metadata_url=options["metadata-url"], worker_id=options["worker-id"], pools=pools)
