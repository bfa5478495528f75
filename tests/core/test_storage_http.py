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
from nommer.core.storage import http as http_mod
from nommer.core.storage.http import HTTPStorage
from tests.core.storage_contract import (NetworkStorageContract, WritableStorageContract,
                                         with_overrides)
from tests.helpers import (Endless, FakeResolver, Redirect, ensure, listen_endless_head,
                           serve_counting, temp_settings)

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
    """HTTPStorage.check: an http(s) URI with an acceptable host; a destination names a file."""

    def setUp(self):
        self.storage = HTTPStorage(types.SimpleNamespace(HTTP_DOWNLOAD_TIMEOUT_S=1.0), None)

    def test_destination_names_a_file(self):
        """check(for_write=True) accepts a URL naming a file (a presigned query too) and refuses
        one ending in '/' under the field given."""
        self.storage.check("https://u:p@h/out.mp4", for_write=True, field="dest_path")
        self.storage.check("https://h/out.mp4?X-Amz-Signature=abc", for_write=True)
        with self.assertRaises(InvalidJobSpec) as cm:
            self.storage.check("https://h/dir/", for_write=True, field="dest_path")
        self.assertEqual(cm.exception.field, "dest_path")
        self.assertIn("https://h/dir/ does not name a file", cm.exception.message)
        self.storage.check("https://h/dir/", for_write=False)

    def test_source_accepted(self):
        """An https URL with a host is a valid source."""
        self.storage.check("https://u:p@h:8443/a.mp4?x=1", for_write=False)

    def test_hostless_refused(self):
        """http:///path has no host and is refused."""
        self.assertRaises(InvalidJobSpec, self.storage.check, "http:///a.mp4", False)

    def test_private_literal_destination_refused(self):
        """A destination at a non-public address literal is refused like a source."""
        for uri in ("http://10.0.0.5/out.mp4", "http://169.254.169.254/latest/x",
                    "http://[::1]/out.mp4"):
            self.assertRaises(InvalidJobSpec, self.storage.check, uri, True)

    def test_upload_of_a_directory_url_is_permanent(self):
        """upload() to a URL that fails check fails the job permanently without a request."""
        d = defer.Deferred.fromCoroutine(self.storage.upload("/tmp/x", "http://h/dir/"))
        f = self.failureResultOf(d, PermanentJobError)
        self.assertIn("does not name a file", f.value.message)


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
    once it is whole (twisted.web reads a request body before rendering),
    and keeps the request's headers and credentials in ``requests[name]``;
    DELETE removes an object (204), 404 when there is none."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.objects = {}
        self.forbidden = set()
        self.requests = {}
        self.puts = 0
        self.deletes = 0

    def _name(self, request):
        return "/".join(p.decode("utf-8") for p in request.postpath)

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
        self.requests[name] = types.SimpleNamespace(
            uri=request.uri, user=request.getUser(), password=request.getPassword(),
            headers={k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()})
        self.objects[name] = request.content.read()
        request.setResponseCode(201)
        return b""

    def render_DELETE(self, request):
        self.deletes += 1
        name = self._name(request)
        if name in self.forbidden:
            request.setResponseCode(403)
            return b"forbidden"
        if self.objects.pop(name, None) is None:
            request.setResponseCode(404)
            return b"not found"
        request.setResponseCode(204)
        return b""


class HTTPStorageContractTests(WritableStorageContract, NetworkStorageContract, TestCase):
    """The Storage contract (tests/core/storage_contract.py) against a real
    loopback HTTP server (GET, PUT and DELETE)."""

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

    def leftovers(self):
        """Nothing: the server stores a PUT only once its body is whole, so what a broken
        upload could leave is a partial object under the final name, which the contract
        checks through ``peek``."""
        return []

    async def refused_source(self):
        self.server.forbidden.add("forbidden.mp4")
        await self.put("forbidden.mp4", b"secret")
        return self.uri("forbidden.mp4")

    async def refused_destination(self):
        self.server.forbidden.add("refused.mp4")
        return self.uri("refused.mp4")

    async def refused_deletion(self):
        """An object on a loopback server, with settings that do not allow loopback."""
        await self.put("kept.mp4", b"keep")
        deletes = self.server.deletes
        self.addCleanup(lambda: self.assertEqual(self.server.deletes, deletes,
                                                 "a refused delete reached the server"))
        storage = self.make_storage(with_overrides(self.settings, ALLOWED_PRIVATE_NETWORKS=[]))
        return storage, self.uri("kept.mp4"), lambda: "kept.mp4" in self.server.objects

    def unreachable_source(self):
        return self.make_storage(), f"http://127.0.0.1:{self.silent.getsockname()[1]}/x.mp4"

    def unacceptable_uri(self):
        return "http://10.1.2.3/x.mp4"  # a private address ALLOWED_PRIVATE_NETWORKS leaves out

    def during_upload(self, observe):
        """Call ``observe`` when the body producer reads past half the file (the server
        has about half by then); once it raised, every later read raises too."""
        half = self.PAYLOAD_BYTES // 2
        state = {"read": 0, "called": False, "broken": None}

        class Observed(_RealUploadFile):
            def read(inner, n_bytes):
                if state["broken"] is not None:
                    raise state["broken"]
                data = super().read(n_bytes)
                state["read"] += len(data)
                if not state["called"] and state["read"] >= half:
                    state["called"] = True
                    try:
                        observe()
                    except Exception as e:
                        state["broken"] = e
                        raise
                return data
        self.patch(http_mod, "_UploadFile", Observed)


