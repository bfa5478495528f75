"""DynamoDBKeyStore: the KeyStore contract and the table set-up, against moto
and against DynamoDB Local (AWS's own engine); the 5 s authenticate cache."""

import json

import boto3
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.aws import AWS
from nommer.core.aws.dynamodb import TableSetupError
from nommer.core.keys import open_key_store
from nommer.core.keys.cache import CACHE_TTL_S
from nommer.core.keys.dynamodb import DynamoDBKeyStore
from tests.core.keys_contract import KeyStoreContract
from tests.core.test_store_dynamodb import record_operations
from tests.dynamodb_local import OnDynamoDBLocal, OnMoto
from tests.helpers import KeyStoreFromSettings, ensure


class DynamoDBKeySpecifics(KeyStoreFromSettings):
    """Mixed into one TestCase per server (``OnMoto``, ``OnDynamoDBLocal``),
    which provides ``backend_settings(**overrides)``."""

    store_class = DynamoDBKeyStore

    def key_settings(self, **overrides):
        return self.backend_settings(JOB_STORE_BACKEND="dynamodb", **overrides)

    def raw_dump(self):
        client = boto3.client("dynamodb", endpoint_url=self.settings.AWS_ENDPOINT_URL, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        items = client.scan(TableName=self.settings.DYNAMODB_KEY_TABLE, ConsistentRead=True)["Items"]
        self.assertTrue(items)
        return json.dumps(items)

    @ensure
    async def test_table_created_once_keyed_key_id(self):
        """The first call creates DYNAMODB_KEY_TABLE keyed key_id (S); setup is idempotent."""
        store = self.make_store(task.Clock(), DYNAMODB_KEY_TABLE="keys_lazy")
        ops = record_operations(store)
        key, _ = await store.create("k")
        self.assertEqual(ops.count("CreateTable"), 1)
        table = (await store.aws.call("dynamodb", "describe_table", TableName="keys_lazy"))["Table"]
        self.assertEqual(table["KeySchema"], [{"AttributeName": "key_id", "KeyType": "HASH"}])
        self.assertEqual(await store.ensure_resources(), ["DynamoDB table keys_lazy exists"])
        self.assertEqual(await store.list(), [key])

    @ensure
    async def test_wrong_existing_table_refused(self):
        """A table keyed otherwise under the store's name is reported, naming the setting."""
        store = self.make_store(task.Clock(), DYNAMODB_KEY_TABLE="not_keys")
        await store.aws.call("dynamodb", "create_table", TableName="not_keys", BillingMode="PAY_PER_REQUEST",
                             AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                             KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await store.any_active()
        self.assertIn("key_id (HASH, type S)", str(raised.exception))
        self.assertIn("DYNAMODB_KEY_TABLE", str(raised.exception))

    @ensure
    async def test_missing_table_without_create_resources(self):
        """With AWS_CREATE_RESOURCES off, a missing table is TableSetupError pointing at `nommer aws setup`."""
        store = self.make_store(task.Clock(), DYNAMODB_KEY_TABLE="keys_absent", AWS_CREATE_RESOURCES=False)
        with self.assertRaises(TableSetupError) as raised:
            await store.list()
        self.assertIn("nommer aws setup", str(raised.exception))

    @ensure
    async def test_authenticate_is_cached_for_five_seconds(self):
        """Within CACHE_TTL_S a secret is answered from memory (good and bad alike); then read again."""
        key, secret = await self.keys.create("k")
        await self.keys.authenticate(secret)   # the lazy set-up is done
        ops = record_operations(self.keys)
        wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for _ in range(3):
            self.assertEqual(await self.keys.authenticate(secret), key)
            self.assertIsNone(await self.keys.authenticate(wrong))
        self.assertEqual(ops, ["GetItem"])
        self.clock.advance(CACHE_TTL_S - 0.01)
        self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(ops, ["GetItem"])
        self.clock.advance(0.01)
        self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(ops, ["GetItem", "GetItem"])
        self.assertIsNone(await self.keys.authenticate("nmk_short"))
        self.assertEqual(ops, ["GetItem", "GetItem"])

    @ensure
    async def test_revoke_here_counts_at_once(self):
        """A key revoked through this store stops authenticating at once, cache or not."""
        key, secret = await self.keys.create("k")
        self.assertEqual(await self.keys.authenticate(secret), key)
        await self.keys.revoke(key.key_id)
        self.assertIsNone(await self.keys.authenticate(secret))

    @ensure
    async def test_given_pool_is_used_and_left_open(self):
        """With pool=AWS(...), calls go through it and close() leaves it running."""
        aws = AWS(self.settings, reactor, name="shared")
        self.addCleanup(aws.close)
        store = open_key_store(self.settings, reactor=reactor, pool=aws, clock=task.Clock())
        self.assertIs(store.aws, aws)
        await store.create("k")
        await store.close()
        self.assertFalse(aws._closed)
        self.assertEqual(len((await aws.call("dynamodb", "scan", TableName=self.settings.DYNAMODB_KEY_TABLE))
                             ["Items"]), 1)


class DynamoDBKeysMotoTests(OnMoto, DynamoDBKeySpecifics, KeyStoreContract, TestCase):
    """Against moto in server mode."""


class DynamoDBKeysLocalTests(OnDynamoDBLocal, DynamoDBKeySpecifics, KeyStoreContract, TestCase):
    """Against DynamoDB Local (skipped where java or the jar is missing, except under CI)."""
