"""Shared test helpers: settings (and a job ledger) for a temp dir, async
test methods, StubTreq pumping, loopback HTTP servers (counted listeners,
redirecting and endless resources, a table resolver), open files of a
process, the `nommer` command in-process, key stores from settings."""

import inspect
import os

from twisted.internet import protocol, reactor, task
from twisted.web import resource, server
from twisted.web.util import redirectTo

from nommer.conf import Settings
from nommer.core.deferreds import deferred


# Lets a trial test method be ``async def``: trial gets a Deferred.
ensure = deferred


async def eventually(check, timeout_s=10.0, what="condition"):
    """Wait for ``check()`` (a value or an awaitable) to be truthy: an event
    in another part of the system, not a timer. Returns that value."""
    deadline = reactor.seconds() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)


def doc_two_pass():
    """The 2011 media-nommer documentation's two-pass job options, as written then."""
    video = [["vcodec", "libx264"], ["preset", "medium"], ["vprofile", "baseline"], ["b", "400k"],
             ["vf", "yadif,scale='640:trunc(ow/a/2)*2'"]]
    return [
        {"outfile_options": video + [["pass", "1"], ["f", "mp4"], ["an", None]]},
        {"outfile_options": video + [["pass", "2"], ["acodec", "libfaac"], ["ab", "128k"], ["ar", "48000"],
                                     ["async", "480"], ["ac", "2"], ["f", "mp4"]],
         "move_atom_to_front": True},
    ]


#: What the test settings allow of the non-public networks: the loopback
#: servers tests fetch from and notify (the SSRF guard refuses them otherwise).
TEST_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def temp_settings(testcase, **overrides):
    """Settings for a fresh temp dir ``base``: the file root is ``base/media``
    (returned as ``root``) and DATA_DIR ``base/data``, beside it, not inside
    (a root may not contain nommer's data: nommer.core.storage.roots); loopback
    servers are allowed (ALLOWED_PRIVATE_NETWORKS = TEST_ALLOWED_NETWORKS)."""
    base = os.path.realpath(testcase.mktemp())
    root = os.path.join(base, "media")
    os.makedirs(root)
    values = dict(DATA_DIR=os.path.join(base, "data"), FILE_STORAGE_ROOTS=[root],
                  ALLOWED_PRIVATE_NETWORKS=list(TEST_ALLOWED_NETWORKS))
    values.update(overrides)
    settings = Settings.from_overrides(**values)
    return settings, root


def temp_ledger(testcase, **overrides):
    """``(ledger, root)``: a JobLedger over the job store and work queue of
    ``temp_settings(testcase, **overrides)`` (``ledger.store``,
    ``ledger.queue``, ``ledger.settings``), both closed at the test's cleanup."""
    from nommer.core.ledger import JobLedger
    from nommer.core.store import make_store
    from nommer.core.workqueue import make_queue
    settings, root = temp_settings(testcase, **overrides)
    store = make_store(settings, reactor)
    queue = make_queue(settings, reactor)
    testcase.addCleanup(store.close)
    testcase.addCleanup(queue.close)
    return JobLedger(store, queue, settings), root


async def pumped(stub, d):
    """Wait for a StubTreq Deferred whose resource answers asynchronously
    (our handlers wait on the DB thread): pump the in-memory transport until
    it fires."""
    done = []

    def mark(result):
        done.append(True)
        return result
    d.addBoth(mark)
    while not done:
        stub.flush()
        if done:
            break
        await task.deferLater(reactor, 0.001, lambda: None)
    return await d


