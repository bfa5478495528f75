# -*- test-case-name: tests.core.test_netguard -*-
"""Which addresses nommer connects to for callers (SSRF guard).

Callers name hosts: an http(s) ``source_path`` the worker downloads, a
``notify_url`` feederd POSTs to. Left alone, a caller could make nommer reach
what only nommer can reach: the cloud metadata service (169.254.169.254,
instance credentials), loopback services, the private network. So:

* ``refuse_reason(ip, allowed_networks)`` (pure) says why an address must not
  be connected to, or None. Refused: loopback, unspecified (0.0.0.0/8, ::),
  private (RFC 1918), shared / carrier-grade NAT (100.64.0.0/10), link-local
  (169.254.0.0/16, fe80::/10), unique-local (fc00::/7), site-local
  (fec0::/10), multicast, reserved, broadcast and every other special-purpose
  (not globally routable) range of Python's ``ipaddress``; and the IPv4
  address an IPv6 one carries (IPv4-mapped, IPv4-compatible, 6to4, NAT64) is
  judged as that IPv4 address. A network listed in ``ALLOWED_PRIVATE_NETWORKS``
  is allowed, except the cloud metadata addresses (169.254.169.254,
  fd00:ec2::254), which a network must name exactly (``/32``, ``/128``).
* ``guarded_agent(reactor, allowed_networks, what)`` is a
  ``twisted.web.client.Agent`` that enforces it where it counts: when it
  connects. Its endpoint factory (``GuardedEndpointFactory``) resolves the host
  name (the reactor's ``nameResolver``, or the resolver given), drops every
  refused address, and connects (``HostnameEndpoint``) only to the addresses
  it checked: there is no second lookup, so a name that answers a public
  address to the check and a private one to the connection (DNS rebinding)
  gets nowhere. https keeps the URL's host name for SNI and certificate
  checks (``BrowserLikePolicyForHTTPS``). A redirect is a new request through
  the same agent, so every hop is checked the same way. When every address
  of a host is refused the connection fails with ``AddressRefused``, whose
  message says which host, which address, why, and which setting allows it.
  Each connection reads at most ``MAX_RESPONSE_HEAD_BYTES`` of a response's
  status line and headers (``ResponseHeadTooLarge``): Twisted's client has
  no limit of its own.

Size (issue 10: about 400 lines at most, or a reason): kept whole on
purpose. It is a security boundary: the address rules and the agent that
applies them when connecting (resolution, the endpoint, the capped response
head) are one guard, read and reviewed in one place; a split would move
code that must change together into files that can drift apart.
"""

import ipaddress
import re
from urllib.parse import unquote

from zope.interface import implementer

from twisted.internet import error
from twisted.internet.address import IPv4Address as TwistedIPv4Address
from twisted.internet.address import IPv6Address as TwistedIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (IHostnameResolver, IHostResolution,
                                         IReactorPluggableNameResolver, IResolutionReceiver,
                                         IStreamClientEndpoint)
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory

__all__ = ["AddressRefused", "GuardedEndpointFactory", "MAX_RESPONSE_HEAD_BYTES",
           "ResponseHeadTooLarge", "allowed_networks", "guarded_agent", "host_literal",
           "parse_address", "refuse_reason"]

#: The setting that allows refused ranges (named in every message).
SETTING = "ALLOWED_PRIVATE_NETWORKS"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
#: Cloud instance metadata services (AWS, GCP, Azure, ... answer at the first;
#: AWS's IPv6 endpoint is the second). Instance credentials live there.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})


#: Most bytes of a response's head (status line and header lines, those of 1xx
#: answers included) a guarded connection reads: Twisted's HTTP client has no
#: limit, and a server sending header lines without end grew the worker's (or
#: feederd's, for a webhook) memory by hundreds of MB a second.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

_INFORMATIONAL_RE = re.compile(rb"HTTP/\d\.\d 1\d\d")


class ResponseHeadTooLarge(Exception):
    """A server sent more than MAX_RESPONSE_HEAD_BYTES of response head."""

    def __init__(self, limit=MAX_RESPONSE_HEAD_BYTES):
        super().__init__(f"the server's response head passed {limit} bytes "
                         "(status line and headers); the connection was dropped")


class AddressRefused(Exception):
    """A connection was refused by the address policy.

    ``what`` ("source", "webhook"), ``host`` (as named in the URL), ``address``
    (the refused IP, str) and ``reason`` (``refuse_reason``'s text); ``str()``
    is a sentence for a person."""

    def __init__(self, what, host, address, reason):
        self.what, self.host, self.address, self.reason = what, host, address, reason
        super().__init__(describe_refusal(what, host, address, reason))


