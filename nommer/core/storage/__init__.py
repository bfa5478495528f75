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
"""

from nommer.core.classes import load_class
from nommer.core.uri import InvalidURI, as_media_uri

__all__ = ["backend_class", "get_storage", "check_source", "check_destination"]


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


def _check(uri, settings, for_write, field):
    if not isinstance(uri, str) or not uri:
        raise InvalidURI("must be a non-empty URI string such as file:///path/to/file.mp4",
                         field)
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
