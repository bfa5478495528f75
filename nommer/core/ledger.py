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
    "job_state_details", "at", "attempts"}`` (``at`` = epoch seconds of the
    change; ``attempts`` = the job's attempts when it was stored, which with
    the state orders one job's changes: see ``nommer.feederd.notifier``)."""
    return json.dumps({"job_id": job.job_id, "job_state": job.job_state.value,
                       "job_state_details": job.job_state_details, "at": job.updated_at,
                       "attempts": job.attempts})


class JobLedger:
    log = Logger()

    def __init__(self, store, queue, settings):
        self.store = store
        self.queue = queue
        self.settings = settings

    async def submit(self, job):
        """Store a new PENDING job and queue it for a worker. Returns the Job.
        If queuing fails (the queue unreachable), the stored job is ended in
        ERROR saying so, best effort, and the error re-raised: left PENDING,
        no worker would ever get it, and the autoscaler would keep starting
        workers for it."""
        job = await self.store.create(job)
        try:
            await self.queue.send(self.settings.NEW_JOB_QUEUE_NAME, job.job_id)
        except Exception as exc:
            reason = f"could not be queued: {exc!r}"
            try:
                await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.ERROR,
                                                                       job_state_details=reason))
            except Exception:
                self.log.failure("job {job_id} was stored but could not be queued nor set to ERROR; "
                                 "it stays PENDING", job_id=job.job_id)
            raise
        self.log.info("job {job_id} submitted: {source} -> {dest}", job_id=job.job_id,
                      source=job.source_path, dest=job.dest_path)
        return job

    async def set_state(self, job_id, state, details=None, expect=None, **fields):
        """Move a job to ``state`` (with ``details`` and other field changes),
        then announce it. Raises ``IllegalTransition`` / ``NoSuchJob``.
        ``expect(job)``, if given, is called with the stored job within the
        write and may raise to refuse it (a worker checking that it still
        owns the job: a lease-lost worker must not write over its successor).
        Returns the stored Job."""
        state = JobState(state)
        before = {}

        def change(job):
            if expect is not None:
                expect(job)
            before["state"] = job.job_state
            return job.evolve(job_state=state, job_state_details=details, **fields)
        job = await self.store.modify(job_id, change)
        if before["state"] != state:
            self.log.info("job {job_id}: {old} -> {new}", job_id=job_id, old=before["state"].value,
                          new=state.value, details=details)
            await self.announce(job)
        return job

    async def announce(self, job):
        """Send ``job``'s current state to the state-change queue (again:
        a worker that finds the message of a job whose final state was stored
        but maybe never announced, its writer having died in between)."""
        await self.queue.send(self.settings.STATE_CHANGE_QUEUE_NAME, state_change_body(job))

    async def update(self, job_id, expect=None, **fields):
        """Change fields (progress, heartbeat) of a job that is not final.
        Raises ``JobCanceled`` if the job is final (canceled meanwhile);
        ``expect`` as in ``set_state``."""
        def change(job):
            if expect is not None:
                expect(job)
            if job.is_final:
                raise JobCanceled(f"job {job_id} is {job.job_state.value}")
            return job.evolve(**fields)
        return await self.store.modify(job_id, change)

    async def set_state_unless_final(self, job_id, state, details=None, expect=None, **fields):
        """Like ``set_state`` but a job already final is left alone and
        ``JobCanceled`` raised (a worker losing a race with cancel)."""
        try:
            return await self.set_state(job_id, state, details, expect=expect, **fields)
        except IllegalTransition as exc:
            raise JobCanceled(str(exc)) from exc
