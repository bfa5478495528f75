# -*- test-case-name: tests.core.test_uri -*-
"""Media URIs: ``scheme://[user[:password]@]host[:port]/path[?query]``.

Jobs name their source and destination by URI (the original's ``source_path``
and ``dest_path``). ``parse_uri`` splits one into a ``MediaURI``;
``redact_uri`` gives the form that may appear in logs, API responses and
webhooks (no password, no signature in a presigned URL's query).

The parsing rule
================

1. The scheme is everything before the first ``://`` and must look like a
   scheme (``[A-Za-z][A-Za-z0-9+.-]*``); it is lower-cased. No ``://`` is an
   ``InvalidURI``.
2. The fragment (from the first ``#``) is dropped, then the query (from the
   first ``?``) is set apart, undecoded.
3. Credentials. The *authority* is the text up to the first ``/``.

   a. If the authority holds an ``@``, the credentials are the text before its
      **last** ``@`` (RFC 3986; an ``@`` inside a password still works).
   b. Else, if the authority looks like ``user:secret-prefix`` -- it holds a
      ``:``, is not an IPv6 literal, and what follows its last ``:`` is not a
      port number (1 to 5 digits) -- and an ``@`` comes later, the credentials
      run up to that **first** later ``@``. This keeps the original's
      ``s3://KEY:SOME/SECRET@bucket/key`` working: AWS secret keys may hold
      ``/`` and ``+``, and people paste them unencoded.
   c. Otherwise there are no credentials, and an ``@`` after the authority is
      part of the path: ``http://host/a@b.mpg`` and
      ``http://host:8080/dir/me@example.com.mp4`` have no user.

   Within the credentials the username ends at the first ``:``; the rest is
   the password (``None`` when there is no ``:``). Both are percent-decoded
   (``+`` stays ``+``). To be unambiguous whatever the secret holds, percent-
   encode it: ``/`` as ``%2F``, ``@`` as ``%40``, ``:`` in a username as
   ``%3A``, ``?`` as ``%3F``, ``#`` as ``%23``. Rule (b) guesses wrong only for
   a secret that starts with 1 to 5 digits then ``/`` *and* a credential-less
   URI cannot be told apart from it; encoding the ``/`` removes the doubt.
4. ``host:port`` splits at the last ``:`` (``[v6]:port`` for IPv6 literals);
   the port must be a number from 0 to 65535 and becomes an ``int``.
5. The path keeps its leading ``/`` and is percent-decoded (``/`` when the
   URI has none). ``MediaURI.key`` is the path without the leading ``/``, the
   original's ``path`` value and what S3 calls the key. ``raw_path`` keeps the
   undecoded form for re-sending over HTTP.

Control characters anywhere in the URI, and a NUL after decoding the path, are
refused; so are C1 controls, lone UTF-16 surrogates (a JSON ``"\\ud800"``
escape; not valid Unicode, cannot even be encoded to open a file) and the
invisible bidirectional-text controls (U+202E...) that make a URI display
differently from what it names, whether written or percent-encoded. A host
holding ``:`` must be a bracketed IPv6 literal; any other host is written
plainly in ASCII letters, digits, ``-``, ``.`` and ``_`` (an internationalized
name in its ``xn--`` form): a percent-encoded (``%6c%6fcalhost``), spaced or
otherwise odd host reads differently to different parsers and resolvers, and
is refused.

Redaction: a password shows as ``***``; so does the username of an http(s)
URI that has no password (``https://TOKEN@host/``: a token sent as basic
auth, ``username_is_secret``), while an s3 username, an access key id, is
kept. Secret query parameters (``SECRET_QUERY_PARAMS``) are masked.

``refused_host_reason(host, allowed_networks)`` says why a host may not be
fetched from or notified: IP literals of a non-public range (loopback,
private, link-local with the cloud metadata service at 169.254.169.254, ...;
see ``nommer.core.netguard``) in any spelling (``0xa9fea9fe``, ``2852039166``,
``[::ffff:169.254.169.254]``...), unless ALLOWED_PRIVATE_NETWORKS allows them.
Names are checked when nommer connects (``nommer.core.netguard``).

Size (issue 10: about 400 lines at most, or a reason): kept whole on
purpose. Parsing, redaction and the host check are one specification
(written out above, a sixth of the module): parsing and redaction must agree
on what a credential is, and a split would let them drift.
"""

import ipaddress
import re
from urllib.parse import quote, unquote

import attr

from nommer.core.errors import InvalidJobSpec
from nommer.core.netguard import describe_refusal, host_literal, refuse_reason

