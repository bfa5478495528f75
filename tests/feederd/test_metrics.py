"""feederd's Prometheus metrics (``nommer.feederd.metrics``) in memory: real SQLite job store, queue,
worker registry and key store, a ``task.Clock`` for the metrics' time; every scrape parsed with
prometheus_client's own parser. ``GET /metrics`` through the API with StubTreq (auth, content type).
The end-to-end test with real daemons is tests/e2e/test_e2e_metrics.py."""

import json

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.keys import open_key_store
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.worker_registry.base import DRAINING, EXITED, RUNNING, WorkerRecord
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from nommer.feederd.fleet.base import Fleet
from nommer.feederd.metrics import ENCODE_SECONDS_BUCKETS, SPEED_WINDOW, EncodeTally, FeederMetrics
from tests.feederd.test_api_workers import open_backends
from tests.helpers import ensure, pumped, temp_settings

URL = "http://127.0.0.1:8001"


def parse(text):
    """``{name: {frozenset(labels.items()): value}}`` and the families' types, from a metrics text."""
    values, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            values.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return values, types


def one(values, name, **labels):
    return values[name][frozenset(labels.items())]


class StaticFleet(Fleet):
    """A fleet whose machines are given (``instances``: list of dicts, or None for a local fleet)."""

    def __init__(self, instances=None, worker_ids=()):
        self._instances = instances
        self._ids = list(worker_ids)

    def counts(self):
        return 0, 0

    def launch(self, n):
        return []

    def worker_ids(self):
        return sorted(self._ids)

    def instances(self):
        return defer.succeed(self._instances) if self._instances is not None else None


class MetricsTestBase(TestCase):
    timeout = 20

    def setUp(self):
        open_backends(self, WORKER_HEARTBEAT_TIMEOUT_S=60.0)
        self.clock = task.Clock()
        # the store stamps jobs with the real time; the metrics' clock runs 100 s ahead of it
        self.clock.advance(reactor.seconds() + 100)
        self.now = self.clock.seconds()

    def metrics(self, **kwargs):
        kwargs.setdefault("registry", self.registry)
        return FeederMetrics(self.store, self.queue, self.settings, clock=self.clock, **kwargs)

    async def scrape(self, metrics):
        text = (await metrics.render()).decode()
        self.assertNotIn("_created", text)
        return parse(text)

    async def submit(self):
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in", dest_path="file:///out",
                                           nommer="n", job_options=[]))
        return job.job_id

    def worker(self, worker_id, **fields):
        fields.setdefault("started_at", self.now - 10)
        fields.setdefault("last_seen", self.now - 1)
        return self.registry.heartbeat(WorkerRecord(worker_id=worker_id, **fields))


