# -*- test-case-name: tests.core.test_storage_file -*-
"""``file://`` storage: local paths, confined to ``FILE_STORAGE_ROOTS``.

URIs are ``file:///abs/path`` or ``file://localhost/abs/path`` (percent-encode
``?`` as ``%3F`` and ``#`` as ``%23`` in file names); any other host, a user,
a password, a port or a query is refused.

Confinement: a source is allowed when the real path of the file (symlinks and
``..`` resolved) lies under one of ``settings.FILE_STORAGE_ROOTS``; a
destination when the real path of its parent directory does (the parent may
not exist yet: it is created at upload). So ``file:///etc/passwd``,
``file:///srv/media/../../etc/passwd`` and a symlink inside a root pointing out
of it are all refused, at submit (``check`` raises ``InvalidJobSpec``) and
again on the worker before the transfer (``PermanentJobError``). The file
itself is opened with ``O_NOFOLLOW``, so a symlink swapped in after the check
is not followed; a local user able to swap *directories* inside a root between
the check and the open is outside what this guards against.

A source larger than ``settings.MAX_SOURCE_BYTES`` is refused
(``PermanentJobError``: the job ends in ERROR), also one that grows past it
while it is copied.

Copies run in the reactor's thread pool. Uploads write a temporary file next
to the destination and ``os.replace`` it into place, so a reader never sees a
half-written file and a re-run (at-least-once delivery) just replaces it.

``delete`` confines like a destination: the real path of the file's directory
must lie inside a root; that directory is opened without following a symlink
and checked to be the one resolved, and the name is unlinked in it (a symlink
at the name is removed, never its target). Directories, even emptied ones,
are left in place.
"""

import errno
import os
import secrets
import shutil
import stat

from twisted.internet import threads
from twisted.logger import Logger

from nommer.conf.loader import DEFAULT_MEDIA_DIR
from nommer.core.errors import PermanentJobError, SourceNotFound, TransientJobError
from nommer.core.paths import is_within
from nommer.core.storage.base import Storage
from nommer.core.uri import InvalidURI, as_media_uri, redact_uri

__all__ = ["FileStorage"]

_COPY_BUFFER_BYTES = 1 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileStorage(Storage):
    """Read and write local files under ``settings.FILE_STORAGE_ROOTS``."""

    log = Logger()

    def _roots(self):
        roots = getattr(self.settings, "FILE_STORAGE_ROOTS", None)
        if roots is None:  # the documented default (./media); the loader normally resolves it
            roots = [os.path.join(os.getcwd(), DEFAULT_MEDIA_DIR)]
        return [os.path.realpath(r) for r in roots]

    def check(self, uri, for_write, field=None):
        """See ``Storage.check``. Resolves symlinks (local syscalls, no other I/O)."""
        super().check(uri, for_write, field)
        self._resolve(as_media_uri(uri, field), for_write, field)

    def _resolve(self, muri, for_write, field=None):
        """The real path to open (source) or to create (destination).

        For a destination the parent directory is resolved and the file name
        appended, so an existing symlink at the destination is replaced, not
        followed.
        """
        shown = redact_uri(muri)
        if muri.host.lower() not in ("", "localhost"):
            raise InvalidURI(
                f"{shown}: file:// URIs name a local absolute path, "
                f"file:///path/to/file (the host {muri.host!r} is not allowed)", field)
        if muri.username is not None or muri.password is not None or muri.port is not None:
            raise InvalidURI(f"{shown}: file:// URIs take no user, password or port", field)
        if muri.query:
            raise InvalidURI(
                f"{shown}: file:// URIs take no query; percent-encode a '?' in a "
                "file name as %3F", field)
        path = muri.path
        name = os.path.basename(path)
        if name in ("", ".", ".."):
            raise InvalidURI(f"{shown} does not name a file", field)
        if for_write:
            real = os.path.join(os.path.realpath(os.path.dirname(path)), name)
            checked = os.path.dirname(real)
        else:
            real = checked = os.path.realpath(path)
        roots = self._roots()
        if not any(is_within(checked, root) for root in roots):
            raise InvalidURI(
                f"{shown} is outside the allowed FILE_STORAGE_ROOTS "
                f"({', '.join(roots) or 'none configured'})", field)
        return real

    def _in_thread(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def download(self, uri, local_path):
        """Copy the file at ``uri`` to ``local_path``; return the byte count.

        @raise SourceNotFound: no such file.
        @raise PermanentJobError: outside the roots, not a regular file,
            permission denied, or larger than MAX_SOURCE_BYTES.
        @raise TransientJobError: another I/O error (EIO, disk full...).
        """
        muri = self._check_at_use(uri, for_write=False)
        src = self._resolve(muri, False)
        max_bytes = self._max_source_bytes()
        size = await self._in_thread(_copy_in, src, local_path, redact_uri(muri), max_bytes)
        self.log.debug("Copied {uri} to {local_path} ({size} bytes)",
                       uri=redact_uri(muri), local_path=local_path, size=size)
        return size

    async def upload(self, local_path, uri):
        """Store ``local_path`` at ``uri`` atomically; return the byte count.

        Missing parent directories are created (they are inside a root).

        @raise PermanentJobError: outside the roots, ``local_path`` missing,
            the destination is a directory, or permission denied.
        @raise TransientJobError: another I/O error (EIO, disk full...).
        """
        muri = self._check_at_use(uri, for_write=True)
        dest = self._resolve(muri, True)
        size = await self._in_thread(_copy_out, local_path, dest, redact_uri(muri))
        self.log.debug("Stored {local_path} at {uri} ({size} bytes)",
                       uri=redact_uri(muri), local_path=local_path, size=size)
        return size

    async def delete(self, uri):
        """Delete the file at ``uri``: ``True`` when deleted, ``False`` when
        there was none (nor, maybe, its directory). See the module docstring.

        @raise PermanentJobError: outside the roots (nothing is touched), a
            directory at that name, permission denied.
        @raise TransientJobError: another I/O error (EIO...).
        """
        muri = self._check_at_use(uri, for_write=True)
        path = self._resolve(muri, True)
        deleted = await self._in_thread(_unlink, path, redact_uri(muri))
        self.log.debug("Deleted {uri}: {outcome}", uri=redact_uri(muri),
                       outcome="done" if deleted else "there was no such file")
        return deleted


# --- thread-side helpers (run in the reactor's thread pool) --------------------

def _io_error(e, what):
    """Map an OSError to the job error it means."""
    if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError,
                      FileExistsError)) or \
            e.errno in (errno.ELOOP, errno.EROFS, errno.ENAMETOOLONG):
        return PermanentJobError(f"{what}: {e.strerror}")
    return TransientJobError(f"{what}: {e.strerror or e}")


