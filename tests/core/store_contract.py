"""The JobStore contract: mixed into one TestCase per backend.

A backend test case provides ``make_store(clock)`` returning a fresh, empty
store whose times come from ``clock`` (a twisted ``task.Clock``).
"""

from twisted.internet import task

from nommer.core.errors import NoSuchJob
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