class ScrapeTests(MetricsTestBase):

    @ensure
    async def test_jobs_queues_and_oldest_waiting_job(self):
        """Jobs by state (every state, 0 when none), submits, queue depth and the age of the oldest
        PENDING job; the families have the types Prometheus expects."""
        metrics = self.metrics()
        values, types = await self.scrape(metrics)
        self.assertEqual({s.value: one(values, "nommer_jobs", state=s.value) for s in JobState},
                         {s.value: 0 for s in JobState})
        self.assertEqual(one(values, "nommer_queue_oldest_age_seconds", queue="media_nommer"), 0)
        first = await self.submit()
        await self.submit()
        running = await self.submit()
        await self.ledger.set_state(running, JobState.DOWNLOADING)
        await self.ledger.set_state(first, JobState.CANCELED)
        metrics.submitted(3)
        values, types = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_jobs", state="PENDING"), 1)
        self.assertEqual(one(values, "nommer_jobs", state="DOWNLOADING"), 1)
        self.assertEqual(one(values, "nommer_jobs", state="CANCELED"), 1)
        self.assertEqual(one(values, "nommer_job_submits_total"), 3)
        self.assertEqual(one(values, "nommer_queue_depth", queue="media_nommer"), 3)
        self.assertEqual(one(values, "nommer_queue_in_flight", queue="media_nommer"), 0)
        self.assertEqual(one(values, "nommer_queue_depth", queue="media_nommer_dlq"), 0)
        self.assertGreater(one(values, "nommer_queue_depth", queue="media_nommer_jstate"), 0)  # the ledger's announcements
        age = one(values, "nommer_queue_oldest_age_seconds", queue="media_nommer")
        self.assertTrue(99 <= age <= 110, age)
        self.clock.advance(50)
        values, _ = await self.scrape(metrics)
        self.assertAlmostEqual(one(values, "nommer_queue_oldest_age_seconds", queue="media_nommer"), age + 50, places=3)
        self.assertEqual({name: types[name] for name in ("nommer_jobs", "nommer_job_submits", "nommer_encode_seconds",
                                                         "nommer_webhook_failures", "nommer_fleet_trouble")},
                         {"nommer_jobs": "gauge", "nommer_job_submits": "counter",
                          "nommer_encode_seconds": "histogram", "nommer_webhook_failures": "counter",
                          "nommer_fleet_trouble": "gauge"})

    @ensure
    async def test_pool_queues(self):
        """With POOLS, each pool's queue has its depth and the age of its own oldest PENDING job."""
        self.settings, self.root = temp_settings(self, POOLS={"gpu": {}})
        self.store, self.queue = make_store(self.settings, reactor), make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in", dest_path="file:///out",
                                     nommer="n", job_options=[], pool="gpu"))
        values, _ = await self.scrape(self.metrics(registry=None))
        self.assertEqual(one(values, "nommer_queue_depth", queue="media_nommer_gpu"), 1)
        self.assertEqual(one(values, "nommer_queue_depth", queue="media_nommer"), 0)
        self.assertTrue(99 <= one(values, "nommer_queue_oldest_age_seconds", queue="media_nommer_gpu") <= 110)
        self.assertEqual(one(values, "nommer_queue_oldest_age_seconds", queue="media_nommer"), 0)

    @ensure
    async def test_workers_by_state(self):
        """Live workers by registry state; one not heard from in WORKER_HEARTBEAT_TIMEOUT_S is silent;
        exited ones are not counted."""
        await self.worker("a", state=RUNNING)
        await self.worker("b", state=RUNNING)
        await self.worker("c", state=DRAINING)
        await self.worker("d", state=RUNNING, last_seen=self.now - 61)
        await self.worker("e", state=EXITED)
        values, _ = await self.scrape(self.metrics())
        self.assertEqual({dict(k)["state"]: v for k, v in values["nommer_workers"].items()},
                         {"running": 2, "draining": 1, "interrupted": 0, "terminating": 0, "silent": 1})

    @ensure
    async def test_fleet_instances_cost_and_webhook_failures(self):
        """Instances spot or not and the cost per hour of those with a price; a local fleet's processes
        count as on-demand; the notifier's count of given-up webhooks."""
        fleet = StaticFleet([
            {"instance_id": "i-1", "market": "spot", "price_per_hour": 0.0312},
            {"instance_id": "i-2", "market": "spot", "price_per_hour": 0.05},
            {"instance_id": "i-3", "market": "on-demand", "price_per_hour": None}])
        failures = [0]
        metrics = self.metrics(fleet=fleet, webhook_failures=lambda: failures[0])
        failures[0] = 4
        values, _ = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_fleet_instances", spot="true"), 2)
        self.assertEqual(one(values, "nommer_fleet_instances", spot="false"), 1)
        self.assertAlmostEqual(one(values, "nommer_fleet_cost_per_hour"), 0.0812)
        self.assertEqual(one(values, "nommer_webhook_failures_total"), 4)
        self.assertNotIn("nommer_fleet_trouble", values)   # never in trouble: no series
        local = self.metrics(fleet=StaticFleet(None, worker_ids=["h-1-w0", "h-1-w1"]))
        values, _ = await self.scrape(local)
        self.assertEqual(one(values, "nommer_fleet_instances", spot="false"), 2)
        self.assertEqual(one(values, "nommer_fleet_cost_per_hour"), 0)

    @ensure
    async def test_trouble_gauge_keeps_past_codes_at_zero(self):
        """nommer_fleet_trouble{code} is 1 for the current trouble, 0 for codes seen before, absent after."""
        fleet = StaticFleet([])
        metrics = self.metrics(fleet=fleet)
        fleet.report_trouble("InsufficientInstanceCapacity", "no spot", self.now)
        values, _ = await self.scrape(metrics)
        self.assertEqual(values["nommer_fleet_trouble"], {frozenset({("code", "InsufficientInstanceCapacity")}): 1})
        fleet.report_trouble("VcpuLimitExceeded", "quota", self.now)
        values, _ = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_fleet_trouble", code="VcpuLimitExceeded"), 1)
        self.assertEqual(one(values, "nommer_fleet_trouble", code="InsufficientInstanceCapacity"), 0)
        fleet.clear_trouble()
        values, _ = await self.scrape(metrics)
        self.assertEqual(set(values["nommer_fleet_trouble"].values()), {0})
        self.assertEqual(one(values, "nommer_fleet_launch_failures_total", code="VcpuLimitExceeded"), 1)

    @ensure
    async def test_a_part_that_fails_keeps_the_rest(self):
        """The store failing: the scrape still answers, the store's gauges keep their last values and
        the failure is counted by part."""
        metrics = self.metrics()
        await self.submit()
        values, _ = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_jobs", state="PENDING"), 1)

        def broken():
            return defer.fail(RuntimeError("store down"))
        self.patch(self.store, "count_by_state", broken)
        self.patch(self.store, "list_unfinished", broken)
        await self.worker("a", state=RUNNING)
        values, _ = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_jobs", state="PENDING"), 1)
        self.assertEqual(one(values, "nommer_metrics_refresh_errors_total", part="jobs"), 1)
        self.assertEqual(one(values, "nommer_metrics_refresh_errors_total", part="oldest"), 1)
        self.assertEqual(one(values, "nommer_workers", state="running"), 1)
        self.flushLoggedErrors(RuntimeError)

    @ensure
    async def test_concurrent_scrapes_share_one_refresh(self):
        """Two scrapes at once read the store once."""
        metrics = self.metrics()
        calls = []
        real = self.store.count_by_state

        def counted():
            calls.append(1)
            return real()
        self.patch(self.store, "count_by_state", counted)
        first, second = await defer.gatherResults([metrics.render(), metrics.render()])
        self.assertEqual(len(calls), 1)
        self.assertEqual(parse(first.decode())[0]["nommer_jobs"], parse(second.decode())[0]["nommer_jobs"])


