"""feederd's Prometheus metrics (``GET /metrics``), with ``prometheus_client``.

One ``FeederMetrics`` per feederd, on a ``CollectorRegistry`` of its own (two
feederds in one test process do not share counters). No metric has a per-job
label (cardinality); ``*_created`` series are off.

Counted as they happen, in this process (reset when feederd restarts, as
Prometheus counters may)::

    nommer_job_submits_total                   jobs accepted by POST /job/submit
    nommer_encode_seconds                      histogram of the wall time of each
                                               finished attempt (download, encode,
                                               upload), seconds, buckets 1 .. 3600
    nommer_encoded_media_seconds_total         media seconds those encodes made
    nommer_webhook_failures_total              webhook deliveries given up
    nommer_fleet_launch_failures_total{code}   refused launches, by AWS error code
    nommer_metrics_refresh_errors_total{part}  parts of a scrape that failed

Read at each scrape (``refresh``)::

    nommer_jobs{state}                         jobs in the store by state
    nommer_queue_depth{queue}                  messages waiting (visible), per pool
                                               queue, dead-letter and state-change queue
    nommer_queue_in_flight{queue}              messages leased by a worker
    nommer_queue_delayed{queue}                messages delayed (retry backoff)
    nommer_queue_oldest_age_seconds{queue}     per pool queue, the age of its oldest
                                               PENDING job (created_at; 0 when none)
    nommer_workers{state}                      live workers by registry state, and
                                               "silent" (no heartbeat for
                                               WORKER_HEARTBEAT_TIMEOUT_S)
    nommer_encode_speed_ratio                  x real time: media seconds / encode
                                               seconds, mean of the last
                                               SPEED_WINDOW encodes reported
    nommer_fleet_instances{spot}               the fleet's machines ("true"/"false")
    nommer_fleet_cost_per_hour                 USD/hour of those with a known price
    nommer_fleet_trouble{code}                 1 for the fleet's current trouble,
                                               0 for codes seen before

Where the encode figures come from: each worker reports in its heartbeat
(``nommer.workerd.metrics.EncodeFigures``: ``jobs_finished``,
``encode_seconds_total``, ``media_seconds_total`` and the last
``RECENT_ENCODES`` encodes). feederd reads the worker registry at each scrape
and every ``WORKER_POLL_S`` seconds and observes each encode it has not seen
yet (``EncodeTally``), so the histogram counts every finished attempt once,
whatever the scrape interval. Encodes a worker made before this feederd
started (a worker older than it) are not counted.
"""

import collections

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nommer.core.pools import UnknownPool, pool_queue, pool_queues
from nommer.core.states import JobState
from nommer.core.worker_registry.base import EXITED, WORKER_STATES
from nommer.core.workqueue.base import dead_letter_name

prometheus_client.disable_created_metrics()

#: Content-Type of the answer: the text exposition format 0.0.4, which every
#: Prometheus reads (names here are all plain ASCII: the same text as 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Buckets of nommer_encode_seconds, seconds.
ENCODE_SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600)

#: nommer_encode_speed_ratio is the mean of this many last encodes.
SPEED_WINDOW = 20

#: How often the worker registry is read between scrapes, seconds (so that no
#: encode slips out of a worker's recent list unobserved).
WORKER_POLL_S = 15.0

#: The ``workers`` label of a worker not heard from in WORKER_HEARTBEAT_TIMEOUT_S.
SILENT = "silent"


def queue_names(settings):
    """The queues whose depth is exported: each pool's job queue (the
    default pool's is NEW_JOB_QUEUE_NAME; on SQS a pool queue's depth sums
    its priority bands), the dead-letter queue and the state-change queue
    (list of str)."""
    new = settings.NEW_JOB_QUEUE_NAME
    return [*pool_queues(settings).values(), dead_letter_name(new), settings.STATE_CHANGE_QUEUE_NAME]


def oldest_waiting(jobs, settings, now):
    """``{queue: seconds}``: per pool queue, the age at ``now`` of the oldest
    PENDING job among ``jobs`` (its ``created_at``), 0 for a queue with none
    waiting. A job whose pool the settings no longer define is left out."""
    ages = dict.fromkeys(pool_queues(settings).values(), 0.0)
    for job in jobs:
        if job.job_state != JobState.PENDING:
            continue
        try:
            queue = pool_queue(settings, getattr(job, "pool", None))
        except UnknownPool:
            continue
        ages[queue] = max(ages.get(queue, 0.0), now - job.created_at)
    return ages


