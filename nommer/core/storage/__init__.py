"""Storage backends chosen by URI scheme.

``settings.STORAGE_BACKENDS`` maps a scheme (``file``, ``http``, ``s3``...) to
the dotted path of a ``nommer.core.storage.base.Storage`` subclass; the class is
imported the first time it is needed.

* ``get_storage(uri, settings, reactor)``: the backend instance for a URI
  (workers, before a transfer).
* ``check_source(uri, settings)`` / ``check_destination(uri, settings)``: the
  submit-time checks feederd runs (scheme configured, backend can read /
  write, ``file://`` inside ``FILE_STORAGE_ROOTS``). No network I/O; file://
  only resolves symlinks. They raise ``InvalidJobSpec`` with field
  ``source_path`` / ``dest_path`` and return the parsed ``MediaURI``.
"""

import importlib

from nommer.core.uri import InvalidURI, as_media_uri

__all__ = ["backend_class", "get_storage", "check_source", "check_destination"]

_classes = {}


def _import_dotted(dotted):
    cls = _classes.get(dotted)
    if cls is None:
        module_name, _, name = dotted.rpartition(".")
        module = importlib.import_module(module_name)
        try:
            cls = getattr(module, name)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no class {name!r}") from None
        _classes[dotted] = cls
    return cls


def backend_class(scheme, settings, field=None):
    """The backend class configured for ``scheme``.

    @raise InvalidURI: no backend is configured for the scheme (the message
        lists the configured ones).
    @raise ImportError: the configured dotted path cannot be imported (a
        configuration error, not the user's).
    """
    backends = settings.STORAGE_BACKENDS or {}
    dotted = backends.get(scheme)
    if dotted is None:
        known = ", ".join(f"{s}://" for s in sorted(backends)) or "none"
        raise InvalidURI(
            f"no storage backend handles {scheme}:// URIs; configured schemes: {known}",
            field)
    try:
        return _import_dotted(dotted)
    except ImportError as e:
        raise ImportError(
            f"STORAGE_BACKENDS[{scheme!r}] = {dotted!r} cannot be imported: {e}") from e


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
