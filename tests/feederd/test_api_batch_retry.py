"""POST /jobs/batch and POST /job/<id>/retry in memory (StubTreq over the Klein resource, real
SQLite store, queue and key store): mixed good and bad items, the batch limit, the quota per item,
scopes and tenants; retry of ERROR / CANCELED / ABANDONED jobs only, its event log and message."""

from nommer.core.job import Job, new_job_id
from nommer.core.states import IllegalTransition, JobState
from nommer.core.workqueue.jobs import parse_job_message
from tests.feederd.test_api_auth import FFMPEG, AuthAPITestBase
from tests.helpers import doc_two_pass, ensure


class BatchTests(AuthAPITestBase):

    def setUp(self):
        self.build(MAX_BATCH_JOBS=5, MAX_UNFINISHED_JOBS_PER_KEY=3, POOLS={"gpu": {}})

    @ensure
    async def test_common_and_sources_with_a_bad_item(self):
        """ElasticRecode's batchInputs: each source over the common body; a bad item (an unknown pool)
        fails alone, with its field, and the others are stored and queued with their own fields."""
        common = {"job_options": {"nommer": FFMPEG, "options": doc_two_pass()}, "priority": 70}
        sources = [{"source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/a.mp4"},
                   {"source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/b.mp4",
                    "pool": "nope"},
                   {"source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/c.mp4",
                    "priority": 5, "pool": "gpu"}]
        code, payload, _ = await self.request("POST", "/jobs/batch", {"common": common, "sources": sources})
        self.assertEqual(code, 200, payload)
        self.assertEqual((payload["success"], payload["submitted"], payload["failed"]), (True, 2, 1))
        ok_a, bad, ok_c = payload["results"]
        self.assertEqual((ok_a["index"], ok_a["success"]), (0, True))
        self.assertEqual(bad, {"index": 1, "success": False, "error_code": "BADINPUT", "field": "pool",
                               "message": "pool: no pool named 'nope'; this server's pools: default, gpu"})
        a, c = await self.store.get(ok_a["job_id"]), await self.store.get(ok_c["job_id"])
        self.assertEqual((a.dest_path, a.priority, a.pool), (f"file://{self.root}/a.mp4", 70, "default"))
        self.assertEqual((c.dest_path, c.priority, c.pool), (f"file://{self.root}/c.mp4", 5, "gpu"))
        self.assertEqual((await self.queue.depth("media_nommer"))["visible"], 1)
        self.assertEqual((await self.queue.depth("media_nommer_gpu"))["visible"], 1)

    @ensure
    async def test_full_bodies_with_bad_items(self):
        """{"jobs": [...]}: a body missing dest_path and one that is not an object fail on their own."""
        bad = self.body()
        del bad["dest_path"]
        code, payload, _ = await self.request("POST", "/jobs/batch", {"jobs": [self.body("x.mp4"), bad, 7]})
        self.assertEqual(code, 200, payload)
        results = payload["results"]
        self.assertTrue(results[0]["success"])
        self.assertEqual((results[1]["success"], results[1]["error_code"], results[1]["field"]),
                         (False, "BADINPUT", "dest_path"))
        self.assertEqual((results[2]["error_code"], results[2]["field"]), ("BADINPUT", None))
        self.assertIn("JSON object", results[2]["message"])

    @ensure
    async def test_limits_refuse_the_whole_batch(self):
        """More than MAX_BATCH_JOBS, none, or another shape: 400 and nothing stored."""
        for body, words in (({"jobs": [self.body()] * 6}, ("6 jobs", "MAX_BATCH_JOBS")),
                            ({"jobs": []}, ("non-empty",)),
                            ({"common": {}, "sources": [], "jobs": []}, ("a batch is",)),
                            ({"common": [], "sources": [{}]}, ("common",))):
            self.assertError(await self.request("POST", "/jobs/batch", body), 400, "BADINPUT", *words)
        jobs, _ = await self.store.list()
        self.assertEqual(jobs, [])

    @ensure
    async def test_quota_per_item_and_scope(self):
        """With a key of 3 unfinished jobs at most, 2 already: the first good item passes, the rest
        fail QUOTA; a key without 'submit' is refused whole (403)."""
        key_id, secret = await self.key("submitter", "submit", "read")
        for _ in range(2):
            await self.submitted(secret)
        code, payload, _ = await self.request("POST", "/jobs/batch", {"jobs": [self.body()] * 3}, key=secret)
        self.assertEqual(code, 200, payload)
        self.assertEqual([r.get("error_code") for r in payload["results"]], [None, "QUOTA", "QUOTA"])
        job = await self.store.get(payload["results"][0]["job_id"])
        self.assertEqual(job.owner, key_id)
        _, reader = await self.key("reader", "read")
        self.assertError(await self.request("POST", "/jobs/batch", {"jobs": [self.body()]}, key=reader),
                         403, "FORBIDDEN", "submit")


