"""The optimistic write of the job stores that keep a version per job and
write on a condition (DynamoDB, SimpleDB): ``create``, ``get`` and
``modify`` written once.

``modify(job_id, fn)`` reads the job and its version (a consistent read),
computes the new job with ``apply_change(old, fn(old), now)`` and writes it
on the condition that the stored version is still the one read. When
another writer got there first it reads again and re-runs ``fn`` on the
fresh copy, so the transition table is checked against what is really
stored: a late worker cannot overwrite a finished job, and of two daemons
abandoning one job, one gets ``IllegalTransition``. ``fn`` must therefore
be pure: it may run more than once. A writer that loses MAX_WRITE_ATTEMPTS
races in a row gives up with ``StoreConflict``.

The SQLite store needs none of this: its ``modify`` is one transaction.
"""

import attr
from twisted.logger import Logger

from nommer.core.deferreds import deferred
from nommer.core.store.base import JobStore, apply_change

#: Conditional writes ``modify`` tries before it gives up with StoreConflict.
MAX_WRITE_ATTEMPTS = 10


class StoreConflict(Exception):
    """``modify`` lost the race for a job to other writers MAX_WRITE_ATTEMPTS times in a row."""

    def __init__(self, job_id, attempts):
        super().__init__(f"job {job_id}: {attempts} conditional writes lost to other writers")
        self.job_id = job_id


class VersionedJobStore(JobStore):
    """``create``, ``get`` and ``modify`` over three primitives a backend
    implements (coroutines); it sets ``self._clock`` (``seconds()`` stamps
    the times):

    - ``_insert(job) -> bool``: store a new job at the first version unless
      its job_id is taken (False).
    - ``_fetch(job_id) -> (Job, version)``: a consistent read; raises
      NoSuchJob. ``version`` is whatever ``_replace`` needs to name what
      was read (a number, or the attributes read).
    - ``_replace(job, version) -> bool``: write ``job`` as the next version
      on the condition that ``version`` is still what is stored; False when
      another writer got there first.
    """

    log = Logger()

    @deferred
    async def create(self, job):
        """Store ``job`` with created_at/updated_at stamped from the clock.
        Deferred[Job]; a job_id already stored raises ValueError."""
        now = self._clock.seconds()
        job = attr.evolve(job, created_at=now, updated_at=now)
        if not await self._insert(job):
            raise ValueError(f"a job with id {job.job_id} already exists")
        return job

    @deferred
    async def get(self, job_id):
        """Deferred[Job], read consistently; raises NoSuchJob."""
        job, _ = await self._fetch(job_id)
        return job

    @deferred
    async def modify(self, job_id, fn):
        """Replace the job by ``apply_change(old, fn(old), now)`` under an
        optimistic lock (see the module docstring); ``fn`` may run again on
        a fresh copy after a lost race. Deferred[Job]; raises NoSuchJob,
        IllegalTransition, whatever ``fn`` raises, or StoreConflict."""
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            old, version = await self._fetch(job_id)
            new = apply_change(old, fn(old), self._clock.seconds())
            if await self._replace(new, version):
                return new
            self.log.debug("job {job_id}: changed while being modified (attempt {attempt}), reading again",
                           job_id=job_id, attempt=attempt)
        raise StoreConflict(job_id, MAX_WRITE_ATTEMPTS)

    async def _insert(self, job):
        raise NotImplementedError

    async def _fetch(self, job_id):
        raise NotImplementedError

    async def _replace(self, job, version):
        raise NotImplementedError
