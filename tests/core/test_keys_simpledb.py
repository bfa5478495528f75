"""SimpleDBKeyStore against moto's server with SimpleDB completed (tests/moto_plus.py):
the KeyStore contract, the domain layout, the 5 s authenticate cache."""

import json

from twisted.internet import task
from twisted.trial.unittest import TestCase

from nommer.core.keys.base import hash_secret
from nommer.core.keys.cache import CACHE_TTL_S
from nommer.core.keys.simpledb import SimpleDBKeyStore
from tests.aws_server import aws_settings, reset_moto, sdb_client
from tests.core.keys_contract import KeyStoreContract
from tests.helpers import KeyStoreFromSettings, ensure

DOMAIN = "nommer_api_keys"


def record_operations(store):
    ops = []
    store.aws.client("sdb").meta.events.register("before-call.sdb", lambda model, **kwargs: ops.append(model.name))
    return ops


class SimpleDBKeyStoreTests(KeyStoreFromSettings, KeyStoreContract, TestCase):

    store_class = SimpleDBKeyStore

    def setUp(self):
        reset_moto()
        KeyStoreContract.setUp(self)

    def key_settings(self, **overrides):
        return aws_settings(self, JOB_STORE_BACKEND="simpledb", **overrides)[0]

    def raw_dump(self):
        items = sdb_client().select(SelectExpression=f"select * from `{DOMAIN}`", ConsistentRead=True)["Items"]
        self.assertTrue(items)
        return json.dumps(items, ensure_ascii=False)

    @ensure
    async def test_layout(self):
        """One item per key named by key_id in SIMPLEDB_KEY_DOMAIN: hash, name, sorted scopes, times."""
        key, secret = await self.keys.create("ci", ["submit", "admin"])
        item = {a["Name"]: a["Value"] for a in sdb_client().get_attributes(
            DomainName=DOMAIN, ItemName=key.key_id, ConsistentRead=True)["Attributes"]}
        self.assertEqual(item, {"secret_hash": hash_secret(secret), "name": "ci", "scopes": "admin,submit",
                                "created_at": "2023-11-14T22:13:20.250000Z 1700000000.25"})
        self.clock.advance(10)
        await self.keys.revoke(key.key_id)
        item = {a["Name"]: a["Value"] for a in sdb_client().get_attributes(
            DomainName=DOMAIN, ItemName=key.key_id, ConsistentRead=True)["Attributes"]}
        self.assertEqual(item["revoked_at"], "2023-11-14T22:13:30.250000Z 1700000010.25")

    @ensure
    async def test_other_items_are_not_keys(self):
        """An item without secret_hash in the domain is no key: not listed, not active, NoSuchKey."""
        await self.keys.any_active()
        sdb_client().put_attributes(DomainName=DOMAIN, ItemName="0123456789abcdef",
                                    Attributes=[{"Name": "note", "Value": "x", "Replace": True}])
        self.assertEqual(await self.keys.list(), [])
        self.assertFalse(await self.keys.any_active())

    @ensure
    async def test_authenticate_is_cached_for_five_seconds(self):
        """Within CACHE_TTL_S a secret is answered from memory; then read again."""
        key, secret = await self.keys.create("k")
        ops = record_operations(self.keys)
        for _ in range(3):
            self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(ops, ["GetAttributes"])
        self.clock.advance(CACHE_TTL_S)
        self.assertEqual(await self.keys.authenticate(secret), key)
        self.assertEqual(ops, ["GetAttributes", "GetAttributes"])

    @ensure
    async def test_domain_created_lazily_unless_told_not_to(self):
        """The domain is created on first use; with AWS_CREATE_RESOURCES off a missing one is NoSuchDomain."""
        strict = self.make_store(task.Clock(), AWS_CREATE_RESOURCES=False)
        with self.assertRaises(Exception) as caught:
            await strict.create("k")
        self.assertEqual(caught.exception.response["Error"]["Code"], "NoSuchDomain")
        self.assertNotIn(DOMAIN, sdb_client().list_domains().get("DomainNames", []))
        self.assertFalse(await self.keys.any_active())
        self.assertIn(DOMAIN, sdb_client().list_domains()["DomainNames"])
        self.assertEqual(await self.keys.ensure_resources(), [f"SimpleDB domain {DOMAIN} ready"])


