"""The autoscaler (``nommer.feederd.fleet.autoscaler``) with a fleet of plain
values; the EC2 scenarios (tests/feederd/test_fleet_ec2_scenarios.py) drive it
with the EC2 fleet."""

from twisted.internet import task
from twisted.trial.unittest import TestCase

from nommer.feederd.fleet.autoscaler import Autoscaler
from tests.feederd.fleet_fakes import FakeStore
from tests.helpers import temp_settings


class SyncFleetTests(TestCase):

    def test_plain_value_fleet_and_its_maximum(self):
        """A fleet answering with plain values (LocalFleet's shape) still works; its max_workers is the cap."""
        settings, _ = temp_settings(self, MAX_NUM_WORKERS=8, AUTOSCALE_INTERVAL_S=5.0)

        class Plain:
            max_workers = 3

            def __init__(self):
                self.started = []

            def counts(self):
                return len(self.started), 0

            def launch(self, n):
                self.started.extend(range(n))
                return list(range(n))

        fleet, store, clock = Plain(), FakeStore(), task.Clock()
        store.unfinished = 10
        autoscaler = Autoscaler(store, fleet, settings, clock)
        autoscaler.startService()
        self.addCleanup(autoscaler.stopService)
        clock.advance(20)
        self.assertEqual(len(fleet.started), 3)
