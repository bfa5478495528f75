"""GET /job/<id>/events in memory (StubTreq over the Klein resource, real SQLite
store, queue and key store): the log as the ledger wrote it, ISO times,
paging with after/limit, tenants and scopes like GET /job/<id>, bad
arguments, and the OpenAPI document describing it."""

from openapi_spec_validator import validate as validate_openapi

from nommer.core.events import EventKind, JobEvent
from nommer.core.states import JobState
from tests.feederd.test_api_auth import AuthAPITestBase
from tests.helpers import ensure


class JobEventsRouteTests(AuthAPITestBase):

    def setUp(self):
        self.build(API_INTERFACE="0.0.0.0")

    async def events(self, job_id, key, query=""):
        return await self.request("GET", f"/job/{job_id}/events{query}", key=key)

    @ensure
    async def test_the_log_as_written_with_iso_times(self):
        """A job's events, oldest first: submitted, assigned, states, progress, each with its seq,
        kind, ISO 8601 UTC time, state, worker, attempt, progress and details."""
        _, alice = await self.key("alice")
        job_id = await self.submitted(alice)
        await self.ledger.set_state(job_id, JobState.DOWNLOADING, attempts=1, worker_id="w-1")
        await self.ledger.set_state(job_id, JobState.ENCODING)
        await self.ledger.update(job_id, progress=23.4)
        await self.request("POST", f"/job/{job_id}/cancel", key=alice)
        code, payload, _ = await self.events(job_id, alice)
        self.assertEqual(code, 200, payload)
        self.assertEqual((payload["success"], payload["job_id"], payload["next_after"]), (True, job_id, None))
        events = payload["events"]
        self.assertEqual([(e["seq"], e["kind"], e["state"]) for e in events], [
            (1, "submitted", "PENDING"), (2, "assigned", "DOWNLOADING"), (3, "state", "DOWNLOADING"),
            (4, "state", "ENCODING"), (5, "progress", "ENCODING"), (6, "progress", "ENCODING"),
            (7, "state", "CANCELED")])
        self.assertEqual(set(events[0]), {"job_id", "seq", "kind", "at", "state", "worker_id", "attempt",
                                          "progress", "details"})
        self.assertEqual((events[1]["worker_id"], events[1]["attempt"]), ("w-1", 1))
        self.assertEqual([e["progress"] for e in events[4:6]], [10.0, 20.0])
        self.assertEqual(events[-1]["details"], "canceled by request")
        job = (await self.request("GET", f"/job/{job_id}", key=alice))[1]["job"]
        self.assertEqual(events[0]["at"], job["created_at"])
        self.assertEqual(events[-1]["at"], job["finished_at"])
        self.assertRegex(events[0]["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    @ensure
    async def test_after_and_limit_page_through(self):
        """?limit=N gives N events and next_after; ?after=SEQ continues; the last page has next_after null."""
        _, alice = await self.key("alice")
        job_id = await self.submitted(alice)
        for i in range(6):
            await self.store.append_event(JobEvent(job_id=job_id, at=1.0 + i, kind=EventKind.ERROR, details=str(i)))
        code, page, _ = await self.events(job_id, alice, "?limit=3")
        self.assertEqual(([e["seq"] for e in page["events"]], page["next_after"]), ([1, 2, 3], 3))
        code, page, _ = await self.events(job_id, alice, "?after=3&limit=3")
        self.assertEqual(([e["seq"] for e in page["events"]], page["next_after"]), ([4, 5, 6], 6))
        code, page, _ = await self.events(job_id, alice, "?after=6&limit=3")  # 7 events: SUBMITTED first
        self.assertEqual(([e["seq"] for e in page["events"]], page["next_after"]), ([7], None))
        code, page, _ = await self.events(job_id, alice, "?after=7")
        self.assertEqual((page["events"], page["next_after"]), ([], None))
        code, page, _ = await self.events(job_id, alice, "?after=5")
        self.assertEqual(([e["details"] for e in page["events"]], page["next_after"]), (["4", "5"], None))

    @ensure
    async def test_a_key_sees_only_its_own_jobs_events(self):
        """Another key's job is 404 NOSUCHJOB, like an unknown one; admin sees every job's; a key
        without read is 403; no key is 401."""
        _, alice = await self.key("alice")
        _, bob = await self.key("bob")
        _, admin = await self.key("ops", "admin", "read")
        _, writer = await self.key("writer", "submit")
        job_id = await self.submitted(alice)
        self.assertError(await self.events(job_id, bob), 404, "NOSUCHJOB")
        self.assertError(await self.events("f" * 50, bob), 404, "NOSUCHJOB")
        self.assertError(await self.events("not-a-job", alice), 404, "NOSUCHJOB")
        self.assertError(await self.events(job_id, writer), 403, "FORBIDDEN", "'read'")
        self.assertError(await self.events(job_id, None), 401, "UNAUTHORIZED")
        code, payload, _ = await self.events(job_id, admin)
        self.assertEqual((code, [e["kind"] for e in payload["events"]]), (200, ["submitted"]))

    @ensure
    async def test_bad_arguments_are_400_naming_them(self):
        _, alice = await self.key("alice")
        job_id = await self.submitted(alice)
        for query, field in (("?after=-1", "after"), ("?after=x", "after"), ("?after=", "after"),
                             ("?limit=0", "limit"), ("?limit=501", "limit"), ("?limit=²", "limit")):
            payload = self.assertError(await self.events(job_id, alice, query), 400, "BADINPUT", field)
            self.assertIn(field, payload["message"], query)

    @ensure
    async def test_openapi_describes_the_route(self):
        """The served OpenAPI document is valid and has GET /job/{job_id}/events with its parameters
        and the JobEvent schema's kinds."""
        code, document, _ = await self.request("GET", "/openapi.json")
        self.assertEqual(code, 200)
        validate_openapi(document)
        operation = document["paths"]["/job/{job_id}/events"]["get"]
        self.assertEqual([p.get("name") for p in operation["parameters"][1:]], ["after", "limit"])
        kinds = document["components"]["schemas"]["JobEvent"]["properties"]["kind"]["enum"]
        self.assertEqual(set(kinds), {k.value for k in EventKind})
