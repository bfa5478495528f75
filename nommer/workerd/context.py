"""What a nommer may do with the job it runs: ``JobContext``.

One ``JobContext`` per attempt (a job taken by this worker): it stores the
job's in-progress states and progress, fetches the job's source and stores
its result (``download_source`` / ``upload_result``: the job's own URIs, with
the credentials feederd sealed unsealed here only, parsed once and handed to
the storage backend), and stops the running nommer when the job must stop
(``stop(reason)``, first reason wins; the nommer registered its
``register_cancel`` callbacks).

Ownership: every write a worker makes to a job it runs is fenced: it is
refused (``NotOwner``) unless the stored job still names this worker and
this attempt. A worker that lost its lease (it stalled, the queue was
unreachable) and has not noticed yet can thus neither overwrite nor finish,
release or fail a job another worker now runs; it stops and leaves the
message alone.
"""

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.errors import JobCanceled, TransientJobError
from nommer.core.events import EventKind, JobEvent
from nommer.core.secrets import unseal_uri
from nommer.core.states import JobState
from nommer.core.storage import get_storage
from nommer.core.uri import as_media_uri, join_under
from nommer.workerd.nommers.base import NoScratchSpace, says_no_space


class NotOwner(Exception):
    """The stored job is run by another worker or attempt now: a write by
    this one is refused (see the module docstring)."""


def owner_check(worker_id, attempt):
    """An ``expect`` for ``JobLedger`` writes: raises ``NotOwner`` unless the
    stored job is attempt ``attempt`` on worker ``worker_id``."""
    def expect(job):
        if job.worker_id != worker_id or job.attempts != attempt:
            raise NotOwner(f"job {job.job_id} is attempt {job.attempts} on {job.worker_id}, "
                           f"not attempt {attempt} on {worker_id}")
    return expect


#: Why a running job was stopped from outside.
CANCELED = "canceled"        # the job was canceled (stored state final)
LEASE_LOST = "lease lost"    # another worker holds the job now
SHUTDOWN = "shutdown"        # cold shutdown: release the job to the queue
SPOT_INTERRUPTION = "spot interruption"  # spot notice: release the job at once, progress kept