_RealUploadFile = http_mod._UploadFile


class AnyStatus(resource.Resource):
    """Answers every request, whatever its method, with ``code`` (and ``location``)."""

    isLeaf = True

    def __init__(self, code, location=None):
        super().__init__()
        self.code = code
        self.location = location
        self.methods = []

    def render(self, request):
        self.methods.append(request.method)
        request.content.read()
        request.setResponseCode(self.code)
        if self.location is not None:
            request.setHeader(b"location", self.location)
        return b"answer"


class HoldWrites(resource.Resource):
    """Reads a PUT or DELETE whole, then never answers."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = defer.DeferredQueue()

    def render(self, request):
        request.notifyFinish().addErrback(lambda _: None)
        self.requests.put(request)
        return server.NOT_DONE_YET


class HTTPWriteTests(TestCase):
    """PUT and DELETE against real twisted.web servers on loopback: headers, credentials,
    answers, redirects, the SSRF guard, the idle timeout."""

    timeout = 30

    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="nommer-test-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.objects = Objects()
        self.root = resource.Resource()
        self.root.putChild(b"o", self.objects)
        self.hold = HoldWrites()
        self.root.putChild(b"hold", self.hold)
        self.base = self.serve(self.root)

    def serve(self, res):
        site = server.Site(res)
        site.displayTracebacks = False
        factory = TrackingFactory(site)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.close_all)
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def storage(self, allowed=("127.0.0.0/8",), clock=None, resolver=None):
        settings = types.SimpleNamespace(HTTP_DOWNLOAD_TIMEOUT_S=TIMEOUT_S,
                                         ALLOWED_PRIVATE_NETWORKS=list(allowed))
        return HTTPStorage(settings, reactor, clock=clock, resolver=resolver)

    def local(self, name, data=b"data"):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @ensure
    async def test_put_sends_the_content_type_of_the_one_table(self):
        """Each PUT carries the Content-Type of nommer.core.storage.content_types (HLS, DASH,
        CMAF segment, WebVTT...) and the file's Content-Length; the body arrives whole."""
        cases = {("master.m3u8", "t/master.m3u8"): "application/vnd.apple.mpegurl",
                 ("manifest.mpd", "t/manifest.mpd"): "application/dash+xml",
                 ("seg_00001.m4s", "t/v/seg_00001.m4s"): "video/iso.segment",
                 ("storyboard.vtt", "t/storyboard.vtt"): "text/vtt",
                 ("poster.jpg", "t/poster.jpg"): "image/jpeg",
                 ("output.m4a", "songs/track"): "audio/mp4"}
        for (local_name, key), expected in cases.items():
            data = os.urandom(5000)
            size = await self.storage().upload(self.local(local_name, data), f"{self.base}/o/{key}")
            self.assertEqual(size, len(data))
            seen = self.objects.requests[key]
            self.assertEqual(seen.headers[b"content-type"], expected.encode(), key)
            self.assertEqual(seen.headers[b"content-length"], str(len(data)).encode(), key)
            self.assertEqual(seen.headers[b"user-agent"], b"nommer-workerd")
            self.assertEqual(self.objects.objects[key], data)

    @ensure
    async def test_credentials_go_as_basic_auth_never_in_the_request_line(self):
        """user:secret@ in the URL is sent as basic auth on PUT and DELETE; the request line
        holds no credential, and an error names the URL redacted."""
        uri = self.base.replace("http://", "http://user:pa%2Fss@") + "/o/clip.mp4"
        await self.storage().upload(self.local("clip.mp4"), uri)
        seen = self.objects.requests["clip.mp4"]
        self.assertEqual((seen.user, seen.password, seen.uri), (b"user", b"pa/ss", b"/o/clip.mp4"))
        self.assertIs(await self.storage().delete(uri), True)
        self.objects.forbidden.add("clip.mp4")
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage().delete(uri)
        self.assertIn("user:***@", cm.exception.message)
        self.assertNotIn("pa/ss", cm.exception.message)
        self.assertNotIn("pa%2Fss", cm.exception.message)

    @ensure
    async def test_answers_map_to_job_errors(self):
        """PUT: 5xx, 408, 429 transient; 400, 403, 404 permanent. DELETE: 404 and 410 are
        "not there" (False), 200/202/204 deleted (True); 5xx transient, 403 permanent."""
        statuses = {}
        for code in (200, 202, 204, 400, 403, 404, 408, 410, 429, 500, 503):
            statuses[code] = AnyStatus(code)
            self.root.putChild(str(code).encode(), statuses[code])
        local = self.local("out.mp4")
        for code, cls in ((500, TransientJobError), (503, TransientJobError),
                          (408, TransientJobError), (429, TransientJobError),
                          (400, PermanentJobError), (403, PermanentJobError),
                          (404, PermanentJobError)):
            with self.assertRaises(cls, msg=code) as cm:
                await self.storage().upload(local, f"{self.base}/{code}/out.mp4")
            self.assertIn(f"PUT {self.base}/{code}/out.mp4", cm.exception.message)
            self.assertIn(f"HTTP {code}", cm.exception.message)
            if cls is PermanentJobError:
                self.assertNotIsInstance(cm.exception, SourceNotFound)
        for code, expected in ((200, True), (202, True), (204, True), (404, False), (410, False)):
            self.assertIs(await self.storage().delete(f"{self.base}/{code}/x"), expected, code)
        for code, cls in ((500, TransientJobError), (429, TransientJobError),
                          (403, PermanentJobError), (400, PermanentJobError)):
            with self.assertRaises(cls, msg=code) as cm:
                await self.storage().delete(f"{self.base}/{code}/x")
            self.assertIn(f"DELETE {self.base}/{code}/x", cm.exception.message)
        self.assertEqual(statuses[500].methods, [b"PUT", b"DELETE"])

    @ensure
    async def test_put_and_delete_do_not_follow_redirects(self):
        """A 3xx answer to a PUT or DELETE is a PermanentJobError naming the status; the
        redirect target gets no request (a 301/302 would have turned the PUT into a GET)."""
        self.objects.objects["target.mp4"] = b"old"
        for code in (301, 302, 307, 308):
            self.root.putChild(f"r{code}".encode(),
                               AnyStatus(code, f"{self.base}/o/target.mp4".encode()))
            with self.assertRaises(PermanentJobError) as cm:
                await self.storage().upload(self.local("new.mp4", b"new"),
                                            f"{self.base}/r{code}/new.mp4")
            self.assertIn(f"was redirected (HTTP {code}", cm.exception.message)
            with self.assertRaises(PermanentJobError):
                await self.storage().delete(f"{self.base}/r{code}/new.mp4")
        self.assertEqual((self.objects.puts, self.objects.deletes), (0, 0))
        self.assertEqual(self.objects.objects["target.mp4"], b"old")

    @ensure
    async def test_ssrf_guard_applies_to_put_and_delete(self):
        """A destination host resolving to loopback is refused when connecting (PUT and DELETE),
        naming the host as a destination; the server sees no request. Allowed, both work."""
        resolver = FakeResolver({"evil.example": ["127.0.0.1"]})
        uri = self.base.replace("127.0.0.1", "evil.example") + "/o/x.mp4"
        for transfer in (lambda s: s.upload(self.local("x.mp4"), uri), lambda s: s.delete(uri)):
            with self.assertRaises(PermanentJobError) as cm:
                await transfer(self.storage(allowed=(), resolver=resolver))
            self.assertIn("destination host evil.example resolves to 127.0.0.1, a loopback "
                          "address", cm.exception.message)
        self.assertEqual((self.objects.puts, self.objects.deletes), (0, 0))
        await self.storage(resolver=resolver).upload(self.local("x.mp4"), uri)
        self.assertIs(await self.storage(resolver=resolver).delete(uri), True)

    @ensure
    async def test_no_answer_times_out(self):
        """A server that takes the whole PUT (or the DELETE) and never answers: after
        HTTP_DOWNLOAD_TIMEOUT_S without anything moving, a TransientJobError."""
        clock = Clock()
        for transfer in (lambda s: s.upload(self.local("x.mp4", b"x" * 100000), f"{self.base}/hold/x"),
                         lambda s: s.delete(f"{self.base}/hold/x")):
            d = defer.Deferred.fromCoroutine(transfer(self.storage(clock=clock)))
            request = await self.hold.requests.get()
            clock.advance(TIMEOUT_S - 1)
            self.assertNoResult(d)
            clock.advance(1)
            with self.assertRaises(TransientJobError) as cm:
                await d
            self.assertIn(f"nothing moved for {TIMEOUT_S:g} s", cm.exception.message)
            self.assertIn(request.method.decode(), cm.exception.message)