__all__ = ["InvalidURI", "MediaURI", "parse_uri", "redact_uri", "as_media_uri",
           "host_literal", "join_under", "query_has_secret", "refused_host_reason",
           "username_is_secret"]

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_PORT_LIKE_RE = re.compile(r"[0-9]{1,5}")
# Badinput: C0/C1 controls, lone surrogates and bidi controls (U+061C, U+200E/F,
# U+202A-E, U+2066-9). Surrogates made feederd answer 500 (os.path.realpath
# cannot encode them); bidi controls let a URI read differently in logs.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f"
                         "\u202a-\u202e\u2066-\u2069]")

#: Query parameters whose values are secrets (compared lower-cased, after
#: percent-decoding): presigned S3 / GCS URLs, Azure SAS tokens, API keys and
#: tokens, passwords. ``redact_uri`` masks them; a URI holding one is sealed.
SECRET_QUERY_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "x-goog-signature", "x-goog-credential", "signature", "sig", "key", "token",
    "access_token", "refresh_token", "id_token", "auth", "password", "passwd", "pwd",
    "secret", "client_secret", "api_key", "apikey", "api-key",
    # Token and HMAC spellings of other services (GitLab private_token, Akamai hdnts,
    # OAuth 1 signatures, Plex...). Azure SAS "se"/"sp"/"sv" are no secret; its "sig" is.
    "access-token", "accesstoken", "auth_token", "auth-token", "authtoken", "authorization",
    "hmac", "private_token", "private-token", "x-api-key", "session_token", "sessiontoken",
    "x-amz-session-token", "security_token", "secret_key", "secret_access_key",
    "aws_secret_access_key", "oauth_token", "oauth_signature", "jwt", "hdnts", "hdnea",
    "passphrase", "x-plex-token",
})

#: Schemes whose username alone is a secret (a token sent as basic auth). An s3
#: username is an access key id, shown like the key id of a presigned URL.
USERNAME_SECRET_SCHEMES = frozenset({"http", "https"})

#: A host name as nommer accepts it (IPv6 literals apart).
_HOST_RE = re.compile(r"[A-Za-z0-9._-]*")

REDACTED = "***"


class InvalidURI(InvalidJobSpec):
    """A URI cannot be parsed or names nothing a backend can use.

    An ``InvalidJobSpec`` (error code BADINPUT, HTTP 400). ``field`` is the job
    key holding the URI (``source_path``, ``dest_path``) when known; ``reason``
    is the message without the field prefix. The message never holds a
    password: it names the URI in its redacted form.
    """

    def __init__(self, message, field=None):
        super().__init__(field, message)
        self.reason = message

    def for_field(self, field):
        """The same error, attributed to the job key ``field``."""
        return InvalidURI(self.reason, field=field)


