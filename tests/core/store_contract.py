"""The JobStore contract: mixed into one TestCase per backend.

A backend test case provides ``make_store(clock)`` returning a fresh, empty
store whose times come from ``clock`` (a twisted ``task.Clock``).
"""

from twisted.internet import defer, task

from nommer.core.errors import NoSuchJob
from nommer.core.events import EventKind, JobEvent
from nommer.core.job import Job, new_job_id
from nommer.core.states import IllegalTransition, JobState
from tests.helpers import ensure


def make_job(**kw):
    fields = dict(job_id=new_job_id(), source_path="file:///in.mp4", dest_path="file:///out.mp4",
                  nommer="nommer.workerd.nommers.ffmpeg.FFmpegNommer", job_options=[{"outfile_options": []}])
    fields.update(kw)
    return Job(**fields)



class JobStoreContract:

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = self.make_store(self.clock)
        self.addCleanup(self.store.close)

    @ensure
    async def test_create_then_get_round_trips(self):
        """A created job reads back equal, with created/updated times stamped."""
        job = make_job(notify_url="http://example.invalid/hook", job_options=[{"a": [1, None]}])
        created = await self.store.create(job)
        self.assertEqual(created.created_at, 1_700_000_000)
        self.assertEqual(created.updated_at, 1_700_000_000)
        got = await self.store.get(job.job_id)
        self.assertEqual(got, created)
        self.assertEqual(got.job_state, JobState.PENDING)

    @ensure
    async def test_duplicate_create_refused(self):
        """Creating the same job id twice raises ValueError."""
        job = make_job()
        await self.store.create(job)
        with self.assertRaises(ValueError):
            await self.store.create(job)

    @ensure
    async def test_get_unknown_raises_no_such_job(self):
        """get() of an unknown id raises NoSuchJob."""
        with self.assertRaises(NoSuchJob):
            await self.store.get("0" * 50)

    @ensure
    async def test_modify_applies_and_stamps(self):
        """modify() stores fn(job) and stamps updated_at from the clock."""
        job = await self.store.create(make_job())
        self.clock.advance(5)
        new = await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING, attempts=1))
        self.assertEqual(new.job_state, JobState.DOWNLOADING)
        self.assertEqual(new.updated_at, 1_700_000_005)
        self.assertEqual((await self.store.get(job.job_id)).attempts, 1)

    @ensure
    async def test_modify_refuses_illegal_transition(self):
        """A finished job cannot be moved again: the write is refused, the job unchanged."""
        job = await self.store.create(make_job())
        await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.CANCELED))
        with self.assertRaises(IllegalTransition):
            await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.FINISHED))
        got = await self.store.get(job.job_id)
        self.assertEqual(got.job_state, JobState.CANCELED)
        self.assertEqual(got.finished_at, 1_700_000_000)

    @ensure
    async def test_modify_unknown_raises(self):
        """modify() of an unknown id raises NoSuchJob."""
        with self.assertRaises(NoSuchJob):
            await self.store.modify("f" * 50, lambda j: j)

    @ensure
    async def test_modify_fn_error_aborts(self):
        """An exception in fn leaves the job as it was."""
        job = await self.store.create(make_job())

        def boom(j):
            raise RuntimeError("no")
        with self.assertRaises(RuntimeError):
            await self.store.modify(job.job_id, boom)
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.PENDING)

    @ensure
    async def test_list_newest_first_with_cursor_and_state(self):
        """list() pages newest first through a cursor and filters by state."""
        ids = []
        for i in range(5):
            job = await self.store.create(make_job())
            ids.append(job.job_id)
            self.clock.advance(1)
        await self.store.modify(ids[1], lambda j: j.evolve(job_state=JobState.CANCELED))
        page1, cursor = await self.store.list(limit=2)
        self.assertEqual([j.job_id for j in page1], [ids[4], ids[3]])
        page2, cursor2 = await self.store.list(limit=2, cursor=cursor)
        self.assertEqual([j.job_id for j in page2], [ids[2], ids[1]])
        page3, cursor3 = await self.store.list(limit=2, cursor=cursor2)
        self.assertEqual([j.job_id for j in page3], [ids[0]])
        self.assertIsNone(cursor3)
        canceled, _ = await self.store.list(state=JobState.CANCELED)
        self.assertEqual([j.job_id for j in canceled], [ids[1]])

    @ensure
    async def test_list_bad_cursor(self):
        """A cursor the server never issued raises ValueError."""
        with self.assertRaises(ValueError):
            await self.store.list(cursor="not-a-cursor")

    @ensure
    async def test_unfinished_and_counts(self):
        """list_unfinished() skips final jobs; count_by_state() counts each state."""
        a = await self.store.create(make_job())
        self.clock.advance(1)
        b = await self.store.create(make_job())
        await self.store.modify(b.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING))
        c = await self.store.create(make_job())
        await self.store.modify(c.job_id, lambda j: j.evolve(job_state=JobState.ERROR))
        unfinished = await self.store.list_unfinished()
        self.assertEqual([j.job_id for j in unfinished], [a.job_id, b.job_id])
        self.assertEqual(await self.store.count_by_state(), {"PENDING": 1, "DOWNLOADING": 1, "ERROR": 1})

    @ensure
    async def test_owner_round_trips(self):
        """A job's owner (an API key's key_id) reads back, survives modify, and None stays None."""
        owned = await self.store.create(make_job(owner="3f9c0a1b2c3d4e5f"))
        anonymous = await self.store.create(make_job())
        self.assertEqual((await self.store.get(owned.job_id)).owner, "3f9c0a1b2c3d4e5f")
        self.assertIsNone((await self.store.get(anonymous.job_id)).owner)
        await self.store.modify(owned.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING))
        self.assertEqual((await self.store.get(owned.job_id)).owner, "3f9c0a1b2c3d4e5f")
        await self.store.modify(anonymous.job_id, lambda j: j.evolve(job_state=JobState.CANCELED))
        self.assertIsNone((await self.store.get(anonymous.job_id)).owner)

    @ensure
    async def test_list_filtered_by_owner_pages_with_cursor(self):
        """list(owner=) shows only that key's jobs, newest first, paging through a cursor
        over the filtered listing; with state= both filters apply; list() still shows all."""
        owners = ["k1", "k2", None, "k1", "k1", None, "k2", "k1"]
        ids = []
        for owner in owners:
            ids.append((await self.store.create(make_job(owner=owner))).job_id)
            self.clock.advance(1)
        mine = [i for i, o in zip(ids, owners) if o == "k1"][::-1]
        await self.store.modify(mine[1], lambda j: j.evolve(job_state=JobState.CANCELED))
        seen, cursor = [], None
        while True:
            page, cursor = await self.store.list(limit=3, cursor=cursor, owner="k1")
            self.assertLessEqual(len(page), 3)
            seen += [j.job_id for j in page]
            if cursor is None:
                break
        self.assertEqual(seen, mine)
        page, cursor = await self.store.list(limit=2, owner="k1")
        self.assertEqual([j.job_id for j in page], mine[:2])
        self.assertIsNotNone(cursor)
        canceled, _ = await self.store.list(state=JobState.CANCELED, owner="k1")
        self.assertEqual([j.job_id for j in canceled], [mine[1]])
        pending, _ = await self.store.list(state=JobState.PENDING, owner="k2")
        self.assertEqual([j.job_id for j in pending], [ids[6], ids[1]])
        self.assertEqual((await self.store.list(owner="k3")), ([], None))
        everything, _ = await self.store.list(limit=50)
        self.assertEqual([j.job_id for j in everything], ids[::-1])

    @ensure
    async def test_count_unfinished_by_owner(self):
        """count_unfinished(owner) counts that key's jobs not in a final state, no one else's."""
        a = await self.store.create(make_job(owner="k1"))
        b = await self.store.create(make_job(owner="k1"))
        c = await self.store.create(make_job(owner="k1"))
        await self.store.create(make_job(owner="k2"))
        await self.store.create(make_job())
        await self.store.modify(b.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING))
        await self.store.modify(c.job_id, lambda j: j.evolve(job_state=JobState.CANCELED))
        self.assertEqual(await self.store.count_unfinished("k1"), 2)
        self.assertEqual(await self.store.count_unfinished("k2"), 1)
        self.assertEqual(await self.store.count_unfinished("k3"), 0)
        await self.store.modify(a.job_id, lambda j: j.evolve(job_state=JobState.ERROR))
        self.assertEqual(await self.store.count_unfinished("k1"), 1)


