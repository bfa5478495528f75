import hashlib
import os
import shutil
import socket
import tempfile
import tracemalloc
import types

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import TestCase
from twisted.web import resource, server, static

from nommer.core.errors import (
    InvalidJobSpec, PermanentJobError, SourceNotFound, TransientJobError)
from nommer.core.storage.http import HTTPStorage
from tests.core.storage_contract import NetworkStorageContract, ReadOnlyStorageContract
from tests.helpers import Endless, Redirect, ensure, listen_endless_head, serve_counting, temp_settings

TIMEOUT_S = 30.0
PAYLOAD = os.urandom(256 * 1024 + 3)
BIG_BYTES = 50 * 1024 * 1024


class Status(resource.Resource):
    """Answers every request with one status code."""

    isLeaf = True

    def __init__(self, code):
        super().__init__()
        self.code = code

    def render_GET(self, request):
        request.setResponseCode(self.code)
        return b"error body"


class Hold(resource.Resource):
    """Keeps requests open; the test decides what happens to them.

    With ``first_chunk`` the headers and that chunk are sent at once."""

    isLeaf = True

    def __init__(self, first_chunk=None):
        super().__init__()
        self.first_chunk = first_chunk
        self.requests = defer.DeferredQueue()

    def render_GET(self, request):
        request.notifyFinish().addErrback(lambda _: None)  # the client goes away
        if self.first_chunk is not None:
            request.setHeader(b"content-type", b"video/mp4")
            request.write(self.first_chunk)
        self.requests.put(request)
        return server.NOT_DONE_YET


class Auth(resource.Resource):
    """Serves PAYLOAD only with the right basic-auth credentials."""

    isLeaf = True
    seen_uris = ()
    accepted = {(b"user", b"pa/ss:w@rd+"), (b"AKIAX", b"se/cr+et")}

    def render_GET(self, request):
        self.seen_uris = self.seen_uris + (request.uri,)
        if (request.getUser(), request.getPassword()) not in self.accepted:
            request.setResponseCode(401)
            return b"no"
        return PAYLOAD


class Short(resource.Resource):
    """Promises more bytes than it sends, then hangs up."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-length", b"100000")
        request.write(b"x" * 1000)
        request.notifyFinish().addErrback(lambda _: None)
        reactor.callLater(0, request.transport.loseConnection)
        return server.NOT_DONE_YET


class TrackingFactory(WrappingFactory):
    """Counts server connections so cleanup can wait for all to close."""

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self._idle = []

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def close_all(self):
        d = defer.Deferred()
        if not self.protocols:
            d.callback(None)
            return d
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class RecordingFile:
    """A real file that records each write (size and when)."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.writes = []
        self.queue = defer.DeferredQueue()

    def write(self, data):
        self.f.write(data)
        self.writes.append(len(data))
        # later, so the test does not run inside the protocol's dataReceived
        reactor.callLater(0, self.queue.put, len(data))

    def close(self):
        self.f.close()


class RecordingHTTPStorage(HTTPStorage):
    file = None

    def _open_local(self, local_path):
        self.file = RecordingFile(local_path)
        return self.file