class EncodeTally:
    """Turns worker records (cumulative figures) into one observation per
    encode. ``observe(seconds, media_seconds_or_None)`` is called once for
    each encode a record shows that an earlier one did not.

    ``since``: epoch seconds this feederd started; a worker first seen that
    started before it counts from its figures then (its past is not ours),
    one started after it from zero."""

    def __init__(self, observe, since):
        self._observe = observe
        self.since = since
        self._seen = {}   # worker_id -> (started_at, jobs_finished, encode_seconds_total, media_seconds_total)

    def update(self, records):
        """Observe what ``records`` (WorkerRecords) add; forget workers no longer listed."""
        current = set()
        for record in records:
            current.add(record.worker_id)
            self._one(record)
        for worker_id in set(self._seen) - current:
            del self._seen[worker_id]

    def _one(self, record):
        done = int(record.jobs_finished or 0)
        total_s = float(record.encode_seconds_total or 0.0)
        media_s = float(record.media_seconds_total or 0.0)
        prev = self._seen.get(record.worker_id)
        if prev is None or prev[0] != record.started_at or done < prev[1]:
            if prev is None and record.started_at < self.since:
                self._seen[record.worker_id] = (record.started_at, done, total_s, media_s)
                return
            prev = (record.started_at, 0, 0.0, 0.0)   # a new worker (or restarted under the same id)
        new = done - prev[1]
        self._seen[record.worker_id] = (record.started_at, done, total_s, media_s)
        if new <= 0:
            return
        recent = [e for e in (record.recent_encodes or []) if isinstance(e, (list, tuple)) and e][-new:]
        missing = new - len(recent)
        if missing > 0:
            # More encodes than the record's recent list holds since we last
            # looked: the rest at their mean (count and sum stay exact).
            rest_s = max(0.0, total_s - prev[2] - sum(float(e[0]) for e in recent)) / missing
            rest_media = max(0.0, media_s - prev[3] - sum(float(e[1] or 0.0) for e in recent
                                                          if len(e) > 1)) / missing
            for _ in range(missing):
                self._observe(rest_s, rest_media or None)
        for entry in recent:
            self._observe(float(entry[0]), float(entry[1]) if len(entry) > 1 and entry[1] is not None else None)


