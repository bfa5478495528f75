"""LocalFleet and NoFleet (``nommer.feederd.fleet.local``): the Fleet contract
with real ``twistd workerd --local`` children, started by the fleet's own
argv from a nomconf file in a temp dir."""

import os
import signal

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.conf import load_settings
from nommer.core.worker_registry.sqlite import SQLiteWorkerRegistry
from nommer.feederd.fleet.base import Fleet
from nommer.feederd.fleet.local import LocalFleet, NoFleet
from tests.feederd.fleet_contract import FleetContract, assert_matches_interface
from tests.helpers import TEST_ALLOWED_NETWORKS, eventually


class RecordingReactor:
    """The real reactor, noting the pid of each workerd spawned (by worker id):
    the test's view of the processes, apart from the fleet's."""

    def __init__(self, real):
        self._real = real
        self.pids = {}

    def __getattr__(self, name):
        return getattr(self._real, name)

    def spawnProcess(self, protocol, executable, args, **kwargs):
        transport = self._real.spawnProcess(protocol, executable, args, **kwargs)
        self.pids[args[args.index("--worker-id") + 1]] = transport.pid
        return transport


def running(pid):
    """True if process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class LocalFleetContractTests(FleetContract, TestCase):

    fleet_class = LocalFleet
    WORKERS_OUTLIVE_STOP = False
    CALLS_ON_CHANGE = True

    def setUp(self):
        FleetContract.setUp(self)
        self.reactor = RecordingReactor(reactor)

    def settings(self):
        """Settings loaded from a nomconf file (so workerd gets ``--config``):
        data and file root in a temp dir, workers that do not leave when idle."""
        base = os.path.realpath(self.mktemp())
        os.makedirs(os.path.join(base, "media"))
        config = os.path.join(base, "nomconf_fleet.py")
        values = dict(DATA_DIR=os.path.join(base, "data"), FILE_STORAGE_ROOTS=[os.path.join(base, "media")],
                      ALLOWED_PRIVATE_NETWORKS=TEST_ALLOWED_NETWORKS, WORKER_MAX_IDLE_S=600.0, MAX_NUM_WORKERS=4)
        with open(config, "w") as f:
            f.writelines(f"{name} = {value!r}\n" for name, value in values.items())
        return load_settings(config)

    def make_fleet(self, available=True):
        settings = self.settings()
        if not available:
            os.remove(settings.config_path)  # every workerd exits at start: no config
        self.registry = SQLiteWorkerRegistry.from_settings(settings, reactor)  # the workers' (DATA_DIR)
        self.addCleanup(self.registry.close)
        return LocalFleet(settings, self.reactor)

    async def worker_up(self, fleet, worker_id):
        async def heartbeat():
            return worker_id in {r.worker_id for r in await self.registry.list()}
        await eventually(heartbeat, timeout_s=60.0, what=f"{worker_id}'s first heartbeat")

    async def end_worker(self, fleet, worker_id):
        os.kill(self.reactor.pids[worker_id], signal.SIGKILL)
        await self.wait_ended(fleet, [worker_id])

    async def wait_ended(self, fleet, worker_ids):
        # the fleet calls on_change once per worker it saw end
        await eventually(lambda: self.changes >= len(worker_ids), timeout_s=30.0, what="the workers' ends")

    def alive(self, worker_ids):
        return [w for w in worker_ids if running(self.reactor.pids[w])]


class NoFleetTests(TestCase):

    def test_signatures_match_the_interface(self):
        """NoFleet keeps the Fleet interface's signatures."""
        assert_matches_interface(self, NoFleet, Fleet)

    def test_starts_nothing(self):
        """FLEET_BACKEND "none": nothing counted, nothing launched, a maximum of 0."""
        fleet = NoFleet()
        self.assertEqual(fleet.counts(), (0, 0))
        self.assertEqual(fleet.launch(3), [])
        self.assertEqual(fleet.worker_ids(), [])
        self.assertEqual(fleet.max_workers, 0)