class HTTPStorageTests(TestCase):
    """HTTPStorage against a real twisted.web server on 127.0.0.1."""

    timeout = 30  # seconds; a broken download must fail the test, not hang it

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="nommer-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.local = os.path.join(self.tmp, "download")
        self.settings = types.SimpleNamespace(HTTP_DOWNLOAD_TIMEOUT_S=TIMEOUT_S,
                                              FILE_STORAGE_ROOTS=[self.tmp],
                                              ALLOWED_PRIVATE_NETWORKS=["127.0.0.0/8"],
                                              MAX_SOURCE_BYTES=10 ** 12)
        root = resource.Resource()
        root.putChild(b"file.mp4", static.Data(PAYLOAD, "video/mp4"))
        root.putChild(b"missing", Status(404))
        root.putChild(b"gone", Status(410))
        root.putChild(b"forbidden", Status(403))
        root.putChild(b"busy", Status(429))
        root.putChild(b"boom", Status(500))
        root.putChild(b"redirect", Redirect(b"/file.mp4"))
        root.putChild(b"auth", Auth())
        root.putChild(b"short", Short())
        self.slow = Hold()
        self.stall = Hold(first_chunk=b"a" * 1000)
        root.putChild(b"slow", self.slow)
        root.putChild(b"stall", self.stall)
        self.root = root
        site = server.Site(root)
        site.displayTracebacks = False
        self.factory = TrackingFactory(site)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.factory.close_all)
        self.addCleanup(self.port.stopListening)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"

    def storage(self, clock=None, cls=HTTPStorage):
        return cls(self.settings, reactor, clock=clock)

    def read_local(self):
        with open(self.local, "rb") as f:
            return f.read()

    @ensure
    async def test_download_file(self):
        """A 200 body lands in the local file and its size is returned."""
        size = await self.storage().download(f"{self.base}/file.mp4", self.local)
        self.assertEqual(size, len(PAYLOAD))
        self.assertEqual(self.read_local(), PAYLOAD)

    @ensure
    async def test_redirect_followed(self):
        """A redirect to the file is followed."""
        size = await self.storage().download(f"{self.base}/redirect", self.local)
        self.assertEqual(size, len(PAYLOAD))

    @ensure
    async def test_404_and_410_are_source_not_found(self):
        """404 and 410 mean the source does not exist; no file is left behind."""
        for path in ("missing", "gone"):
            with self.assertRaises(SourceNotFound) as cm:
                await self.storage().download(f"{self.base}/{path}", self.local)
            self.assertIn(f"{self.base}/{path}", cm.exception.message)
            self.assertFalse(os.path.exists(self.local))

    @ensure
    async def test_404_message_names_status(self):
        """The SourceNotFound message gives the HTTP status."""
        with self.assertRaises(SourceNotFound) as cm:
            await self.storage().download(f"{self.base}/missing", self.local)
        self.assertIn("HTTP 404 Not Found", cm.exception.message)

    @ensure
    async def test_500_is_transient(self):
        """A 5xx is a TransientJobError naming the status."""
        with self.assertRaises(TransientJobError) as cm:
            await self.storage().download(f"{self.base}/boom", self.local)
        self.assertIn("HTTP 500", cm.exception.message)

    @ensure
    async def test_429_is_transient(self):
        """Too Many Requests is worth another attempt."""
        with self.assertRaises(TransientJobError):
            await self.storage().download(f"{self.base}/busy", self.local)

    @ensure
    async def test_403_is_permanent(self):
        """Another 4xx fails the job for good (not SourceNotFound, not transient)."""
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage().download(f"{self.base}/forbidden", self.local)
        self.assertNotIsInstance(cm.exception, SourceNotFound)
        self.assertIn("HTTP 403", cm.exception.message)

    @ensure
    async def test_basic_auth_from_userinfo(self):
        """Credentials in the URL become basic auth, not part of the request line."""
        auth = self.root.children[b"auth"]
        uri = f"http://user:pa%2Fss%3Aw%40rd+@127.0.0.1:{self.port.getHost().port}/auth"
        size = await self.storage().download(uri, self.local)
        self.assertEqual(size, len(PAYLOAD))
        self.assertEqual(auth.seen_uris, (b"/auth",))

    @ensure
    async def test_unencoded_slash_password(self):
        """An unencoded '/' in the password works as in the original's S3 URIs."""
        uri = f"http://AKIAX:se/cr+et@127.0.0.1:{self.port.getHost().port}/auth"
        size = await self.storage().download(uri, self.local)
        self.assertEqual(size, len(PAYLOAD))

    @ensure
    async def test_secrets_never_logged_or_raised(self):
        """Neither log events nor the error message hold the password."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = self.port.getHost().port
        await self.storage().download(
            f"http://user:pa%2Fss%3Aw%40rd+@127.0.0.1:{port}/auth", self.local)
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage().download(
                f"http://user:hunter2@127.0.0.1:{port}/auth", self.local)
        self.assertIn("user:***@", cm.exception.message)
        self.assertNotIn("hunter2", cm.exception.message)
        self.assertTrue(any("Downloaded" in str(e.get("log_format")) for e in events))
        for e in events:
            self.assertNotIn("hunter2", repr(e))
            self.assertNotIn("w%40rd", repr(e))
            self.assertNotIn("w@rd", repr(e))

    @ensure
    async def test_connection_refused_is_transient(self):
        """Nobody listening is a TransientJobError."""
        p = reactor.listenTCP(0, server.Site(self.root), interface="127.0.0.1")
        port = p.getHost().port
        await p.stopListening()
        with self.assertRaises(TransientJobError) as cm:
            await self.storage().download(f"http://127.0.0.1:{port}/x", self.local)
        self.assertIn("refused", cm.exception.message)

    @ensure
    async def test_no_response_times_out(self):
        """No response within HTTP_DOWNLOAD_TIMEOUT_S is a TransientJobError."""
        clock = Clock()
        d = defer.Deferred.fromCoroutine(
            self.storage(clock).download(f"{self.base}/slow", self.local))
        await self.slow.requests.get()
        clock.advance(TIMEOUT_S - 1)
        self.assertFalse(d.called)
        clock.advance(1)
        with self.assertRaises(TransientJobError) as cm:
            await d
        self.assertIn("no response within 30 s", cm.exception.message)
        self.assertFalse(os.path.exists(self.local))

    async def stalled_download(self, clock):
        """A download of /stall on ``clock``, once its headers and first chunk (1000 bytes)
        are in: (the storage, the download's Deferred, the server's request)."""
        storage = self.storage(clock, RecordingHTTPStorage)
        d = defer.Deferred.fromCoroutine(storage.download(f"{self.base}/stall", self.local))
        request = await self.stall.requests.get()
        while storage.file is None:  # wait for the headers and the first chunk
            await _tick()
        await storage.file.queue.get()
        return storage, d, request

    @ensure
    async def test_stalled_body_times_out(self):
        """A body that stops arriving fails after the idle timeout; the partial file goes."""
        clock = Clock()
        _, d, _ = await self.stalled_download(clock)
        clock.advance(TIMEOUT_S)
        with self.assertRaises(TransientJobError) as cm:
            await d
        self.assertIn("no data for 30 s after 1000 bytes", cm.exception.message)
        self.assertFalse(os.path.exists(self.local))

    @ensure
    async def test_timeout_is_idle_not_overall(self):
        """Each chunk restarts the timeout: a slow but live download completes."""
        clock = Clock()
        storage, d, request = await self.stalled_download(clock)
        for _ in range(3):
            clock.advance(TIMEOUT_S * 0.9)
            request.write(b"b" * 500)
            await storage.file.queue.get()
        clock.advance(TIMEOUT_S * 0.9)
        self.assertFalse(d.called)
        request.finish()
        size = await d
        self.assertEqual(size, 1000 + 3 * 500)
        self.assertEqual(self.read_local(), b"a" * 1000 + b"b" * 1500)

    @ensure
    async def test_cancel_drops_connection(self):
        """Canceling a download mid-body closes the connection and removes the file."""
        _, d, request = await self.stalled_download(Clock())
        lost = request.notifyFinish()
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        with self.assertRaises(Exception):
            await lost  # the server sees the client go away
        self.assertFalse(os.path.exists(self.local))

    @ensure
    async def test_truncated_body_is_transient(self):
        """A connection lost before Content-Length bytes arrive is retried, file removed."""
        with self.assertRaises(TransientJobError) as cm:
            await self.storage().download(f"{self.base}/short", self.local)
        self.assertIn("connection lost", cm.exception.message)
        self.assertFalse(os.path.exists(self.local))

    @ensure
    async def test_large_body_streamed(self):
        """A 50 MB body arrives in many small writes and is never held whole in memory."""
        big = os.path.join(self.tmp, "big.bin")
        digest = hashlib.sha256()
        with open(big, "wb") as f:
            block = os.urandom(1024 * 1024)
            for i in range(BIG_BYTES // len(block)):
                chunk = bytes([i % 256]) + block[1:]
                digest.update(chunk)
                f.write(chunk)
        self.root.putChild(b"big", static.File(big))
        storage = self.storage(cls=RecordingHTTPStorage)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        size = await storage.download(f"{self.base}/big", self.local)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.assertEqual(size, BIG_BYTES)
        writes = storage.file.writes
        self.assertGreater(len(writes), 100)
        self.assertLessEqual(max(writes), 1024 * 1024)
        self.assertLess(peak, BIG_BYTES // 10)
        with open(self.local, "rb") as f:
            got = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                got.update(chunk)
        self.assertEqual(got.hexdigest(), digest.hexdigest())


class HTTPCheckTests(TestCase):
    """HTTPStorage.check and upload: http(s) is a source only."""

    def setUp(self):
        self.storage = HTTPStorage(types.SimpleNamespace(HTTP_DOWNLOAD_TIMEOUT_S=1.0), None)

    def test_destination_refused(self):
        """check(for_write=True) refuses with a pointer to file:// and s3://."""
        with self.assertRaises(InvalidJobSpec) as cm:
            self.storage.check("https://h/out.mp4", for_write=True, field="dest_path")
        self.assertEqual(cm.exception.field, "dest_path")
        self.assertIn("http(s) destinations are not supported; use file://",
                      cm.exception.message)

    def test_source_accepted(self):
        """An https URL with a host is a valid source."""
        self.storage.check("https://u:p@h:8443/a.mp4?x=1", for_write=False)

    def test_hostless_refused(self):
        """http:///path has no host and is refused."""
        self.assertRaises(InvalidJobSpec, self.storage.check, "http:///a.mp4", False)

    def test_upload_is_permanent_error(self):
        """upload() fails the job permanently instead of trying."""
        d = defer.Deferred.fromCoroutine(self.storage.upload("/tmp/x", "http://h/o.mp4"))
        f = self.failureResultOf(d, PermanentJobError)
        self.assertIn("not supported", f.value.message)