def describe_refusal(what, host, address, reason):
    """``"source host example.internal resolves to 10.0.0.5, a private address;
    set ALLOWED_PRIVATE_NETWORKS to allow it"`` (or ``"... host 10.0.0.5 is
    ..."`` when the host is the address itself)."""
    label = f"{what} host" if what else "host"
    if _same_address(host, address):
        said = f"{label} {host} is {reason}"
    else:
        said = f"{label} {host} resolves to {address}, {reason}"
    if "metadata" in reason:
        return f"{said}; it is refused unless {SETTING} names it exactly"
    return f"{said}; set {SETTING} to allow it"


def _same_address(host, address):
    try:
        return parse_address(host) == parse_address(address)
    except ValueError:
        return False


def parse_address(text):
    """An ``ipaddress`` address from ``text`` (str, bytes or an address),
    brackets and an IPv6 zone id (``%eth0``) removed.

    @raise ValueError: not an IP address literal (dotted IPv4 or IPv6).
    """
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    text = str(text).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return ipaddress.ip_address(text.partition("%")[0])


_INET_ATON_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _inet_aton(text):
    """The IPv4 address ``text`` reaches when a resolver reads it as
    inet_aton() does (``0xa9fea9fe``, ``2852039166``, ``0251.0376.0251.0376``,
    ``169.254.43518``), or None if it is not such a literal."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p, 16) if p[:2].lower() == "0x" else int(p, 8) if p.startswith("0")
              else int(p) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def host_literal(host):
    """The IP address a URL's host names literally, in every spelling a
    resolver accepts (dotted, hex, octal, decimal integer, short forms, IPv6
    with a zone id, a trailing dot, percent-encoding), or None for a name."""
    text = unquote(host or "").strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.partition("%")[0])
        except ValueError:
            return None
    return _inet_aton(text)


def allowed_networks(settings):
    """``settings.ALLOWED_PRIVATE_NETWORKS`` (CIDR strings; host bits allowed)
    as a tuple of ``ipaddress`` networks; empty when the setting is absent."""
    return tuple(ipaddress.ip_network(n, strict=False)
                 for n in (getattr(settings, SETTING, None) or ()))


def _embedded_ipv4(addr):
    """The IPv4 address a connection to IPv6 ``addr`` reaches or exposes
    (IPv4-mapped, IPv4-compatible, NAT64, 6to4), or None."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64 or 1 < int(addr) < 1 << 32:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    return None


def _category(addr):
    """What kind of non-public address ``addr`` is (a phrase), or None for a
    public one. The IPv4 address inside an IPv6 one is not looked at here."""
    if addr in METADATA_ADDRESSES:
        return "the cloud metadata service address (link-local: instance credentials)"
    if addr.is_unspecified or (addr.version == 4 and addr in _THIS_NETWORK):
        return "an unspecified address (it reaches this host)"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address (cloud metadata services answer there)"
    if addr.version == 4 and addr in _CGNAT:
        return "a shared (carrier-grade NAT, 100.64.0.0/10) address"
    if addr.version == 6 and addr in _UNIQUE_LOCAL:
        return "a unique-local (fc00::/7) address"
    if addr.version == 6 and addr.is_site_local:
        return "a site-local (fec0::/10) address"
    if addr.is_multicast:
        return "a multicast address"
    if addr == _BROADCAST:
        return "the broadcast address"
    if addr.is_reserved:
        return "a reserved address"
    if addr.version == 4 and any(addr in net for net in _RFC1918):
        return "a private address"
    if addr.is_private or not addr.is_global:
        return "a special-purpose (not publicly routable) address"
    return None


def _allowed(addr, networks):
    if addr in METADATA_ADDRESSES:
        return any(net.num_addresses == 1 and addr in net
                   for net in networks if net.version == addr.version)
    return any(addr in net for net in networks if net.version == addr.version)


