"""BaseNommer: what every nommer class offers feederd and workerd.

feederd calls ``validate_options(options, settings)`` at submit (no I/O);
workerd builds ``Nommer(job, context)`` and awaits ``run()``.

``context`` is the worker's per-job handle. Its attributes and methods:

* ``reactor``, ``settings`` (UPPER_CASE attributes), ``scratch_dir`` (str, an
  existing per-job directory the worker deletes afterwards), ``log`` (a
  ``twisted.logger.Logger``; events always carry ``job_id``);
* ``await set_state(JobState.DOWNLOADING | ENCODING | UPLOADING)``, raising
  ``JobCanceled`` if the job was canceled meanwhile;
* ``report_progress(percent)`` (float 0..100, not async, throttled by the
  worker);
* ``await download(source_uri, local_path)`` (may raise ``SourceNotFound`` /
  ``TransientJobError``) and ``await upload(local_path, dest_uri)``;
* ``register_cancel(callback)``: ``callback()`` is called when the job is
  canceled or the worker must stop now.

``run()`` never sets FINISHED or ERROR: it returns the output info, or
raises ``PermanentJobError`` / ``TransientJobError`` / ``JobCanceled`` and
the worker records the outcome.
"""

import os

from nommer.core.errors import JobCanceled, TransientJobError
from nommer.core.states import JobState

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
    def validate_options(cls, options, settings):
        """Return the normalized options (JSON-able) or raise
        ``InvalidJobSpec(field, message)``, field like
        ``job_options.options[1].outfile_options[3]``. Called by feederd at
        submit: no I/O."""
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
        """Set DOWNLOADING and fetch ``job.source_path`` into the scratch
        directory; return the local path (str)."""
        await self.set_state(JobState.DOWNLOADING)
        local = self.scratch_path(local_name)
        try:
            await self.context.download(self.job.source_path, local)
        except TransientJobError as e:
            if says_no_space(e.message) and not isinstance(e, NoScratchSpace):
                raise NoScratchSpace(f"downloading the source failed: {e.message}") from e
            raise
        self.check_canceled()
        return local

    async def upload_result(self, local_path):
        """Set UPLOADING and store ``local_path`` at ``job.dest_path``."""
        await self.set_state(JobState.UPLOADING)
        await self.context.upload(local_path, self.job.dest_path)
        self.check_canceled()
