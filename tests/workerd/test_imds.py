"""InstanceMetadata (IMDSv2) against a fake IMDS process."""

import urllib.error
import urllib.request

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from nommer.workerd.imds import InstanceMetadata, MetadataUnavailable, region_from_az
from tests.fake_imds import FakeIMDS
from tests.helpers import ensure
from tests.processes import free_port

_SHARED = {}


def shared_imds():
    """One fake IMDS process for the tests that only read it (notices are
    cleared by each test that raises one)."""
    if "fake" not in _SHARED:
        import atexit
        fake = _SHARED["fake"] = FakeIMDS(instance_id="i-0abc", instance_type="c7i.large", az="us-east-1a",
                                          life_cycle="spot", user_data=b"#cloud-config\n").start()
        atexit.register(fake.stop)
    return _SHARED["fake"]


def raw(url, method="GET", headers=None):
    """(status, body) of a plain urllib request (the fake runs in another process)."""
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class MetadataTests(TestCase):

    def setUp(self):
        self.fake = shared_imds()
        self.fake.clear()
        self.addCleanup(self.fake.clear)

    def metadata(self, **kwargs):
        return InstanceMetadata(self.fake.url, reactor, **kwargs)

    def test_fake_enforces_imdsv2(self):
        """The fake refuses what IMDS refuses with HttpTokens=required: a GET
        without a token (401), a PUT without a TTL (400), a made-up token (401)."""
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id")[0], 401)
        self.assertEqual(raw(f"{self.fake.url}/latest/api/token", "PUT")[0], 400)
        self.assertEqual(raw(f"{self.fake.url}/latest/api/token", "PUT",
                             {"X-aws-ec2-metadata-token-ttl-seconds": "21601"})[0], 400)
        status, token = raw(f"{self.fake.url}/latest/api/token", "PUT",
                            {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        self.assertEqual(status, 200)
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id",
                             headers={"X-aws-ec2-metadata-token": "forged"})[0], 401)
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id",
                             headers={"X-aws-ec2-metadata-token": token.decode()}), (200, b"i-0abc"))

    @ensure
    async def test_identity_with_one_token(self):
        """identity() reads id, type, zone, market and region, all with one session token."""
        before = self.fake.stats()
        identity = await self.metadata().identity()
        self.assertEqual(identity, {"instance_id": "i-0abc", "instance_type": "c7i.large",
                                    "availability_zone": "us-east-1a", "market": "spot",
                                    "region": "us-east-1"})
        after = self.fake.stats()
        self.assertEqual(after["token_puts"] - before["token_puts"], 1)
        self.assertEqual(after["unauthorized"], before["unauthorized"])

    @ensure
    async def test_on_demand_region_from_document_and_no_user_data(self):
        """An on-demand instance is "on-demand"; the region comes from the
        identity document (right for a Local Zone, which the AZ name is not);
        no user data is None."""
        fake = FakeIMDS(instance_id="i-0def", az="us-west-2-lax-1a", region="us-west-2",
                        life_cycle="on-demand").start()
        self.addCleanup(fake.stop)
        metadata = InstanceMetadata(fake.url, reactor)
        identity = await metadata.identity()
        self.assertEqual((identity["market"], identity["region"], identity["availability_zone"]),
                         ("on-demand", "us-west-2", "us-west-2-lax-1a"))
        self.assertIsNone(await metadata.user_data())

    def test_region_from_az(self):
        self.assertEqual(region_from_az("eu-west-3b"), "eu-west-3")
        self.assertEqual(region_from_az("us-gov-west-1a"), "us-gov-west-1")
        self.assertEqual(region_from_az("us-west-2-lax-1a"), "us-west-2")
        self.assertIsNone(region_from_az("nowhere"))

    @ensure
    async def test_user_data(self):
        self.assertEqual(await self.metadata().user_data(), b"#cloud-config\n")

    @ensure
    async def test_notices(self):
        """No notice is None (IMDS answers 404); a raised one is its documented dict."""
        metadata = self.metadata()
        self.assertIsNone(await metadata.spot_notice())
        self.assertIsNone(await metadata.rebalance_recommendation())
        self.fake.spot_notice("stop", "2026-11-22T06:02:00Z")
        self.fake.rebalance("2026-11-22T06:00:00Z")
        self.assertEqual(await metadata.spot_notice(), {"action": "stop", "time": "2026-11-22T06:02:00Z"})
        self.assertEqual(await metadata.rebalance_recommendation(), {"noticeTime": "2026-11-22T06:00:00Z"})
        self.fake.clear()
        self.assertIsNone(await metadata.spot_notice())

    @ensure
    async def test_refused_token_is_replaced(self):
        """A 401 (token expired or revoked) fetches a new token and retries once."""
        metadata = self.metadata()
        await metadata.identity()
        self.fake.expire_tokens()
        before = self.fake.stats()
        self.assertIsNone(await metadata.spot_notice())
        after = self.fake.stats()
        self.assertEqual(after["unauthorized"] - before["unauthorized"], 1)
        self.assertEqual(after["token_puts"] - before["token_puts"], 1)
        self.assertIsNone(await metadata.spot_notice())
        self.assertEqual(self.fake.stats()["token_puts"], after["token_puts"])

    @ensure
    async def test_token_renewed_before_it_expires(self):
        """A token is reused until near the end of its TTL, then replaced
        before IMDS would refuse it (the clock drives its age)."""
        clock = task.Clock()
        metadata = self.metadata(token_ttl_s=600, clock=clock)
        start = self.fake.stats()["token_puts"]
        await metadata.spot_notice()
        clock.advance(500)
        await metadata.spot_notice()
        self.assertEqual(self.fake.stats()["token_puts"] - start, 1)
        clock.advance(50)   # 550 s: within the last 60 s of 600
        await metadata.spot_notice()
        self.assertEqual(self.fake.stats()["token_puts"] - start, 2)

    @ensure
    async def test_concurrent_requests_share_a_token_fetch(self):
        metadata = self.metadata()
        start = self.fake.stats()["token_puts"]
        await defer.gatherResults([metadata.spot_notice(), metadata.rebalance_recommendation(),
                                   metadata.user_data()])
        self.assertEqual(self.fake.stats()["token_puts"] - start, 1)

    @ensure
    async def test_unreachable_names_the_url(self):
        """Nothing listening: MetadataUnavailable naming the URL."""
        url = f"http://127.0.0.1:{free_port()}"
        metadata = InstanceMetadata(url, reactor)
        with self.assertRaises(MetadataUnavailable) as caught:
            await metadata.identity()
        self.assertIn(f"{url}/latest/api/token", str(caught.exception))
        self.assertEqual(caught.exception.url, f"{url}/latest/api/token")

    @ensure
    async def test_silent_endpoint_times_out(self):
        """A server that accepts and never answers: MetadataUnavailable once
        timeout_s passes on the clock."""
        silent = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        clock = task.Clock()
        metadata = InstanceMetadata(f"http://127.0.0.1:{silent.getHost().port}", reactor, timeout_s=2,
                                    clock=clock)
        d = metadata.spot_notice()
        await task.deferLater(reactor, 0.05, lambda: None)  # let it connect and send
        self.assertFalse(d.called)
        clock.advance(2)
        with self.assertRaises(MetadataUnavailable) as caught:
            await d
        self.assertIn("no answer within 2 s", str(caught.exception))

    def test_token_ttl_checked(self):
        self.assertRaises(ValueError, InstanceMetadata, "http://x", reactor, token_ttl_s=0)
        self.assertRaises(ValueError, InstanceMetadata, "http://x", reactor, token_ttl_s=21601)
