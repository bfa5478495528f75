"""Jobs nobody will finish: dead letters and abandoned jobs.

- ``DeadLetterWatcher``: a job whose message was received MAX_JOB_ATTEMPTS
  times without being finished (its workers died or stalled, so the lease
  expired each time) lands in the new-job queue's dead-letter queue; it is
  set to ERROR with the reason.
- ``Abandoner``: every PRUNE_JOBS_INTERVAL_S, an in-progress job whose worker
  has not heartbeated for ABANDON_INACTIVE_JOBS_S is set to ABANDONED. (The
  original measured time since the last *state change*, which abandoned long
  encodes that were still running.)
Both go through the ledger, so the change is announced and webhooked.

- ``RegistryPruner``: every PRUNE_JOBS_INTERVAL_S, worker registry records
  not refreshed for WORKER_FORGET_AFTER_S are deleted.
"""

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.chunking import parse_chunk_message
from nommer.core.errors import NoSuchJob
from nommer.core.states import IN_PROGRESS_STATES, IllegalTransition, JobState
from nommer.core.workqueue import dead_letter_name
from nommer.core.workqueue.consumer import QueueConsumer
from nommer.core.workqueue.jobs import parse_job_message


def stale_jobs(jobs, now, max_silence_s):
    """The in-progress jobs among ``jobs`` whose last sign of life (heartbeat,
    else last update) is more than ``max_silence_s`` seconds before ``now``."""
    return [j for j in jobs if j.job_state in IN_PROGRESS_STATES
            and now - (j.heartbeat_at or j.updated_at or 0) > max_silence_s]


class DeadLetterWatcher(QueueConsumer):
    log = Logger()

    def __init__(self, ledger, settings, clock):
        super().__init__(ledger.queue, dead_letter_name(settings.NEW_JOB_QUEUE_NAME), clock,
                         visibility_timeout_s=60, wait_time_s=settings.QUEUE_WAIT_TIME_S)
        self.ledger = ledger
        self.settings = settings

    async def handle(self, message):
        job_body, chunk = parse_chunk_message(message.body)  # "...@chunk<i>": a chunk's task
        job_id, retries = parse_job_message(job_body)  # "<id>#<n>" after a retry
        try:
            job = await self.ledger.store.get(job_id)
        except NoSuchJob:
            self.log.warn("dead letter for unknown job {job_id}", job_id=job_id)
            return
        if job.is_final or job.retries != retries:
            return  # done, or a dead letter from before the job was retried
        last = f" Last: {job.job_state_details}" if job.job_state_details else ""
        what = "" if chunk is None else f"chunk {chunk}: "
        reason = (f"{what}gave up after {self.settings.MAX_JOB_ATTEMPTS} attempts: each time the worker "
                  f"died or stopped renewing its lease before finishing.{last}")
        try:
            await self.ledger.set_state(job_id, JobState.ERROR, reason)
        except IllegalTransition:
            pass  # finished meanwhile
        self.log.error("job {job_id} dead-lettered: {reason}", job_id=job_id, reason=reason)


class Abandoner(TimerService):
    log = Logger()

    def __init__(self, ledger, settings, clock):
        super().__init__(settings.PRUNE_JOBS_INTERVAL_S, self.prune)
        self.clock = clock
        self.ledger = ledger
        self.settings = settings

    def prune(self):
        """One pass; never raises (an escaped error would stop the timer)."""
        d = defer.Deferred.fromCoroutine(self._prune())
        d.addErrback(lambda f: self.log.failure("abandoning stale jobs failed", f))
        return d

    async def _prune(self):
        jobs = await self.ledger.store.list_unfinished()
        for job in stale_jobs(jobs, self.clock.seconds(), self.settings.ABANDON_INACTIVE_JOBS_S):
            try:
                await self.ledger.set_state(
                    job.job_id, JobState.ABANDONED,
                    f"no heartbeat from worker {job.worker_id} for over "
                    f"{self.settings.ABANDON_INACTIVE_JOBS_S:.0f} s while {job.job_state.value}")
                self.log.warn("job {job_id} abandoned", job_id=job.job_id)
            except IllegalTransition:
                pass


class RegistryPruner(TimerService):
    """Every PRUNE_JOBS_INTERVAL_S (``interval_s`` overrides it), forgets the
    worker registry records whose ``last_seen`` is more than
    WORKER_FORGET_AFTER_S seconds before ``clock.seconds()``. The first pass
    runs at start."""

    log = Logger()

    def __init__(self, registry, settings, clock, interval_s=None):
        super().__init__(interval_s or settings.PRUNE_JOBS_INTERVAL_S, self.prune)
        self.clock = clock
        self.registry = registry
        self.settings = settings

    def prune(self):
        """One pass: Deferred[int] of records forgotten (0 when the pass
        failed, which is logged); never raises."""
        cutoff = self.clock.seconds() - self.settings.WORKER_FORGET_AFTER_S
        d = defer.maybeDeferred(self.registry.forget_older_than, cutoff)

        def done(n):
            if n:
                self.log.info("forgot {n} worker(s) silent for over {after:.0f} s", n=n,
                              after=self.settings.WORKER_FORGET_AFTER_S)
            return n

        def failed(f):
            self.log.failure("forgetting silent workers failed", f)
            return 0
        return d.addCallbacks(done, failed)
