"""DynamoDBJobStore: the JobStore contract and the DynamoDB specifics, against
moto and against DynamoDB Local (AWS's own engine), plus a few server-less
unit tests of the table set-up and the number conversion."""

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.aws import dynamodb
from nommer.core.aws.dynamodb import TableSetupError, from_dynamo, to_dynamo
from nommer.core.states import IllegalTransition, JobState
from nommer.core.store.dynamodb import DynamoDBJobStore
from tests.core.store_contract import JobEventsContract, JobStoreContract, make_job
from tests.dynamodb_local import OnDynamoDBLocal, OnMoto
from tests.helpers import ensure


def record_operations(store):
    """A list that collects the name of every DynamoDB operation ``store`` calls."""
    ops = []
    store.aws.client("dynamodb").meta.events.register(
        "before-call.dynamodb", lambda model, **kwargs: ops.append(model.name))
    return ops


class DynamoDBSpecifics:
    """Backend-specific tests, mixed into one TestCase per server (``OnMoto``,
    ``OnDynamoDBLocal``), which provides ``backend_settings(**overrides)``."""

    def make_store(self, clock):
        self.settings = self.backend_settings()
        return DynamoDBJobStore(self.settings, reactor, clock=clock)

    def other_store(self, **overrides):
        """Another store on the same server (and table, unless overridden), closed at cleanup."""
        settings = self.backend_settings(**overrides) if overrides else self.settings
        store = DynamoDBJobStore(settings, reactor, clock=self.clock)
        self.addCleanup(store.close)
        return store

    async def raw_item(self, store, job_id):
        result = await store.aws.call("dynamodb", "get_item", TableName=store.table,
                                      Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return result["Item"]

    @ensure
    async def test_listing_queries_indexes_never_scans(self):
        """list, list(state), list_unfinished and count_by_state use GSI Queries, never Scan."""
        job = await self.store.create(make_job())
        ops = record_operations(self.store)
        self.assertEqual([j.job_id for j in (await self.store.list())[0]], [job.job_id])
        self.assertEqual([j.job_id for j in (await self.store.list(state=JobState.PENDING))[0]], [job.job_id])
        self.assertEqual([j.job_id for j in await self.store.list_unfinished()], [job.job_id])
        self.assertEqual(await self.store.count_by_state(), {"PENDING": 1})
        self.assertNotIn("Scan", ops)
        self.assertEqual(set(ops), {"Query"})

    @ensure
    async def test_race_lost_by_stale_writer_rechecks_transition(self):
        """Two daemons abandon one job at once: the one whose read went stale
        retries on the fresh copy and gets IllegalTransition; the winner's write stays."""
        job = await self.store.create(make_job())
        a, b = self.store, self.other_store()
        read_done, gate = defer.Deferred(), defer.Deferred()
        original_call = a.aws.call

        def call(service, method, **kwargs):
            d = original_call(service, method, **kwargs)
            if method != "get_item" or read_done.called:
                return d

            async def held():
                result = await d
                read_done.callback(None)
                await gate
                return result
            return defer.Deferred.fromCoroutine(held())
        a.aws.call = call
        seen_by_a = []

        def abandon_by_a(j):
            seen_by_a.append(j.job_state)
            return j.evolve(job_state=JobState.ABANDONED, job_state_details="by a")
        d_a = a.modify(job.job_id, abandon_by_a)
        await read_done
        won = await b.modify(job.job_id, lambda j: j.evolve(job_state=JobState.ABANDONED, job_state_details="by b"))
        self.assertEqual(won.job_state, JobState.ABANDONED)
        gate.callback(None)
        with self.assertRaises(IllegalTransition):
            await d_a
        self.assertEqual(seen_by_a, [JobState.PENDING, JobState.ABANDONED])
        stored = await self.store.get(job.job_id)
        self.assertEqual((stored.job_state, stored.job_state_details), (JobState.ABANDONED, "by b"))

    @ensure
    async def test_concurrent_modifies_lose_no_update(self):
        """Six increments racing through two stores all land (conditional write + retry)."""
        job = await self.store.create(make_job())
        other = self.other_store()
        await other.get(job.job_id)  # its lazy set-up done before the race

        def bump(j):
            return j.evolve(attempts=j.attempts + 1)
        await defer.gatherResults([s.modify(job.job_id, bump) for s in (self.store, other) * 3])
        self.assertEqual((await self.store.get(job.job_id)).attempts, 6)
        self.assertEqual(int((await self.raw_item(self.store, job.job_id))["version"]["N"]), 7)

    @ensure
    async def test_numbers_round_trip(self):
        """Floats and ints in the document come back as the same numbers."""
        job = await self.store.create(make_job(job_options=[{"q": 0.1, "n": 3, "big": 1e20, "neg": -2.5}],
                                               progress=12.5))
        got = await self.store.get(job.job_id)
        self.assertEqual(got.job_options, [{"q": 0.1, "n": 3, "big": 1e20, "neg": -2.5}])
        self.assertIsInstance(got.job_options[0]["n"], int)
        self.assertEqual(got.progress, 12.5)
        self.assertIsInstance(got.created_at, float)

    @ensure
    async def test_ttl_marks_finished_jobs(self):
        """With DYNAMODB_JOB_TTL_S, table TTL is on expires_at and only final jobs carry it."""
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_ttl", DYNAMODB_JOB_TTL_S=3600)
        lines = await store.ensure_resources()
        self.assertIn("enabled TTL on expires_at of DynamoDB table nommer_jobs_ttl", lines)
        self.assertIn("enabled TTL on expires_at of DynamoDB table nommer_jobs_ttl_events", lines)
        ttl = await store.aws.call("dynamodb", "describe_time_to_live", TableName="nommer_jobs_ttl")
        self.assertEqual(ttl["TimeToLiveDescription"]["AttributeName"], "expires_at")
        job = await store.create(make_job())
        self.assertNotIn("expires_at", await self.raw_item(store, job.job_id))
        self.clock.advance(10)
        await store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.DOWNLOADING))
        self.assertNotIn("expires_at", await self.raw_item(store, job.job_id))
        await store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.CANCELED))
        item = await self.raw_item(store, job.job_id)
        self.assertEqual(item["expires_at"], {"N": str(1_700_000_010 + 3600)})
        self.assertEqual(await store.ensure_resources(), ["DynamoDB table nommer_jobs_ttl exists",
                                                          "DynamoDB table nommer_jobs_ttl_events exists"])

    @ensure
    async def test_events_expire_with_their_job(self):
        """With DYNAMODB_JOB_TTL_S the event table has TTL on expires_at; a job's events carry none
        while it runs, and its final STATE event stamps its end + the TTL on every one of them (as
        on the job's item); a later webhook event gets its own time + the TTL."""
        from nommer.core.events import EventKind, JobEvent
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_ttl2", DYNAMODB_JOB_TTL_S=3600)
        await store.ensure_resources()
        ttl = await store.aws.call("dynamodb", "describe_time_to_live", TableName="nommer_jobs_ttl2_events")
        self.assertEqual(ttl["TimeToLiveDescription"]["AttributeName"], "expires_at")
        job_id = make_job().job_id

        async def raw_events():
            result = await store.aws.call("dynamodb", "query", TableName="nommer_jobs_ttl2_events",
                                          KeyConditionExpression="job_id = :j", ConsistentRead=True,
                                          ExpressionAttributeValues={":j": {"S": job_id}})
            return [item.get("expires_at", {}).get("N") for item in result["Items"]]
        for kind, state in ((EventKind.SUBMITTED, "PENDING"), (EventKind.ASSIGNED, "DOWNLOADING"),
                            (EventKind.PROGRESS, "ENCODING")):
            await store.append_event(JobEvent(job_id=job_id, at=1_700_000_000.0, kind=kind, state=state))
        self.assertEqual(await raw_events(), [None, None, None])
        await store.append_event(JobEvent(job_id=job_id, at=1_700_000_100.5, kind=EventKind.STATE, state="FINISHED"))
        self.assertEqual(await raw_events(), [str(1_700_000_100 + 3600)] * 4)
        await store.append_event(JobEvent(job_id=job_id, at=1_700_000_200.0, kind=EventKind.WEBHOOK,
                                          state="FINISHED"))
        self.assertEqual((await raw_events())[-1], str(1_700_000_200 + 3600))
        self.assertEqual([e.seq for e in await store.list_events(job_id)], [1, 2, 3, 4, 5])

    @ensure
    async def test_event_appends_query_and_put_never_scan(self):
        """An append is a consistent Query for the last seq and a conditional PutItem; a listing
        is a Query."""
        from nommer.core.events import EventKind, JobEvent
        job_id = make_job().job_id
        await self.store.append_event(JobEvent(job_id=job_id, at=1.0, kind=EventKind.SUBMITTED))
        ops = record_operations(self.store)
        await self.store.append_event(JobEvent(job_id=job_id, at=2.0, kind=EventKind.STATE))
        self.assertEqual(ops, ["Query", "PutItem"])
        await self.store.list_events(job_id)
        self.assertEqual(ops, ["Query", "PutItem", "Query"])

    @ensure
    async def test_wrong_existing_event_table_refused(self):
        """A table of another shape under the event table's name is reported by ensure_resources."""
        store = self.other_store(DYNAMODB_JOB_TABLE="jobs_x", DYNAMODB_EVENTS_TABLE="not_for_events")
        await store.aws.call("dynamodb", "create_table", TableName="not_for_events", BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await store.ensure_resources()
        self.assertIn("not_for_events", str(raised.exception))
        self.assertIn("seq (RANGE, type N)", str(raised.exception))
        self.assertIn("DYNAMODB_EVENTS_TABLE", str(raised.exception))

    @ensure
    async def test_ensure_resources_idempotent(self):
        """ensure_resources creates the table with both GSIs, and the event table, once, then finds them."""
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_setup")
        self.assertEqual(await store.ensure_resources(), ["created DynamoDB table nommer_jobs_setup",
                                                          "created DynamoDB table nommer_jobs_setup_events"])
        self.assertEqual(await store.ensure_resources(), ["DynamoDB table nommer_jobs_setup exists",
                                                          "DynamoDB table nommer_jobs_setup_events exists"])
        table = (await store.aws.call("dynamodb", "describe_table", TableName="nommer_jobs_setup"))["Table"]
        self.assertEqual(table["TableStatus"], "ACTIVE")
        self.assertEqual(sorted(i["IndexName"] for i in table["GlobalSecondaryIndexes"]),
                         ["by_owner", "by_state", "by_time"])

    @ensure
    async def test_table_made_before_owner_gets_the_index(self):
        """A job table made before jobs had owners (no by_owner index) gets the index added by
        ensure_resources; its old jobs read back without owner and list(owner=) works."""
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_old")
        spec = store._table_spec()
        spec["GlobalSecondaryIndexes"] = [i for i in spec["GlobalSecondaryIndexes"] if i["IndexName"] != "by_owner"]
        spec["AttributeDefinitions"] = [a for a in spec["AttributeDefinitions"] if a["AttributeName"] != "owner"]
        await store.aws.call("dynamodb", "create_table", **spec)
        await store._wait_active()
        old = make_job(created_at=1_600_000_000.0, updated_at=1_600_000_000.0)
        item = store._to_item(old, 1)
        await store.aws.call("dynamodb", "put_item", TableName="nommer_jobs_old", Item=item)
        lines = await store.ensure_resources()
        self.assertEqual(lines[0], "added index by_owner to DynamoDB table nommer_jobs_old")
        table = (await store.aws.call("dynamodb", "describe_table", TableName="nommer_jobs_old"))["Table"]
        self.assertIn("by_owner", [i["IndexName"] for i in table["GlobalSecondaryIndexes"]])
        self.assertEqual(await store.ensure_resources(), ["DynamoDB table nommer_jobs_old exists",
                                                          "DynamoDB table nommer_jobs_old_events exists"])
        self.assertIsNone((await store.get(old.job_id)).owner)
        new = await store.create(make_job(owner="k1"))
        self.assertEqual([j.job_id for j in (await store.list(owner="k1"))[0]], [new.job_id])
        self.assertEqual(await store.count_unfinished("k1"), 1)

    @ensure
    async def test_wrong_existing_table_refused(self):
        """A table of another shape under the job table's name is reported, not used."""
        store = self.other_store(DYNAMODB_JOB_TABLE="not_for_jobs")
        await store.aws.call("dynamodb", "create_table", TableName="not_for_jobs", BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await store.ensure_resources()
        message = str(raised.exception)
        self.assertIn("job_id (HASH, type S)", message)
        self.assertIn("no global secondary index by_time", message)
        self.assertIn("no global secondary index by_state", message)
        with self.assertRaises(TableSetupError):
            await store.get("0" * 50)

    @ensure
    async def test_first_operations_create_table_once(self):
        """Concurrent first operations of a fresh store wait for one set-up: one CreateTable
        of the job table (and one of its event table)."""
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_lazy")
        ops = record_operations(store)
        jobs = [make_job() for _ in range(3)]
        await defer.gatherResults([store.create(j) for j in jobs])
        self.assertEqual(ops.count("CreateTable"), 2)
        self.assertEqual(await store.count_by_state(), {"PENDING": 3})

    @ensure
    async def test_missing_table_without_create_resources(self):
        """With AWS_CREATE_RESOURCES off, a missing table is a clear TableSetupError."""
        store = self.other_store(DYNAMODB_JOB_TABLE="nommer_jobs_absent", AWS_CREATE_RESOURCES=False)
        with self.assertRaises(TableSetupError) as raised:
            await store.create(make_job())
        self.assertIn("nommer aws setup", str(raised.exception))


class DynamoDBMotoTests(OnMoto, DynamoDBSpecifics, JobStoreContract, JobEventsContract, TestCase):
    """The contract and the specifics against moto in server mode."""


class DynamoDBLocalTests(OnDynamoDBLocal, DynamoDBSpecifics, JobStoreContract, JobEventsContract, TestCase):
    """The contract and the specifics against DynamoDB Local (AWS's engine)."""


class FakeAWS:
    """Canned DynamoDB answers for the set-up logic, no server: ``answers``
    maps a method to a list of results (or exceptions) handed out in order."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def call(self, service, method, **kwargs):
        self.calls.append(method)
        answer = self.answers[method].pop(0)
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)

    def close(self):
        pass


class DynamoDBUnitTests(TestCase):
    """Server-less tests of the table set-up wait and the number conversion."""

    def make_store(self, answers):
        from tests.helpers import temp_settings
        settings, _ = temp_settings(self, AWS_REGION="us-east-1")
        store = DynamoDBJobStore(settings, reactor)
        store.close()
        store.aws = FakeAWS(answers)
        store.reactor = task.Clock()

        async def no_event_table():  # the event table's set-up has a test of its own
            return []
        store.events.ensure_resources = no_event_table
        return store

    def described(self, store, status, index_status="ACTIVE"):
        spec = store._table_spec()
        indexes = [dict(i, IndexStatus=index_status) for i in spec["GlobalSecondaryIndexes"]]
        return {"Table": {"TableName": store.table, "TableStatus": status, "KeySchema": spec["KeySchema"],
                          "AttributeDefinitions": spec["AttributeDefinitions"],
                          "GlobalSecondaryIndexes": indexes}}

    def test_waits_for_active_on_reactor_timers(self):
        """After CreateTable, DescribeTable is polled on reactor timers until table and indexes are ACTIVE."""
        from botocore.exceptions import ClientError
        missing = ClientError({"Error": {"Code": "ResourceNotFoundException"}}, "DescribeTable")
        store = self.make_store({"create_table": [{}], "describe_table": []})
        store.aws.answers["describe_table"] = [missing, missing, self.described(store, "CREATING"),
                                               self.described(store, "ACTIVE", "CREATING"),
                                               self.described(store, "ACTIVE")]
        d = defer.Deferred.fromCoroutine(store.ensure_resources())
        self.assertNoResult(d)
        self.assertEqual(store.aws.calls, ["describe_table", "describe_table", "create_table", "describe_table"])
        store.reactor.advance(dynamodb.WAIT_FIRST_S)
        self.assertNoResult(d)
        store.reactor.advance(dynamodb.WAIT_FIRST_S * 2)
        self.assertEqual(self.successResultOf(d), ["created DynamoDB table nommer_jobs"])
        self.assertEqual(store.aws.calls.count("describe_table"), 5)

    def test_wait_gives_up(self):
        """A table that never turns ACTIVE fails with TableSetupError after WAIT_TIMEOUT_S."""
        store = self.make_store({"describe_table": []})
        store.aws.answers["describe_table"] = [self.described(store, "CREATING") for _ in range(400)]
        d = defer.Deferred.fromCoroutine(store.ensure_resources())
        store.reactor.pump([dynamodb.WAIT_MAX_S] * 200)
        self.failureResultOf(d, TableSetupError)

    def test_numbers_convert(self):
        """Floats become Decimal and back; integral numbers come back int; NaN is refused."""
        doc = {"a": [1.5, 2, {"b": 0.1}], "c": None, "d": True}
        self.assertEqual(from_dynamo(to_dynamo(doc)), doc)
        self.assertIsInstance(from_dynamo(to_dynamo(2)), int)
        self.assertRaises(ValueError, to_dynamo, float("nan"))