class JobContext:
    """What a nommer may do (see ``nommer.workerd.nommers.base``)."""

    def __init__(self, worker, job, scratch_dir):
        self.worker = worker
        self.job = job
        self.reactor = worker.reactor
        self.settings = worker.settings
        self.scratch_dir = scratch_dir
        self.log = Logger(namespace=f"nommer.job.{job.job_id[:12]}")
        self.stop_reason = None
        self.progress = None  # last percent reported (written or not yet)
        self._cancel_callbacks = []
        self._last_progress_write = None
        self._progress_write = None
        self._event_write = None  # the LEASE_LOST event being recorded (JobLedger.record_event never fails)

    def owned(self, stored):
        """``expect`` fencing every write of this attempt (see the module
        docstring): raises NotOwner unless ``stored`` is still ours."""
        owner_check(self.worker.worker_id, self.job.attempts)(stored)

    async def set_state(self, state):
        """Store an in-progress state. Raises JobCanceled if the job was
        canceled or the job was stopped from outside (or is now another
        worker's), TransientJobError if the store or queue failed."""
        self._check()
        try:
            await self.worker.ledger.set_state_unless_final(
                self.job.job_id, state, None, expect=self.owned, worker_id=self.worker.worker_id,
                heartbeat_at=self.reactor.seconds())
        except JobCanceled:
            self.stop(CANCELED)
            raise
        except NotOwner as exc:
            self.stop(LEASE_LOST)
            raise JobCanceled(str(exc)) from exc
        except Exception as exc:
            # The store or queue failed, not the nommer: retry the job later.
            raise TransientJobError(f"could not store {JobState(state).value}: {exc!r}") from exc
        self._check()

    def report_progress(self, percent):
        """Record progress (0..100); written at most every PROGRESS_WRITE_INTERVAL_S."""
        self.progress = max(0.0, min(100.0, float(percent)))
        now = self.reactor.seconds()
        last = self._last_progress_write
        if last is not None and now - last < self.settings.PROGRESS_WRITE_INTERVAL_S:
            return
        if self._progress_write is not None:
            return
        self._last_progress_write = now
        d = self._progress_write = defer.Deferred.fromCoroutine(
            self.worker.ledger.update(self.job.job_id, expect=self.owned, progress=self.progress))

        def done(result):
            self._progress_write = None
            if isinstance(result, Failure):
                if result.check(JobCanceled):
                    self.stop(CANCELED)
                elif result.check(NotOwner):
                    self.stop(LEASE_LOST)
                else:
                    self.log.failure("writing progress of job {job_id} failed", result, job_id=self.job.job_id)
        d.addBoth(done)

    # -- the job's own source and destination ------------------------------------

    def job_uri(self, field, stored=None):
        """The job's own URI in ``field`` as submitted: the stored (redacted)
        URI, or the original when feederd sealed its credentials; parsed
        (``MediaURI``). ``field`` is ``"source_path"``, ``"dest_path"``, or the
        key of a URI inside the job's options (``"outputs[2].image_path"``),
        whose stored value is then given as ``stored``.

        @raise SealedCredentialsError: (permanent) they cannot be opened here.
        """
        sealed = (self.job.sealed_credentials or {}).get(field)
        value = getattr(self.job, field) if stored is None else stored
        return as_media_uri(unseal_uri(value, sealed, self.settings))

    async def download_source(self, local_path):
        """Fetch the job's source into ``local_path``; return the byte count.
        No state is written: the worker stored DOWNLOADING when it took the
        job.

        @raise JobCanceled: the job was stopped before or while fetching.
        @raise SourceNotFound: there is no such source.
        @raise NoScratchSpace: the scratch disk filled up (the worker hands
            the job to another worker).
        @raise TransientJobError: another attempt may succeed.
        @raise PermanentJobError: it cannot (``SealedCredentialsError``...).
        """
        return await self.download_input("source_path", None, local_path)

    async def download_input(self, field, stored, local_path):
        """Fetch another input of the job (``job_uri(field, stored)``, e.g.
        an mp4 output's ``image_path``) into ``local_path``; return the byte
        count. Same errors as ``download_source``."""
        self._check()
        uri = self.job_uri(field, stored)
        try:
            size = await get_storage(uri, self.settings, self.reactor).download(uri, local_path)
        except TransientJobError as e:
            if says_no_space(e.message) and not isinstance(e, NoScratchSpace):
                raise NoScratchSpace(f"downloading the {field} failed: {e.message}") from e
            raise
        self._check()
        return size

    async def upload_result(self, local_path):
        """Store UPLOADING, then ``local_path`` at the job's destination;
        return the byte count.

        @raise JobCanceled: the job was stopped before or while storing.
        @raise TransientJobError: the state could not be stored, or another
            attempt may succeed.
        @raise PermanentJobError: the upload cannot succeed.
        """
        await self.set_state(JobState.UPLOADING)
        uri = self.job_uri("dest_path")
        size = await get_storage(uri, self.settings, self.reactor).upload(local_path, uri)
        self._check()
        return size

    async def upload_file(self, local_path, relative_path=None):
        """Store ``local_path`` under the job's destination prefix at
        ``relative_path`` (``/``-separated, ``nommer.core.uri.join_under``),
        or at the destination itself when ``relative_path`` is None; return
        the stored URI (a ``MediaURI``: its ``str()`` hides the password;
        log it with ``redact_uri``). No state is written (the nommer stored
        UPLOADING). Errors as ``upload_result``."""
        self._check()
        uri = self.job_uri("dest_path")
        if relative_path is not None:
            uri = as_media_uri(join_under(uri, relative_path))
        await get_storage(uri, self.settings, self.reactor).upload(local_path, uri)
        self._check()
        return uri

    async def delete_stored(self, uri):
        """Delete what ``upload_file`` stored at ``uri`` (a failed job's
        files); True if it was there. Storage errors are raised."""
        muri = as_media_uri(uri)
        return await get_storage(muri, self.settings, self.reactor).delete(muri)

    def register_cancel(self, callback):
        """``callback()`` is called once if the job must stop now."""
        if self.stop_reason is not None:
            callback()
        else:
            self._cancel_callbacks.append(callback)

    def stop(self, reason):
        """Stop the running nommer (first reason wins)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.log.info("stopping job {job_id}: {reason}", job_id=self.job.job_id, reason=reason)
        if reason == LEASE_LOST:
            self._record_lease_lost()
        for callback in self._cancel_callbacks:
            try:
                callback()
            except Exception:
                self.log.failure("cancel callback failed for job {job_id}", job_id=self.job.job_id)

    def _record_lease_lost(self):
        """Record the job's LEASE_LOST event (in the background: ``stop`` is
        synchronous; ``wait_event_written`` waits for it)."""
        worker_id = self.worker.worker_id
        event = JobEvent(job_id=self.job.job_id, at=self.reactor.seconds(), kind=EventKind.LEASE_LOST,
                         worker_id=worker_id, attempt=self.job.attempts,
                         details=f"worker {worker_id} lost the lease of attempt {self.job.attempts}; "
                                 "another worker may take the job")
        self._event_write = defer.Deferred.fromCoroutine(self.worker.ledger.record_event(event))

    async def wait_event_written(self):
        """Wait until the LEASE_LOST event (if any) is recorded."""
        if self._event_write is not None:
            await self._event_write

    def _check(self):
        if self.stop_reason is not None:
            raise JobCanceled(f"job {self.job.job_id} stopped: {self.stop_reason}")

    async def wait_progress_written(self):
        if self._progress_write is not None:
            await self._progress_write
