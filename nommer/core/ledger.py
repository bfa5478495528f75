"""Every job state change goes through here: stored first (refused if the
transition table forbids it), then announced on the state-change queue, from
which feederd's notifier sends webhooks. Both daemons use it, so a change made
by a worker, the API (cancel) or the reaper (ABANDONED, dead letters) is
announced the same way.

It also keeps each job's event log (``nommer.core.events``), one place per
kind: ``submit`` records SUBMITTED; ``set_state`` records STATE for every
change of state (or new attempt), ASSIGNED when a worker takes the job
(DOWNLOADING with a new attempt), RETRY when a running job goes back to
PENDING (the reason, and the delay before it is visible again), and
PROGRESS for each 10 % milestone a write of ``progress`` reaches (``update``
too); the worker records LEASE_LOST and feederd's notifier WEBHOOK and
ERROR, all through ``record_event``, which stores the event (the store
numbers it) and announces it on the state-change queue (``{"event":
{...}}``). Recording an event never fails the job: a failed append or
announcement is logged as a warning and ignored.

Nor does it slow the job down: ``set_state`` and ``update`` return once the
job is stored and its change announced, as before the log existed, and
record their events in the background. One job's events are recorded one
after the other, in the order this ledger was given them (``record_event``
waits its turn too), so its log is in order; ``events_settled(job_id)``
waits until they are stored (the API does before listing a job's events,
the worker before it ends an attempt). SUBMITTED is recorded before the job
is queued, so it is always first.
"""

import json

import attr
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.chunking import CHUNKS_SHARE, chunks_progress
from nommer.core.errors import JobCanceled
from nommer.core.events import EventKind, JobEvent, event_body
from nommer.core.states import IN_PROGRESS_STATES, IllegalTransition, JobState
from nommer.core.workqueue.jobs import send_job


#: Longest ``details`` an event keeps, characters; longer ones are cut.
MAX_EVENT_DETAILS_CHARS = 2000


