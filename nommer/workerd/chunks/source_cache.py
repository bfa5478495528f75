"""The source a chunked job's tasks read, fetched once per machine, not once per chunk.

Every chunk task reads the whole source (or its Matroska copy): a title cut
into 240 chunks would otherwise be downloaded 240 times. The chunks of a job
taken by the workers of one machine, and its merge, share one copy in
``SCRATCH_DIR/sources/<job_id>-<retries>/<name>``: the first task fetches it
(into a ``.part`` file, renamed when complete, so a task never reads half a
file; two fetching at once both finish and the last rename wins), the
others find it there.

A job's copy goes when its merge has stored the outputs, when a task finds
the job canceled (``drop``), and at a worker's start for every job that is
final, gone or retried since (``sweep``, beside the scratch sweep).
"""

import os
import shutil
import uuid

from twisted.internet import threads

from nommer.core.errors import NoSuchJob

#: Folder of SCRATCH_DIR holding the cached sources.
FOLDER = "sources"


def _entry(root, job_id, life):
    return os.path.join(root, f"{job_id}-{int(life)}")


class SourceCache:
    """The cached sources under ``scratch_root`` (SCRATCH_DIR)."""

    def __init__(self, scratch_root):
        self.root = os.path.join(scratch_root, FOLDER)

    @staticmethod
    def _in_thread(f, *args):
        return threads.deferToThread(f, *args)

    async def fetch(self, job_id, life, name, download):
        """The local path of ``name`` for life ``life`` (``Job.retries``) of
        job ``job_id``: the cached copy, or, the first time, what
        ``await download(local_path)`` writes there. ``name`` is a plain file
        name (ValueError otherwise); ``download``'s errors are raised (and
        its partial file removed)."""
        if not name or name != os.path.basename(name) or name.startswith("."):
            raise ValueError(f"not a plain file name: {name!r}")
        entry = _entry(self.root, job_id, life)
        final = os.path.join(entry, name)
        if await self._in_thread(os.path.isfile, final):
            return final
        await self._in_thread(lambda: os.makedirs(entry, mode=0o700, exist_ok=True))
        part = f"{final}.part-{uuid.uuid4().hex}"
        try:
            await download(part)
            await self._in_thread(os.replace, part, final)
        finally:
            await self._in_thread(_remove_quietly, part)
        return final

    async def drop(self, job_id):
        """Remove every cached copy of ``job_id`` (any life); how many went."""
        def drop():
            gone = 0
            for name in _listing(self.root):
                if name.rpartition("-")[0] == job_id:
                    shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
                    gone += 1
            return gone
        return await self._in_thread(drop)

    async def sweep(self, store):
        """Remove the copies of jobs that are final, gone, or in another
        life than the stored job's; returns how many went. A store failure
        ends the sweep (raised)."""
        gone = 0
        for name in await self._in_thread(_listing, self.root):
            job_id, sep, life = name.rpartition("-")
            if not sep or not life.isdigit():
                continue
            try:
                job = await store.get(job_id)
                stale = job.is_final or job.retries != int(life)
            except NoSuchJob:
                stale = True
            if stale:
                await self._in_thread(shutil.rmtree, os.path.join(self.root, name), True)
                gone += 1
        return gone


def _listing(root):
    try:
        return os.listdir(root)
    except OSError:
        return []


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass
