"""A nommer whose behaviour a test scripts through its options, to drive the
worker loop without ffmpeg. Options: ``{"script": NAME}`` with NAME one of
succeed, permanent, transient, badspec, block (runs until released or canceled)."""

from twisted.internet import defer

from nommer.core.errors import InvalidJobSpec, JobCanceled, PermanentJobError, TransientJobError
from nommer.core.states import JobState

#: job_id -> Deferred a blocked job waits on; fire it to let the job finish.
RELEASE = {}
#: job ids whose nommer saw a cancel callback.
CANCELED = []
#: job ids whose nommer ran.
RAN = []


class ScriptedNommer:

    def __init__(self, job, context):
        self.job = job
        self.ctx = context

    @classmethod
    def validate_options(cls, options, settings, dest_path=None):
        if not isinstance(options, dict) or options.get("script") not in {"succeed", "permanent", "transient", "block", "badspec"}:
            raise InvalidJobSpec("job_options.options.script", "unknown script")
        return options

    async def run(self):
        RAN.append(self.job.job_id)
        script = self.job.job_options["script"]
        if script == "block":
            # The gate and the cancel callback exist before ENCODING is stored: a test that waits
            # for ENCODING then fires RELEASE[job_id], or stops the worker, finds them (the store
            # answers before this coroutine resumes; a stop meanwhile ends set_state at once).
            gate = RELEASE.setdefault(self.job.job_id, defer.Deferred())

            def on_cancel():
                CANCELED.append(self.job.job_id)
                if not gate.called:
                    gate.errback(JobCanceled("stopped"))
            self.ctx.register_cancel(on_cancel)
        await self.ctx.set_state(JobState.ENCODING)
        self.ctx.report_progress(50)
        if script == "permanent":
            raise PermanentJobError("ffmpeg said: Unknown encoder 'nope'")
        if script == "badspec":
            raise InvalidJobSpec("dest_path", "file:///x is outside the allowed FILE_STORAGE_ROOTS")
        if script == "transient":
            raise TransientJobError("download timed out")
        if script == "block":
            await gate
        await self.ctx.set_state(JobState.UPLOADING)
        return {"size_bytes": 123}
