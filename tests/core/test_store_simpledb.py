"""SimpleDBJobStore against moto's server with SimpleDB completed (tests/moto_plus.py)."""

import random

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.aws.simpledb import MAX_VALUE_BYTES, iso_fixed
from nommer.core.errors import NoSuchJob
from nommer.core.states import IllegalTransition, JobState
from nommer.core.store.simpledb import SimpleDBJobStore
from nommer.core.store.versioned import MAX_WRITE_ATTEMPTS, StoreConflict
from tests.aws_server import aws_settings, reset_moto, sdb_client, sdb_item
from tests.core.store_contract import JobEventsContract, JobStoreContract, make_job
from tests.helpers import ensure

DOMAIN = "media_nommer"


def raw_item(job_id):
    """The item's attributes as SimpleDB holds them (dict name -> value)."""
    return sdb_item(DOMAIN, job_id)


class SettableClock:
    """A clock whose time is set, not advanced (jobs created out of time order)."""

    def __init__(self, now=0.0):
        self.now = now

    def seconds(self):
        return self.now


class SimpleDBTests(JobStoreContract, JobEventsContract, TestCase):
    def make_store(self, clock):
        reset_moto()
        self.settings, _ = aws_settings(self)
        return SimpleDBJobStore(self.settings, reactor, clock=clock)


class InterleavedStore(SimpleDBJobStore):
    """Runs ``between_read_and_write()`` (another writer's turn) after each read
    of a modify, while the next one is pending: a lost race, made deterministic."""

    between_read_and_write = None

    async def _read(self, job_id):
        attrs = await super()._read(job_id)
        if self.between_read_and_write is not None:
            await self.between_read_and_write()
        return attrs


