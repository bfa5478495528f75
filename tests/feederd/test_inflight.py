"""feederd's stop waits for API requests under way (real HTTP on loopback)."""

import json

import treq
from klein import Klein
from twisted.application.service import MultiService, Service
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from nommer.feederd.inflight import InFlightSite, InFlightRequests
from tests.helpers import ensure


class DrainTests(TestCase):
    timeout = 20

    def serve(self, timeout_s=10.0):
        app = Klein()
        self.release = defer.Deferred()
        self.entered = defer.Deferred()

        @app.route("/slow")
        async def slow(request):
            self.entered.callback(None)
            await self.release
            return json.dumps({"done": True})

        @app.route("/fast")
        def fast(request):
            return json.dumps({"fast": True})

        self.site = InFlightSite(app.resource())
        self.top = MultiService()
        port_service = _Listening(self.site)
        port_service.setServiceParent(self.top)
        InFlightRequests(self.site, reactor, timeout_s=timeout_s).setServiceParent(self.top)
        self.top.startService()
        self.url = f"http://127.0.0.1:{port_service.port.getHost().port}"

    @ensure
    async def test_stop_waits_for_a_request_under_way(self):
        self.serve()
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.assertEqual((await (await treq.get(self.url + "/fast", pool=pool)).json()), {"fast": True})
        slow = treq.get(self.url + "/slow", pool=pool)
        await self.entered
        self.assertEqual(self.site.in_flight, 1)
        stopped = self.top.stopService()
        await task.deferLater(reactor, 0.2)
        self.assertFalse(stopped.called, "stop finished with a request under way")
        # A new request on another connection to the same site is refused while stopping.
        other = InFlightSite.getResourceFor(self.site, _FakeRequest())
        self.assertEqual(json.loads(other.render(_FakeRequest()))["error_code"], "SHUTTING_DOWN")
        self.release.callback(None)
        response = await slow
        self.assertEqual(await response.json(), {"done": True})
        await stopped
        self.assertEqual(self.site.in_flight, 0)

    @ensure
    async def test_stop_is_bounded(self):
        self.serve(timeout_s=0.3)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        slow = treq.get(self.url + "/slow", pool=pool)
        slow.addErrback(lambda f: None)
        await self.entered
        started = reactor.seconds()
        await self.top.stopService()
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(self.site.in_flight, 1)
        self.release.callback(None)
        await slow


class _Listening(Service):
    """Listens on a free loopback port, like feederd's strports service."""

    def __init__(self, site):
        self.site = site

    def startService(self):
        super().startService()
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")

    def stopService(self):
        super().stopService()
        return self.port.stopListening()


class _FakeRequest:
    """Just enough of a request for the 503 resource."""

    def __init__(self):
        self.code, self.headers = None, {}

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value
