"""The WorkerRegistry contract: mixed into one TestCase per backend.

A backend test case provides ``make_registry()`` returning a fresh, empty
registry (closed by the contract at cleanup).

A backend whose ``forget_older_than`` first searches, then deletes (the
AWS ones) names the search ``_older_than(t)`` and its test case mixes in
``RacingForgetContract`` (a ``WorkerRegistryContract`` plus one test), which
runs another worker's heartbeat between the two. SQLite forgets in one
statement: nothing can come between, and its test case mixes in
``WorkerRegistryContract`` alone. ``test_a_two_step_forget_is_raced`` checks
that the choice matches the backend.
"""

from twisted.internet import defer

from nommer.core.worker_registry.base import DRAINING, EXITED, RUNNING, WorkerRecord
from tests.helpers import ensure

T0 = 1_700_000_000.0


def make_record(worker_id="w-1", **kw):
    fields = dict(worker_id=worker_id, state=RUNNING, jobs=["a" * 50], capacity=2, jobs_done=3,
                  host="host-1", version="0.1.0", started_at=T0 - 60, last_seen=T0)
    fields.update(kw)
    return WorkerRecord(**fields)


class WorkerRegistryContract:

    def setUp(self):
        self.registry = self.make_registry()
        self.addCleanup(self.registry.close)

    @ensure
    async def test_heartbeat_inserts_then_replaces(self):
        """The first heartbeat creates the record, the next one replaces it whole."""
        await self.registry.heartbeat(make_record(jobs=["a" * 50, "b" * 50]))
        self.assertEqual(await self.registry.get("w-1"), make_record(jobs=["a" * 50, "b" * 50]))
        newer = make_record(state=DRAINING, jobs=[], jobs_done=5, last_seen=T0 + 10)
        await self.registry.heartbeat(newer)
        self.assertEqual(await self.registry.get("w-1"), newer)
        self.assertEqual(await self.registry.list(), [newer])

    @ensure
    async def test_get_missing_raises_key_error(self):
        """get() of a worker never seen raises KeyError."""
        with self.assertRaises(KeyError):
            await self.registry.get("nobody")

    @ensure
    async def test_record_round_trips_exactly(self):
        """Every field reads back equal and of the same type: lists, None, "", floats, ints."""
        local = make_record(worker_id="host-123-w0", jobs=[], host="", instance_id=None, market=None,
                            started_at=T0 - 0.123456, last_seen=T0 + 0.5)
        ec2 = make_record(worker_id="i-0123456789abcdef0", instance_id="i-0123456789abcdef0",
                          instance_type="c7i.large", availability_zone="eu-west-1a", market="spot",
                          host="ip-10-0-0-1 'quoted' é", version="0.1.0+local", last_seen=T0 + 1.25)
        for record in (local, ec2):
            await self.registry.heartbeat(record)
            got = await self.registry.get(record.worker_id)
            self.assertEqual(got, record)
            self.assertEqual(got.to_dict(), record.to_dict())
            for name, value in record.to_dict().items():
                self.assertIs(type(getattr(got, name)), type(value), name)

    @ensure
    async def test_encode_figures_round_trip(self):
        """The heartbeat's encode figures (counts, float seconds, speed, the recent encodes as
        [seconds, media seconds or None] pairs) read back equal and of the same types, nested ones too."""
        recent = [[float(i) + 0.5, float(i)] for i in range(19)] + [[2.0, None]]
        record = make_record(jobs_finished=20, encode_seconds_total=1234.0, media_seconds_total=2468.125,
                             last_encode_speed=2.0, recent_encodes=recent)
        await self.registry.heartbeat(record)
        for got in (await self.registry.get("w-1"), (await self.registry.list())[0]):
            self.assertEqual(got, record)
            for name in ("jobs_finished", "encode_seconds_total", "media_seconds_total", "last_encode_speed"):
                self.assertIs(type(getattr(got, name)), type(getattr(record, name)), name)
            self.assertEqual([[type(v) for v in e] for e in got.recent_encodes],
                             [[type(v) for v in e] for e in recent])

    @ensure
    async def test_long_jobs_list_round_trips(self):
        """A record running 300 jobs (15 KB of ids) round-trips, and shrinking it again works."""
        jobs = [f"{i:050x}" for i in range(300)]
        await self.registry.heartbeat(make_record(jobs=jobs, capacity=300))
        self.assertEqual((await self.registry.get("w-1")).jobs, jobs)
        self.assertEqual((await self.registry.list())[0].jobs, jobs)
        await self.registry.heartbeat(make_record(jobs=jobs[:2], last_seen=T0 + 1))
        self.assertEqual((await self.registry.get("w-1")).jobs, jobs[:2])
        await self.registry.heartbeat(make_record(jobs=jobs[:150], last_seen=T0 + 2))
        self.assertEqual((await self.registry.get("w-1")).jobs, jobs[:150])

    @ensure
    async def test_list_most_recently_seen_first(self):
        """list() orders by last_seen descending, ties by worker_id; empty registry -> []."""
        self.assertEqual(await self.registry.list(), [])
        for worker_id, seen in [("b", T0 + 5), ("a", T0 + 20), ("d", T0), ("c", T0 + 5), ("e", T0 + 5.5)]:
            await self.registry.heartbeat(make_record(worker_id=worker_id, last_seen=seen))
        self.assertEqual([r.worker_id for r in await self.registry.list()], ["a", "e", "b", "c", "d"])
        await self.registry.heartbeat(make_record(worker_id="d", last_seen=T0 + 30, state=EXITED))
        listed = await self.registry.list()
        self.assertEqual([r.worker_id for r in listed], ["d", "a", "e", "b", "c"])
        self.assertEqual(listed[0].state, EXITED)

    @ensure
    async def test_remove_is_idempotent(self):
        """remove() deletes one record; removing an absent one is no error."""
        await self.registry.heartbeat(make_record(worker_id="x"))
        await self.registry.heartbeat(make_record(worker_id="y"))
        await self.registry.remove("x")
        await self.registry.remove("x")
        await self.registry.remove("never-seen")
        with self.assertRaises(KeyError):
            await self.registry.get("x")
        self.assertEqual([r.worker_id for r in await self.registry.list()], ["y"])

    @ensure
    async def test_forget_older_than_counts_and_deletes(self):
        """forget_older_than(t) deletes exactly the records seen before t and says how many."""
        seen = {"old1": T0 - 1000, "old2": T0 - 0.5, "edge": T0, "new": T0 + 0.25}
        await defer.gatherResults([self.registry.heartbeat(make_record(worker_id=w, last_seen=s))
                                   for w, s in seen.items()])
        self.assertEqual(await self.registry.forget_older_than(T0), 2)
        self.assertEqual([r.worker_id for r in await self.registry.list()], ["new", "edge"])
        self.assertEqual(await self.registry.forget_older_than(T0), 0)
        self.assertEqual(await self.registry.forget_older_than(T0 + 3600), 2)
        self.assertEqual(await self.registry.list(), [])

    def test_a_two_step_forget_is_raced(self):
        """A backend that forgets in two steps (has ``_older_than``) gets the race test, and only such a one."""
        two_steps = hasattr(self.registry, "_older_than")
        self.assertEqual(isinstance(self, RacingForgetContract), two_steps,
                         f"{type(self.registry).__name__} "
                         f"{'searches then deletes' if two_steps else 'forgets in one statement'}: "
                         f"{'mix in' if two_steps else 'do not mix in'} RacingForgetContract")


class RacingForgetContract(WorkerRegistryContract):
    """The contract of a registry whose forget_older_than searches (``_older_than``), then deletes."""

    @ensure
    async def test_forget_spares_a_worker_that_heartbeated_meanwhile(self):
        """A record refreshed between forget's search and its delete stays (conditional delete)."""
        registry = self.registry
        search = registry._older_than
        await registry.heartbeat(make_record(worker_id="gone", last_seen=T0 - 100))
        await registry.heartbeat(make_record(worker_id="back", last_seen=T0 - 100))

        async def then_back_comes_back(t):
            found = await search(t)
            await registry.heartbeat(make_record(worker_id="back", last_seen=T0 + 1))
            return found
        registry._older_than = then_back_comes_back
        self.assertEqual(await registry.forget_older_than(T0), 1)
        self.assertEqual([r.worker_id for r in await registry.list()], ["back"])
