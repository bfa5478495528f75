"""The SSRF guard: the address policy (pure), and the agent that connects only
to checked addresses -- real loopback servers, real ``localhost`` lookups and
an injected resolver for names that must resolve to loopback."""

import ipaddress

import pytest
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from twisted.web.client import URI

from nommer.core.netguard import (AddressRefused, GuardedEndpointFactory, allowed_networks, guarded_agent,
                                  refuse_reason)
from tests.helpers import FakeResolver, Redirect, ensure, listen_counting, serve_counting

# --- the policy ------------------------------------------------------------------

REFUSED = [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.5", "private"), ("172.16.3.4", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.169.254", "metadata"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"), ("fd00:ec2::254", "metadata"),
    ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"), ("fec0::1", "site-local"),
    ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("::", "unspecified"),
    ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
    ("192.0.2.1", "special-purpose"), ("198.18.0.1", "special-purpose"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.5", "IPv4-mapped form of 10.0.0.5, a private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
    ("64:ff9b::a00:5", "NAT64 form of 10.0.0.5"),
    ("2002:a00:5::1", "6to4 form of 10.0.0.5"),
    ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
    ("[::1]", "loopback"),
]

PUBLIC = ["93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1", "100.128.0.1", "172.32.0.1", "169.255.0.1"]


@pytest.mark.parametrize("ip,words", REFUSED)
def test_refused_ranges(ip, words):
    """Every non-public range (and IPv6 forms carrying such an IPv4 address) is refused, saying what it is."""
    reason = refuse_reason(ip)
    assert reason is not None and words in reason, (ip, reason)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip):
    assert refuse_reason(ip) is None


def test_allowed_networks_allow_only_their_range():
    nets = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"),
            ipaddress.ip_network("fd00::/8"), ipaddress.ip_network("169.254.0.0/16")]
    assert refuse_reason("127.0.0.1", nets) is None
    assert refuse_reason("::ffff:127.0.0.1", nets) is None      # the same address to a dual-stack socket
    assert refuse_reason("10.1.200.3", nets) is None
    assert "private" in refuse_reason("10.2.0.1", nets)
    assert "loopback" in refuse_reason("::1", nets)              # IPv6 loopback is not 127/8
    assert refuse_reason("fd12::1", nets) is None
    assert refuse_reason("169.254.1.1", nets) is None
    # The metadata addresses must be named exactly, not merely fall inside an allowed range.
    assert "metadata" in refuse_reason("169.254.169.254", nets)
    assert "metadata" in refuse_reason("fd00:ec2::254", nets)
    assert refuse_reason("169.254.169.254", ["169.254.169.254/32"]) is None


def test_allowed_networks_from_settings():
    from nommer.conf import Settings
    s = Settings.from_overrides(ALLOWED_PRIVATE_NETWORKS=["10.0.0.0/8", "fd00::/8"])
    assert allowed_networks(s) == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert allowed_networks(Settings.from_overrides()) == ()


def test_not_an_address():
    with pytest.raises(ValueError):
        refuse_reason("example.com")


# --- the agent ---------------------------------------------------------------------

class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello from " + request.getHost().host.encode()


class Policy:
    """An IPolicyForHTTPS recording the host names it is asked for."""

    def __init__(self):
        self.hosts = []

    def creatorForNetloc(self, hostname, port):
        from twisted.internet.ssl import optionsForClientTLS
        self.hosts.append(hostname)
        return optionsForClientTLS(hostname.decode("ascii"))


