"""DynamoDBWorkerRegistry: the WorkerRegistry contract and the table set-up,
against moto and against DynamoDB Local (AWS's own engine)."""

import os

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from nommer.core.aws.dynamodb import TableSetupError
from nommer.core.registry import make_registry
from nommer.core.registry.dynamodb import DynamoDBWorkerRegistry
from tests.aws_server import aws_settings, reset_moto
from tests.core.registry_contract import T0, WorkerRegistryContract, make_record
from tests.core.test_store_dynamodb import record_operations
from tests.dynamodb_local import dynamodb_local_missing, dynamodb_local_settings, reset_dynamodb_local
from tests.helpers import ensure


class RacedRegistry(DynamoDBWorkerRegistry):
    """Runs ``between_scan_and_delete()`` after each Scan: a heartbeat landing mid-forget."""

    between_scan_and_delete = None

    async def _scan(self, **kwargs):
        items = await super()._scan(**kwargs)
        if self.between_scan_and_delete is not None:
            await self.between_scan_and_delete()
        return items


class DynamoDBRegistrySpecifics:
    """Mixed into one TestCase per server, which provides ``backend_settings(**overrides)``
    and ``reset_backend()``."""

    def setUp(self):
        self.reset_backend()
        WorkerRegistryContract.setUp(self)

    def make_registry(self, cls=DynamoDBWorkerRegistry, **overrides):
        settings = self.backend_settings(JOB_STORE_BACKEND="dynamodb", **overrides)
        registry = make_registry(settings, reactor) if cls is DynamoDBWorkerRegistry else cls(settings, reactor)
        self.assertIsInstance(registry, DynamoDBWorkerRegistry)
        if hasattr(self, "registry"):
            self.addCleanup(registry.close)
        return registry

    @ensure
    async def test_table_created_once_with_worker_id_key(self):
        """Concurrent first calls create DYNAMODB_WORKER_TABLE once, keyed worker_id; setup is idempotent."""
        registry = self.make_registry(DYNAMODB_WORKER_TABLE="workers_lazy")
        ops = record_operations(registry)
        await defer.gatherResults([registry.heartbeat(make_record(worker_id=f"w{i}")) for i in range(3)])
        self.assertEqual(ops.count("CreateTable"), 1)
        table = (await registry.aws.call("dynamodb", "describe_table", TableName="workers_lazy"))["Table"]
        self.assertEqual(table["KeySchema"], [{"AttributeName": "worker_id", "KeyType": "HASH"}])
        self.assertEqual(await registry.ensure_resources(), ["DynamoDB table workers_lazy exists"])
        self.assertEqual(len(await registry.list()), 3)

    @ensure
    async def test_list_scans(self):
        """list() is a consistent Scan of the small table (no index to keep)."""
        await self.registry.heartbeat(make_record())
        ops = record_operations(self.registry)
        await self.registry.list()
        self.assertEqual(ops, ["Scan"])

    @ensure
    async def test_wrong_existing_table_refused(self):
        """A table keyed otherwise under the registry's name is reported, naming the setting."""
        registry = self.make_registry(DYNAMODB_WORKER_TABLE="not_workers")
        await registry.aws.call("dynamodb", "create_table", TableName="not_workers", BillingMode="PAY_PER_REQUEST",
                                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await registry.heartbeat(make_record())
        self.assertIn("worker_id (HASH, type S)", str(raised.exception))
        self.assertIn("DYNAMODB_WORKER_TABLE", str(raised.exception))

    @ensure
    async def test_missing_table_without_create_resources(self):
        """With AWS_CREATE_RESOURCES off, a missing table is TableSetupError pointing at `nommer aws setup`."""
        registry = self.make_registry(DYNAMODB_WORKER_TABLE="workers_absent", AWS_CREATE_RESOURCES=False)
        with self.assertRaises(TableSetupError) as raised:
            await registry.list()
        self.assertIn("nommer aws setup", str(raised.exception))

    @ensure
    async def test_forget_spares_a_worker_that_heartbeated_meanwhile(self):
        """A record refreshed between forget's Scan and its delete stays (conditional delete)."""
        registry = self.make_registry(RacedRegistry)
        await registry.heartbeat(make_record(worker_id="gone", last_seen=T0 - 100))
        await registry.heartbeat(make_record(worker_id="back", last_seen=T0 - 100))

        async def comes_back():
            registry.between_scan_and_delete = None
            await registry.heartbeat(make_record(worker_id="back", last_seen=T0 + 1))
        registry.between_scan_and_delete = comes_back
        self.assertEqual(await registry.forget_older_than(T0), 1)
        self.assertEqual([r.worker_id for r in await registry.list()], ["back"])


class DynamoDBRegistryMotoTests(DynamoDBRegistrySpecifics, WorkerRegistryContract, TestCase):
    """Against moto in server mode."""

    def reset_backend(self):
        reset_moto()

    def backend_settings(self, **overrides):
        return aws_settings(self, **overrides)[0]


class DynamoDBRegistryLocalTests(DynamoDBRegistrySpecifics, WorkerRegistryContract, TestCase):
    """Against DynamoDB Local (skipped where java or the jar is missing, except under CI)."""

    skip = None if os.environ.get("CI") else dynamodb_local_missing()

    def reset_backend(self):
        reset_dynamodb_local()

    def backend_settings(self, **overrides):
        return dynamodb_local_settings(self, **overrides)[0]