class FakeResolver:
    """An ``IHostnameResolver`` answering from a table instead of DNS:
    ``{"evil.example": ["127.0.0.1"]}``; a value may also be a callable
    returning the list (answers that change between lookups: DNS rebinding).
    Names not in the table resolve to nothing. ``calls`` lists the names
    asked, in order."""

    def __init__(self, table):
        self.table = dict(table)
        self.calls = []

    def resolveHostName(self, resolutionReceiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        from twisted.internet.address import IPv4Address, IPv6Address
        self.calls.append(hostName)
        answer = self.table.get(hostName, [])
        if callable(answer):
            answer = answer()
        resolution = object()
        resolutionReceiver.resolutionBegan(resolution)
        for ip in answer:
            cls = IPv6Address if ":" in ip else IPv4Address
            resolutionReceiver.addressResolved(cls("TCP", ip, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


def listen_counting(site, interface="127.0.0.1", port=0):
    """``reactor.listenTCP`` of ``site`` wrapped so that ``counter.connections``
    counts every TCP connection accepted (what a security test checks: the
    listener saw none). Returns (listening port, counter)."""
    from twisted.protocols.policies import WrappingFactory

    class Counting(WrappingFactory):
        connections = 0

        def buildProtocol(self, addr):
            self.connections += 1
            return super().buildProtocol(addr)

    counter = Counting(site)
    return reactor.listenTCP(port, counter, interface=interface), counter


def serve_counting(testcase, site, interface="127.0.0.1", port=0):
    """``listen_counting(site, interface, port)`` until ``testcase`` ends:
    (the port number, the counter)."""
    listening, counter = listen_counting(site, interface, port)
    testcase.addCleanup(listening.stopListening)
    return listening.getHost().port, counter


class Redirect(resource.Resource):
    """Redirects every GET to ``to`` (bytes): 302 and its Location."""

    isLeaf = True

    def __init__(self, to):
        super().__init__()
        self.to = to

    def render_GET(self, request):
        return redirectTo(self.to, request)


class EndlessHead(protocol.Protocol):
    """A server answering any request with a status line and then header lines
    without end (8 KiB each, 64 KiB per reactor turn) until the client goes or
    ``limit`` bytes are sent. ``listen_endless_head(testcase)`` -> (port, sent),
    ``sent`` a one-item list counting the bytes written."""

    limit = 64 * 1024 * 1024

    def __init__(self, sent):
        self.sent = sent
        self.gone = False

    def dataReceived(self, data):
        if self.sent[0]:
            return
        self.transport.write(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Filler: " + b"a" * 8180 + b"\r\n"

        def more():
            if self.gone or self.sent[0] >= self.limit:
                self.transport.loseConnection()
                return
            self.transport.write(line * 8)
            self.sent[0] += len(line) * 8
            reactor.callLater(0, more)
        more()

    def connectionLost(self, reason):
        self.gone = True


def listen_endless_head(testcase):
    sent = [0]
    factory = protocol.Factory.forProtocol(lambda: EndlessHead(sent))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, sent


class Endless(resource.Resource):
    """200 and a body with no Content-Length that never ends, to a GET or a
    POST: 64 KiB per reactor turn until the client goes away (``gone``, the
    request's notifyFinish, fires). ``sent`` counts the bytes written."""

    isLeaf = True
    sent = 0
    gone = None

    def render_GET(self, request):
        self.gone = request.notifyFinish()
        self.gone.addErrback(lambda _: None)
        chunk = b"x" * 65536

        def more():
            if self.gone.called:
                return
            request.write(chunk)
            self.sent += len(chunk)
            reactor.callLater(0, more)
        more()
        return server.NOT_DONE_YET

    render_POST = render_GET


def open_files_under(directory, pid="self"):
    """Paths under ``directory`` that process ``pid`` (default: this one)
    holds open; an unlinked or O_TMPFILE file shows there too
    (``/proc/<pid>/fd`` names its path)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory + "/"):
            found.append(target)
    return found


def cli_against(url):
    """``run(*args, env=None)``: the ``nommer`` command, in-process (click's
    CliRunner), against the feederd at ``url``; returns click's Result."""
    from click.testing import CliRunner

    from nommer.client.cli import cli
    runner = CliRunner()

    def run(*args, env=None):
        return runner.invoke(cli, ["--api", url, *args], env=env)
    return run


class KeyStoreFromSettings:
    """``make_store`` and ``make_twin`` of the KeyStore contract
    (tests/core/keys_contract.py) for a backend ``open_key_store`` picks from
    settings. The TestCase provides ``key_settings(**overrides)`` (settings
    naming the backend) and ``store_class``; ``self.settings`` are the last
    store's. Stores made besides the contract's own (``self.keys``, which the
    contract closes) are closed at cleanup."""

    def make_store(self, clock, **overrides):
        from nommer.core.keys import open_key_store
        self.settings = self.key_settings(**overrides)
        store = open_key_store(self.settings, reactor=reactor, clock=clock)
        self.assertIsInstance(store, self.store_class)
        if hasattr(self, "keys"):
            self.addCleanup(store.close)
        return store

    def make_twin(self, clock):
        from nommer.core.keys import open_key_store
        return open_key_store(self.settings, reactor=reactor, clock=clock)
