"""The Fleet contract (``nommer.feederd.fleet.base.Fleet``): mixed into one
TestCase per backend, run unchanged against each.

A backend test case provides:

- ``fleet_class``: the implementation (its signatures are checked against
  the interface, as Buildbot's ``assertArgSpecMatches`` does);
- ``make_fleet(available=True)``: a fleet, not started, with ``max_workers``
  of at least 2; with ``available=False`` its backend is down (moto not
  listening, workers failing as they start);
- ``worker_up(fleet, worker_id)``: return once that worker is up and has
  said so in the worker registry (the real workerd's heartbeat; on moto,
  where no worker runs, the test writes the one the instance's would), and
  the fleet can see it;
- ``end_worker(fleet, worker_id)``: end one worker from outside the fleet
  (kill its process, terminate its instance), returning once the fleet can
  see it (the process reaped, a new listing due);
- ``wait_ended(fleet, worker_ids)``: return once those workers, which end
  by themselves (failing at start), are gone and the fleet can see it;
- ``alive(worker_ids)``: those of ``worker_ids`` still alive, seen from
  outside the fleet (the processes, DescribeInstances);
- ``WORKERS_OUTLIVE_STOP``: whether the workers live on after the fleet
  stops (EC2 instances end themselves when idle) or are ended by it (local
  children);
- ``CALLS_ON_CHANGE``: whether a worker ending on its own calls
  ``on_change`` (the local fleet does; the autoscaler's next tick sees an
  EC2 instance gone anyway);
- ``UNAVAILABLE_LOGGED_ERRORS``: exception classes the fleet logs as
  failures while its backend is down (trial would fail the test for them).

Each method may be a coroutine function or return a Deferred or a value.
The contract starts the fleet and stops it at cleanup.
"""

import inspect

from twisted.internet import defer

from nommer.feederd.fleet.base import Fleet, FleetUnavailable
from tests.contracts import assert_matches_interface  # noqa: F401 (also imported from here)
from tests.helpers import ensure


def _maybe(value):
    """A Deferred of ``value``, which may be a coroutine, a Deferred or plain."""
    if inspect.iscoroutine(value):
        return defer.Deferred.fromCoroutine(value)
    return defer.maybeDeferred(lambda: value)


class FleetContract:

    UNAVAILABLE_LOGGED_ERRORS = ()

    def setUp(self):
        self.changes = 0

    def _changed(self):
        self.changes += 1

    async def started(self, available=True):
        """A started fleet whose ``on_change`` counts its calls; stopped at cleanup."""
        fleet = await _maybe(self.make_fleet(available=available))
        fleet.on_change = self._changed
        fleet.startService()
        self.addCleanup(lambda: _maybe(fleet.stopService()) if fleet.running else None)
        return fleet

    async def counts(self, fleet):
        """``fleet.counts()``, checked for its shape: 2 or 3 ints, none negative."""
        counts = await _maybe(fleet.counts())
        self.assertIsInstance(counts, tuple)
        self.assertIn(len(counts), (2, 3), counts)
        for n in counts:
            self.assertIs(type(n), int, counts)
            self.assertGreaterEqual(n, 0, counts)
        return counts

    def test_signatures_match_the_interface(self):
        """Every public method keeps the Fleet interface's signature; nothing left unimplemented."""
        self.assertTrue(issubclass(self.fleet_class, Fleet))
        assert_matches_interface(self, self.fleet_class, Fleet)

    @ensure
    async def test_an_empty_fleet(self):
        """A new fleet counts nothing (running, booting[, leaving]), knows no worker, has a maximum."""
        fleet = await self.started()
        self.assertEqual(sum(await self.counts(fleet)), 0)
        self.assertEqual(fleet.worker_ids(), [])
        self.assertIs(type(fleet.max_workers), int)
        self.assertGreaterEqual(fleet.max_workers, 2)
        self.assertIsNone(await _maybe(fleet.housekeeping()))

    @ensure
    async def test_launch_starts_workers_and_counts_them(self):
        """launch(n) returns n new ids; they are alive, counted (running or booting) and known."""
        fleet = await self.started()
        self.assertEqual(await _maybe(fleet.launch(0)), [])
        ids = await _maybe(fleet.launch(2))
        self.assertEqual(len(ids), 2)
        self.assertEqual(len(set(ids)), 2)
        for worker_id in ids:
            self.assertIsInstance(worker_id, str)
        counts = await self.counts(fleet)
        self.assertEqual(counts[0] + counts[1], 2, counts)
        self.assertEqual(sum(counts), 2, counts)
        self.assertEqual(fleet.worker_ids(), sorted(ids))
        self.assertEqual(sorted(await _maybe(self.alive(ids))), sorted(ids))
        # housekeeping leaves workers that are coming up alone
        self.assertIsNone(await _maybe(fleet.housekeeping()))
        self.assertEqual(sum(await self.counts(fleet)), 2)

    @ensure
    async def test_a_worker_up_counts_as_running(self):
        """Once a worker is up (its heartbeat in the registry) counts() has it running, not booting."""
        fleet = await self.started()
        [worker_id] = await _maybe(fleet.launch(1))
        await _maybe(self.worker_up(fleet, worker_id))
        counts = await self.counts(fleet)
        self.assertEqual(counts[:2], (1, 0))
        self.assertEqual(sum(counts), 1)
        self.assertEqual(fleet.worker_ids(), [worker_id])

    @ensure
    async def test_a_worker_that_ends_leaves_the_fleet(self):
        """A worker ended from outside (process killed, instance terminated) is no longer counted or known."""
        fleet = await self.started()
        gone, kept = await _maybe(fleet.launch(2))
        await self.counts(fleet)
        await _maybe(self.end_worker(fleet, gone))
        self.assertEqual(sum(await self.counts(fleet)), 1)
        self.assertEqual(fleet.worker_ids(), [kept])
        self.assertEqual(await _maybe(self.alive([gone, kept])), [kept])
        self.assertEqual(self.changes, 1 if self.CALLS_ON_CHANGE else 0)

    @ensure
    async def test_stop(self):
        """stopService waits for what is under way; the workers then end (local) or live on (EC2)."""
        fleet = await self.started()
        ids = await _maybe(fleet.launch(1))
        await _maybe(self.worker_up(fleet, ids[0]))
        await self.counts(fleet)
        await _maybe(fleet.stopService())
        self.assertFalse(fleet.running)
        self.assertEqual(await _maybe(self.alive(ids)), ids if self.WORKERS_OUTLIVE_STOP else [])

    @ensure
    async def test_backend_unavailable(self):
        """Backend down: housekeeping and launch do not raise; counts raises FleetUnavailable or counts no
        worker; a worker that failed to start is neither counted nor alive."""
        fleet = await self.started(available=False)
        self.assertIsNone(await _maybe(fleet.housekeeping()))
        ids = await _maybe(fleet.launch(1))
        self.assertIsInstance(ids, list)
        await _maybe(self.wait_ended(fleet, ids))
        try:
            counts = await self.counts(fleet)
        except FleetUnavailable:
            pass
        else:
            self.assertEqual(sum(counts), 0, counts)
        self.assertEqual(fleet.worker_ids(), [])
        self.assertEqual(await _maybe(self.alive(ids)), [])
        self.assertEqual(self.changes, len(ids) if self.CALLS_ON_CHANGE else 0)
        if self.UNAVAILABLE_LOGGED_ERRORS:
            self.flushLoggedErrors(*self.UNAVAILABLE_LOGGED_ERRORS)
