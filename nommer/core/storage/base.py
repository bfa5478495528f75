"""The storage backend interface: fetch a job's source, store its result.

A backend serves one or more URI schemes (``STORAGE_BACKENDS`` maps a scheme
to a backend class). The worker makes one per transfer with
``get_storage(uri, settings, reactor)`` and awaits ``download``, ``upload``
or ``delete``; feederd only calls ``check`` (through ``check_source``,
``check_destination`` and ``check_destination_prefix``) to refuse a bad job
at submit time.

Contract for implementations:

* ``__init__(settings, reactor)`` stores its arguments and does no I/O.
  ``reactor`` may be ``None`` when the backend is made only to ``check``.
* ``check(uri, for_write, field=None)`` does no network I/O and never touches
  the reactor; it raises ``InvalidJobSpec(field, message)`` (usually
  ``InvalidURI``) when the URI is not something this backend can read
  (``for_write=False``) or write (``for_write=True``). Messages name the
  redacted URI, never a password.
* ``download(uri, local_path)`` writes the whole source to ``local_path``
  (created or truncated) and returns the number of bytes written. It raises
  ``SourceNotFound`` when the source does not exist, ``TransientJobError``
  when another attempt may succeed (timeout, connection refused, HTTP 5xx)
  and ``PermanentJobError`` otherwise (permission denied, HTTP 4xx, a URI that
  fails ``check`` on this host). A failed download leaves no partial file.
* ``upload(local_path, uri)`` stores ``local_path`` at ``uri`` and returns the
  number of bytes stored, with the same error classes (a missing
  ``local_path`` is a ``PermanentJobError``). The stored object's
  Content-Type, where the backend keeps one, is ``content_type_for``.
* ``delete(uri)`` deletes the one stored object at ``uri`` (never a
  "directory" or anything else under it) and returns ``True``; an object that
  is not there is not an error: it returns ``False``. Error classes as
  ``upload`` (``PermanentJobError``: refused, a URI that fails ``check`` for
  writing on this host; ``TransientJobError``: another attempt may succeed).
  The worker uses it to remove what a failed multi-file job already stored,
  manifests first, so that no player sees a manifest naming a missing file.
* None of them blocks the reactor: file work runs in a thread, network work
  is asynchronous. All re-run ``check`` first (the worker's settings and file
  system are the ones that count; ``delete`` checks as for writing).
* Nothing a backend logs or raises holds a secret: use ``redact_uri``.
"""

from nommer.conf import defaults
from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.storage.content_types import (CONTENT_TYPES, DEFAULT_CONTENT_TYPE,
                                               content_type_for_name, extension)
from nommer.core.uri import InvalidURI, as_media_uri, redact_uri

__all__ = ["Storage", "content_type_for"]


def content_type_for(local_path, name):
    """Content-Type of an upload (``nommer.core.storage.content_types``):
    the table entry for the local file's extension (a scratch output is
    named after its muxer: ``output.m4a`` stored at ``songs/track``), else
    for the destination ``name``'s (a key or URL path), else what
    ``content_type_for_name`` makes of the destination name, else of the
    local name (``application/octet-stream`` when nothing is known)."""
    for candidate in (local_path, name):
        if extension(candidate) in CONTENT_TYPES:
            return CONTENT_TYPES[extension(candidate)]
    guessed = content_type_for_name(name)
    return guessed if guessed != DEFAULT_CONTENT_TYPE else content_type_for_name(local_path)


class Storage:
    """Base class of storage backends (see the module docstring).

    Subclasses set ``can_read``/``can_write`` and the messages used when a
    direction is not supported, extend ``check`` with their own rules, and
    implement ``download``/``upload``/``delete``.

    @ivar settings: the settings object (attributes such as
        ``FILE_STORAGE_ROOTS``).
    @ivar reactor: the reactor to run on; ``None`` for a check-only instance.
    """

    #: Whether this backend can be a job's source / destination.
    can_read = True
    can_write = True
    #: Messages for an unsupported direction (``{uri}`` is the redacted URI).
    cannot_read_message = "{uri}: this storage backend cannot be read from"
    cannot_write_message = "{uri}: this storage backend cannot be written to"

    def __init__(self, settings, reactor):
        self.settings = settings
        self.reactor = reactor

    def check(self, uri, for_write, field=None):
        """Refuse, without I/O, a URI this backend cannot read or write.

        @param uri: a URI string or ``MediaURI``.
        @param for_write: ``True`` for a destination, ``False`` for a source.
        @param field: the job key holding the URI, used in the error.
        @raise InvalidJobSpec: with ``field`` and a message for a person.
        """
        muri = as_media_uri(uri, field)
        if for_write and not self.can_write:
            raise InvalidURI(self.cannot_write_message.format(uri=redact_uri(muri)), field)
        if not for_write and not self.can_read:
            raise InvalidURI(self.cannot_read_message.format(uri=redact_uri(muri)), field)

    async def download(self, uri, local_path):
        """Copy the source ``uri`` to ``local_path``; return the byte count."""
        self._check_at_use(uri, for_write=False)
        raise NotImplementedError(f"{type(self).__name__}.download")

    async def upload(self, local_path, uri):
        """Store ``local_path`` at ``uri``; return the byte count."""
        self._check_at_use(uri, for_write=True)
        raise NotImplementedError(f"{type(self).__name__}.upload")

    async def delete(self, uri):
        """Delete the object stored at ``uri``: ``True`` when deleted,
        ``False`` when there was none (see the module docstring)."""
        self._check_at_use(uri, for_write=True)
        raise NotImplementedError(f"{type(self).__name__}.delete")

    def _max_source_bytes(self):
        """``settings.MAX_SOURCE_BYTES`` (the default when unset): the size
        cap every backend's ``download`` enforces."""
        return int(getattr(self.settings, "MAX_SOURCE_BYTES", defaults.MAX_SOURCE_BYTES))

    def _check_at_use(self, uri, for_write):
        """``check`` at transfer time: a refusal is a ``PermanentJobError``
        (the job cannot succeed on another attempt). Returns the MediaURI."""
        try:
            muri = as_media_uri(uri)
            self.check(muri, for_write)
        except InvalidJobSpec as e:
            raise PermanentJobError(e.message) from None
        return muri
