"""feederd's listening socket: a port already taken is one line, not a traceback.

twistd opens listening ports in ``privilegedStartService``; a port in use
raises ``CannotListenError`` there, out of twistd's ``run`` as a traceback
of thirty lines. ``ApiListener`` turns it into ``SystemExit`` with one line
(exit status 1) naming the port, the interface and the settings to change::

    feederd: port 8001 on 127.0.0.1 is in use (another feederd?); set API_PORT or --port
"""

import errno

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError


def cannot_listen_message(daemon, interface, port, error):
    """The one line saying why ``daemon`` cannot listen on ``interface``:``port``
    (``error``: the ``CannotListenError``)."""
    where = interface or "every interface"
    socket_error = getattr(error, "socketError", None)
    if getattr(socket_error, "errno", None) == errno.EADDRINUSE:
        return f"{daemon}: port {port} on {where} is in use (another {daemon}?); set API_PORT or --port"
    why = getattr(socket_error, "strerror", None) or str(socket_error or error)
    return f"{daemon}: cannot listen on port {port} on {where}: {why}; set API_PORT/API_INTERFACE or --port/--interface"


class ApiListener(StreamServerEndpointService):
    """The API's listening service (what ``strports.service`` builds) on
    ``tcp:PORT:interface=IFACE``; ``SystemExit(cannot_listen_message(...))``
    instead of ``CannotListenError`` when the port cannot be had."""

    def __init__(self, reactor, port, interface, factory, daemon="feederd"):
        endpoint = serverFromString(reactor, f"tcp:{port}:interface={interface}")
        super().__init__(endpoint, factory)
        self._raiseSynchronously = True  # as strports.service: the error surfaces in privilegedStartService
        self.port, self.interface, self.daemon = port, interface, daemon

    def privilegedStartService(self):
        try:
            super().privilegedStartService()
        except CannotListenError as exc:
            raise SystemExit(cannot_listen_message(self.daemon, self.interface, self.port, exc)) from None

    def startService(self):
        try:
            super().startService()
        except CannotListenError as exc:  # started outside twistd (no privileged start)
            raise SystemExit(cannot_listen_message(self.daemon, self.interface, self.port, exc)) from None