class EncodeFiguresTests(MetricsTestBase):

    @ensure
    async def test_each_encode_observed_once(self):
        """Encodes reported in heartbeats become histogram observations, each once however often the
        registry is read; the speed gauge is the mean of the recent speeds; media seconds add up."""
        metrics = self.metrics()
        started = self.now + 1   # after this feederd: every encode it reports is counted
        await self.worker("w", started_at=started, jobs_finished=2, encode_seconds_total=13.0, media_seconds_total=40.0,
                          recent_encodes=[[3.0, 12.0], [10.0, 28.0]], last_encode_speed=2.8)
        values, types = await self.scrape(metrics)
        self.assertEqual(types["nommer_encode_seconds"], "histogram")
        self.assertEqual(one(values, "nommer_encode_seconds_count"), 2)
        self.assertEqual(one(values, "nommer_encode_seconds_sum"), 13.0)
        buckets = {float(dict(k)["le"]): v for k, v in values["nommer_encode_seconds_bucket"].items()}
        self.assertEqual(sorted(buckets), [float(b) for b in ENCODE_SECONDS_BUCKETS] + [float("inf")])
        self.assertEqual((buckets[2.0], buckets[5.0], buckets[10.0], buckets[3600.0]), (0, 1, 2, 2))
        self.assertEqual(one(values, "nommer_encoded_media_seconds_total"), 40.0)
        self.assertAlmostEqual(one(values, "nommer_encode_speed_ratio"), (4.0 + 2.8) / 2)
        values, _ = await self.scrape(metrics)   # the same record again: nothing new
        self.assertEqual(one(values, "nommer_encode_seconds_count"), 2)
        await self.worker("w", started_at=started, jobs_finished=3, encode_seconds_total=14.0, media_seconds_total=42.0,
                          recent_encodes=[[3.0, 12.0], [10.0, 28.0], [1.0, 2.0]])
        await metrics._poll_workers()   # the periodic read, between scrapes
        values, _ = await self.scrape(metrics)
        self.assertEqual(one(values, "nommer_encode_seconds_count"), 3)
        self.assertEqual(one(values, "nommer_encode_seconds_sum"), 14.0)

    @ensure
    async def test_no_speed_before_an_encode(self):
        """Without any encode the speed gauge has no sample (not a made-up 0)."""
        values, types = await self.scrape(self.metrics())
        self.assertEqual(types["nommer_encode_speed_ratio"], "gauge")
        self.assertNotIn("nommer_encode_speed_ratio", values)
        self.assertEqual(one(values, "nommer_encode_seconds_count"), 0)

    def test_tally_more_encodes_than_listed(self):
        """More encodes since the last read than the recent list holds: count and sum stay exact."""
        seen = []
        tally = EncodeTally(lambda s, m: seen.append((s, m)), since=100.0)
        record = WorkerRecord(worker_id="w", started_at=200.0, jobs_finished=25, encode_seconds_total=250.0,
                              media_seconds_total=500.0, recent_encodes=[[5.0, 10.0]] * 20)
        tally.update([record])
        self.assertEqual(len(seen), 25)
        self.assertAlmostEqual(sum(s for s, _ in seen), 250.0)
        self.assertAlmostEqual(sum(m for _, m in seen), 500.0)
        self.assertEqual(seen[:5], [(30.0, 60.0)] * 5)   # the 5 no longer listed, at their mean

    def test_tally_old_worker_restarted_worker_and_forgotten_worker(self):
        """A worker older than feederd counts from what it has then; the same id restarted (another
        started_at) counts from zero; a worker gone from the registry is forgotten."""
        seen = []
        tally = EncodeTally(lambda s, m: seen.append(s), since=100.0)
        old = WorkerRecord(worker_id="w", started_at=50.0, jobs_finished=7, encode_seconds_total=70.0,
                           recent_encodes=[[10.0, None]] * 7)
        tally.update([old])
        self.assertEqual(seen, [])
        tally.update([WorkerRecord(worker_id="w", started_at=50.0, jobs_finished=8, encode_seconds_total=72.0,
                                   recent_encodes=[[10.0, None]] * 7 + [[2.0, None]])])
        self.assertEqual(seen, [2.0])
        tally.update([WorkerRecord(worker_id="w", started_at=300.0, jobs_finished=1, encode_seconds_total=4.0,
                                   recent_encodes=[[4.0, None]])])
        self.assertEqual(seen, [2.0, 4.0])
        tally.update([])
        tally.update([WorkerRecord(worker_id="w", started_at=300.0, jobs_finished=1, encode_seconds_total=4.0,
                                   recent_encodes=[[4.0, None]])])
        self.assertEqual(seen, [2.0, 4.0, 4.0])   # forgotten, then seen anew as started after feederd

    def test_speed_window(self):
        """The speed gauge averages the last SPEED_WINDOW encodes only."""
        metrics = FeederMetrics(None, None, self.settings, clock=self.clock)
        for _ in range(SPEED_WINDOW):
            metrics._observe_encode(10.0, 10.0)
        metrics._observe_encode(1.0, 21.0)
        self.assertEqual(len(metrics.speeds), SPEED_WINDOW)
        self.assertAlmostEqual(sum(metrics.speeds) / SPEED_WINDOW, ((SPEED_WINDOW - 1) * 1.0 + 21.0) / SPEED_WINDOW)


