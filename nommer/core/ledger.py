"""Every job state change goes through here: stored first (refused if the
transition table forbids it), then announced on the state-change queue, from
which feederd's notifier sends webhooks. Both daemons use it, so a change made
by a worker, the API (cancel) or the reaper (ABANDONED, dead letters) is
announced the same way.
"""

import json

from twisted.logger import Logger

from nommer.core.errors import JobCanceled
from nommer.core.states import IllegalTransition, JobState


def state_change_body(job):
    """The state-change message: JSON ``{"job_id", "job_state",
    "job_state_details", "at"}`` (``at`` = epoch seconds of the change)."""
    return json.dumps({"job_id": job.job_id, "job_state": job.job_state.value,
                       "job_state_details": job.job_state_details, "at": job.updated_at})


class JobLedger:
    log = Logger()

    def __init__(self, store, queue, settings):
        self.store = store
        self.queue = queue
        self.settings = settings

    async def submit(self, job):
        """Store a new PENDING job and queue it for a worker. Returns the Job."""
        job = await self.store.create(job)
        await self.queue.send(self.settings.NEW_JOB_QUEUE_NAME, job.job_id)
        self.log.info("job {job_id} submitted: {source} -> {dest}", job_id=job.job_id,
                      source=job.source_path, dest=job.dest_path)
        return job

    async def set_state(self, job_id, state, details=None, **fields):
        """Move a job to ``state`` (with ``details`` and other field changes),
        then announce it. Raises ``IllegalTransition`` / ``NoSuchJob``.
        Returns the stored Job."""
        state = JobState(state)
        before = {}

        def change(job):
            before["state"] = job.job_state
            return job.evolve(job_state=state, job_state_details=details, **fields)
        job = await self.store.modify(job_id, change)
        if before["state"] != state:
            self.log.info("job {job_id}: {old} -> {new}", job_id=job_id, old=before["state"].value,
                          new=state.value, details=details)
            await self.queue.send(self.settings.STATE_CHANGE_QUEUE_NAME, state_change_body(job))
        return job

    async def update(self, job_id, **fields):
        """Change fields (progress, heartbeat) of a job that is not final.
        Raises ``JobCanceled`` if the job is final (canceled meanwhile)."""
        def change(job):
            if job.is_final:
                raise JobCanceled(f"job {job_id} is {job.job_state.value}")
            return job.evolve(**fields)
        return await self.store.modify(job_id, change)

    async def set_state_unless_final(self, job_id, state, details=None, **fields):
        """Like ``set_state`` but a job already final is left alone and
        ``JobCanceled`` raised (a worker losing a race with cancel)."""
        try:
            return await self.set_state(job_id, state, details, **fields)
        except IllegalTransition as exc:
            raise JobCanceled(str(exc)) from exc
