"""Retry: a job that ended in ERROR, CANCELED or ABANDONED queued again
(``POST /job/<id>/retry``).

The job keeps its id, owner, body, priority and pool, and its history: the
event log gains a STATE event (PENDING) and a RETRY event saying it was
queued again by request; its ``retries`` goes up by one. What belonged to
the ended run is cleared: ``attempts`` back to 0, ``job_state_details``,
``worker_id``, ``progress``, ``output``, ``started_at``, ``finished_at``,
``heartbeat_at``. The store lets a final job go back to PENDING only in such
a write (``nommer.core.states.RETRY_TRANSITIONS``), so a late worker still
cannot resurrect a job; its new message (``<job_id>#<retries>``) tells the
job's old messages apart (``nommer.core.workqueue.jobs``).
"""

from twisted.logger import Logger

from nommer.core.errors import InvalidJobSpec, NommerError
from nommer.core.events import EventKind, JobEvent
from nommer.core.pools import UnknownPool, check_pool
from nommer.core.states import RETRYABLE_STATES, JobState
from nommer.core.workqueue.jobs import send_job

log = Logger()


class NotRetryable(NommerError):
    """The job is not in ERROR, CANCELED or ABANDONED (the API's 409 CONFLICT)."""

    def __init__(self, job_id, state):
        self.job_id, self.state = job_id, JobState(state)
        names = ", ".join(sorted(s.value for s in RETRYABLE_STATES))
        super().__init__(f"job {job_id} is {self.state.value}; only a job in {names} can be retried")


def retried(job):
    """``job`` as a retry stores it (pure; see the module docstring). Raises
    NotRetryable unless ``job`` is in ERROR, CANCELED or ABANDONED."""
    if job.job_state not in RETRYABLE_STATES:
        raise NotRetryable(job.job_id, job.job_state)
    return job.evolve(job_state=JobState.PENDING, job_state_details=None, attempts=0, retries=job.retries + 1,
                      worker_id=None, progress=None, output=None, started_at=None, finished_at=None,
                      heartbeat_at=None)


async def retry_job(ledger, job_id, expect=None):
    """Queue job ``job_id`` again (see the module docstring) through
    ``ledger`` (a ``JobLedger``): store it PENDING, record its STATE and
    RETRY events, queue its new message, announce the change (webhook).
    ``expect(job)``, if given, runs on the stored job within the write and
    may raise to refuse it (the API's owner check).

    Returns the stored Job. Raises NotRetryable (a job in another state,
    also one that changed meanwhile), NoSuchJob, InvalidJobSpec on ``pool``
    (the job's pool is no longer in POOLS), or the queue's error (the job is
    then ended in ERROR saying it could not be queued, as a submit is)."""
    settings = ledger.settings

    def change(job):
        if expect is not None:
            expect(job)
        try:
            check_pool(settings, job.pool)
        except UnknownPool as e:
            raise InvalidJobSpec("pool", f"job {job.job_id} cannot be retried: {e}") from None
        before["state"] = job.job_state.value
        return retried(job)
    before = {}
    job = await ledger.store.modify(job_id, change)
    record = getattr(ledger, "record_event", None)
    if record is not None:
        common = dict(job_id=job.job_id, at=job.updated_at, state=job.job_state.value, attempt=0)
        await record(JobEvent(kind=EventKind.STATE, details=f"retry {job.retries} requested", **common))
        await record(JobEvent(kind=EventKind.RETRY, details=f"queued again by request (retry {job.retries}; it "
                                                             f"was {before['state']})", **common))
    try:
        await send_job(ledger.queue, settings, job)
    except Exception as exc:
        reason = f"could not be queued: {exc!r}"
        try:
            await ledger.set_state(job_id, JobState.ERROR, reason)
        except Exception:
            log.failure("job {job_id} was retried but could not be queued nor set to ERROR; it stays PENDING",
                        job_id=job_id)
        raise
    log.info("job {job_id} retried ({retries}): {old} -> PENDING", job_id=job_id, retries=job.retries,
             old=before["state"])
    await ledger.announce(job)
    return job
