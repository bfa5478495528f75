"""Storage backends chosen by URI scheme.

``settings.STORAGE_BACKENDS`` maps a scheme (``file``, ``http``, ``s3``...) to
the dotted path of a ``nommer.core.storage.base.Storage`` subclass; the class is
loaded (``nommer.core.classes.load_class``) the first time it is needed.

* ``get_storage(uri, settings, reactor)``: the backend instance for a URI
  (workers, before a transfer).
* ``check_source(uri, settings)`` / ``check_destination(uri, settings)``: the
  submit-time checks feederd runs (scheme configured, backend can read /
  write, ``file://`` inside ``FILE_STORAGE_ROOTS``). No network I/O; file://
  only resolves symlinks. They raise ``InvalidJobSpec`` with field
  ``source_path`` / ``dest_path`` and return the parsed ``MediaURI``.
* ``check_destination_prefix(uri, settings)``: the same for a ``dest_path``
  ending in ``/`` (a job with many outputs stores its files under it, at
  ``nommer.core.uri.join_under(prefix, relative_path)``).
"""

from nommer.core.classes import load_class
from nommer.core.errors import InvalidJobSpec
from nommer.core.uri import (MAX_RELATIVE_PATH_CHARS, InvalidURI, as_media_uri, join_under,
                             redact_uri)

__all__ = ["backend_class", "get_storage", "check_source", "check_destination",
           "check_destination_prefix"]


def backend_class(scheme, settings, field=None):
    """The backend class configured for ``scheme``.

    @raise InvalidURI: no backend is configured for the scheme (the message
        lists the configured ones).
    @raise ClassLoadError: (an ``ImportError``, ``nommer.core.classes``)
        the configured dotted path cannot be loaded (a configuration error,
        not the user's); the message names ``STORAGE_BACKENDS[scheme]``.
    """
    backends = settings.STORAGE_BACKENDS or {}
    dotted = backends.get(scheme)
    if dotted is None:
        known = ", ".join(f"{s}://" for s in sorted(backends)) or "none"
        raise InvalidURI(
            f"no storage backend handles {scheme}:// URIs; configured schemes: {known}",
            field)
    return load_class(dotted, what=f"STORAGE_BACKENDS[{scheme!r}]")


def get_storage(uri, settings, reactor, field=None):
    """The backend instance that handles ``uri`` (a string or ``MediaURI``).

    @raise InvalidURI: the URI does not parse or its scheme has no backend.
    """
    muri = as_media_uri(uri, field)
    return backend_class(muri.scheme, settings, field)(settings, reactor)


def _must_be_a_string(uri, field):
    if not isinstance(uri, str) or not uri:
        raise InvalidURI("must be a non-empty URI string such as file:///path/to/file.mp4",
                         field)


def _check(uri, settings, for_write, field):
    _must_be_a_string(uri, field)
    muri = as_media_uri(uri, field)
    get_storage(muri, settings, None, field).check(muri, for_write, field)
    return muri


def check_source(uri, settings):
    """Submit-time check of a job's ``source_path``; returns its MediaURI.

    @raise InvalidJobSpec: field ``source_path``.
    """
    return _check(uri, settings, False, "source_path")


def check_destination(uri, settings):
    """Submit-time check of a job's ``dest_path``; returns its MediaURI.

    @raise InvalidJobSpec: field ``dest_path``.
    """
    return _check(uri, settings, True, "dest_path")


#: The file name ``check_destination_prefix`` checks under a prefix: as long
#: as a relative path may be, so that every file a job may store there is
#: within the backend's limits (an S3 key's length).
_PROBE_NAME = "x" * MAX_RELATIVE_PATH_CHARS


def check_destination_prefix(uri, settings):
    """Submit-time check of a ``dest_path`` prefix (ending in ``/``); returns
    its MediaURI.

    The prefix's backend must write, and a file under it, of any name
    ``join_under`` accepts, must pass the backend's ``check`` as a
    destination: for ``file://``, the prefix directory (which need not exist
    yet) resolves, symlinks and ``..`` included, inside FILE_STORAGE_ROOTS;
    for ``s3://``, the bucket is valid (and allowed) and the longest key fits;
    for ``http(s)://``, the host is acceptable. No network I/O.

    @raise InvalidJobSpec: field ``dest_path``: not a string, not ending in
        ``/``, a query string or a fragment, or refused by the backend (the
        message names the prefix, redacted).
    """
    field = "dest_path"
    _must_be_a_string(uri, field)
    muri = as_media_uri(uri, field)
    if muri.query or "?" in uri:
        raise InvalidURI(f"{redact_uri(muri)}: a destination prefix cannot have a query string",
                         field)
    if not uri.endswith("/"):
        raise InvalidURI(f"{redact_uri(uri)} is not a destination prefix: a prefix ends with '/'",
                         field)
    try:
        probe = as_media_uri(join_under(uri, _PROBE_NAME), field)
    except ValueError as e:
        raise InvalidURI(str(e), field) from None
    storage = get_storage(muri, settings, None, field)
    try:
        storage.check(probe, True, field)
    except InvalidJobSpec as e:
        reason = e.reason if isinstance(e, InvalidURI) else e.message.removeprefix(f"{field}: ")
        reason = reason.replace(redact_uri(probe), redact_uri(muri))
        try:
            storage.check(join_under(uri, "x"), True, field)
        except InvalidJobSpec:
            pass
        else:  # only the longest names fail
            reason += (f" (a file stored under a prefix may have a name of up to "
                       f"{MAX_RELATIVE_PATH_CHARS} characters)")
        raise InvalidURI(reason, field) from None
    return muri
