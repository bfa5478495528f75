"""Cross-site and DNS-rebinding protection of an API that listens on loopback.

On loopback feederd may serve anonymous callers (no API key exists yet), so
any web page a local browser opens could otherwise drive it: a cross-site
``POST /job/submit`` (the body is parsed as JSON whatever its Content-Type,
for the 2011 client, so a plain HTML form can send one), or a page on
``evil.example`` whose name is re-bound to 127.0.0.1 reading the answers.
Browsers always send ``Host`` (the name in the URL they fetch) and send
``Origin`` on cross-origin requests, so:

- ``Host``, when present, must name loopback: ``localhost``, an address in
  127.0.0.0/8 or ``[::1]``, with any port. Anything else (a re-bound DNS
  name, an empty Host, two Host headers) is refused with 421 ``BADHOST``
  ("Misdirected Request": this server does not answer for that name).
  A request without any Host header (HTTP/1.0 tools) is let through: no
  browser sends one.
- ``Origin``, when present, must be the API's own origin: ``http://`` +
  ``127.0.0.1``, ``localhost`` or ``[::1]`` + ``:PORT``, PORT being the
  port the request was sent to (its Host header's, else the listening
  socket's). Anything else, ``null`` included, is refused with 403
  ``FORBIDDEN`` before the body is used. Clients that are not browsers (the
  2011 client, curl, ``nommer``) send no Origin and are not affected.

On any other interface these checks are off: feederd then requires an API key
on every call (``Authorization: Bearer``), which a browser never attaches to
a cross-site request by itself, and its host names are the operator's.

``check(request, listening_port)`` returns None or ``(status, error_code,
message)``; ``is_loopback_interface(interface)`` says whether API_INTERFACE
is loopback.
"""

import ipaddress
import re

#: ``host[:port]`` of a Host header: a bracketed IPv6 literal or a name/IPv4.
_HOST_RE = re.compile(rb"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]*))(?::(?P<port>[0-9]{1,5}))?$")
#: An Origin of the API's own kind: http, a host, an optional port, nothing else.
_ORIGIN_RE = re.compile(rb"^http://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)(?::(?P<port>[0-9]{1,5}))?$")


def is_loopback_interface(interface):
    """True for an API_INTERFACE that only loopback can reach: an address in
    127.0.0.0/8, ``::1`` (bracketed or not) or ``localhost``. ``""`` (every
    interface), ``0.0.0.0``, ``::`` and any other address or name are not."""
    text = (interface or "").strip().lower()
    if text in ("localhost", "localhost."):
        return True
    text = text.removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def is_loopback_host(host):
    """True for ``localhost``, a dotted IPv4 address in 127.0.0.0/8 or ``::1``
    (``host`` without brackets or port, str)."""
    host = host.lower()
    if host in ("localhost", "localhost."):
        return True
    if not host or not (host[0].isdigit() or ":" in host):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 4:
        return address.is_loopback and str(address) == host  # dotted decimal only, as browsers write it
    return address == ipaddress.IPv6Address("::1")


def parse_host(value):
    """``(host, port)`` of a Host header value (bytes): host lower-case
    without brackets, port an int or None. None when malformed."""
    match = _HOST_RE.match(value.strip())
    if not match:
        return None
    host = match.group("v6") or match.group("name") or b""
    port = match.group("port")
    try:
        return host.decode("ascii").lower(), (int(port) if port else None)
    except UnicodeDecodeError:
        return None


def check(request, listening_port):
    """None when ``request`` may go on, else ``(status, error_code, message)``
    (see the module docstring). ``listening_port``: the port the API listens
    on, for requests without a Host header."""
    hosts = request.requestHeaders.getRawHeaders(b"host")
    port = listening_port
    if hosts is not None:
        parsed = parse_host(hosts[0]) if len(hosts) == 1 else None
        if parsed is None or not is_loopback_host(parsed[0]):
            return (421, "BADHOST", "this API listens on loopback and answers only requests whose Host is "
                                    "localhost, 127.x.x.x or [::1] (a DNS-rebinding guard)")
        if parsed[1] is not None:
            port = parsed[1]
        else:
            port = 80
    origins = request.requestHeaders.getRawHeaders(b"origin")
    if origins is not None:
        allowed = len(origins) == 1 and _own_origin(origins[0], port)
        if not allowed:
            shown = b", ".join(origins).decode("latin-1")[:200]
            return (403, "FORBIDDEN", f"cross-site request refused: Origin {shown!r} is not this API's own "
                                      f"origin (http://127.0.0.1:{port}, http://localhost:{port} or "
                                      f"http://[::1]:{port})")
    return None


def _own_origin(origin, port):
    match = _ORIGIN_RE.match(origin.strip())
    if not match:
        return False
    host = match.group("host").decode("ascii", "replace").lower()
    if host.startswith("["):
        host = host[1:-1]
    origin_port = int(match.group("port")) if match.group("port") else 80
    return origin_port == port and host in ("127.0.0.1", "localhost", "::1")
