"""The source chunk tasks share on one machine (nommer.workerd.chunks.source_cache): fetched once,
never read half-written, dropped with its job, swept when the job is final, gone or retried."""

import os

from twisted.trial.unittest import TestCase

from nommer.core.errors import NoSuchJob, TransientJobError
from nommer.core.job import Job
from nommer.core.states import JobState
from nommer.workerd.chunks.source_cache import SourceCache
from tests.helpers import ensure


class FakeStore:
    """Just ``get``: the jobs the sweep asks about."""

    def __init__(self, jobs):
        self.jobs = {j.job_id: j for j in jobs}

    async def get(self, job_id):
        if job_id not in self.jobs:
            raise NoSuchJob(job_id)
        return self.jobs[job_id]


def job(job_id, state=JobState.ENCODING, retries=0):
    return Job(job_id=job_id, source_path="file:///a.mp4", dest_path="file:///out/", nommer="x",
               job_options={}, job_state=state, retries=retries)


class SourceCacheTests(TestCase):

    def setUp(self):
        self.root = self.mktemp()
        os.makedirs(self.root)
        self.cache = SourceCache(self.root)
        self.downloads = []

    async def download(self, local):
        self.downloads.append(local)
        with open(local, "wb") as f:
            f.write(b"source bytes")

    @ensure
    async def test_fetched_once_then_shared(self):
        first = await self.cache.fetch("j1", 0, "source", self.download)
        second = await self.cache.fetch("j1", 0, "source", self.download)
        self.assertEqual(first, second)
        self.assertEqual(len(self.downloads), 1)
        self.assertTrue(self.downloads[0].startswith(first + ".part-"))  # written aside, then renamed
        with open(first, "rb") as f:
            self.assertEqual(f.read(), b"source bytes")
        self.assertEqual(os.listdir(os.path.dirname(first)), ["source"])
        # Another life of the job (retried) fetches its own.
        await self.cache.fetch("j1", 1, "source", self.download)
        self.assertEqual(len(self.downloads), 2)

    @ensure
    async def test_a_failed_fetch_leaves_nothing(self):
        async def broken(local):
            with open(local, "wb") as f:
                f.write(b"half")
            raise TransientJobError("connection reset")
        with self.assertRaises(TransientJobError):
            await self.cache.fetch("j1", 0, "source", broken)
        entry = os.path.join(self.cache.root, "j1-0")
        self.assertEqual(os.listdir(entry), [])
        await self.cache.fetch("j1", 0, "source", self.download)  # the next task fetches it whole
        self.assertEqual(len(self.downloads), 1)

    @ensure
    async def test_names_are_plain(self):
        for name in ("../x", "a/b", ".hidden", ""):
            with self.assertRaises(ValueError):
                await self.cache.fetch("j1", 0, name, self.download)
        self.assertEqual(self.downloads, [])

    @ensure
    async def test_drop_and_sweep(self):
        for job_id, life in (("keep", 0), ("done", 0), ("gone", 0), ("retried", 0), ("drop", 0), ("drop", 1)):
            await self.cache.fetch(job_id, life, "source", self.download)
        self.assertEqual(await self.cache.drop("drop"), 2)
        store = FakeStore([job("keep"), job("done", JobState.FINISHED), job("retried", retries=1)])
        self.assertEqual(await self.cache.sweep(store), 3)
        self.assertEqual(sorted(os.listdir(self.cache.root)), ["keep-0"])
