"""One fleet and one autoscaler per pool (``nommer.feederd.fleet.pools``): each pool scales from
its own queue with its own settings and maximum; the fleets seen as one for /health and /workers;
a local fleet's workers serve their pool; an EC2 pool's user data names it."""

import attr
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.feederd.fleet.base import Fleet
from nommer.feederd.fleet.local import LocalFleet, workerd_argv
from nommer.feederd.fleet.pools import PoolFleets
from nommer.feederd.fleet.userdata import parse_env_file, render_user_data
from tests.helpers import ensure, eventually, temp_ledger

POOLS = {"gpu": {"max_workers": 2, "worker": {"MAX_ENCODING_JOBS_PER_WORKER": 1}},
         "large": {"fleet": {"FLEET_BACKEND": "none"}}}


class Recording(Fleet):
    """A fleet of plain values that remembers its pool, settings and launches."""

    def __init__(self, settings, pool):
        self.settings, self.pool = settings, pool
        self.max_workers = settings.MAX_NUM_WORKERS
        self.started = []

    def counts(self):
        return len(self.started), 0

    def launch(self, n):
        ids = [f"{self.pool}-{len(self.started) + i}" for i in range(n)]
        self.started += ids
        return ids

    def worker_ids(self):
        return list(self.started)

    def instances(self):
        return [{"instance_id": i} for i in self.started] if self.pool == "gpu" else None


class PoolFleetsTests(TestCase):

    def setUp(self):
        self.ledger, self.root = temp_ledger(self, POOLS=POOLS, MAX_NUM_WORKERS=5, MAX_ENCODING_JOBS_PER_WORKER=2,
                                             JOB_OVERFLOW_THRESH=0, AUTOSCALE_INTERVAL_S=5.0)
        self.settings = self.ledger.settings
        self.clock = task.Clock()

        def build(settings, reactor_, registry, pool=None):
            return Recording(settings, pool)
        self.fleets = PoolFleets(self.settings, reactor, None, build=build)
        self.fleets.autoscale(self.ledger.store, self.ledger.queue, self.clock)

    async def submit(self, pool, n):
        for _ in range(n):
            await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///x", dest_path="file:///y",
                                         nommer="n", job_options={}, pool=pool))

    @ensure
    async def test_each_pool_scales_from_its_queue(self):
        """5 gpu jobs, 1 per gpu worker, at most 2: 2 gpu workers; 3 default jobs, 2 per worker: 2
        default workers; the large pool (fleet 'none') starts nobody."""
        fleets = self.fleets.fleets
        self.assertEqual(list(fleets), ["default", "gpu", "large"])
        self.assertEqual((fleets["gpu"].settings.MAX_NUM_WORKERS, fleets["gpu"].settings.EC2_FLEET_NAME),
                         (2, "nommer-gpu"))
        await self.submit("gpu", 5)
        await self.submit("default", 3)
        await self.submit("large", 1)
        for autoscaler in self.fleets.autoscalers.values():
            await autoscaler.tick()
        self.assertEqual(fleets["gpu"].started, ["gpu-0", "gpu-1"])
        self.assertEqual(fleets["default"].started, ["default-0", "default-1"])
        self.assertEqual(fleets["large"].started, ["large-0"])  # Recording launches what it is asked
        self.assertEqual(self.fleets.max_workers, 5 + 2 + 5)
        self.assertEqual(self.fleets.worker_ids(), sorted(["gpu-0", "gpu-1", "default-0", "default-1", "large-0"]))
        self.assertEqual(self.fleets.instances(), [{"instance_id": "gpu-0", "pool": "gpu"},
                                                   {"instance_id": "gpu-1", "pool": "gpu"}])
        self.assertEqual(await self.fleets.counts(), (5, 0, 0))

    @ensure
    async def test_poke_and_trouble(self):
        """poke() evaluates every pool now; a pool's trouble shows, naming the pool."""
        await self.submit("gpu", 1)
        self.fleets.startService()
        self.addCleanup(self.fleets.stopService)
        self.fleets.poke()
        await eventually(lambda: self.fleets.fleets["gpu"].started, what="a gpu worker")
        self.assertEqual(len(self.fleets.fleets["gpu"].started), 1)
        self.assertIsNone(self.fleets.trouble)
        gpu = self.fleets.fleets["gpu"]
        gpu.trouble = attr.make_class("T", ["code", "message", "since", "during"])("X", "no capacity", 1.0, "launch")
        self.assertEqual(self.fleets.trouble.message, "pool gpu: no capacity")


class LocalAndEc2PoolTests(TestCase):

    def test_local_workers_serve_their_pool(self):
        """A local pool's workerd gets --pools and a name with the pool; the default pool's, neither."""
        ledger, _ = temp_ledger(self, POOLS=POOLS)
        settings = ledger.settings
        self.assertNotIn("--pools", workerd_argv(settings, "w1"))
        self.assertEqual(workerd_argv(settings, "w1", "gpu")[-2:], ["--pools", "gpu"])
        spawned = []

        class Spawner:
            def spawnProcess(self, protocol, executable, args, **kwargs):
                spawned.append(args)

        fleet = LocalFleet(settings, Spawner(), pool="gpu")
        [worker_id] = fleet.launch(1)
        self.assertRegex(worker_id, r"-gpu-w1$")
        self.assertEqual(spawned[0][-2:], ["--pools", "gpu"])

    def test_ec2_pool_user_data_names_the_pool(self):
        """An EC2 pool's instances boot a workerd serving that pool (NOMMER_POOLS in its environment file)."""
        import json
        ledger, _ = temp_ledger(self, POOLS=POOLS, CONFIG_S3_BUCKET="cfg", AWS_REGION="us-east-1")

        def env(text):
            return parse_env_file(json.loads(text.split("\n", 1)[1])["write_files"][0]["content"])
        self.assertNotIn("NOMMER_POOLS", env(render_user_data(ledger.settings)))
        self.assertEqual(env(render_user_data(ledger.settings, pools=["gpu"]))["NOMMER_POOLS"], "gpu")
