"""BaseNommer: what every nommer class offers feederd and workerd.

feederd calls ``validate_options(options, settings, dest_path=...)`` at
submit (no I/O); workerd builds ``Nommer(job, context)`` and awaits ``run()``.

``context`` is the worker's per-job handle. Its attributes and methods:

* ``reactor``, ``settings`` (UPPER_CASE attributes), ``scratch_dir`` (str, an
  existing per-job directory the worker deletes afterwards), ``log`` (a
  ``twisted.logger.Logger``; events always carry ``job_id``);
* ``await set_state(JobState.ENCODING | UPLOADING)``, raising
  ``JobCanceled`` if the job was canceled meanwhile (the job is DOWNLOADING
  when ``run()`` starts: the worker stored it when it took the job);
* ``report_progress(percent)`` (float 0..100, not async, throttled by the
  worker);
* ``await download_source(local_path)``: fetches the job's own source (its
  sealed credentials unsealed by the worker) into ``local_path`` (may raise
  ``SourceNotFound``, ``NoScratchSpace``, ``TransientJobError``,
  ``PermanentJobError``, ``JobCanceled``); ``await
  upload_result(local_path)``: stores UPLOADING, then the file at the job's
  own destination. A nommer fetches and stores nothing else (the earlier
  contract's ``download(uri, local_path)`` / ``upload(local_path, uri)`` are
  gone).
* ``register_cancel(callback)``: ``callback()`` is called when the job is
  canceled or the worker must stop now.

``run()`` never sets FINISHED or ERROR: it returns the output info, or
raises ``PermanentJobError`` / ``TransientJobError`` / ``JobCanceled`` and
the worker records the outcome.
"""

import os

from nommer.core.errors import JobCanceled, TransientJobError

#: What the kernel says for ENOSPC and EDQUOT (in storage errors and ffmpeg's stderr).
NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded")


def says_no_space(text):
    """True if ``text`` (an error message, ffmpeg's stderr) reports a full disk."""
    return any(marker in text for marker in NO_SPACE_MARKERS)


class NoScratchSpace(TransientJobError):
    """This worker's scratch directory is too full for the job (short before
    it starts, or ENOSPC while downloading or encoding). Not the job's fault
    and not this attempt's: the worker releases the job at once to another
    worker (PENDING, message visible again), neither retrying it here nor
    failing it."""


class ChunksQueued(Exception):
    """Not an error: the attempt planned a chunked job (``Job.chunks``) and
    queued its chunk tasks; the job stays ENCODING while workers encode the
    chunks, and its message is deleted (the last chunk queues it again for
    the merge: ``nommer.workerd.chunk_attempt``)."""


class BaseNommer:
    """Subclasses: validate options at submit (feederd) and run a job (workerd).

    :param job: ``nommer.core.job.Job``.
    :param context: the worker's job context (see the module docstring).
        ``__init__`` registers ``self.cancel`` with ``context.register_cancel``.
    """

    def __init__(self, job, context):
        self.job = job
        self.context = context
        self.reactor = context.reactor
        self.settings = context.settings
        self.log = context.log
        self.canceled = False
        context.register_cancel(self.cancel)

    @classmethod
    def validate_options(cls, options, settings, *, dest_path=None):
        """Return the normalized options (JSON-able) or raise
        ``InvalidJobSpec(field, message)``, field like
        ``job_options.options[1].outfile_options[3]``. Called by feederd at
        submit: no I/O.

        :param options: the job's ``job_options.options`` as submitted (any
            JSON value: check everything).
        :param settings: feederd's settings object.
        :param dest_path: the job's destination URI as the caller submitted
            it: a ``str`` that already passed ``check_destination`` (it
            parses, and a storage backend can write it). It may hold the
            caller's credentials (a password, a presigned URL's signature):
            never log it or put it in a message as it is
            (``nommer.core.uri.redact_uri``); parse it with
            ``nommer.core.uri.parse_uri``. feederd always gives it at submit;
            it is None when options are checked without a job (the worker
            checking its job's options again, presets, tests): skip what needs
            it then.
        :raise InvalidJobSpec: the options are not valid, or cannot give an
            output for ``dest_path`` (FFmpegNommer: no ``-f`` and no muxer
            known for the destination's extension).
        """
        raise NotImplementedError

    async def run(self):
        """Run the job; return the output info (dict, JSON-able). Raises
        ``PermanentJobError``, ``TransientJobError`` or ``JobCanceled``."""
        raise NotImplementedError

    # -- cancellation -------------------------------------------------------------

    def cancel(self):
        """Called by the worker when the job must stop now: marks the nommer
        canceled and calls ``on_cancel()`` once. ``run()`` then raises
        ``JobCanceled`` at its next step."""
        if self.canceled:
            return
        self.canceled = True
        self.log.info("job {job_id}: stop requested, stopping the nommer",
                      job_id=self.job.job_id)
        self.on_cancel()

    def on_cancel(self):
        """Subclass hook: stop whatever runs now (e.g. terminate ffmpeg)."""

    def check_canceled(self):
        """Raise ``JobCanceled`` if ``cancel()`` was called."""
        if self.canceled:
            raise JobCanceled(f"job {self.job.job_id} was stopped while it ran")

    # -- helpers for subclasses ---------------------------------------------------

    def scratch_path(self, name):
        """Absolute path of ``name`` in the job's scratch directory."""
        return os.path.join(os.path.abspath(self.context.scratch_dir), name)

    async def set_state(self, state):
        """``context.set_state`` with cancellation checks before and after."""
        self.check_canceled()
        await self.context.set_state(state)
        self.check_canceled()

    async def download_source(self, local_name="source"):
        """``context.download_source`` into the scratch file ``local_name``,
        between cancellation checks; return the local path (str)."""
        self.check_canceled()
        local = self.scratch_path(local_name)
        await self.context.download_source(local)
        self.check_canceled()
        return local

    async def upload_result(self, local_path):
        """``context.upload_result(local_path)`` (UPLOADING, then the
        upload), between cancellation checks."""
        self.check_canceled()
        await self.context.upload_result(local_path)
        self.check_canceled()