def _too_big(shown, size, max_bytes):
    return PermanentJobError(f"{shown} is {size} bytes, more than MAX_SOURCE_BYTES ({max_bytes})")


def _copy_in(src, local_path, shown, max_bytes=None):
    try:
        # O_NONBLOCK: opening a FIFO (or device) must not wait for a writer;
        # the regular-file check below then refuses it. Regular files ignore it.
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC)
    except FileNotFoundError:
        raise SourceNotFound(f"{shown} does not exist") from None
    except OSError as e:
        raise _io_error(e, f"cannot read {shown}") from None
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
    except OSError:
        regular = False
    if not regular:
        os.close(fd)
        raise PermanentJobError(f"{shown} is not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        os.close(fd)
        raise _too_big(shown, st.st_size, max_bytes)
    with os.fdopen(fd, "rb") as fsrc:
        try:
            with open(local_path, "wb") as fdst:
                if max_bytes is None:
                    shutil.copyfileobj(fsrc, fdst, _COPY_BUFFER_BYTES)
                    return fdst.tell()
                # The file may grow after the fstat: copy at most one byte more
                # than allowed, and refuse if that byte came.
                left = max_bytes + 1
                while left > 0:
                    chunk = fsrc.read(min(_COPY_BUFFER_BYTES, left))
                    if not chunk:
                        break
                    fdst.write(chunk)
                    left -= len(chunk)
                size = fdst.tell()
            if size > max_bytes:
                raise PermanentJobError(f"{shown} grew past MAX_SOURCE_BYTES ({max_bytes}) "
                                        "while it was copied")
            return size
        except BaseException as e:
            _unlink_quietly(local_path)
            if isinstance(e, OSError):
                raise _io_error(e, f"cannot copy {shown} to {local_path}") from None
            raise


def _copy_out(local_path, dest, shown):
    parent, name = os.path.split(dest)
    try:
        fsrc = open(local_path, "rb")
    except OSError as e:
        raise PermanentJobError(f"cannot read the file to store at {shown}: {e.strerror}") from None
    with fsrc:
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise _io_error(e, f"cannot create the directory for {shown}") from None
        if os.path.realpath(parent) != parent:
            raise PermanentJobError(f"the directory of {shown} changed while it was created")
        tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.part")
        try:
            # 0o666 minus the umask, like any new file; O_EXCL never follows a link.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
                         0o666)
        except OSError as e:
            raise _io_error(e, f"cannot write {shown}") from None
        try:
            with os.fdopen(fd, "wb") as fdst:
                shutil.copyfileobj(fsrc, fdst, _COPY_BUFFER_BYTES)
                size = fdst.tell()
                fdst.flush()
                os.fsync(fdst.fileno())
            os.replace(tmp, dest)
        except BaseException as e:
            _unlink_quietly(tmp)
            if isinstance(e, OSError):
                raise _io_error(e, f"cannot write {shown}") from None
            raise
    return size


def _opened_path(fd):
    """The path the kernel has for open directory ``fd`` (Linux), or None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _unlink(path, shown):
    parent, name = os.path.split(path)
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False  # no such directory: no such file
    except OSError as e:
        raise _io_error(e, f"cannot delete {shown}") from None
    try:
        opened = _opened_path(dir_fd)
        if (opened if opened is not None else os.path.realpath(parent)) != parent:
            raise PermanentJobError(f"cannot delete {shown}: its directory changed while it "
                                    "was opened")
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise _io_error(e, f"cannot delete {shown}") from None
        return True
    finally:
        os.close(dir_fd)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