def progress_milestones(before, after):
    """The 10 % milestones (10.0, 20.0, ... 100.0) that progress ``after``
    reached and ``before`` had not (percent, None counting as 0): [] when
    it did not grow past one."""
    low, high = int((before or 0.0) // 10), min(int((after or 0.0) // 10), 10)
    return [10.0 * m for m in range(low + 1, high + 1)]


def submitted_details(job):
    """What a SUBMITTED event says: the preset, the declarative outputs'
    types, or the nommer."""
    options = job.job_options if isinstance(job.job_options, dict) else {}
    if options.get("preset"):
        return f"preset {options['preset']}"
    if isinstance(options.get("outputs"), list):
        types = [o.get("type") for o in options["outputs"] if isinstance(o, dict)]
        return "outputs: " + ", ".join(str(t) for t in types)
    return f"nommer {job.nommer}"


def _follow(d):
    """A new Deferred firing (with None) when ``d`` fires; ``d``'s own
    result is passed on untouched."""
    follower = defer.Deferred()

    def fire(result):
        follower.callback(None)
        return result
    d.addBoth(fire)
    return follower


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
        self._event_tails = {}  # job_id -> Deferred of the last event recording of that job under way

    async def submit(self, job):
        """Store a new PENDING job and queue it for a worker. Returns the Job.
        If queuing fails (the queue unreachable), the stored job is ended in
        ERROR saying so, best effort, and the error re-raised: left PENDING,
        no worker would ever get it, and the autoscaler would keep starting
        workers for it."""
        job = await self.store.create(job)
        # Recorded before the job is queued, so it is first in the log.
        await self.record_event(JobEvent(job_id=job.job_id, at=job.created_at, kind=EventKind.SUBMITTED,
                                         state=job.job_state.value, details=submitted_details(job)))
        try:
            await send_job(self.queue, self.settings, job)  # its pool's queue, with its priority
        except Exception as exc:
            reason = f"could not be queued: {exc!r}"
            try:
                failed = await self.store.modify(job.job_id, lambda j: j.evolve(job_state=JobState.ERROR,
                                                                                job_state_details=reason))
                await self.record_event(self._event(failed, EventKind.STATE, details=reason))
            except Exception:
                self.log.failure("job {job_id} was stored but could not be queued nor set to ERROR; "
                                 "it stays PENDING", job_id=job.job_id)
            raise
        self.log.info("job {job_id} submitted: {source} -> {dest}", job_id=job.job_id,
                      source=job.source_path, dest=job.dest_path)
        return job

    async def set_state(self, job_id, state, details=None, expect=None, retry_in_s=None, **fields):
        """Move a job to ``state`` (with ``details`` and other field changes),
        announce it, then record its events (in the background: see the
        module docstring). Raises ``IllegalTransition`` /
        ``NoSuchJob``. ``expect(job)``, if given, is called with the stored
        job within the write and may raise to refuse it (a worker checking
        that it still owns the job: a lease-lost worker must not write over
        its successor). ``retry_in_s``: for a job released to PENDING, the
        seconds before its message is visible again (said by its RETRY
        event). Returns the stored Job."""
        state = JobState(state)
        before = {}

        def change(job):
            if expect is not None:
                expect(job)
            before["state"] = job.job_state
            before["attempts"], before["progress"] = job.attempts, job.progress
            return job.evolve(job_state=state, job_state_details=details, **fields)
        job = await self.store.modify(job_id, change)
        if before["state"] != state:
            self.log.info("job {job_id}: {old} -> {new}", job_id=job_id, old=before["state"].value,
                          new=state.value, details=details)
            try:
                await self.announce(job)
            finally:  # announced first (the webhooks wait for nothing), recorded even if that failed
                self._in_turn(job_id, lambda: self._state_events(before, job, retry_in_s))
        else:
            self._in_turn(job_id, lambda: self._state_events(before, job, retry_in_s))
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
        return await self._change_unfinished(job_id, lambda job: fields, expect=expect)

    async def update_chunk(self, job_id, index, change, **fields):
        """Change chunk ``index`` of a chunked job (``Job.chunks``,
        ``nommer.core.chunking``) atomically: ``change(chunk, job)`` gets a
        copy of the stored chunk dict and the stored job and returns the new
        chunk dict (it may raise to refuse the write: ``NotOwner``,
        ``IllegalChunkTransition``). The job's ``progress`` becomes
        CHUNKS_SHARE % of the plan's (``chunks_progress``; the merge makes
        the rest), never less than it was, and ``fields`` (e.g.
        ``heartbeat_at``) are set too. Raises ``JobCanceled`` if the job is
        final, ``NoSuchJob``, or ``IndexError`` when the job has no such
        chunk. Returns the stored Job."""
        def apply(job):
            chunks = [dict(c) for c in (job.chunks or ())]
            if not 0 <= index < len(chunks):
                raise IndexError(f"job {job_id} has no chunk {index}")
            chunks[index] = change(dict(chunks[index]), job)
            progress = max(job.progress or 0.0, round(CHUNKS_SHARE / 100.0 * chunks_progress(chunks), 1))
            return dict(fields, chunks=chunks, progress=progress)
        return await self._change_unfinished(job_id, apply)

    async def _change_unfinished(self, job_id, change, expect=None):
        """Set the fields ``change(job)`` returns (a dict; it may raise to
        refuse the write) on a job that is not final (else ``JobCanceled``;
        ``expect(job)``, if given, is called first, as in ``set_state``), in
        one store modify; record the progress milestones passed (each 10 %)
        when the fields set ``progress``. Returns the stored Job."""
        before = {}

        def apply(job):
            if expect is not None:
                expect(job)
            if job.is_final:
                raise JobCanceled(f"job {job_id} is {job.job_state.value}")
            fields = change(job)
            before["progress"], before["sets_progress"] = job.progress, "progress" in fields
            return job.evolve(**fields)
        job = await self.store.modify(job_id, apply)
        milestones = progress_milestones(before["progress"], job.progress) if before["sets_progress"] else []
        if milestones:
            async def record():
                for milestone in milestones:
                    await self._record(self._event(job, EventKind.PROGRESS, progress=milestone))
            self._in_turn(job_id, record)
        return job

    async def set_state_unless_final(self, job_id, state, details=None, expect=None, **fields):
        """Like ``set_state`` but a job already final is left alone and
        ``JobCanceled`` raised (a worker losing a race with cancel)."""
        try:
            return await self.set_state(job_id, state, details, expect=expect, **fields)
        except IllegalTransition as exc:
            raise JobCanceled(str(exc)) from exc

    # --- the event log ----------------------------------------------------------------------

    async def record_event(self, event):
        """Append ``event`` (a ``JobEvent``) to its job's log and announce it
        on the state-change queue (``{"event": {...}}``, with the ``seq`` the
        store gave it, or None when the log's bound dropped it), after the
        events of that job this ledger is recording already. Never raises: a
        failure is logged as a warning and ignored, an event is never worth
        failing a job for. ``details`` longer than MAX_EVENT_DETAILS_CHARS
        are cut. Returns the stored event or None."""
        stored = []

        async def record():
            stored.append(await self._record(event))
        await self._in_turn(event.job_id, record)
        return stored[0] if stored else None

    async def events_settled(self, job_id=None):
        """Wait until the events this ledger is recording (of ``job_id``, or
        of every job) are stored and announced."""
        tails = list(self._event_tails.values()) if job_id is None else [self._event_tails.get(job_id)]
        for tail in tails:
            if tail is not None:
                await _follow(tail)

    def _in_turn(self, job_id, work):
        """Run ``work()`` (a coroutine function recording events of job
        ``job_id``) once the recordings of that job already under way are
        done. Returns a Deferred firing (with None) when it is; never fails
        (an error is logged)."""
        previous = self._event_tails.get(job_id)

        async def in_turn():
            if previous is not None:
                await _follow(previous)
            try:
                await work()
            except Exception:
                self.log.failure("job {job_id}: recording its events failed", job_id=job_id)
        d = self._event_tails[job_id] = defer.Deferred.fromCoroutine(in_turn())

        def done(_):
            if self._event_tails.get(job_id) is d:
                del self._event_tails[job_id]
        d.addBoth(done)
        return d

    async def _record(self, event):
        """``record_event`` now, out of turn (a recording already in its turn)."""
        if event.details is not None and len(event.details) > MAX_EVENT_DETAILS_CHARS:
            event = attr.evolve(event, details=event.details[:MAX_EVENT_DETAILS_CHARS - 1] + "\u2026")
        stored = None
        try:
            stored = await self.store.append_event(event)
        except Exception as exc:
            self.log.warn("job {job_id}: storing its {kind} event failed: {error!r}", job_id=event.job_id,
                          kind=event.kind.value, error=exc)
        try:
            await self.queue.send(self.settings.STATE_CHANGE_QUEUE_NAME, event_body(stored or event))
        except Exception as exc:
            self.log.warn("job {job_id}: announcing its {kind} event failed: {error!r}", job_id=event.job_id,
                          kind=event.kind.value, error=exc)
        return stored

    @staticmethod
    def _event(job, kind, **fields):
        """An event of ``job`` as stored now: its time (``updated_at``), state,
        worker and attempt, with ``fields`` on top."""
        values = dict(job_id=job.job_id, at=job.updated_at, kind=kind, state=job.job_state.value,
                      worker_id=job.worker_id, attempt=job.attempts)
        values.update(fields)
        return JobEvent(**values)

    async def _state_events(self, before, job, retry_in_s):
        """Record what one ``set_state`` write did (see the module docstring),
        in this order: ASSIGNED, PROGRESS milestones, STATE, RETRY."""
        old_state, new_attempt = before["state"], job.attempts != before["attempts"]
        if job.job_state == JobState.DOWNLOADING and job.attempts > before["attempts"]:
            await self._record(self._event(job, EventKind.ASSIGNED,
                                           details=f"attempt {job.attempts} on worker {job.worker_id}"))
        for milestone in progress_milestones(before["progress"], job.progress):
            await self._record(self._event(job, EventKind.PROGRESS, progress=milestone))
        if old_state != job.job_state or new_attempt:
            await self._record(self._event(job, EventKind.STATE, details=job.job_state_details))
        if job.job_state == JobState.PENDING and old_state in IN_PROGRESS_STATES:
            when = "at once" if not retry_in_s else f"in {retry_in_s:g} s"
            reason = job.job_state_details or "released"
            await self._record(self._event(job, EventKind.RETRY, details=f"queued again {when}: {reason}"))