class _Snapshot:
    """The gauges read at the last refresh, as a prometheus_client collector."""

    def __init__(self, metrics):
        self.m = metrics

    def collect(self):
        m = self.m
        jobs = GaugeMetricFamily("nommer_jobs", "Jobs in the store, by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], m.jobs.get(state.value, 0))
        yield jobs
        families = {
            "visible": GaugeMetricFamily("nommer_queue_depth", "Messages waiting in a queue (visible)",
                                         labels=["queue"]),
            "in_flight": GaugeMetricFamily("nommer_queue_in_flight", "Messages of a queue leased by a consumer",
                                           labels=["queue"]),
            "delayed": GaugeMetricFamily("nommer_queue_delayed", "Messages of a queue not visible yet (delay)",
                                         labels=["queue"]),
        }
        for queue, depth in m.queues.items():
            for key, family in families.items():
                family.add_metric([queue], depth.get(key, 0))
        yield from families.values()
        age = GaugeMetricFamily("nommer_queue_oldest_age_seconds",
                                "Age of the oldest job waiting (PENDING) for a queue, seconds", labels=["queue"])
        for queue, seconds in m.oldest_age.items():
            age.add_metric([queue], seconds)
        yield age
        workers = GaugeMetricFamily("nommer_workers", "Workers in the registry by state (exited ones left out)",
                                    labels=["state"])
        for state, n in m.workers.items():
            workers.add_metric([state], n)
        yield workers
        speed = GaugeMetricFamily("nommer_encode_speed_ratio",
                                  "Encode speed, x real time: media seconds / encode seconds, mean of the "
                                  f"last {SPEED_WINDOW} encodes")
        if m.speeds:
            speed.add_metric([], sum(m.speeds) / len(m.speeds))
        yield speed
        instances = GaugeMetricFamily("nommer_fleet_instances", "Machines of the fleet, spot or not",
                                      labels=["spot"])
        for spot in ("true", "false"):
            instances.add_metric([spot], m.fleet_instances.get(spot, 0))
        yield instances
        yield GaugeMetricFamily("nommer_fleet_cost_per_hour",
                                "Estimated cost of the fleet, USD per hour (instances with a known price)",
                                value=m.fleet_cost_per_hour)
        trouble = GaugeMetricFamily("nommer_fleet_trouble",
                                    "1 while the fleet cannot start workers, by AWS error code", labels=["code"])
        current = m.fleet.trouble.code if m.fleet is not None and m.fleet.trouble is not None else None
        if current is not None:
            m.trouble_codes.add(current)
        for code in sorted(m.trouble_codes):
            trouble.add_metric([code], 1 if code == current else 0)
        yield trouble
        failures = CounterMetricFamily("nommer_fleet_launch_failures",
                                       "Launches the cloud refused, by error code", labels=["code"])
        launch_failures = m.fleet.launch_failures() if m.fleet is not None else {}
        for code, n in sorted(launch_failures.items()):
            failures.add_metric([code], n)
        yield failures
        yield CounterMetricFamily("nommer_webhook_failures", "Webhook deliveries given up",
                                  value=m.webhook_failures())


class FeederMetrics(Service):
    """The metrics of one feederd (see the module docstring).

    - ``store``: the ``JobStore`` (``count_by_state``, ``list_unfinished``);
    - ``queue``: the ``WorkQueue`` (``depth``);
    - ``settings``: queue names, WORKER_HEARTBEAT_TIMEOUT_S;
    - ``registry``: the ``WorkerRegistry`` or None;
    - ``fleet``: the ``Fleet`` or None (``instances``, ``worker_ids``,
      ``trouble``, ``launch_failures``);
    - ``webhook_failures``: callable -> int, deliveries given up (the
      notifier's count); None: 0;
    - ``clock``: IReactorTime (``seconds()``, the worker poll's timer).

    As a Service it reads the worker registry every WORKER_POLL_S.
    ``submitted(n)`` counts accepted jobs; ``render()`` refreshes and returns
    a Deferred of the exposition text (bytes, ``CONTENT_TYPE``)."""

    log = Logger()

    def __init__(self, store, queue, settings, *, registry=None, fleet=None, webhook_failures=None, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store, self.queue, self.settings = store, queue, settings
        self.worker_registry, self.fleet, self.clock = registry, fleet, clock
        self.webhook_failures = webhook_failures or (lambda: 0)
        self.registry = CollectorRegistry()
        self.submits = Counter("nommer_job_submits", "Jobs accepted by POST /job/submit", registry=self.registry)
        self.encode_seconds = Histogram(
            "nommer_encode_seconds", "Wall time of each finished attempt (download, encode, upload), seconds",
            buckets=ENCODE_SECONDS_BUCKETS, registry=self.registry)
        self.media_seconds = Counter("nommer_encoded_media_seconds",
                                     "Media seconds (source duration) of the finished encodes",
                                     registry=self.registry)
        self.refresh_errors = Counter("nommer_metrics_refresh_errors", "Parts of a metrics refresh that failed",
                                      ["part"], registry=self.registry)
        # Read at refresh:
        self.jobs = {}
        self.queues = {}
        self.oldest_age = {}
        self.workers = dict.fromkeys([s for s in WORKER_STATES if s != EXITED] + [SILENT], 0)
        self.speeds = collections.deque(maxlen=SPEED_WINDOW)
        self.fleet_instances = {"true": 0, "false": 0}
        self.fleet_cost_per_hour = 0.0
        self.trouble_codes = set()
        self.tally = EncodeTally(self._observe_encode, clock.seconds())
        self.registry.register(_Snapshot(self))
        self._refreshing = None
        self._workers_lock = defer.DeferredLock()
        self._loop = task.LoopingCall(self._poll_workers)
        self._loop.clock = clock

    # --- events -----------------------------------------------------------

    def submitted(self, n=1):
        """Count ``n`` accepted jobs."""
        self.submits.inc(n)

    def _observe_encode(self, seconds, media_seconds):
        self.encode_seconds.observe(seconds)
        if media_seconds is not None:
            self.media_seconds.inc(media_seconds)
            if seconds > 0:
                self.speeds.append(media_seconds / seconds)

    # --- the service: the worker registry between scrapes ----------------------

    def startService(self):
        super().startService()
        if self.worker_registry is not None:
            self._loop.start(WORKER_POLL_S, now=True)

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self._workers_lock.run(lambda: None)  # a registry read under way ends first

    def _poll_workers(self):
        return self._part("workers", self._refresh_workers)

    # --- refresh and render ---------------------------------------------------

    def render(self):
        """Deferred of the exposition text (bytes) after a refresh; never fails
        (a part that cannot be read keeps its last values and counts in
        ``nommer_metrics_refresh_errors_total{part}``)."""
        d = defer.Deferred()
        self.refresh().addBoth(lambda _: d.callback(generate_latest(self.registry)))
        return d

    def refresh(self):
        """Read every gauge again (store, queues, registry, fleet); concurrent
        scrapes share one refresh. Deferred; never fails."""
        if self._refreshing is None:
            self._refreshing = defer.Deferred.fromCoroutine(self._refresh())

            def done(result):
                self._refreshing = None
                return result
            self._refreshing.addBoth(done)
        d = defer.Deferred()
        self._refreshing.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    async def _refresh(self):
        await defer.gatherResults([
            self._part("jobs", self._refresh_jobs),
            defer.ensureDeferred(self._refresh_queues()),
            self._part("oldest", self._refresh_oldest),
            self._part("workers", self._refresh_workers),
            self._part("fleet", self._refresh_fleet),
        ])

    def _part(self, name, refresh):
        d = defer.maybeDeferred(refresh)

        def failed(failure):
            self.refresh_errors.labels(part=name).inc()
            self.log.failure("metrics: reading {part} failed; its last values stay", failure, part=name)
        return d.addErrback(failed)

    async def _refresh_jobs(self):
        self.jobs = dict(await self.store.count_by_state())

    async def _refresh_queues(self):
        """Each queue's depth; one that cannot be read keeps its last one."""
        names = queue_names(self.settings)

        def read(name):
            def keep(depth):
                self.queues[name] = depth
            return defer.maybeDeferred(self.queue.depth, name).addCallback(keep)
        await defer.gatherResults([self._part("queues", lambda q=q: read(q)) for q in names])

    async def _refresh_oldest(self):
        jobs = await self.store.list_unfinished()
        self.oldest_age = oldest_waiting(jobs, self.settings, self.clock.seconds())

    async def _refresh_workers(self):
        if self.worker_registry is None:
            return
        await self._workers_lock.acquire()
        try:
            records = await self.worker_registry.list()
            self.tally.update(records)
        finally:
            self._workers_lock.release()
        now = self.clock.seconds()
        timeout_s = self.settings.WORKER_HEARTBEAT_TIMEOUT_S
        counts = dict.fromkeys(self.workers, 0)
        for record in records:
            if record.state == EXITED:
                continue
            state = record.state if now - record.last_seen <= timeout_s else SILENT
            counts[state] = counts.get(state, 0) + 1
        self.workers = counts

    async def _refresh_fleet(self):
        if self.fleet is None:
            return
        instances = await defer.maybeDeferred(self.fleet.instances)
        if instances is None:  # a fleet without machines of its own (local processes): none is spot
            self.fleet_instances = {"true": 0, "false": len(self.fleet.worker_ids())}
            self.fleet_cost_per_hour = 0.0
            return
        instances = list(instances)
        spot = sum(1 for i in instances if i.get("market") == "spot")
        self.fleet_instances = {"true": spot, "false": len(instances) - spot}
        self.fleet_cost_per_hour = float(sum(i.get("price_per_hour") or 0.0 for i in instances))


def fleet_status(settings, fleet):
    """The fleet's state for ``/health`` and ``/workers``: ``{"backend":
    FLEET_BACKEND, "trouble": None or FleetTrouble.to_dict() (code, message,
    since...), "launch_failures": {code: n}}``."""
    trouble = getattr(fleet, "trouble", None)
    failures = fleet.launch_failures() if hasattr(fleet, "launch_failures") else {}
    return {"backend": settings.FLEET_BACKEND, "trouble": None if trouble is None else trouble.to_dict(),
            "launch_failures": failures}
