"""A worker's scratch space: one directory per attempt under SCRATCH_DIR.

Each attempt downloads, encodes and uploads in ``SCRATCH_DIR/<job_id>-<attempt>``,
removed when the attempt ends (``ScratchSpace.remove``); directories left by
a worker that died mid-job are swept at the next start (``sweep``).

Room: a worker whose scratch directory has less than SCRATCH_MIN_FREE_BYTES
free takes no job (``short``; it checks again every SCRATCH_RECHECK_S), so
the jobs wait for a worker with room. A job taken when the space left is
short of SCRATCH_MIN_FREE_BYTES + the source's size (known for file://
sources; ``check_job``), or whose download or ffmpeg runs out of space
(ENOSPC), raises ``NoScratchSpace``; what the worker then does (release the
job to another worker) is ``nommer.workerd.outcome``'s.

The arithmetic is pure (``scratch_needed_bytes``); statvfs and stat run in a
thread.

Privacy: SCRATCH_DIR and every attempt's directory are mode 0700, whatever
the umask (``PRIVATE_MODE``): no other local user lists or reaches a job's
files. An existing SCRATCH_DIR of the worker's user is closed to 0700 too,
unless it is a shared sticky directory (/tmp), which is only warned about.
With a root worker the sandbox makes an attempt's directory the sandbox
user's (``nommer.workerd.sandbox``); its parent staying root's 0700 keeps
that user's other processes on the host out of it.
"""

import os
import shutil
import stat

from twisted.internet import threads
from twisted.logger import Logger

from nommer.core.errors import NoSuchJob
from nommer.core.paths import is_within
from nommer.core.uri import as_media_uri
from nommer.workerd.chunks.source_cache import SourceCache
from nommer.workerd.nommers.base import NoScratchSpace

#: A worker short of scratch space looks again this often, seconds.
SCRATCH_RECHECK_S = 30.0

#: Mode of SCRATCH_DIR and of each attempt's directory: the worker's alone.
PRIVATE_MODE = 0o700


def make_private_dir(path):
    """Create the directory ``path`` (its missing parents as usual) mode
    ``PRIVATE_MODE``, whatever the umask. Returns True if it was made."""
    try:
        os.makedirs(path, mode=PRIVATE_MODE)
    except FileExistsError:
        return False
    os.chmod(path, PRIVATE_MODE)
    return True


def close_dir(path):
    """Make the existing directory ``path`` mode ``PRIVATE_MODE`` if it is
    the worker's user's and not a shared sticky directory (/tmp). Returns
    its mode afterwards (None if it cannot be told)."""
    try:
        st = os.stat(path)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077 and not mode & stat.S_ISVTX and st.st_uid == os.geteuid():
            os.chmod(path, PRIVATE_MODE)
            return PRIVATE_MODE
        return mode
    except OSError:
        return None


def scratch_needed_bytes(free_bytes, min_free_bytes, source_bytes=None):
    """Bytes of free scratch space a job needs (``min_free_bytes`` + the
    source's size when known) if ``free_bytes`` is short of it, else None.
    ``free_bytes`` None (unknown): None."""
    needed = int(min_free_bytes) + int(source_bytes or 0)
    if free_bytes is None or free_bytes >= needed:
        return None
    return needed


def free_bytes(path):
    """Free bytes (for an unprivileged user) of the file system of ``path``,
    created if missing; None if it cannot be told. Blocking (statvfs): run it
    in a thread."""
    try:
        make_private_dir(path)
        return shutil.disk_usage(path).free
    except OSError:
        return None


