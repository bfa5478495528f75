"""SimpleDBWorkerRegistry against moto's server with SimpleDB completed (tests/moto_plus.py)."""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.aws.simpledb import MAX_VALUE_BYTES
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.simpledb import SimpleDBWorkerRegistry
from tests.aws_server import aws_settings, reset_moto, sdb_client, sdb_item
from tests.core.registry_contract import T0, RacingForgetContract, make_record
from tests.helpers import ensure

DOMAIN = "media_nommer_ec2nommer_state"


def raw_item(name):
    return sdb_item(DOMAIN, name)


class SimpleDBRegistryTests(RacingForgetContract, TestCase):

    def make_registry(self, **overrides):
        if not hasattr(self, "registry"):
            reset_moto()
        settings, _ = aws_settings(self, JOB_STORE_BACKEND="simpledb", **overrides)
        registry = make_registry(settings, reactor)
        self.assertIsInstance(registry, SimpleDBWorkerRegistry)
        if hasattr(self, "registry"):
            self.addCleanup(registry.close)
        return registry

    @ensure
    async def test_layout_in_the_original_domain(self):
        """Records live in SIMPLEDB_EC2_NOMMER_STATE_DOMAIN, item = worker id, values <= 1024 bytes;
        a long jobs list is chunked and the chunks go when it shrinks."""
        jobs = [f"{i:050x}" for i in range(300)]
        await self.registry.heartbeat(make_record(jobs=jobs))
        item = raw_item("w-1")
        self.assertTrue(all(len(v.encode()) <= MAX_VALUE_BYTES for v in item.values()))
        self.assertEqual(item["last_seen"], "2023-11-14T22:13:20.000000Z 1700000000.0")
        self.assertEqual(item["state"], '"running"')
        self.assertRegex(item["chunks"], r"^jobs=\d+$")
        self.assertNotIn("jobs", item)
        await self.registry.heartbeat(make_record(jobs=[], last_seen=T0 + 1))
        item = raw_item("w-1")
        self.assertEqual([n for n in item if n.startswith("jobs.")], [])
        self.assertEqual((item["jobs"], item["chunks"]), ("[]", ""))

    @ensure
    async def test_original_2011_items_are_not_workers(self):
        """An item the 2011 ec2nommerd wrote (id, active_jobs, last_report_dtime, state) is skipped."""
        await self.registry.ensure_resources()
        sdb_client().put_attributes(DomainName=DOMAIN, ItemName="i-0ld", Attributes=[
            {"Name": n, "Value": v, "Replace": True} for n, v in {
                "id": "i-0ld", "active_jobs": "0", "last_report_dtime": "2011-06-01 12:00:00.123456",
                "state": "TERMINATED"}.items()])
        await self.registry.heartbeat(make_record())
        self.assertEqual([r.worker_id for r in await self.registry.list()], ["w-1"])
        with self.assertRaises(KeyError):
            await self.registry.get("i-0ld")
        self.assertEqual(await self.registry.forget_older_than(T0 + 10), 1)
        self.assertEqual(raw_item("i-0ld")["state"], "TERMINATED")

    @ensure
    async def test_domain_created_lazily_unless_told_not_to(self):
        """The domain is created on first use; with AWS_CREATE_RESOURCES off a missing one is NoSuchDomain."""
        strict = self.make_registry(AWS_CREATE_RESOURCES=False)
        with self.assertRaises(Exception) as caught:
            await strict.heartbeat(make_record())
        self.assertEqual(caught.exception.response["Error"]["Code"], "NoSuchDomain")
        self.assertNotIn(DOMAIN, sdb_client().list_domains().get("DomainNames", []))
        await self.registry.list()
        self.assertIn(DOMAIN, sdb_client().list_domains()["DomainNames"])
        self.assertEqual(await self.registry.ensure_resources(), [f"SimpleDB domain {DOMAIN} ready"])