# --- event logs (append_event, list_events) ----------------------------------------------------

def make_event(job_id, kind, at=1_700_000_000.5, **kw):
    return JobEvent(job_id=job_id, at=at, kind=kind, **kw)


class JobEventsContract:
    """The event-log half of the contract, mixed in beside ``JobStoreContract``
    (same ``setUp``: ``self.store``, ``self.clock``)."""

    @ensure
    async def test_events_get_seq_in_order_per_job(self):
        """append_event numbers each job's events 1, 2, 3... (interleaved jobs apart), ignoring a
        seq given, and list_events gives them back ascending with every field as written."""
        a, b = new_job_id(), new_job_id()
        long_details = "é✓ 'q' \"dq\" <x> & \r\n" * 120  # > 1024 bytes: SimpleDB chunks it
        written = [
            make_event(a, EventKind.SUBMITTED, state="PENDING", details="preset cmaf-h264"),
            make_event(b, EventKind.SUBMITTED, state="PENDING"),
            make_event(a, EventKind.ASSIGNED, at=1_700_000_001.25, state="DOWNLOADING", worker_id="w-1", attempt=1,
                       seq=99),
            make_event(a, EventKind.PROGRESS, at=1_700_000_002.0, state="ENCODING", worker_id="w-1", attempt=1,
                       progress=40.0),
            make_event(b, EventKind.ERROR, details=long_details),
            make_event(a, EventKind.STATE, at=1_700_000_003.125, state="FINISHED", worker_id="w-1", attempt=1),
        ]
        stored = [await self.store.append_event(e) for e in written]
        self.assertEqual([e.seq for e in stored], [1, 1, 2, 3, 2, 4])
        got_a = await self.store.list_events(a)
        self.assertEqual(got_a, [stored[0], stored[2], stored[3], stored[5]])
        self.assertEqual([e.kind for e in got_a],
                         [EventKind.SUBMITTED, EventKind.ASSIGNED, EventKind.PROGRESS, EventKind.STATE])
        self.assertEqual((got_a[1].worker_id, got_a[1].attempt, got_a[1].at), ("w-1", 1, 1_700_000_001.25))
        self.assertIsInstance(got_a[2].progress, float)
        self.assertIsInstance(got_a[0].at, float)
        self.assertEqual(got_a[2].progress, 40.0)
        got_b = await self.store.list_events(b)
        self.assertEqual([(e.seq, e.kind) for e in got_b], [(1, EventKind.SUBMITTED), (2, EventKind.ERROR)])
        self.assertEqual(got_b[1].details, long_details)
        self.assertIsNone(got_b[1].state)

    @ensure
    async def test_list_events_after_and_limit(self):
        """list_events(after_seq=, limit=) pages through a log; an unknown job has none; a negative
        after_seq or a limit below 1 is a ValueError."""
        job_id = new_job_id()
        for i in range(7):
            await self.store.append_event(make_event(job_id, EventKind.PROGRESS, progress=10.0 * (i + 1)))
        self.assertEqual([e.seq for e in await self.store.list_events(job_id, limit=3)], [1, 2, 3])
        self.assertEqual([e.seq for e in await self.store.list_events(job_id, after_seq=3, limit=3)], [4, 5, 6])
        self.assertEqual([e.seq for e in await self.store.list_events(job_id, after_seq=6)], [7])
        self.assertEqual(await self.store.list_events(job_id, after_seq=7), [])
        self.assertEqual(await self.store.list_events(new_job_id()), [])
        with self.assertRaises(ValueError):
            await self.store.list_events(job_id, limit=0)
        with self.assertRaises(ValueError):
            await self.store.list_events(job_id, after_seq=-1)

    @ensure
    async def test_concurrent_appends_get_distinct_seqs(self):
        """Eight appends to one log at once each get their own seq, 1 to 8, none lost."""
        job_id = new_job_id()
        await self.store.append_event(make_event(job_id, EventKind.SUBMITTED))  # lazy set-up done first
        stored = await defer.gatherResults([
            defer.ensureDeferred(self.store.append_event(make_event(job_id, EventKind.STATE, details=str(i))))
            for i in range(7)])
        self.assertEqual(sorted(e.seq for e in stored), list(range(2, 9)))
        listed = await self.store.list_events(job_id)
        self.assertEqual([e.seq for e in listed], list(range(1, 9)))
        self.assertEqual(sorted(e.details for e in listed[1:]), [str(i) for i in range(7)])

    @ensure
    async def test_log_bound_drops_progress_and_webhooks_first(self):
        """With a bound of 3: every kind is kept up to 3 events; then PROGRESS and WEBHOOK are
        dropped (None, no seq used) while STATE/ASSIGNED/LEASE_LOST/RETRY/ERROR are kept up to 6;
        then nothing is kept."""
        self.store.max_events = 3
        job_id = new_job_id()
        kinds = [EventKind.SUBMITTED, EventKind.PROGRESS, EventKind.WEBHOOK,  # kept: 1..3
                 EventKind.PROGRESS, EventKind.WEBHOOK,  # dropped
                 EventKind.STATE, EventKind.ASSIGNED, EventKind.LEASE_LOST,  # kept: 4..6
                 EventKind.RETRY, EventKind.ERROR, EventKind.STATE]  # dropped: the log holds 2 x 3
        results = [await self.store.append_event(make_event(job_id, k)) for k in kinds]
        self.assertEqual([None if r is None else r.seq for r in results],
                         [1, 2, 3, None, None, 4, 5, 6, None, None, None])
        listed = await self.store.list_events(job_id)
        self.assertEqual([e.kind for e in listed], [EventKind.SUBMITTED, EventKind.PROGRESS, EventKind.WEBHOOK,
                                                    EventKind.STATE, EventKind.ASSIGNED, EventKind.LEASE_LOST])
