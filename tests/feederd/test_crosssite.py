"""The loopback checks as pure functions (the API's use of them: test_api_auth)."""

from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from nommer.feederd.crosssite import check, is_loopback_host, is_loopback_interface, parse_host


class FakeRequest:
    def __init__(self, **headers):
        self.requestHeaders = Headers({k.encode(): v if isinstance(v, list) else [v] for k, v in headers.items()})


class LoopbackTests(TestCase):
    def test_interfaces(self):
        """127.0.0.0/8, ::1 and localhost are loopback; "" (every interface), 0.0.0.0, :: and others not."""
        for interface in ("127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "LOCALHOST"):
            self.assertTrue(is_loopback_interface(interface), interface)
        for interface in ("", None, "0.0.0.0", "::", "10.0.0.1", "192.168.1.10", "fe80::1", "eth0",
                          "localhost.example", "::ffff:127.0.0.1x"):
            self.assertFalse(is_loopback_interface(interface), interface)

    def test_hosts(self):
        """Loopback names as browsers write them; numeric spellings and lookalikes are not."""
        for host in ("localhost", "localhost.", "127.0.0.1", "127.255.0.9", "::1"):
            self.assertTrue(is_loopback_host(host), host)
        for host in ("", "evil.example", "127.0.0.1.nip.io", "0x7f000001", "2130706433", "127.1",
                     "0177.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "localhost.evil"):
            self.assertFalse(is_loopback_host(host), host)

    def test_parse_host(self):
        self.assertEqual(parse_host(b"127.0.0.1:8001"), ("127.0.0.1", 8001))
        self.assertEqual(parse_host(b"[::1]:80"), ("::1", 80))
        self.assertEqual(parse_host(b"LocalHost"), ("localhost", None))
        for bad in (b"a:b:c", b"[::1", b"host:99999999", b"caf\xe9"):
            self.assertIsNone(parse_host(bad), bad)

    def test_check(self):
        """Host must be loopback (one header; none is fine); Origin, if sent, the request's own port."""
        self.assertIsNone(check(FakeRequest(), 8001))
        self.assertIsNone(check(FakeRequest(host="127.0.0.1:8001", origin="http://localhost:8001"), 1))
        self.assertIsNone(check(FakeRequest(origin="http://127.0.0.1:8001"), 8001))
        self.assertIsNone(check(FakeRequest(host="localhost", origin="http://localhost"), 8001))
        self.assertEqual(check(FakeRequest(host=["127.0.0.1", "evil.example"]), 8001)[:2], (421, "BADHOST"))
        self.assertEqual(check(FakeRequest(host="evil.example:8001"), 8001)[:2], (421, "BADHOST"))
        for origin in ("http://localhost:8002", "http://evil.example:8001", "null", "http://localhost:8001 x",
                       ["http://localhost:8001", "http://localhost:8001"], "HTTP://127.0.0.1:8001/"):
            refused = check(FakeRequest(host="localhost:8001", origin=origin), 8001)
            self.assertEqual(refused[:2], (403, "FORBIDDEN"), origin)