class GuardedAgentTests(TestCase):
    timeout = 20

    def serve(self, res, interface="127.0.0.1", port=0):
        return serve_counting(self, server.Site(res), interface, port)

    async def serve_twins(self, tries=20):
        """A Hello on 127.0.0.2 and another on 127.0.0.1 at the same port: (the port, the
        127.0.0.2 counter, the 127.0.0.1 counter). The kernel picks a port free on 127.0.0.2;
        if it is taken on 127.0.0.1, that one is let go and another picked."""
        for _ in range(tries):
            listening, counter = listen_counting(server.Site(Hello()), "127.0.0.2", 0)
            port = listening.getHost().port
            try:
                twin, twin_counter = listen_counting(server.Site(Hello()), "127.0.0.1", port)
            except CannotListenError:
                await listening.stopListening()
                continue
            self.addCleanup(listening.stopListening)
            self.addCleanup(twin.stopListening)
            return port, counter, twin_counter
        self.fail(f"no port free on both 127.0.0.1 and 127.0.0.2 in {tries} tries")

    async def get(self, url, networks, resolver=None):
        client = HTTPClient(guarded_agent(reactor, [ipaddress.ip_network(n) for n in networks], "source",
                                          resolver=resolver))
        response = await client.get(url)
        return response.code, await response.content()

    @ensure
    async def test_localhost_refused_by_real_lookup(self):
        """http://localhost/ (resolved by the system) is refused: loopback; the listener sees no connection."""
        port, counter = self.serve(Hello())
        with self.assertRaises(AddressRefused) as cm:
            await self.get(f"http://localhost:{port}/", [])
        self.assertIn("source host localhost resolves to", str(cm.exception))
        self.assertIn("a loopback address; set ALLOWED_PRIVATE_NETWORKS to allow it", str(cm.exception))
        self.assertEqual(counter.connections, 0)
        # Allowed: the same request goes through (so the refusal above was the guard's).
        code, body = await self.get(f"http://localhost:{port}/", ["127.0.0.0/8", "::1/128"])
        self.assertEqual((code, body), (200, b"hello from 127.0.0.1"))
        self.assertEqual(counter.connections, 1)

    @ensure
    async def test_name_resolving_to_loopback_refused(self):
        """A name that resolves to 127.0.0.1 is refused with the name, the address and the setting."""
        port, counter = self.serve(Hello())
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        with self.assertRaises(AddressRefused) as cm:
            await self.get(f"http://evil.example:{port}/", ["10.0.0.0/8"], resolver)
        self.assertEqual(str(cm.exception), "source host evil.example resolves to 127.0.0.1, a loopback "
                                            "address; set ALLOWED_PRIVATE_NETWORKS to allow it")
        self.assertEqual(counter.connections, 0)
        code, _ = await self.get(f"http://evil.example:{port}/", ["127.0.0.0/8"], resolver)
        self.assertEqual(code, 200)

    @ensure
    async def test_ip_literals_checked_too(self):
        """127.0.0.1, [::ffff:7f00:1], [::ffff:127.0.0.1] and [::1] are refused without asking any resolver.
        (IPv6 literals at the endpoint: treq's URL parser cannot take them at all.)"""
        from twisted.internet.protocol import Factory, Protocol
        port, counter = self.serve(Hello())
        resolver = FakeResolver({})
        with self.assertRaises(AddressRefused):
            await self.get(f"http://127.0.0.1:{port}/", [], resolver)
        factory = GuardedEndpointFactory(reactor, (), "webhook", resolver=resolver)
        for host in ("[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "[::1]"):
            endpoint = factory.endpointForURI(URI.fromBytes(f"http://{host}:{port}/".encode()))
            with self.assertRaises(AddressRefused) as cm:
                await endpoint.connect(Factory.forProtocol(Protocol))
            self.assertIn("webhook host", str(cm.exception))
        self.assertEqual(resolver.calls, [])
        self.assertEqual(counter.connections, 0)

    @ensure
    async def test_only_allowed_addresses_of_a_name_are_used(self):
        """A name resolving to a refused and an allowed address connects to the allowed one only."""
        port, counter, other_counter = await self.serve_twins()
        resolver = FakeResolver({"mixed.example": ["127.0.0.1", "127.0.0.2"]})
        code, body = await self.get(f"http://mixed.example:{port}/", ["127.0.0.2/32"], resolver)
        self.assertEqual((code, body), (200, b"hello from 127.0.0.2"))
        self.assertEqual(other_counter.connections, 0)

    @ensure
    async def test_dns_rebinding_gets_nowhere(self):
        """A name answering an allowed address first and a refused one next is looked up once per
        connection, and the connection goes to the address that was checked."""
        port, counter, internal_counter = await self.serve_twins()
        answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
        resolver = FakeResolver({"rebind.example": lambda: next(answers)})
        code, body = await self.get(f"http://rebind.example:{port}/", ["127.0.0.2/32"], resolver)
        self.assertEqual((code, body), (200, b"hello from 127.0.0.2"))
        self.assertEqual(resolver.calls, ["rebind.example"])
        # The next lookup answers the internal address: refused, never connected to.
        with self.assertRaises(AddressRefused):
            await self.get(f"http://rebind.example:{port}/", ["127.0.0.2/32"], resolver)
        self.assertEqual(internal_counter.connections, 0)
        self.assertEqual(counter.connections, 1)

    @ensure
    async def test_redirect_to_private_address_refused(self):
        """An allowed server redirecting to a refused address (literal or name): refused; the target
        sees no connection."""
        target_port, target = self.serve(Hello(), interface="127.0.0.1")
        for location in (f"http://127.0.0.1:{target_port}/", f"http://evil.example:{target_port}/",
                         f"http://2130706433:{target_port}/"):
            port, first = self.serve(Redirect(location.encode()), interface="127.0.0.2")
            resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
            with self.assertRaises(AddressRefused) as cm:
                await self.get(f"http://127.0.0.2:{port}/", ["127.0.0.2/32"], resolver)
            self.assertIn("127.0.0.1", str(cm.exception))
            self.assertEqual(first.connections, 1)
        self.assertEqual(target.connections, 0)

    def test_https_keeps_the_host_name_for_tls(self):
        """https: the TLS creator is asked for the URL's host name (SNI, certificate), not the address."""
        policy = Policy()
        factory = GuardedEndpointFactory(reactor, (), "webhook", tls_policy=policy)
        endpoint = factory.endpointForURI(URI.fromBytes(b"https://hooks.example:8443/x"))
        self.assertEqual(policy.hosts, [b"hooks.example"])
        self.assertIn("hooks.example", repr(endpoint._endpoint._wrappedEndpoint))  # head cap, TLS, guard

    @ensure
    async def test_https_name_to_loopback_refused_before_tls(self):
        port, counter = self.serve(Hello())
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        with self.assertRaises(AddressRefused):
            await self.get(f"https://evil.example:{port}/", [], resolver)
        self.assertEqual(counter.connections, 0)
