"""The Fleet interface (``nommer.feederd.fleet.base``): what it leaves to
backends, its defaults, and the contract's signature check, which must fail
for an implementation that drifts from it."""

from twisted.trial.unittest import TestCase

from nommer.feederd.fleet.base import Fleet
from tests.feederd.fleet_contract import assert_matches_interface


class Complete(Fleet):
    def counts(self):
        return 0, 0

    def launch(self, n):
        return []

    def worker_ids(self):
        return []


class InterfaceTests(TestCase):

    def test_backends_must_count_launch_and_list(self):
        """counts, launch and worker_ids are left to backends; housekeeping and instances have defaults."""
        fleet = Fleet()
        for call in (fleet.counts, lambda: fleet.launch(1), fleet.worker_ids):
            self.assertRaises(NotImplementedError, call)
        self.assertIsNone(fleet.housekeeping())
        self.assertIsNone(fleet.instances())
        self.assertIsNone(fleet.on_change)
        self.assertEqual(fleet.max_workers, 0)


class SignatureCheckTests(TestCase):

    def assert_drift_caught(self, drifted, words):
        with self.assertRaises(self.failureException) as caught:
            assert_matches_interface(self, drifted, Fleet)
        self.assertIn(words, str(caught.exception))

    def test_a_complete_fleet_passes(self):
        """A fleet with the interface's methods and signatures passes."""
        assert_matches_interface(self, Complete, Fleet)

    def test_renamed_parameter(self):
        """launch(self, count) instead of launch(self, n) is drift: keyword callers would break."""
        class Renamed(Complete):
            def launch(self, count):
                return []
        self.assert_drift_caught(Renamed, "Renamed.launch(self, count) drifted from Fleet.launch(self, n)")

    def test_added_parameter_and_default(self):
        """A new parameter, even with a default, is drift; so is a changed default."""
        class Added(Complete):
            def counts(self, fresh=False):
                return 0, 0
        self.assert_drift_caught(Added, "Added.counts(self, fresh=False) drifted")

        class Defaulted(Complete):
            def launch(self, n=1):
                return []
        self.assert_drift_caught(Defaulted, "Defaulted.launch(self, n=1) drifted")

    def test_undeclared_public_method(self):
        """A public method the interface does not declare is drift (callers cannot rely on it)."""
        class Extra(Complete):
            def terminate(self, worker_id):
                pass
        self.assert_drift_caught(Extra, "does not declare")

    def test_unimplemented_method(self):
        """A backend that leaves an interface method unimplemented fails."""
        class Missing(Fleet):
            def counts(self):
                return 0, 0

            def launch(self, n):
                return []
        self.assert_drift_caught(Missing, "worker_ids")

    def test_service_methods_are_checked_too(self):
        """The Service methods the fleet inherits are part of the interface (stopService takes no argument)."""
        class Stopping(Complete):
            async def stopService(self, timeout_s=10.0):
                pass
        self.assert_drift_caught(Stopping, "Stopping.stopService(self, timeout_s=10.0) drifted")