@attr.s(frozen=True, slots=True, auto_attribs=True, kw_only=True, repr=False)
class MediaURI:
    """A parsed media URI. See the module docstring for the rule.

    ``path`` is percent-decoded and starts with ``/``; ``raw_path`` is the same
    path as written (possibly empty). ``query`` is the undecoded text after
    ``?`` (``""`` when none). ``port`` is an ``int`` or ``None``. ``username``
    and ``password`` are decoded, ``None`` when absent. ``repr``/``str`` are
    redacted so a MediaURI can be logged.
    """

    scheme: str
    host: str = ""
    path: str = "/"
    username: str = None
    password: str = None
    port: int = None
    query: str = ""
    raw_path: str = ""

    @property
    def key(self):
        """The path without its leading ``/`` (an S3 object key)."""
        return self.path[1:]

    @property
    def netloc(self):
        """``host[:port]`` with IPv6 literals bracketed; never credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def encoded_path(self):
        """The path as written in the URI (``raw_path``), or the decoded path
        re-encoded when this MediaURI was built by hand without one."""
        if self.raw_path or self.path == "/":
            return self.raw_path
        return quote(self.path, safe="/!$&'()*+,;=:@~")

    def url_without_userinfo(self):
        """The URI without credentials, path undecoded (for an HTTP request)."""
        out = f"{self.scheme}://{self.netloc}{self.encoded_path}"
        return f"{out}?{self.query}" if self.query else out

    def __str__(self):
        return redact_uri(self)

    def __repr__(self):
        return f"MediaURI({redact_uri(self)!r})"


def _split(uri):
    """Split ``uri`` into its parts without validating them.

    Returns ``(scheme, username, password, host, port, raw_path, query)`` with
    the credentials still encoded and ``port`` a string or ``None``; raises
    ``InvalidURI`` only when there is no scheme.
    """
    m = _SCHEME_RE.match(uri)
    if m is None:
        raise InvalidURI(
            f"{_redact_schemeless(uri)!r} has no scheme; write it as scheme://..., "
            "e.g. file:///path/to/file.mp4, https://host/file.mp4 or s3://bucket/key")
    scheme = m.group(1).lower()
    rest = uri[m.end():]
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")

    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    userinfo = None
    if "@" in authority:
        at = authority.rindex("@")
        userinfo, hostport = authority[:at], authority[at + 1:]
        raw_path = rest[len(authority):]
    elif slash >= 0 and "@" in rest[slash:] and _secret_may_hold_slash(authority):
        at = rest.index("@", slash)
        userinfo, after = rest[:at], rest[at + 1:]
        slash2 = after.find("/")
        hostport, raw_path = (after, "") if slash2 < 0 else (after[:slash2], after[slash2:])
    else:
        hostport, raw_path = authority, rest[len(authority):]

    username = password = None
    if userinfo is not None:
        username, colon, pw = userinfo.partition(":")
        password = pw if colon else None

    port = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            host, tail = hostport, ""  # unclosed "[": kept, so parse_uri refuses it
        elif ":" not in hostport[1:end]:
            # "[name]" is no IPv6 literal: brackets kept, so parse_uri refuses it
            host, tail = hostport[:end + 1], hostport[end + 1:]
        else:
            host, tail = hostport[1:end], hostport[end + 1:]
        if tail.startswith(":"):
            port = tail[1:]
        elif tail:
            port = tail  # garbage after "]": reported as a bad port
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    else:
        host = hostport
    if port == "":
        port = None
    return scheme, username, password, host, port, raw_path, query


def _secret_may_hold_slash(authority):
    """Rule 3b: does ``authority`` look like ``user:start-of-a-secret``?"""
    if ":" not in authority or authority.startswith("["):
        return False
    return _PORT_LIKE_RE.fullmatch(authority.rpartition(":")[2]) is None


def _decode(text, what, uri_for_message):
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise InvalidURI(
            f"the {what} of {uri_for_message} is not valid UTF-8 after percent-decoding"
        ) from None


def parse_uri(uri):
    """Parse a media URI string into a ``MediaURI`` (see the module docstring).

    @raise InvalidURI: not a string, no scheme, a control character, a bad
        port, or bad percent-encoding. The message names the redacted URI.
    """
    if isinstance(uri, MediaURI):
        return uri
    if not isinstance(uri, str):
        raise InvalidURI(f"a URI must be a string, not {type(uri).__name__}")
    if not uri:
        raise InvalidURI("the URI is empty")
    bad = _CONTROL_RE.search(uri)
    if bad:
        raise InvalidURI(f"{redact_uri(uri)!r} contains a control character "
                         f"({_describe_char(bad.group())})")
    scheme, username, password, host, port, raw_path, query = _split(uri)
    shown = redact_uri(uri)
    # Badinput: "http://[::1" (unclosed) or "http://a:b:80/" used to pass.
    if "[" in host or "]" in host:
        raise InvalidURI(f"{shown}: brackets in the host must enclose a whole IPv6 "
                         "address, e.g. http://[::1]:8080/")
    if ":" in host:
        try:
            ipaddress.IPv6Address(unquote(host))  # a zone id is written %25eth0
        except ValueError:
            raise InvalidURI(f"{shown}: {host!r} is not an IPv6 address (a host holding ':' "
                             "must be one, written in brackets: http://[::1]:8080/)") from None
    else:
        _check_host_spelling(host, shown)
    if port is not None:
        if not port.isdigit() or not port.isascii() or int(port) > 65535:
            raise InvalidURI(f"{shown}: the port must be a number from 0 to 65535")
        port = int(port)
    if username is not None:
        username = _decode(username, "username", shown)
    if password is not None:
        password = _decode(password, "password", shown)
    path = _decode(raw_path, "path", shown) if raw_path else "/"
    if "\x00" in path:
        raise InvalidURI(f"{shown}: the path contains a NUL character (%00)")
    bad = _CONTROL_RE.search(path)
    if bad:  # percent-encoded: %E2%80%AE is U+202E
        raise InvalidURI(f"{shown}: the path contains a control character "
                         f"({_describe_char(bad.group())})")
    return MediaURI(scheme=scheme, username=username, password=password, host=host,
                    port=port, path=path, query=query, raw_path=raw_path)


def _describe_char(ch):
    return f"U+{ord(ch):04X}"


def _check_host_spelling(host, shown):
    """Badinput: refuse a host (not an IPv6 literal) other than plain ASCII
    letters, digits, '-', '.', '_'. ``http://%6c%6fcalhost/`` or
    ``http://exa mple/`` passed submit and failed later on the worker (an
    internal error, or retries)."""
    if _HOST_RE.fullmatch(host):
        return
    if "%" in host:
        try:
            decoded = unquote(host, errors="strict")
        except UnicodeDecodeError:
            decoded = None
        said = ""
        if decoded is not None and "%" not in decoded and not _CONTROL_RE.search(decoded):
            said = f" (it reads {decoded!r}"
            reason = refused_host_reason(decoded)
            said += f"; {reason})" if reason else ")"
        raise InvalidURI(f"{shown}: the host must not be percent-encoded{said}; write it plainly")
    if not host.isascii():
        raise InvalidURI(f"{shown}: the host {host!r} is not plain ASCII; write an "
                         "internationalized name in its ASCII form (xn--...)")
    bad = next(ch for ch in host if not _HOST_RE.fullmatch(ch))
    raise InvalidURI(f"{shown}: the host {host!r} holds {bad!r}; a host name holds letters, "
                     "digits, '-', '.' and '_' only")


# --- hosts nommer never fetches from or notifies --------------------------------

def refused_host_reason(host, allowed_networks=()):
    """Why nommer must not connect to ``host`` (a ``MediaURI.host``), or None.

    Refused: IP literals of every range ``nommer.core.netguard.refuse_reason``
    refuses (loopback, private, shared, link-local with the cloud metadata
    service at 169.254.169.254, unique-local, multicast, unspecified,
    reserved...) unless ``allowed_networks`` (``ipaddress`` networks, from
    ALLOWED_PRIVATE_NETWORKS) allows them, in every spelling a resolver
    accepts (see ``host_literal``; IPv4-mapped / compatible / 6to4 / NAT64
    IPv6 forms are judged by their IPv4 address). Host *names* are not
    resolved here (no I/O): the connection-time check of
    ``nommer.core.netguard`` catches a name that resolves to such an address.
    """
    addr = host_literal(host)
    if addr is None:
        return None
    reason = refuse_reason(addr, allowed_networks)
    if reason is None:
        return None
    return describe_refusal("", host, str(addr), reason)


def as_media_uri(uri, field=None):
    """``parse_uri`` for a string, the object itself for a ``MediaURI``;
    errors are attributed to ``field``."""
    if isinstance(uri, MediaURI):
        return uri
    try:
        return parse_uri(uri)
    except InvalidURI as e:
        raise e.for_field(field) from None


_QUERY_SEPARATOR_RE = re.compile(r"([&;])")


def _redact_query(query):
    """``query`` with the value of every secret parameter (``SECRET_QUERY_PARAMS``)
    replaced by ``***``; ``&`` and ``;`` both separate parameters (servers
    differ), so either way the secret is hidden."""
    parts = []
    for item in _QUERY_SEPARATOR_RE.split(query):
        name, eq, _ = item.partition("=")
        if eq and unquote(name.replace("+", " ")).strip().lower() in SECRET_QUERY_PARAMS:
            item = f"{name}={REDACTED}"
        parts.append(item)
    return "".join(parts)


def query_has_secret(query):
    """Whether ``query`` holds a secret parameter ``redact_uri`` masks
    (``SECRET_QUERY_PARAMS``)."""
    return _redact_query(query) != query


def username_is_secret(scheme, username, password):
    """Whether the ``username`` of a URI is a secret to seal and mask: a
    non-empty username without a (non-empty) password, in an http(s) URI
    (``USERNAME_SECRET_SCHEMES``) or one whose scheme is unknown (None)."""
    return bool(username) and not password and (
        scheme is None or scheme.lower() in USERNAME_SECRET_SCHEMES)


def _join(scheme, username, password, host, port, raw_path, query):
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    out = f"{scheme}://" if scheme is not None else ""
    if username is not None:
        out += REDACTED if username_is_secret(scheme, username, password) else username
        if password is not None:
            out += f":{REDACTED}"
        out += "@"
    out += host
    if port is not None:
        out += f":{port}"
    out += raw_path
    if query:
        out += "?" + _redact_query(query)
    return out


def _redact_schemeless(text):
    """Best-effort redaction of a string without a scheme, for error messages."""
    try:
        parts = _split("x://" + text)
    except Exception:
        return "<unparseable URI>"
    return _join(None, *parts[1:])


def redact_uri(uri):
    """The URI as it may be shown: the password replaced by ``***`` (the
    username, e.g. an AWS access key id, is kept; but an http(s) username
    without a password, a token, is ``***`` too), secret query parameters
    (``X-Amz-Signature``, ``sig``, ``token``...) masked, the fragment dropped.

    Accepts a ``MediaURI`` or a string; never raises (a string without a scheme
    is redacted as well as it can be). Anything else gives a placeholder.
    """
    if isinstance(uri, MediaURI):
        return _join(uri.scheme, uri.username, uri.password, uri.host, uri.port,
                     uri.encoded_path, uri.query)
    if not isinstance(uri, str):
        return f"<not a URI: {type(uri).__name__}>"
    uri = _CONTROL_RE.sub("?", uri)
    try:
        parts = _split(uri)
    except InvalidURI:
        return _redact_schemeless(uri)
    except Exception:
        return "<unparseable URI>"
    return _join(*parts)


# --- files under a destination prefix ---------------------------------------------

#: Longest relative path ``join_under`` accepts, characters.
MAX_RELATIVE_PATH_CHARS = 200
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_relative_path(relative_path):
    """Refuse a relative path ``join_under`` would not place under a prefix.

    Accepted: ``/``-separated segments of ``[A-Za-z0-9._-]``, none empty and
    none starting with ``.`` (so no ``.``, ``..`` or hidden names), no leading
    ``/``, at most ``MAX_RELATIVE_PATH_CHARS`` characters in all.

    @raise ValueError: saying what is wrong.
    """
    if not isinstance(relative_path, str) or not relative_path:
        raise ValueError("a relative path must be a non-empty string")
    if len(relative_path) > MAX_RELATIVE_PATH_CHARS:
        raise ValueError(f"a relative path is at most {MAX_RELATIVE_PATH_CHARS} characters "
                         f"(this one has {len(relative_path)})")
    if relative_path.startswith("/"):
        raise ValueError(f"{relative_path!r} is absolute; a relative path has no leading '/'")
    for segment in relative_path.split("/"):
        if not _SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"{relative_path!r}: each '/'-separated part of a relative path is made of "
                "letters, digits, '.', '_' and '-', is not empty and does not start with '.' "
                f"(not {segment!r})")


def join_under(prefix_uri, relative_path):
    """The URI of ``relative_path`` under the destination prefix ``prefix_uri``.

    ``s3://bucket/title/`` + ``hls/720p/seg_1.m4s`` ->
    ``s3://bucket/title/hls/720p/seg_1.m4s``; likewise ``file:///a/b/`` and
    ``http(s)://host/p/``. Credentials in the prefix are kept (the result is
    for the transfer: show it only through ``redact_uri``); the path of the
    prefix is kept as written (percent-encoded), and the relative path needs
    no encoding (``_check_relative_path``).

    @param prefix_uri: a URI string ending in ``/``, or a ``MediaURI`` whose
        path ends in ``/`` (pass the MediaURI itself, not ``str()`` of it:
        that is redacted).
    @param relative_path: ``/``-separated, see ``_check_relative_path``.
    @return: the URI, a ``str``.
    @raise ValueError: a refused relative path; a prefix that does not parse,
        does not end with ``/``, or has a query string or a fragment.
    """
    _check_relative_path(relative_path)
    if isinstance(prefix_uri, str):
        if "?" in prefix_uri:
            raise ValueError("a destination prefix cannot have a query string")
        if "#" in prefix_uri:
            raise ValueError("a destination prefix cannot have a fragment; percent-encode a "
                             "'#' in a name as %23")
        if not prefix_uri.endswith("/"):
            raise ValueError(f"{redact_uri(prefix_uri)} is not a destination prefix: "
                             "a prefix ends with '/'")
    try:
        muri = as_media_uri(prefix_uri)
    except InvalidURI as e:
        raise ValueError(e.reason) from None
    if muri.query:
        raise ValueError("a destination prefix cannot have a query string")
    if not muri.path.endswith("/"):
        raise ValueError(f"{redact_uri(muri)} is not a destination prefix: a prefix ends "
                         "with '/'")
    out = f"{muri.scheme}://"
    if muri.username is not None:
        out += quote(muri.username, safe="")
        if muri.password is not None:
            out += ":" + quote(muri.password, safe="")
        out += "@"
    return out + muri.netloc + (muri.encoded_path or "/") + relative_path
