"""Where a chunked job's checkpoints live: its work area.

Every finished chunk (its encoded tracks) and the remuxed source of a TS/PS/AVI
job are stored here, so a worker killed mid-job loses only the chunk it was
on, and the merge (on any worker) reads them back. Names are plain file names
the worker made (``encode.chunk_file_name``).

* A job whose destination is local (``file://``) keeps them in
  ``DATA_DIR/chunks/<job_id>/`` (the embedded default: every worker is on
  this machine).
* Any other destination (``s3://``, ``http(s)://``) keeps them in its own
  storage, beside the outputs: ``<dest prefix>.nommer-chunks/<job_id>/``
  (the prefix of a single-file destination is its directory), with the
  job's destination credentials.

``put``, ``get`` and ``delete`` raise what the storage backends raise
(``TransientJobError``, ``PermanentJobError``); ``delete`` of a missing
file is not an error.
"""

import os
import shutil

import attr
from twisted.internet import threads

from nommer.core.storage import get_storage
from nommer.core.uri import as_media_uri, join_under

#: Folder under a remote destination prefix that holds the work areas.
REMOTE_FOLDER = ".nommer-chunks"


def _copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".part"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return os.path.getsize(dst)


def _remove(path):
    try:
        os.remove(path)
        return True
    except FileNotFoundError:
        return False


def _remove_dir_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


class WorkArea:
    """The work area of one job (see the module docstring).

    ``dest_uri``: the job's destination as a ``MediaURI`` with its
    credentials (``JobContext.job_uri("dest_path")``)."""

    def __init__(self, job_id, dest_uri, settings, reactor):
        self.job_id = job_id
        self.settings = settings
        self.reactor = reactor
        self.dest = dest_uri
        if dest_uri.scheme == "file":
            self.local_dir = os.path.abspath(os.path.join(settings.DATA_DIR, "chunks", job_id))
            self.prefix = None
        else:
            self.local_dir = None
            path = dest_uri.path if dest_uri.path.endswith("/") else dest_uri.path.rsplit("/", 1)[0] + "/"
            raw = dest_uri.encoded_path
            raw = raw if raw.endswith("/") else raw.rsplit("/", 1)[0] + "/"
            self.prefix = attr.evolve(dest_uri, path=path, raw_path=raw)

    def describe(self):
        """Where the work area is, for logs (no credentials)."""
        if self.local_dir:
            return self.local_dir
        return f"{self.prefix}{REMOTE_FOLDER}/{self.job_id}/"

    def _uri(self, name):
        # The folder is set on the prefix: join_under refuses a relative path
        # part starting with '.', which names made by callers must not have.
        sub = f"{REMOTE_FOLDER}/{self.job_id}/"
        area = attr.evolve(self.prefix, path=self.prefix.path + sub, raw_path=self.prefix.raw_path + sub)
        return as_media_uri(join_under(area, name))

    def _in_thread(self, f, *args):
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def put(self, local_path, name):
        """Store ``local_path`` as ``name``; returns its size in bytes."""
        if self.local_dir:
            return await self._in_thread(_copy, local_path, os.path.join(self.local_dir, name))
        uri = self._uri(name)
        await get_storage(uri, self.settings, self.reactor).upload(local_path, uri)
        return os.path.getsize(local_path)

    async def get(self, name, local_path):
        """Fetch ``name`` into ``local_path``; returns its size in bytes."""
        if self.local_dir:
            return await self._in_thread(_copy, os.path.join(self.local_dir, name), local_path)
        uri = self._uri(name)
        return await get_storage(uri, self.settings, self.reactor).download(uri, local_path)

    async def delete(self, names):
        """Remove each of ``names`` (missing ones ignored); returns how many were there."""
        removed = 0
        for name in names:
            if self.local_dir:
                removed += bool(await self._in_thread(_remove, os.path.join(self.local_dir, name)))
            else:
                uri = self._uri(name)
                removed += bool(await get_storage(uri, self.settings, self.reactor).delete(uri))
        if self.local_dir:
            await self._in_thread(_remove_dir_if_empty, self.local_dir)
        return removed


def stored_names(chunks, mezzanine=None):
    """Every work-area file name a plan's chunks list (``files`` of each
    chunk, ``nommer.core.chunking``), plus ``mezzanine`` if given."""
    names = [f["name"] for c in chunks or () for f in (c.get("files") or {}).values()]
    return names + ([mezzanine] if mezzanine else [])
