"""Checking that a webhook really comes from your feederd: ``verify``.

Every notification feederd POSTs to a job's ``notify_url`` carries a header

    X-Nommer-Signature: t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

where ``t`` is when it was sent (Unix seconds) and ``v1`` the hex
HMAC-SHA256, keyed with your API key's webhook signing secret, of
``"<t>.<body>"``: the decimal ``t``, a dot, then the request body exactly as
received (bytes). It is the scheme Stripe (``Stripe-Signature``) and Mux
(``Mux-Signature``) use. The secret is shown by ``nommer keys webhook-secret
KEY_ID`` on the feederd host (a job submitted without a key is signed with
the secret of ``anonymous``).

A receiver checks the signature on the raw body, before parsing it, and
refuses the request unless ``verify`` passes: a forged or altered body
fails the HMAC; a replayed one, its timestamp (older than ``tolerance_s``).
Standard library only, so a receiver needs nothing but this file::

    from nommer.client.webhooks import InvalidSignature, verify

    def handle(raw_body, headers):
        try:
            verify(raw_body, headers.get("X-Nommer-Signature"), SECRET)
        except InvalidSignature:
            return 400
        ...

A header may hold several ``v1=`` values (while feederd changes secrets):
one matching is enough.
"""

import hashlib
import hmac
import time

#: The request header carrying the signature.
SIGNATURE_HEADER = "X-Nommer-Signature"

#: How far a signature's timestamp may be from now, seconds (both ways).
DEFAULT_TOLERANCE_S = 300

__all__ = ["DEFAULT_TOLERANCE_S", "SIGNATURE_HEADER", "InvalidSignature", "sign", "signature", "verify"]


class InvalidSignature(ValueError):
    """The request is not signed with the secret, or its signature is too
    old (or from the future), or the header is missing or malformed."""


def _bytes(value, what):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def signature(body, secret, timestamp):
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``
    (``body`` and ``secret`` bytes or str, str as UTF-8; ``timestamp`` an int,
    Unix seconds)."""
    message = str(int(timestamp)).encode("ascii") + b"." + _bytes(body, "body")
    return hmac.new(_bytes(secret, "secret"), message, hashlib.sha256).hexdigest()


def sign(body, secret, timestamp=None):
    """The ``X-Nommer-Signature`` value for ``body`` sent at ``timestamp``
    (Unix seconds, default now): ``"t=<timestamp>,v1=<signature>"``."""
    timestamp = int(time.time() if timestamp is None else timestamp)
    return f"t={timestamp},v1={signature(body, secret, timestamp)}"


def _parse(header):
    """``(timestamp, [v1 signatures])`` of a header value; InvalidSignature
    when it is missing or malformed."""
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    if isinstance(header, bytes):
        header = header.decode("ascii", "replace")
    timestamp, signatures = None, []
    for part in str(header).split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header (no '=' in {part.strip()!r})")
        if name == "t":
            if not (value.isascii() and value.isdigit()):
                raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header (t is not Unix seconds)")
            timestamp = int(value)
        elif name == "v1":
            signatures.append(value)
        # other schemes (v0, v2...) are ignored, as Stripe's clients do
    if timestamp is None or not signatures:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header (needs t= and v1=)")
    return timestamp, signatures


def verify(body, header, secret, tolerance_s=DEFAULT_TOLERANCE_S, now=None):
    """Check a webhook request; return its timestamp (Unix seconds).

    @param body: the request body exactly as received (bytes; str is taken
        as UTF-8).
    @param header: the ``X-Nommer-Signature`` header's value (str or bytes;
        None when absent).
    @param secret: the API key's webhook signing secret (str or bytes).
    @param tolerance_s: how far the timestamp may be from ``now``, seconds
        (a replay older than this is refused); None: not checked.
    @param now: Unix seconds to compare with (default: ``time.time()``).
    @raise InvalidSignature: no valid ``v1`` signature of this body with
        this secret, a timestamp outside the tolerance, or a missing or
        malformed header. Comparisons are constant-time.
    """
    timestamp, signatures = _parse(header)
    expected = signature(body, secret, timestamp)
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise InvalidSignature("the signature does not match this body and secret")
    if tolerance_s is not None:
        now = time.time() if now is None else now
        if abs(now - timestamp) > tolerance_s:
            raise InvalidSignature(f"the signature's timestamp is {now - timestamp:+.0f} s from now, "
                                   f"more than the {tolerance_s:g} s tolerated (a replay?)")
    return timestamp
