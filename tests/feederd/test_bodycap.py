"""Request bodies capped at the HTTP channel: an HTTPChannel of a Site with
``capped_request_factory`` driven byte by byte over an in-memory transport
(the real-socket check, with a real feederd, is in test_api_e2e)."""

import json
import os
import tempfile

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from nommer.feederd.bodycap import capped_request_factory
from nommer.feederd.inflight import InFlightSite
from tests.helpers import open_files_under

LIMIT = 1024 * 1024


def temp_files_open():
    """Files under the temp dir this process holds open (a spooled body is
    one, even unlinked or O_TMPFILE)."""
    return open_files_under(os.path.realpath(tempfile.gettempdir()))


class Echo(Resource):
    """Says how long the body it got was, and whether it was spooled to a file."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.calls = []
        self.spooled_during_render = None
        self.already_open = set(temp_files_open())  # pytest's own capture files, say

    def render_POST(self, request):
        self.spooled_during_render = sorted(set(temp_files_open()) - self.already_open)
        body = request.content.read()
        self.calls.append(len(body))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"length": len(body)}).encode()


class BodyCapTests(TestCase):

    def connect(self, site):
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        return channel, transport

    def capped(self, limit=LIMIT):
        self.resource = Echo()
        return InFlightSite(self.resource, requestFactory=capped_request_factory(limit))

    def head(self, *lines):
        return b"POST /job/submit HTTP/1.1\r\nHost: 127.0.0.1:8001\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n"

    def assertRefused(self, transport):
        out = transport.value()
        self.assertTrue(out.startswith(b"HTTP/1.1 413 "), out[:200])
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Type: application/json", head)
        self.assertIn(b"Connection: close", head)
        self.assertNotIn(b"100 Continue", out)
        payload = json.loads(body)
        self.assertEqual((payload["success"], payload["error_code"]), (False, "BADINPUT"))
        self.assertIn(f"larger than {LIMIT} bytes", payload["message"])
        self.assertTrue(transport.disconnecting, "the connection is left open")
        self.assertEqual(self.resource.calls, [], "the resource saw the request")

    def test_content_length_over_the_cap_refused_at_the_headers(self):
        """Content-Length over the cap: 413 JSON and close, as soon as the headers end,
        before any of the body is read; nothing spooled; Expect: 100-continue not honoured."""
        channel, transport = self.connect(self.capped())
        before = temp_files_open()
        channel.dataReceived(self.head(b"Content-Length: %d" % (10 * LIMIT), b"Expect: 100-continue"))
        self.assertRefused(transport)
        self.assertEqual(temp_files_open(), before)
        channel.dataReceived(b"x" * 300_000)  # what the peer sends meanwhile goes nowhere
        self.assertEqual(temp_files_open(), before)
        self.assertEqual(self.resource.calls, [])

    def test_chunked_body_refused_once_past_the_cap(self):
        """A chunked body is held in memory and refused the moment it passes the cap."""
        channel, transport = self.connect(self.capped())
        before = temp_files_open()
        channel.dataReceived(self.head(b"Transfer-Encoding: chunked"))
        chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
        for _ in range(LIMIT // 65536):
            channel.dataReceived(chunk)
            self.assertEqual(transport.value(), b"", "refused before the cap")
            self.assertEqual(temp_files_open(), before)
        channel.dataReceived(b"1\r\nx\r\n")
        self.assertRefused(transport)
        self.assertEqual(temp_files_open(), before)
        request = channel._channel.requests[0]
        self.assertLessEqual(len(request.content.getvalue()), LIMIT)

    def test_chunked_over_the_cap_in_one_read_never_reaches_the_resource(self):
        """Even when the whole oversized chunked body arrives in one read, the request is answered
        413 once and never rendered."""
        channel, transport = self.connect(self.capped(limit=LIMIT))
        chunks = b"".join(b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n" for _ in range(17)) + b"0\r\n\r\n"
        channel.dataReceived(self.head(b"Transfer-Encoding: chunked") + chunks)
        self.assertRefused(transport)
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)

    def test_body_under_the_cap_stays_in_memory(self):
        """Bodies up to the cap reach the resource whole, from memory: not a temp file, even past
        the 100 KB where Twisted's own Request spools, and for chunked bodies of any size."""
        site = self.capped()
        for head, body in ((self.head(b"Content-Length: %d" % 500_000), b"a" * 500_000),
                           (self.head(b"Content-Length: %d" % LIMIT), b"b" * LIMIT),
                           (self.head(b"Transfer-Encoding: chunked"), b"5\r\nhello\r\n0\r\n\r\n")):
            channel, transport = self.connect(site)
            channel.dataReceived(head + body)
            out = transport.value()
            self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:300])
            self.assertEqual(self.resource.spooled_during_render, [])
        self.assertEqual(self.resource.calls[-1], 5)

    def test_control_twisteds_own_request_spools_to_a_temp_file(self):
        """The check above can fail: with Twisted's plain Request a 500 KB body is in a temp file."""
        self.resource = Echo()
        channel, transport = self.connect(Site(self.resource))
        channel.dataReceived(self.head(b"Content-Length: %d" % 500_000) + b"a" * 500_000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertNotEqual(self.resource.spooled_during_render, [])