def file_source_bytes(uri, roots):
    """Size of a file:// source under one of ``roots`` (FILE_STORAGE_ROOTS;
    so a job's details never tell the size of a file outside them), None for
    other schemes or when it cannot be told (the download then says why).
    Blocking (stat)."""
    try:
        muri = as_media_uri(uri)
        if muri.scheme != "file":
            return None
        real = os.path.realpath(muri.path)
        roots = [os.path.realpath(r) for r in (roots if roots is not None else [os.getcwd()])]
        if not any(is_within(real, r) for r in roots):
            return None
        st = os.stat(real)
    except Exception:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class ScratchSpace:
    """The scratch directory of worker ``worker_id`` (``settings``:
    SCRATCH_DIR, SCRATCH_MIN_FREE_BYTES, FILE_STORAGE_ROOTS)."""

    log = Logger()

    def __init__(self, settings, worker_id):
        self.settings = settings
        self.worker_id = worker_id
        #: The sources chunk tasks share on this machine (``chunks.source_cache``).
        self.sources = SourceCache(settings.SCRATCH_DIR)
        self._low_logged = False
        self._root_closed = False

    def make(self, job_id, attempt):
        """Create and return the directory of attempt ``attempt`` of ``job_id``,
        mode 0700 (also when it exists already), in a SCRATCH_DIR made or
        closed to 0700 (see the module docstring)."""
        root = self.settings.SCRATCH_DIR
        if not self._root_closed:
            self._root_closed = True
            if not make_private_dir(root):
                mode = close_dir(root)
                if mode is not None and mode & 0o077:
                    self.log.warn("worker {worker_id}: SCRATCH_DIR {root} is mode {mode:o}, open to "
                                  "other local users (a shared directory is left as it is); each job's "
                                  "directory in it is 0700", worker_id=self.worker_id, root=root,
                                  mode=mode)
        path = os.path.join(root, f"{job_id}-{attempt}")
        if not make_private_dir(path):
            os.chmod(path, PRIVATE_MODE)
        return path

    async def remove(self, path):
        """Remove an attempt's directory and all in it (errors ignored)."""
        await threads.deferToThread(shutil.rmtree, path, True)

    async def free_bytes(self, path):
        """Free bytes where ``path`` is (None if unknown)."""
        return await threads.deferToThread(free_bytes, path)

    async def short(self):
        """None when the scratch directory has SCRATCH_MIN_FREE_BYTES free
        (or it cannot be told); else (free, needed) bytes, logged once per
        spell of low space."""
        s = self.settings
        free = await self.free_bytes(s.SCRATCH_DIR)
        needed = scratch_needed_bytes(free, s.SCRATCH_MIN_FREE_BYTES)
        if needed is None:
            if self._low_logged:
                self.log.info("worker {worker_id}: scratch space back ({free} bytes free); taking jobs",
                              worker_id=self.worker_id, free=free)
            self._low_logged = False
            return None
        if not self._low_logged:
            self._low_logged = True
            self.log.warn("worker {worker_id}: scratch space low in {root}: {free} bytes free, "
                          "{needed} needed (SCRATCH_MIN_FREE_BYTES); taking no job until there is room",
                          worker_id=self.worker_id, root=s.SCRATCH_DIR, free=free, needed=needed)
        return free, needed

    async def check_job(self, source_path, path):
        """Raise NoScratchSpace if ``path`` (an attempt's directory) has less
        than SCRATCH_MIN_FREE_BYTES + the source's size (file:// sources) free."""
        s = self.settings
        source_bytes = await threads.deferToThread(file_source_bytes, source_path,
                                                   getattr(s, "FILE_STORAGE_ROOTS", None))
        free = await self.free_bytes(path)
        needed = scratch_needed_bytes(free, s.SCRATCH_MIN_FREE_BYTES, source_bytes)
        if needed is not None:
            source = f" + the source's {source_bytes}" if source_bytes else ""
            raise NoScratchSpace(f"{free} bytes free, {needed} needed "
                                 f"(SCRATCH_MIN_FREE_BYTES {s.SCRATCH_MIN_FREE_BYTES}{source})")

    async def sweep(self, store, in_use, keep_logging=lambda: True):
        """Remove scratch directories left by workers that died mid-job
        (SIGKILL, power loss): ``SCRATCH_DIR/<job_id>-<attempt>`` whose job
        is gone, final, or on a later attempt (a chunk's,
        ``<job_id>-c<index>-<attempt>``: on a later attempt of that chunk). The directory of an attempt
        still in progress is left alone (its worker may be alive; if not, the
        job's next attempt makes it stale for the next sweep), as is one whose
        job id is in ``in_use`` (this worker's running jobs). Returns how many
        were removed; never raises (a store failure ends the sweep, logged
        if ``keep_logging()``)."""
        root = self.settings.SCRATCH_DIR
        removed = 0
        try:
            names = await threads.deferToThread(os.listdir, root)
        except OSError:
            return 0  # no scratch dir yet
        for name in names:
            job_id, sep, attempt = name.rpartition("-")
            if not sep or not attempt.isdigit() or job_id in in_use:
                continue
            job_id, chunk_sep, chunk = job_id.rpartition("-c")
            if not (chunk_sep and chunk.isdigit()):
                job_id, chunk = name.rpartition("-")[0], None
            elif f"{job_id}@chunk{chunk}" in in_use:
                continue
            try:
                job = await store.get(job_id)
            except NoSuchJob:
                stale = True
            except Exception as e:
                if keep_logging():
                    self.log.warn("scratch sweep stopped: {error}", error=str(e))
                return removed
            else:
                # "<", not "!=": a worker taking the job stores attempt N, then
                # makes its directory N; a sweep that read N-1 must keep it.
                if chunk is None:
                    stale = job.is_final or int(attempt) < job.attempts
                else:  # a chunk's directory: <job_id>-c<index>-<chunk attempt>
                    chunks = job.chunks or ()
                    taken = chunks[int(chunk)].get("attempts") or 0 if int(chunk) < len(chunks) else None
                    stale = job.is_final or taken is None or int(attempt) < taken
            if stale:
                await self.remove(os.path.join(root, name))
                removed += 1
        try:
            removed += await self.sources.sweep(store)
        except Exception as e:
            if keep_logging():
                self.log.warn("sweep of cached chunk sources stopped: {error}", error=str(e))
        if removed:
            self.log.info("removed {n} stale scratch director{ies} from {root}", n=removed,
                          ies="y" if removed == 1 else "ies", root=root)
        return removed