class Payload(resource.Resource):
    """PAYLOAD (with its Content-Length) at every path."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"video/mp4")
        return PAYLOAD


class HTTPGuardTests(TestCase):
    """Where a download may connect (SSRF) and how much it may bring
    (MAX_SOURCE_BYTES), against real servers on loopback."""

    timeout = 30

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="nommer-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.local = os.path.join(self.tmp, "download")

    def serve(self, res, interface="127.0.0.1"):
        site = server.Site(res)
        site.displayTracebacks = False
        return serve_counting(self, site, interface)

    def storage(self, allowed=(), max_bytes=10 ** 12, resolver=None):
        settings = types.SimpleNamespace(HTTP_DOWNLOAD_TIMEOUT_S=TIMEOUT_S, ALLOWED_PRIVATE_NETWORKS=list(allowed),
                                         MAX_SOURCE_BYTES=max_bytes)
        return HTTPStorage(settings, reactor, resolver=resolver)

    async def refused(self, storage, url):
        with self.assertRaises(PermanentJobError) as cm:
            await storage.download(url, self.local)
        self.assertFalse(os.path.exists(self.local))
        return cm.exception.message

    @ensure
    async def test_endless_response_head_is_cut_short(self):
        """A server sending header lines without end (Twisted's client has no limit: the
        worker's memory grew by 250 MB a second until the idle timeout): the download fails
        for good once MAX_RESPONSE_HEAD_BYTES came, long before the server's 64 MB."""
        port, sent = listen_endless_head(self)
        message = await self.refused(self.storage(["127.0.0.0/8"]), f"http://127.0.0.1:{port}/a.mp4")
        self.assertIn("response head", message)
        self.assertLess(sent[0], 16 * 1024 * 1024)

    @ensure
    async def test_localhost_source_refused(self):
        """http://localhost/ (real lookup) is refused for good, naming the host, the address and the setting;
        the server sees no connection."""
        port, counter = self.serve(Payload())
        message = await self.refused(self.storage(), f"http://localhost:{port}/a.mp4")
        self.assertIn(f"GET http://localhost:{port}/a.mp4: source host localhost resolves to", message)
        self.assertIn("loopback address; set ALLOWED_PRIVATE_NETWORKS to allow it", message)
        self.assertEqual(counter.connections, 0)
        size = await self.storage(["127.0.0.0/8", "::1/128"]).download(f"http://localhost:{port}/a.mp4", self.local)
        self.assertEqual((size, counter.connections), (len(PAYLOAD), 1))

    @ensure
    async def test_name_resolving_to_loopback_refused(self):
        """A name resolving to 127.0.0.1 is refused at connect time; with 127.0.0.0/8 allowed it downloads."""
        from tests.helpers import FakeResolver
        port, counter = self.serve(Payload())
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        message = await self.refused(self.storage(resolver=resolver), f"http://evil.example:{port}/a.mp4")
        self.assertIn("source host evil.example resolves to 127.0.0.1, a loopback address", message)
        self.assertEqual(counter.connections, 0)
        size = await self.storage(["127.0.0.0/8"], resolver=resolver).download(
            f"http://evil.example:{port}/a.mp4", self.local)
        self.assertEqual(size, len(PAYLOAD))

    @ensure
    async def test_literal_refused_before_connecting(self):
        """http://127.0.0.1/ and http://0x7f000001/ fail check (BADINPUT at submit, permanent on the worker)."""
        port, counter = self.serve(Payload())
        for host in ("127.0.0.1", "0x7f000001", "2130706433"):
            with self.assertRaises(InvalidJobSpec):
                self.storage().check(f"http://{host}:{port}/a.mp4", for_write=False)
            message = await self.refused(self.storage(), f"http://{host}:{port}/a.mp4")
            self.assertIn("loopback", message)
        self.assertEqual(counter.connections, 0)

    @ensure
    async def test_redirect_to_private_address_refused(self):
        """An allowed server redirecting to a loopback address the settings refuse: job ERROR, and the
        redirect target sees no connection."""
        from tests.helpers import FakeResolver
        target_port, target = self.serve(Payload(), interface="127.0.0.1")
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        for location in (f"http://127.0.0.1:{target_port}/a.mp4", f"http://evil.example:{target_port}/a.mp4"):
            port, first = self.serve(Redirect(location.encode()), interface="127.0.0.2")
            message = await self.refused(self.storage(["127.0.0.2/32"], resolver=resolver),
                                         f"http://127.0.0.2:{port}/start")
            self.assertIn("resolves to 127.0.0.1" if "evil" in location else "127.0.0.1 is a loopback", message)
            self.assertEqual(first.connections, 1)
        self.assertEqual(target.connections, 0)

    @ensure
    async def test_content_length_over_cap_refused(self):
        """A Content-Length above MAX_SOURCE_BYTES: ERROR before the body is read, no local file."""
        port, _ = self.serve(Payload())
        message = await self.refused(self.storage(["127.0.0.0/8"], max_bytes=len(PAYLOAD) - 1),
                                     f"http://127.0.0.1:{port}/a.mp4")
        self.assertIn(f"the source is {len(PAYLOAD)} bytes, more than MAX_SOURCE_BYTES ({len(PAYLOAD) - 1})",
                      message)
        size = await self.storage(["127.0.0.0/8"], max_bytes=len(PAYLOAD)).download(
            f"http://127.0.0.1:{port}/a.mp4", self.local)
        self.assertEqual(size, len(PAYLOAD))

    @ensure
    async def test_streamed_body_over_cap_stopped(self):
        """A body without Content-Length that goes on forever is cut at MAX_SOURCE_BYTES: ERROR, the
        connection dropped (the server stops sending), no local file."""
        endless = Endless()
        port, _ = self.serve(endless)
        cap = 1024 * 1024
        message = await self.refused(self.storage(["127.0.0.0/8"], max_bytes=cap), f"http://127.0.0.1:{port}/x")
        self.assertIn(f"larger than MAX_SOURCE_BYTES ({cap}); the download was stopped", message)
        await endless.gone
        self.assertLess(endless.sent, cap + 16 * 1024 * 1024)


def _tick():
    d = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    return d


class Objects(resource.Resource):
    """A loopback object server: GET serves what a PUT stored (404 for
    nothing, 403 for a name in ``forbidden``); PUT stores the body, only
    once it is whole (twisted.web reads a request body before rendering)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.objects = {}
        self.forbidden = set()
        self.puts = 0

    def _name(self, request):
        return request.path.decode("utf-8").lstrip("/")

    def render_GET(self, request):
        name = self._name(request)
        if name in self.forbidden:
            request.setResponseCode(403)
            return b"forbidden"
        data = self.objects.get(name)
        if data is None:
            request.setResponseCode(404)
            return b"not found"
        request.setHeader(b"content-type", b"video/mp4")
        return data

    def render_PUT(self, request):
        self.puts += 1
        name = self._name(request)
        if name in self.forbidden:
            request.setResponseCode(403)
            return b"forbidden"
        self.objects[name] = request.content.read()
        request.setResponseCode(201)
        return b""


class HTTPStorageContractTests(ReadOnlyStorageContract, NetworkStorageContract, TestCase):
    """The Storage contract (tests/core/storage_contract.py) against a real
    loopback HTTP server (GET and PUT); HTTPStorage only downloads, so the
    contract checks that it refuses uploads and PUTs nothing."""

    storage_class = HTTPStorage
    timeout = 30

    def setUp(self):
        self.settings, _ = temp_settings(self)  # ALLOWED_PRIVATE_NETWORKS: 127.0.0.0/8
        self.server = Objects()
        site = server.Site(self.server)
        site.displayTracebacks = False
        factory = TrackingFactory(site)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.close_all)
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.addCleanup(lambda: self.assertEqual(self.server.puts, 0, "HTTPStorage sent a PUT"))
        # Bound, never listening: connecting is refused, and no one else takes the port.
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.addCleanup(self.silent.close)

    def make_storage(self, settings=None):
        return HTTPStorage(settings or self.settings, reactor)

    def uri(self, name):
        return f"{self.base}/{name}"

    async def put(self, name, data):
        self.server.objects[name] = data

    def peek(self, name):
        return self.server.objects.get(name)

    async def refused_source(self):
        self.server.forbidden.add("forbidden.mp4")
        await self.put("forbidden.mp4", b"secret")
        return self.uri("forbidden.mp4")

    def unreachable_source(self):
        return self.make_storage(), f"http://127.0.0.1:{self.silent.getsockname()[1]}/x.mp4"

    def unacceptable_uri(self):
        return "http://10.1.2.3/x.mp4"  # a private address ALLOWED_PRIVATE_NETWORKS leaves out