def refuse_reason(ip, allowed_networks=()):
    """Why nommer must not connect to ``ip`` for a caller, or None.

    @param ip: an IP address (str such as ``"10.0.0.5"`` or ``"[::1]"``, bytes,
        or an ``ipaddress`` address); an IPv6 zone id is ignored.
    @param allowed_networks: ``ipaddress`` networks (or CIDR strings) allowed
        although not public (``allowed_networks(settings)``).
    @return: a phrase such as ``"a private address"`` or ``"an IPv4-mapped
        form of 10.0.0.5, a private address"``; None when the address is
        public or allowed.
    @raise ValueError: ``ip`` is not an IP address literal.
    """
    addr = parse_address(ip)
    networks = tuple(n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                     else ipaddress.ip_network(n, strict=False) for n in allowed_networks)
    forms = [(addr, None)]
    if addr.version == 6:
        inner = _embedded_ipv4(addr)
        if inner is not None:
            kind = ("an IPv4-mapped" if addr.ipv4_mapped is not None
                    else "a 6to4" if addr.sixtofour is not None
                    else "a NAT64" if addr in _NAT64 else "an IPv4-compatible")
            # Mapped, compatible and NAT64 forms *are* the IPv4 address to a
            # dual-stack socket or a NAT64 gateway: judged as it alone.
            forms = ([(addr, None)] if addr.sixtofour is not None else []) + [(inner, kind)]
    for form, kind in forms:
        if _allowed(form, networks):
            continue
        category = _category(form)
        if category is not None:
            return category if kind is None else f"{kind} form of {form}, {category}"
    return None


# --- enforcing it when connecting ------------------------------------------------

@implementer(IHostnameResolver)
class _CheckingResolver:
    """An ``IHostnameResolver`` passing on only the addresses the policy
    allows; each refused one is appended to ``refusals`` as (ip, reason).
    IP literals, in every spelling getaddrinfo() takes (``2130706433``,
    ``0x7f.1``...), are answered without asking ``resolver``."""

    def __init__(self, resolver, networks, refusals):
        self._resolver = resolver
        self._networks = networks
        self._refusals = refusals

    def resolveHostName(self, resolutionReceiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        checker = _CheckingReceiver(resolutionReceiver, self._networks, self._refusals)
        literal = host_literal(hostName)
        if literal is None:
            return self._resolver.resolveHostName(checker, hostName, portNumber, addressTypes,
                                                  transportSemantics)
        resolution = _Resolution(hostName)
        checker.resolutionBegan(resolution)
        cls = TwistedIPv4Address if literal.version == 4 else TwistedIPv6Address
        checker.addressResolved(cls("TCP", str(literal), portNumber))
        checker.resolutionComplete()
        return resolution


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name):
        self.name = name

    def cancel(self):
        pass


@implementer(IResolutionReceiver)
class _CheckingReceiver:
    def __init__(self, receiver, networks, refusals):
        self._receiver = receiver
        self._networks = networks
        self._refusals = refusals

    def resolutionBegan(self, resolutionInProgress):
        self._receiver.resolutionBegan(resolutionInProgress)

    def addressResolved(self, address):
        host = getattr(address, "host", None)
        try:
            reason = refuse_reason(host, self._networks)
        except (TypeError, ValueError):
            reason = "not an IP address"
        if reason is None:
            self._receiver.addressResolved(address)
        else:
            self._refusals.append((host, reason))

    def resolutionComplete(self):
        self._receiver.resolutionComplete()


@implementer(IReactorPluggableNameResolver)
class _ResolvingWith:
    """``reactor`` with ``resolver`` as its ``nameResolver`` (for one
    ``HostnameEndpoint``); everything else is the reactor's."""

    def __init__(self, reactor, resolver):
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver):
        raise NotImplementedError("a guarded connection's resolver cannot be replaced")

    def __getattr__(self, name):
        return getattr(self._reactor, name)


@implementer(IStreamClientEndpoint)
class _GuardedEndpoint:
    """Connects to ``host``:``port`` through a ``HostnameEndpoint`` that sees
    only allowed addresses; fails with ``AddressRefused`` when none is."""

    def __init__(self, factory, host, port):
        self._factory = factory
        self._host = host
        self._port = port

    def connect(self, protocolFactory):
        f = self._factory
        refusals = []
        resolver = f._resolver if f._resolver is not None else f._reactor.nameResolver
        reactor = _ResolvingWith(f._reactor, _CheckingResolver(resolver, f._networks, refusals))
        kwargs = {} if f._connect_timeout is None else {"timeout": f._connect_timeout}
        d = HostnameEndpoint(reactor, self._host, self._port, **kwargs).connect(protocolFactory)

        def refused(failure):
            if refusals and failure.check(error.DNSLookupError):
                address, reason = refusals[0]
                raise AddressRefused(f._what, self._host, address, reason)
            return failure
        return d.addErrback(refused)

    def __repr__(self):
        return f"<_GuardedEndpoint {self._host}:{self._port}>"


