"""Stopping the API without dropping the requests under way.

A Site stops listening when its service stops, but a request already being
handled (a submit between storing its job and queueing it) goes on; if the
store and queue were closed under it (``DaemonService`` closes them once every
service has stopped), the job would be stored and never queued. So the site
counts the requests it is handling, and ``InFlightRequests``, a sibling service,
holds feederd's stop until that count is zero, for at most ``timeout_s``
seconds. Requests arriving meanwhile on open keep-alive connections get a 503
``SHUTTING_DOWN`` JSON error (the client may retry against the next feederd).
"""

import json

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site


class _ShuttingDown(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"connection", b"close")
        return json.dumps({"success": False, "error_code": "SHUTTING_DOWN",
                           "message": "feederd is stopping; retry in a few seconds"}).encode()


class InFlightSite(Site):
    """A ``Site`` that knows how many requests it is handling (``in_flight``)
    and, once ``refuse_new()`` is called, answers new ones with 503."""

    def __init__(self, resource, *args, **kwargs):
        super().__init__(resource, *args, **kwargs)
        self.in_flight = 0
        self.refusing_new = False
        self._waiters = []

    def getResourceFor(self, request):
        if self.refusing_new:
            return _ShuttingDown()
        self.in_flight += 1
        request.notifyFinish().addBoth(self._finished)
        return super().getResourceFor(request)

    def _finished(self, _):
        self.in_flight -= 1
        if self.in_flight == 0:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)

    def refuse_new(self):
        """Refuse new requests; Deferred firing when none is in flight."""
        self.refusing_new = True
        if self.in_flight == 0:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiters.append(d)
        return d


class InFlightRequests(Service):
    """On stop, waits (at most ``timeout_s`` seconds) for ``site``'s requests
    under way to finish. Add it to the same parent as the site's service."""

    log = Logger()

    def __init__(self, site, reactor, timeout_s=10.0):
        self.site = site
        self.reactor = reactor
        self.timeout_s = timeout_s

    async def stopService(self):
        super().stopService()
        n = self.site.in_flight
        d = self.site.refuse_new()
        if n:
            self.log.info("waiting for {n} API request(s) under way", n=n)
        d.addTimeout(self.timeout_s, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            self.log.warn("{n} API request(s) still under way after {t} s; stopping anyway",
                          n=self.site.in_flight, t=self.timeout_s)