class MetricsRouteTests(MetricsTestBase):

    def api(self, keys=None):
        api = JobAPI(self.ledger, self.settings, registry=self.registry, clock=self.clock, keys=keys)
        return StubTreq(api.resource()), api

    async def get(self, stub, path="/metrics", key=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await pumped(stub, stub.get(URL + path, headers=headers))
        content = await pumped(stub, stub.content(response))
        return response, content.decode()

    @ensure
    async def test_anonymous_on_loopback_and_submits_counted(self):
        """On loopback with no key, /metrics answers the text format; a submit through the API counts."""
        stub, api = self.api()
        response = await pumped(stub, stub.post(URL + "/job/submit", data=json.dumps({
            "source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/out.mp4",
            "notify_url": None, "job_options": {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer",
                                                "options": [{"outfile_options": [["f", "mp4"]]}]}}).encode()))
        self.assertEqual(response.code, 200, await pumped(stub, stub.content(response)))
        response, text = await self.get(stub)
        self.assertEqual(response.code, 200, text)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["text/plain; version=0.0.4; charset=utf-8"])
        values, _ = parse(text)
        self.assertEqual(one(values, "nommer_job_submits_total"), 1)
        self.assertEqual(one(values, "nommer_jobs", state="PENDING"), 1)

    @ensure
    async def test_needs_a_metrics_key_once_keys_exist(self):
        """With keys: no key is 401, a key without metrics (or admin) 403 (JSON errors); a metrics-only
        key gets the text and can do nothing else; an admin key gets the text too."""
        keys = open_key_store(self.settings, reactor=reactor, clock=self.clock)
        self.addCleanup(keys.close)
        _, reader = await keys.create("reader", ("read",))
        _, scraper = await keys.create("prometheus", ("metrics",))
        _, admin = await keys.create("root", ("admin",))
        stub, _ = self.api(keys)
        response, text = await self.get(stub)
        self.assertEqual((response.code, json.loads(text)["error_code"]), (401, "UNAUTHORIZED"))
        self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="nommer"'])
        response, text = await self.get(stub, key=reader)
        self.assertEqual((response.code, json.loads(text)["error_code"]), (403, "FORBIDDEN"))
        self.assertIn("metrics", json.loads(text)["message"])
        response, text = await self.get(stub, key=admin)
        self.assertEqual(response.code, 200, text)
        response, _ = await self.get(stub, path="/jobs", key=scraper)
        self.assertEqual(response.code, 403)
        response, text = await self.get(stub, key=scraper)
        self.assertEqual(response.code, 200, text)
        self.assertIn("nommer_jobs", parse(text)[0])