class _HeadCapProtocol(policies.ProtocolWrapper):
    """Passes everything on, and drops the connection (failing the request with
    ``ResponseHeadTooLarge``) when a response head passes ``limit`` bytes. A
    write (a new request on a kept-alive connection) counts afresh."""

    def __init__(self, factory, wrappedProtocol):
        super().__init__(factory, wrappedProtocol)
        self._rearm()
        self._too_large = False

    def _rearm(self):
        self._in_head, self._head, self._counted = True, b"", 0

    def write(self, data):
        self._rearm()
        super().write(data)

    def writeSequence(self, data):
        self._rearm()
        super().writeSequence(data)

    def dataReceived(self, data):
        if self._too_large:
            return
        if self._in_head:
            self._head += data
            while self._in_head:
                end = self._head.find(b"\r\n\r\n")
                size = self._counted + (len(self._head) if end < 0 else end + 4)
                if size > self.factory.limit:
                    self._too_large = True
                    self.transport.abortConnection()
                    return
                if end < 0:
                    break
                block, self._head = self._head[:end + 4], self._head[end + 4:]
                self._counted += len(block)
                if not _INFORMATIONAL_RE.match(block):  # a 1xx head: another follows
                    self._in_head, self._head = False, b""
        super().dataReceived(data)

    def connectionLost(self, reason):
        if self._too_large:
            reason = Failure(ResponseHeadTooLarge(self.factory.limit))
        super().connectionLost(reason)


class _HeadCapFactory(policies.WrappingFactory):
    protocol = _HeadCapProtocol

    def __init__(self, wrappedFactory, limit):
        super().__init__(wrappedFactory)
        self.limit = limit


@implementer(IStreamClientEndpoint)
class _HeadCapEndpoint:
    """``endpoint`` whose connections read at most ``limit`` bytes of each
    response head (above TLS, so the bytes counted are HTTP's)."""

    def __init__(self, endpoint, limit):
        self._endpoint = endpoint
        self._limit = limit

    def connect(self, protocolFactory):
        d = self._endpoint.connect(_HeadCapFactory(protocolFactory, self._limit))
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


@implementer(IAgentEndpointFactory)
class GuardedEndpointFactory:
    """``IAgentEndpointFactory`` for ``Agent.usingEndpointFactory``: TCP for
    http, TLS (certificate checked against the URL's host name) for https,
    each connecting only to addresses ``refuse_reason`` allows.

    @param reactor: provides ``IReactorTCP``, ``IReactorTime`` and a
        ``nameResolver`` (unless ``resolver`` is given).
    @param networks: allowed non-public networks (``allowed_networks``).
    @param what: how refusals name the host ("source", "webhook").
    @param resolver: an ``IHostnameResolver``; default: the reactor's, looked
        up at each connection.
    @param tls_policy: an ``IPolicyForHTTPS``; default
        ``BrowserLikePolicyForHTTPS()`` (system trust roots, SNI).
    @param connect_timeout: seconds per connection attempt, or None (30 s).
    """

    def __init__(self, reactor, networks=(), what="", resolver=None, tls_policy=None,
                 connect_timeout=None):
        self._reactor = reactor
        self._networks = tuple(networks)
        self._what = what
        self._resolver = resolver
        self._tls = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
        self._connect_timeout = connect_timeout

    def endpointForURI(self, uri):
        """The endpoint for a ``twisted.web.client.URI``.

        @raise SchemeNotSupported: neither http nor https.
        @raise ValueError: a host name that is not ASCII.
        """
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the host {uri.host!r} is not ASCII (IDNA-encode it)") from None
        endpoint = _GuardedEndpoint(self, host, uri.port)
        if uri.scheme == b"http":
            return _HeadCapEndpoint(endpoint, MAX_RESPONSE_HEAD_BYTES)
        if uri.scheme == b"https":
            return _HeadCapEndpoint(wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port),
                                                  endpoint), MAX_RESPONSE_HEAD_BYTES)
        raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")


def guarded_agent(reactor, networks=(), what="", pool=None, resolver=None, tls_policy=None,
                  connect_timeout=None):
    """A ``twisted.web.client.Agent`` whose every connection (each redirect
    hop included, when wrapped in a redirect agent such as treq's) goes
    through ``GuardedEndpointFactory``; see it for the arguments. ``pool``:
    an ``HTTPConnectionPool`` or None (one connection per request)."""
    factory = GuardedEndpointFactory(reactor, networks, what, resolver=resolver,
                                     tls_policy=tls_policy, connect_timeout=connect_timeout)
    return Agent.usingEndpointFactory(reactor, factory, pool=pool)