class SimpleDBBackendTests(TestCase):
    def setUp(self):
        reset_moto()
        self.settings, _ = aws_settings(self)
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = self.make(SimpleDBJobStore)

    def make(self, cls, clock=None, **overrides):
        settings = aws_settings(self, **overrides)[0] if overrides else self.settings
        store = cls(settings, reactor, clock=clock or self.clock)
        self.addCleanup(store.close)
        return store

    @ensure
    async def test_long_fields_round_trip_and_shrink(self):
        """Details, options and output over 1024 bytes (any characters) round-trip
        exactly; shrinking them removes the stale chunk attributes."""
        details = "".join(chr(c) for c in range(1, 400)) + "\r\n" + "é✓ 'quoted' \"dq\" \x00\x1b[0m" * 200
        options = [{"outfile_options": [["vf", "scale=%d:-2" % i], ["metadata", "title=é" * 20]]}
                   for i in range(40)]
        output = {"streams": [{"index": i, "codec": "h264", "tags": {"x": "y" * 30}} for i in range(40)],
                  "size_bytes": 123456789, "duration_s": 1.25}
        job = await self.store.create(make_job(job_options=options))
        self.clock.advance(1)
        updated = await self.store.modify(job.job_id, lambda j: j.evolve(
            job_state=JobState.DOWNLOADING, job_state_details=details, output=output, progress=12.5))
        got = await self.store.get(job.job_id)
        self.assertEqual(got, updated)
        self.assertEqual(got.job_state_details, details)
        self.assertEqual(got.job_options, options)
        item = raw_item(job.job_id)
        self.assertTrue(all(len(v.encode()) <= MAX_VALUE_BYTES for v in item.values()))
        self.assertIn("job_state_details.0", item)
        self.assertIn("job_state_details=", item["chunks"])

        short = await self.store.modify(job.job_id, lambda j: j.evolve(job_state_details="ok", output=None))
        self.assertEqual(await self.store.get(job.job_id), short)
        item = raw_item(job.job_id)
        self.assertEqual([n for n in item if n.startswith(("job_state_details.", "output."))], [])
        self.assertEqual(item["job_state_details"], '"ok"')
        self.assertEqual(item["output"], "null")
        listed, _ = await self.store.list()
        self.assertEqual(listed, [short])

    @ensure
    async def test_none_and_text_none_are_distinct(self):
        """None, "None" and "" stay what they were (the original stored None as 'None')."""
        job = await self.store.create(make_job(notify_url=None, job_state_details="None", worker_id=""))
        got = await self.store.get(job.job_id)
        self.assertIsNone(got.notify_url)
        self.assertEqual(got.job_state_details, "None")
        self.assertEqual(got.worker_id, "")

    @ensure
    async def test_too_large_job_refused_not_truncated(self):
        """A job that cannot fit one item is refused with ValueError and left as it was."""
        job = await self.store.create(make_job())
        with self.assertRaises(ValueError):
            await self.store.modify(job.job_id, lambda j: j.evolve(job_state_details="x" * 200_000))
        self.assertEqual(await self.store.get(job.job_id), job)
        with self.assertRaises(ValueError):
            await self.store.create(make_job(job_options=["y" * 200_000]))

    @ensure
    async def test_time_order_across_many_items(self):
        """list() pages and list_unfinished() follow creation time exactly, across
        digit-count changes of the epoch and sub-second gaps; ties go by job id."""
        clock = SettableClock()
        store = self.make(SimpleDBJobStore, clock=clock)
        times = [9.0, 99.5, 999_999_999.5, 1_000_000_000.0, 1_000_000_000.25, 1_000_000_000.000001,
                 1_700_000_000.123456, 1_700_000_000.123457, 4_102_444_800.0] + [1_234_567_890.0] * 4
        rng = random.Random(2011)
        times += [rng.uniform(0, 4e9) for _ in range(12)]
        rng.shuffle(times)
        jobs = []
        for t in times:
            clock.now = t
            jobs.append(await store.create(make_job()))
        newest_first = sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)
        seen, cursor = [], None
        while True:
            page, cursor = await store.list(limit=4, cursor=cursor)
            self.assertLessEqual(len(page), 4)
            seen += page
            if cursor is None:
                break
        self.assertEqual([j.job_id for j in seen], [j.job_id for j in newest_first])
        self.assertEqual(seen, newest_first)
        unfinished = await store.list_unfinished()
        self.assertEqual([j.job_id for j in unfinished], [j.job_id for j in reversed(newest_first)])
        self.assertEqual(len(iso_fixed(9.0)), len(iso_fixed(4_102_444_800.0)))

    @ensure
    async def test_late_worker_cannot_overwrite_finished_job(self):
        """A worker that read the job before feederd abandoned it loses: its
        conditional write fails, the retry sees ABANDONED and is refused."""
        job = await self.store.create(make_job())
        await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING))
        worker = self.make(InterleavedStore)
        feederd = self.make(SimpleDBJobStore)

        async def feederd_abandons():
            worker.between_read_and_write = None
            await feederd.modify(job.job_id, lambda j: j.evolve(job_state=JobState.ABANDONED))
        worker.between_read_and_write = feederd_abandons
        seen = []

        def encode(j):
            seen.append(j.job_state)
            return j.evolve(job_state=JobState.ENCODING, progress=50.0)
        with self.assertRaises(IllegalTransition):
            await worker.modify(job.job_id, encode)
        self.assertEqual(seen, [JobState.DOWNLOADING, JobState.ABANDONED])
        got = await self.store.get(job.job_id)
        self.assertEqual(got.job_state, JobState.ABANDONED)
        self.assertIsNone(got.progress)
        self.assertEqual(raw_item(job.job_id)["version"], "3")

    @ensure
    async def test_two_writers_cannot_both_abandon(self):
        """Of two daemons abandoning the same job at once, exactly one succeeds."""
        job = await self.store.create(make_job())
        first = self.make(InterleavedStore)
        second = self.make(SimpleDBJobStore)
        abandon = lambda j: j.evolve(job_state=JobState.ABANDONED, job_state_details="stale")  # noqa: E731
        results = {}

        async def second_abandons():
            first.between_read_and_write = None
            results["second"] = await second.modify(job.job_id, abandon)
        first.between_read_and_write = second_abandons
        with self.assertRaises(IllegalTransition):
            await first.modify(job.job_id, abandon)
        self.assertEqual(results["second"].job_state, JobState.ABANDONED)
        self.assertEqual(await self.store.get(job.job_id), results["second"])

    @ensure
    async def test_concurrent_modifies_lose_no_update(self):
        """Concurrent read-modify-writes through the thread pool all land (no lost update)."""
        job = await self.store.create(make_job())
        writers = [self.make(SimpleDBJobStore) for _ in range(6)]
        await defer.gatherResults([w.modify(job.job_id, lambda j: j.evolve(attempts=j.attempts + 1))
                                   for w in writers])
        got = await self.store.get(job.job_id)
        self.assertEqual(got.attempts, 6)
        self.assertEqual(raw_item(job.job_id)["version"], "7")

    @ensure
    async def test_retries_are_bounded(self):
        """A writer that loses every race gives up with StoreConflict, not a loop."""
        job = await self.store.create(make_job())
        loser = self.make(InterleavedStore)
        rival = self.make(SimpleDBJobStore)

        async def rival_writes():
            await rival.modify(job.job_id, lambda j: j.evolve(attempts=j.attempts + 1))
        loser.between_read_and_write = rival_writes
        calls = []
        with self.assertRaises(StoreConflict):
            await loser.modify(job.job_id, lambda j: calls.append(1) or j.evolve(worker_id="w"))
        self.assertEqual(len(calls), MAX_WRITE_ATTEMPTS)
        got = await self.store.get(job.job_id)
        self.assertEqual((got.attempts, got.worker_id), (MAX_WRITE_ATTEMPTS, None))

    @ensure
    async def test_event_items_are_named_by_job_and_padded_seq(self):
        """An event is the item '<job_id>/<seq, 10 digits>' of the events domain, with job_id,
        seq and the event as JSON; a long one is chunked and reads back whole."""
        from nommer.core.events import EventKind, JobEvent
        job_id = make_job().job_id
        details = "x" * 2500  # with the other fields: 3 chunks of 1024
        for kind in (EventKind.SUBMITTED, EventKind.ERROR):
            await self.store.append_event(JobEvent(job_id=job_id, at=1.5, kind=kind, details=details))
        item = sdb_item(f"{DOMAIN}_events", f"{job_id}/0000000002")
        self.assertEqual((item["job_id"], item["seq"]), (job_id, "0000000002"))
        self.assertEqual(item["chunks"], "doc=3")
        self.assertEqual([e.details for e in await self.store.list_events(job_id)], [details, details])

    @ensure
    async def test_events_domain_setting(self):
        """SIMPLEDB_EVENTS_DOMAIN names the events domain."""
        from nommer.core.events import EventKind, JobEvent
        store = self.make(SimpleDBJobStore, SIMPLEDB_EVENTS_DOMAIN="my_events")
        self.assertEqual(await store.ensure_resources(), [f"SimpleDB domain {DOMAIN} ready",
                                                          "SimpleDB domain my_events ready"])
        job_id = make_job().job_id
        await store.append_event(JobEvent(job_id=job_id, at=1.0, kind=EventKind.SUBMITTED))
        self.assertEqual(sdb_item("my_events", f"{job_id}/0000000001")["job_id"], job_id)

    @ensure
    async def test_domain_created_lazily_once(self):
        """The domain is created on first use; ensure_resources is idempotent and says so."""
        self.assertNotIn(DOMAIN, sdb_client().list_domains().get("DomainNames", []))
        await self.store.create(make_job())
        self.assertIn(DOMAIN, sdb_client().list_domains()["DomainNames"])
        self.assertEqual(await self.store.ensure_resources(), [f"SimpleDB domain {DOMAIN} ready",
                                                               f"SimpleDB domain {DOMAIN}_events ready"])
        self.assertEqual(await self.store.count_by_state(), {"PENDING": 1})

    @ensure
    async def test_no_domain_created_when_told_not_to(self):
        """With AWS_CREATE_RESOURCES off a missing domain is an error, not created."""
        store = self.make(SimpleDBJobStore, AWS_CREATE_RESOURCES=False)
        with self.assertRaises(Exception) as caught:
            await store.create(make_job())
        self.assertEqual(caught.exception.response["Error"]["Code"], "NoSuchDomain")
        self.assertNotIn(DOMAIN, sdb_client().list_domains().get("DomainNames", []))

    @ensure
    async def test_original_2011_items_are_not_jobs(self):
        """An item the 2011 media-nommer wrote to the same domain is skipped by
        list/count and is NoSuchJob to get(): it has no created_key or version."""
        await self.store.ensure_resources()
        old_id = "a" * 50
        sdb_client().put_attributes(DomainName=DOMAIN, ItemName=old_id, Attributes=[
            {"Name": n, "Value": v, "Replace": True} for n, v in {
                "unique_id": old_id, "source_path": "s3://bucket/in.mov", "dest_path": "s3://bucket/out.mp4",
                "nommer": "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer", "job_options": "[]",
                "job_state": "PENDING", "job_state_details": "None", "notify_url": "None",
                "creation_dtime": "2011-06-01 12:00:00.123456",
                "last_modified_dtime": "2011-06-01 12:00:00.123456"}.items()])
        job = await self.store.create(make_job())
        self.assertEqual([j.job_id for j in (await self.store.list())[0]], [job.job_id])
        self.assertEqual([j.job_id for j in await self.store.list_unfinished()], [job.job_id])
        self.assertEqual(await self.store.count_by_state(), {"PENDING": 1})
        with self.assertRaises(NoSuchJob):
            await self.store.get(old_id)
        with self.assertRaises(NoSuchJob):
            await self.store.modify(old_id, lambda j: j)

    @ensure
    async def test_list_filters_state_across_pages(self):
        """A state filter with a cursor pages through only that state, newest first."""
        ids = []
        for i in range(7):
            job = await self.store.create(make_job())
            if i % 2:
                await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.CANCELED))
                ids.append(job.job_id)
            self.clock.advance(0.5)
        page1, cursor = await self.store.list(state=JobState.CANCELED, limit=2)
        page2, end = await self.store.list(state="CANCELED", limit=2, cursor=cursor)
        self.assertEqual([j.job_id for j in page1 + page2], ids[::-1])
        self.assertIsNone(end)
        with self.assertRaises(ValueError):
            await self.store.list(limit=0)
