"""DynamoDBWorkerRegistry: the WorkerRegistry contract and the table set-up,
against moto and against DynamoDB Local (AWS's own engine)."""

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from nommer.core.aws.dynamodb import TableSetupError
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.dynamodb import DynamoDBWorkerRegistry
from tests.core.registry_contract import RacingForgetContract, make_record
from tests.core.test_store_dynamodb import record_operations
from tests.dynamodb_local import OnDynamoDBLocal, OnMoto
from tests.helpers import ensure


class DynamoDBRegistrySpecifics:
    """Mixed into one TestCase per server (``OnMoto``, ``OnDynamoDBLocal``),
    which provides ``backend_settings(**overrides)``."""

    def make_registry(self, **overrides):
        settings = self.backend_settings(JOB_STORE_BACKEND="dynamodb", **overrides)
        registry = make_registry(settings, reactor)
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


class DynamoDBRegistryMotoTests(OnMoto, DynamoDBRegistrySpecifics, RacingForgetContract, TestCase):
    """Against moto in server mode."""


class DynamoDBRegistryLocalTests(OnDynamoDBLocal, DynamoDBRegistrySpecifics, RacingForgetContract, TestCase):
    """Against DynamoDB Local (skipped where java or the jar is missing, except under CI)."""
