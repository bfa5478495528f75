"""Request bodies are capped before they are stored anywhere.

Twisted's ``Request`` keeps a body in memory only up to 100 KB: a larger
declared length, or any chunked body, is spooled to a temporary file as it
arrives, whatever its size, before the API sees a byte of it. A caller could
fill the disk (or, with many connections, memory) with one request.

``BodyCappedRequest`` replaces that: the body is held in memory (a
``BytesIO``; the cap is at most 64 MiB, MAX_REQUEST_BODY_BYTES, 1 MiB by
default), never in a file. A ``Content-Length`` over the cap is refused as
soon as the headers end, before any of the body is read; a chunked body is
refused the moment what arrived passes the cap. Either way the answer is the
API's JSON error, 413 ``BADINPUT``, with ``Connection: close``, and the
connection is closed without reading the rest (the peer may see the close as
a reset once it has the answer; a ``100 Continue`` is never sent for a
refused body). The request never reaches the site's resource.

Use ``capped_request_factory(max_bytes)`` as the ``Site``'s ``requestFactory``.
"""

import io
import json

from twisted.logger import Logger
from twisted.web.server import Request

#: The status line of the refusal.
STATUS_LINE = b"HTTP/1.1 413 Content Too Large\r\n"


def refusal_message(max_bytes):
    return f"the request body is larger than {max_bytes} bytes"


class BodyCappedRequest(Request):
    """A ``Request`` whose body lives in memory and may not pass
    ``max_body_bytes`` (see the module docstring)."""

    max_body_bytes = 1024 * 1024
    log = Logger()

    def gotLength(self, length):
        self._body_bytes = 0
        self._body_refused = False
        self.content = io.BytesIO()
        if length is not None and length > self.max_body_bytes:
            self._refuse_body(f"Content-Length {length}")

    def handleContentChunk(self, data):
        if self._body_refused:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body_bytes:
            self.content = io.BytesIO()
            self._refuse_body(f"more than {self.max_body_bytes} bytes streamed")
            return
        self.content.write(data)

    def requestReceived(self, command, path, version):
        if getattr(self, "_body_refused", False):
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse_body(self, why):
        self._body_refused = True
        # HTTPChannel answers "Expect: 100-continue" right after gotLength: not for this body.
        self.requestHeaders.removeHeader(b"Expect")
        body = json.dumps({"success": False, "error_code": "BADINPUT",
                           "message": refusal_message(self.max_body_bytes)}).encode()
        peer = self.channel.transport.getPeer() if self.channel.transport else None
        self.log.info("refused a request body from {peer}: {why} (limit {limit} bytes)",
                      peer=str(peer), why=why, limit=self.max_body_bytes)
        self.channel.transport.write(
            STATUS_LINE + b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body)
        # Stop reading at once; the answer is flushed, then the socket closed.
        self.channel.loseConnection()


def capped_request_factory(max_bytes):
    """A ``Site.requestFactory``: ``BodyCappedRequest`` with ``max_body_bytes = max_bytes``."""
    return type("BodyCappedRequest", (BodyCappedRequest,), {"max_body_bytes": int(max_bytes)})