class RetryTests(AuthAPITestBase):

    def setUp(self):
        self.build()

    async def ended(self, state, owner=None, **fields):
        """A job stored and moved to ``state`` as a worker (or cancel, or the reaper) would."""
        job = await self.store.create(Job(job_id=new_job_id(), source_path=f"file://{self.root}/in.mp4",
                                          dest_path=f"file://{self.root}/o.mp4", nommer=FFMPEG,
                                          job_options=[], owner=owner, priority=80))
        if state in (JobState.ERROR, JobState.FINISHED):
            await self.ledger.set_state(job.job_id, JobState.DOWNLOADING, attempts=2, worker_id="w1", progress=40.0)
        if state == JobState.FINISHED:
            for step in (JobState.ENCODING, JobState.UPLOADING):
                await self.ledger.set_state(job.job_id, step)
        return await self.ledger.set_state(job.job_id, state, f"ended {state.value}", **fields)

    @ensure
    async def test_retry_error_job(self):
        """An ERROR job goes back to PENDING: attempts 0, details and worker cleared, retries 1, its
        message '<id>#1' on its queue with its priority; the event log keeps the past and says RETRY."""
        job = await self.ended(JobState.ERROR)
        code, payload, _ = await self.request("POST", f"/job/{job.job_id}/retry")
        self.assertEqual(code, 200, payload)
        shown = payload["job"]
        self.assertEqual((shown["job_state"], shown["attempts"], shown["retries"], shown["job_state_details"],
                          shown["worker_id"], shown["progress"], shown["finished_at"], shown["priority"]),
                         ("PENDING", 0, 1, None, None, None, None, 80))
        [m] = await self.queue.receive("media_nommer")
        self.assertEqual(parse_job_message(m.body), (job.job_id, 1))
        if hasattr(self.ledger, "record_event"):  # the event log (issue 12, another part)
            kinds = [(e.kind.value, e.state) for e in await self.store.list_events(job.job_id)]
            self.assertIn(("state", "ERROR"), kinds)
            self.assertEqual(kinds[-1][0], "retry")

    @ensure
    async def test_retry_canceled_and_abandoned_jobs_but_no_other(self):
        """CANCELED and ABANDONED jobs can be retried; PENDING, FINISHED or a retried job again
        while PENDING: 409 CONFLICT naming the states that can."""
        for state in (JobState.CANCELED, JobState.ABANDONED):
            job = await self.ended(state)
            code, payload, _ = await self.request("POST", f"/job/{job.job_id}/retry")
            self.assertEqual((code, payload["job"]["job_state"]), (200, "PENDING"), payload)
            self.assertError(await self.request("POST", f"/job/{job.job_id}/retry"), 409, "CONFLICT",
                             "is PENDING", "ABANDONED, CANCELED, ERROR")
        finished = await self.ended(JobState.FINISHED)
        self.assertError(await self.request("POST", f"/job/{finished.job_id}/retry"), 409, "CONFLICT",
                         "is FINISHED")

    @ensure
    async def test_late_worker_cannot_resurrect_or_fake_a_retry(self):
        """The store refuses FINISHED -> PENDING whatever the write says (even one adding a retry),
        and a worker's write to a final job without the retry is refused as before."""
        finished = await self.ended(JobState.FINISHED)
        with self.assertRaises(IllegalTransition):
            await self.store.modify(finished.job_id, lambda j: j.evolve(job_state=JobState.PENDING))
        with self.assertRaises(IllegalTransition):
            await self.store.modify(finished.job_id,
                                    lambda j: j.evolve(job_state=JobState.PENDING, retries=j.retries + 1))
        failed = await self.ended(JobState.ERROR)
        with self.assertRaises(IllegalTransition):
            await self.ledger.set_state(failed.job_id, JobState.DOWNLOADING, attempts=3, worker_id="late")
        with self.assertRaises(ValueError):
            await self.store.modify(failed.job_id, lambda j: j.evolve(retries=5))
        self.assertEqual((await self.store.get(failed.job_id)).job_state, JobState.ERROR)

    @ensure
    async def test_retry_needs_submit_and_the_job_owner(self):
        """Another key's job is 404 (ids do not leak); a key without 'submit' is 403."""
        owner_id, owner = await self.key("owner")
        _, other = await self.key("other")
        _, reader = await self.key("reader", "read")
        job = await self.ended(JobState.ERROR, owner=owner_id)
        self.assertError(await self.request("POST", f"/job/{job.job_id}/retry", key=other), 404, "NOSUCHJOB")
        self.assertError(await self.request("POST", f"/job/{job.job_id}/retry", key=reader), 403, "FORBIDDEN")
        code, payload, _ = await self.request("POST", f"/job/{job.job_id}/retry", key=owner)
        self.assertEqual((code, payload["job"]["retries"]), (200, 1), payload)
