# -*- test-case-name: tests.core.test_secrets -*-
"""Credentials inside job URIs, sealed for the job store.

The original media-nommer took S3 credentials inside the URI
(``s3://KEY:SECRET@bucket/key``) and stored them in clear. nommer keeps that
form working without a secret ever reaching the job store: at submit,
``seal_uri`` splits such a URI into

* the *stored* URI, the redacted form (``s3://KEY:***@bucket/key``, see
  ``nommer.core.uri.redact_uri``) that the job store, the API and the logs
  see, and
* a *sealed* token: the whole original URI encrypted with Fernet
  (AES-128-CBC + HMAC-SHA256, ``cryptography.fernet``) under
  ``settings.JOB_CREDENTIALS_KEY``.

This applies to ``source_path``, ``dest_path`` and ``notify_url`` alike
(``Job.sealed_credentials`` maps each field to its token). The worker calls
``unseal_uri(stored, sealed, settings)`` right before the transfer, feederd's
notifier right before POSTing a webhook; the key must be the same on feederd
and the workers. Without a key
configured, a URI with credentials is refused at submit (``InvalidJobSpec``):
use the instance role or the default credential chain instead.

"Credentials" means what ``redact_uri`` hides: a password in the URI, the
username of an http(s) URI without a password (``https://TOKEN@host/``, a
token the worker sends as basic auth; an s3 username is an access key id and
no secret), or a secret query parameter (a presigned URL's
``X-Amz-Signature``, a ``token``, ``sig``, ``access-token``, ``hmac``...). A
URI without any is stored as given.

Generate a key with::

    python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
"""

from cryptography.fernet import Fernet, InvalidToken

from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.uri import (InvalidURI, parse_uri, query_has_secret, redact_uri,
                             username_is_secret)

__all__ = ["SealedCredentialsError", "has_credentials", "seal_uri", "unseal_uri"]


class SealedCredentialsError(PermanentJobError):
    """The sealed credentials of a job cannot be opened here (no key, another
    key, a damaged token, or a token that belongs to another URI)."""


def has_credentials(uri):
    """Whether ``uri`` (a string or ``MediaURI``) holds something
    ``redact_uri`` hides: a password, an http(s) username without one (a
    token sent as basic auth), or a secret query parameter."""
    muri = parse_uri(uri)
    if muri.password is not None or username_is_secret(muri.scheme, muri.username, muri.password):
        return True
    return bool(muri.query) and query_has_secret(muri.query)


def _fernet(settings):
    key = getattr(settings, "JOB_CREDENTIALS_KEY", None)
    if not key:
        return None
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        # Never show the key itself.
        raise ValueError("JOB_CREDENTIALS_KEY is not a Fernet key (44 urlsafe base64 "
                         "characters, from Fernet.generate_key())") from None


def seal_uri(uri, settings, field=None):
    """Split a job URI into what the job store may hold.

    Returns ``(stored_uri, sealed)``: for a URI with credentials, its redacted
    form and a Fernet token (str) of the whole URI; otherwise ``(uri, None)``.

    @param field: the job key holding the URI, for the error.
    @raise InvalidJobSpec: the URI has credentials and JOB_CREDENTIALS_KEY is
        not set.
    @raise InvalidURI: the URI does not parse.
    @raise ValueError: JOB_CREDENTIALS_KEY is not a valid key (a server
        configuration error).
    """
    if not isinstance(uri, str):
        raise InvalidURI(f"a URI must be a string, not {type(uri).__name__}", field)
    try:
        secret = has_credentials(uri)
    except InvalidURI as e:
        raise e.for_field(field) from None
    if not secret:
        return uri, None
    fernet = _fernet(settings)
    if fernet is None:
        raise InvalidJobSpec(
            field,
            f"{redact_uri(uri)} has credentials in it; set JOB_CREDENTIALS_KEY to store them "
            "encrypted, or drop them and use the instance role / default credential chain")
    return redact_uri(uri), fernet.encrypt(uri.encode("utf-8")).decode("ascii")


def unseal_uri(stored_uri, sealed, settings):
    """The original URI of ``stored_uri`` from its sealed token.

    With ``sealed`` None (a URI that had no credentials) returns
    ``stored_uri``.

    @raise SealedCredentialsError: JOB_CREDENTIALS_KEY is not set here, is not
        the key the token was sealed with, the token is damaged, or it does
        not belong to ``stored_uri``. A ``PermanentJobError``: the job cannot
        succeed on another attempt with the same settings.
    """
    if not sealed:
        return stored_uri
    shown = redact_uri(stored_uri)
    try:
        fernet = _fernet(settings)
    except ValueError as e:
        raise SealedCredentialsError(f"cannot decrypt the credentials of {shown}: {e}") from None
    if fernet is None:
        raise SealedCredentialsError(
            f"the credentials of {shown} are sealed but JOB_CREDENTIALS_KEY is not set here; "
            "set the same key as on feederd")
    try:
        uri = fernet.decrypt(sealed.encode("ascii") if isinstance(sealed, str) else sealed)
        uri = uri.decode("utf-8")
    except (InvalidToken, UnicodeError, TypeError, ValueError):
        raise SealedCredentialsError(
            f"cannot decrypt the credentials of {shown}: JOB_CREDENTIALS_KEY is not the key "
            "feederd sealed them with (or the sealed token is damaged)") from None
    # Both sides redacted with today's rules: a job stored before a rule masked more (an
    # http(s) username, a new secret query parameter) still opens.
    if redact_uri(uri) != shown:
        raise SealedCredentialsError(f"the sealed credentials do not belong to {shown}")
    return uri
