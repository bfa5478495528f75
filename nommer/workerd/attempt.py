"""One attempt at a job on this worker: from a message to its outcome.

Each message a slot of the worker receives (body = job id) goes through
``AttemptRunner.run_message``:

1. Lease it (the slot received it with visibility timeout JOB_LEASE_S). A
   job whose stored state is already final (finished, canceled...) is
   refused: the message is deleted and nothing runs. One received while the
   worker releases its jobs (cold shutdown, spot notice) is not taken: its
   message is visible again at once.
2. DOWNLOADING, attempts + 1 (the only DOWNLOADING write: the nommer then
   fetches the source with ``context.download_source``). While the job runs,
   every HEARTBEAT_INTERVAL_S the lease is extended and a heartbeat written
   on the same beat (``leases``, a ``nommer.core.workqueue.LeaseKeeper``); a
   job canceled meanwhile, or a lease lost to another worker, stops the
   nommer.
3. The nommer (given a ``JobContext``, ``nommer.workerd.context``) moves the
   job through ENCODING and UPLOADING and returns the output info. What
   follows is decided by ``nommer.workerd.outcome.decide`` and executed
   here: FINISHED (or ERROR) stored, and only then the message deleted; a
   permanent failure ends in ERROR at once; a transient one goes back to
   PENDING and the message reappears after a backoff, until MAX_JOB_ATTEMPTS
   is used up; a job out of scratch space, or stopped by a cold shutdown or
   a spot notice, is released to the queue at once.

Ownership: every write a worker makes to a job it runs is fenced (see
``nommer.workerd.context``): refused unless the stored job still names this
worker and this attempt.

The job store or the queue failing (unreachable, locked) is transient: the
job goes back to the queue, or, if even that cannot be written, its message
is left to reappear when the lease ends. FINISHED is stored apart from the
nommer's errors: failing to store or announce it never turns into ERROR; the
message is left, and the worker that takes it next finds the job FINISHED
and announces it again (so a FINISHED whose writer died before announcing it
is still announced). Same for ERROR.
"""

from twisted.logger import Logger

from nommer.core.errors import JobCanceled, NoSuchJob
from nommer.core.spec import resolve_nommer
from nommer.core.states import IllegalTransition, JobState
from nommer.core.workqueue import LeaseKeeper
from nommer.workerd.context import CANCELED, LEASE_LOST, JobContext, NotOwner
from nommer.workerd.metrics import EncodeFigures, media_seconds
from nommer.workerd.outcome import (
    Attempt, DeleteMessage, Ended, Fail, Finish, Leave, Release, decide, ending_of, keeps_progress)


class AttemptRunner:
    """The attempts of ``worker`` (a ``Worker``: its ``ledger``, ``settings``,
    ``reactor``, ``worker_id`` and ``scratch`` space).

    - ``contexts``: job id -> ``JobContext`` of each attempt running now.
    - ``jobs_done``: attempts ended since start (whatever their outcome).
    - ``figures``: the attempts that ended FINISHED, for the heartbeat
      (``nommer.workerd.metrics.EncodeFigures``).
    - ``stop_new``: None, or the reason an attempt starting now is stopped
      with (``stop_all``).
    - ``leases``: the ``LeaseKeeper`` of the job messages taken (lease
      JOB_LEASE_S, extended every HEARTBEAT_INTERVAL_S; each delivery its
      own lease, since a job redelivered to this worker is a new attempt;
      deletes not retried: a message left comes back, and the job's next
      worker finds it final and deletes it).
    """

    log = Logger()

    def __init__(self, worker):
        self.worker = worker
        self.worker_id = worker.worker_id
        self.ledger = worker.ledger
        self.store = worker.ledger.store
        self.queue = worker.ledger.queue
        self.settings = worker.settings
        self.reactor = worker.reactor
        self.scratch = worker.scratch
        self.contexts = {}
        self.jobs_done = 0
        self.figures = EncodeFigures()
        self.stop_new = None
        self.leases = LeaseKeeper(self.queue, self.settings.NEW_JOB_QUEUE_NAME, self.reactor,
                                  self.settings.JOB_LEASE_S, interval_s=self.settings.HEARTBEAT_INTERVAL_S,
                                  log_fields={"worker_id": self.worker_id}, per_delivery=True)

    def stop_all(self, reason):
        """Stop every running attempt with ``reason`` (a context stop reason:
        SHUTDOWN, SPOT_INTERRUPTION), and any attempt that starts from now on."""
        self.stop_new = reason
        for ctx in list(self.contexts.values()):
            ctx.stop(reason)

    async def run_message(self, message):
        """Take the job ``message`` names and run an attempt at it; never raises."""
        try:
            await self._run_job(message)
        except Exception:
            # Bug in our own code, or the store or queue failing before the job
            # started: leave the message; the lease expires and the job is
            # retried, or dead-lettered after MAX_JOB_ATTEMPTS.
            self.log.failure("worker {worker_id} failed on message {body}", worker_id=self.worker_id,
                             body=message.body)

    async def _delete(self, message):
        """Delete the job's message (gone already: logged); a queue failure
        is raised (the message comes back when its lease ends)."""
        await self.leases.delete(message, job_id=message.body)

    async def _run_job(self, message):
        job_id = message.body
        try:
            job = await self.store.get(job_id)
        except NoSuchJob:
            self.log.error("message names unknown job {job_id}; dropping it", job_id=job_id)
            return await self._delete(message)
        if job.is_final:
            self.log.info("refusing job {job_id}: already {state}", job_id=job_id, state=job.job_state.value)
            if job.job_state in (JobState.FINISHED, JobState.ERROR):
                # A worker stores these, announces them, then deletes the
                # message: the message still being here means its writer may
                # have died before announcing. Announce again (at-least-once).
                try:
                    await self.ledger.announce(job)
                except Exception:
                    self.log.failure("announcing job {job_id} ({state}) again failed; leaving its message",
                                     job_id=job_id, state=job.job_state.value)
                    return
            return await self._delete(message)
        if self.stop_new is not None:
            # Received just as the worker was interrupted or cold-stopped:
            # not taken; visible again at once for another worker.
            self.log.info("not taking job {job_id}: worker {worker_id} stopping ({why})", job_id=job_id,
                          worker_id=self.worker_id, why=self.stop_new)
            return await self._change_visibility(message, 0)
        now = self.reactor.seconds()
        # Fenced on the attempt count read above: if another worker took the
        # job meanwhile (a message delivered twice), leave it to that one.
        read = job

        def not_taken_since(stored):
            if stored.attempts != read.attempts:
                raise NotOwner(f"job {job_id} was taken by {stored.worker_id} meanwhile")
        try:
            job = await self.ledger.set_state(
                job_id, JobState.DOWNLOADING, None, expect=not_taken_since, attempts=job.attempts + 1,
                worker_id=self.worker_id, started_at=job.started_at or now, heartbeat_at=now, progress=None)
        except IllegalTransition:
            return await self._delete(message)
        except NotOwner as exc:
            self.log.warn("{why}; leaving it", why=str(exc))
            return
        if read.job_state == JobState.DOWNLOADING:
            # Taken again while DOWNLOADING: the ledger announces changes of
            # state only, so announce this attempt's start here; the previous
            # attempt's may never have gone out (its worker died, or the queue
            # failed, right after storing it). A failure here leaves the
            # message for the next attempt, which announces it then.
            await self.ledger.announce(job)
        self.log.info("job {job_id}: attempt {attempt} on {worker_id}", job_id=job_id,
                      attempt=job.attempts, worker_id=self.worker_id)

        scratch = self.scratch.make(job_id, job.attempts)
        ctx = self.contexts[job_id] = JobContext(self.worker, job, scratch)
        if self.stop_new is not None:
            ctx.stop(self.stop_new)  # interrupted while DOWNLOADING was being stored
        self.leases.hold(message, on_beat=lambda: self._heartbeat(ctx), on_lost=lambda: ctx.stop(LEASE_LOST),
                         job_id=job_id)
        try:
            await self._run_nommer(ctx, message)
        finally:
            self.leases.let_go(message)
            del self.contexts[job_id]
            self.jobs_done += 1
            await self.scratch.remove(scratch)
            await ctx.wait_event_written()  # a LEASE_LOST event being recorded (never fails)
            await self.ledger.events_settled(job_id)  # the attempt's events stored before it counts as done

    async def _run_nommer(self, ctx, message):
        """Run the attempt's nommer, then conclude it (``outcome``)."""
        job = ctx.job
        output = None
        try:
            await self.scratch.check_job(job.source_path, ctx.scratch_dir)
            _, nommer_class = resolve_nommer(job.nommer, self.settings)
            output = await nommer_class(job, ctx).run()
            await ctx.wait_progress_written()
            ended, reason = Ended.SUCCEEDED, ""
        except Exception as exc:
            ended, reason = ending_of(exc)
            if ended is Ended.CRASHED:
                self.log.failure("nommer crashed on job {job_id}", job_id=job.job_id)
        await self._conclude(ctx, message, ended, reason, output)

    async def _conclude(self, ctx, message, ended, reason="", output=None):
        """Gather what ``outcome.decide`` needs, decide, execute."""
        # The stop reason as the attempt ended decides (a stop arriving while
        # the inputs below are gathered does not change the decision).
        stop_reason = ctx.stop_reason
        if keeps_progress(stop_reason):
            await ctx.wait_progress_written()
        free = await self.scratch.free_bytes(ctx.scratch_dir) if ended is Ended.NO_SCRATCH_SPACE else None
        attempt = Attempt(ended=ended, attempts=ctx.job.attempts, worker_id=self.worker_id,
                          stop_reason=stop_reason, reason=reason, output=output, nommer=ctx.job.nommer,
                          progress=ctx.progress, free_bytes=free)
        decision = decide(attempt, self.settings.MAX_JOB_ATTEMPTS, self.settings.RETRY_BACKOFF_S)
        await self._execute(ctx, message, decision)

    async def _execute(self, ctx, message, decision):
        """Do what ``decision`` (from ``outcome.decide``) says."""
        match decision:
            case Leave():
                return  # another worker owns the job and its message now
            case DeleteMessage():
                await self._delete(message)
            case Finish():
                await self._finish(ctx, message, decision.output)
            case Fail():
                await self._fail(ctx, message, decision.details)
            case Release():
                if decision.log_warning:
                    self.log.warn("job {job_id}: {details}", job_id=ctx.job.job_id, details=decision.details)
                fields = {} if decision.progress is None else {"progress": decision.progress}
                await self._release(ctx, message, decision.details, decision.visibility_s, decision.doing,
                                    **fields)
            case _:
                raise TypeError(f"not a decision: {decision!r}")

    async def _finish(self, ctx, message, output):
        """Store FINISHED, then delete the message. Apart from the nommer's
        errors: a store or queue failure here must not end the job in ERROR."""
        try:
            await self.ledger.set_state_unless_final(ctx.job.job_id, JobState.FINISHED, None, expect=ctx.owned,
                                                     progress=100.0, output=output)
        except JobCanceled:
            # Canceled meanwhile, or our own FINISHED landed but its answer
            # was lost and the store's retry found it already FINISHED (a
            # conditional write retried after a dropped connection): then it
            # was never announced.
            try:
                stored = await self.store.get(ctx.job.job_id)
                if stored.job_state == JobState.FINISHED:
                    ctx.owned(stored)
                    await self.ledger.announce(stored)
            except NotOwner:
                pass
            except Exception:
                return self._left(ctx, "checking a refused FINISHED")
            ctx.stop(CANCELED)
            return await self._conclude(ctx, message, Ended.STOPPED)
        except NotOwner as exc:
            ctx.stop(LEASE_LOST)
            self.log.warn("job {job_id} done but not stored: {why}", job_id=ctx.job.job_id, why=str(exc))
            return await self._conclude(ctx, message, Ended.STOPPED)
        except Exception:
            # The message stays: when the lease ends the job is taken again,
            # and its next worker either finds it FINISHED (and announces it)
            # or runs it again (the output is replaced atomically).
            self.log.failure("storing FINISHED for job {job_id} failed; it comes back when its lease ends",
                             job_id=ctx.job.job_id)
            return
        # The attempt's wall time: ctx.job is as stored when it was taken (heartbeat_at = then).
        self.figures.finished(self.reactor.seconds() - (ctx.job.heartbeat_at or self.reactor.seconds()),
                              media_seconds(output))
        await self._delete(message)

    async def _fail(self, ctx, message, details):
        """Store ERROR, then delete the message."""
        try:
            await self.ledger.set_state(ctx.job.job_id, JobState.ERROR, details, expect=ctx.owned)
        except IllegalTransition:
            pass
        except NotOwner:
            return  # another worker runs the job now; its message is that worker's
        except Exception:
            return self._left(ctx, "storing ERROR")
        await self._delete(message)

    def _left(self, ctx, what):
        """The store or queue failed while ``what``: leave the message, which
        reappears when its lease ends (the lease is no longer extended)."""
        self.log.failure("job {job_id}: {what} failed (store or queue unreachable?); it comes back when "
                         "its lease ends", job_id=ctx.job.job_id, what=what)

    async def _release(self, ctx, message, details, delay_s, doing, **fields):
        """Store the job PENDING (if this worker still owns it; ``fields``
        changed too) and make its message visible again after ``delay_s``
        seconds."""
        try:
            await self.ledger.set_state(ctx.job.job_id, JobState.PENDING, details, expect=ctx.owned,
                                        retry_in_s=delay_s, **fields)
        except IllegalTransition:
            return await self._delete(message)
        except NotOwner:
            return
        except Exception:
            return self._left(ctx, doing)
        await self._change_visibility(message, delay_s)

    async def _change_visibility(self, message, seconds):
        """Make the job's message visible again in ``seconds``; never raises
        (a failure is logged: the message reappears when its lease ends)."""
        await self.leases.release(message, seconds, job_id=message.body)

    async def _heartbeat(self, ctx):
        """Write the job's heartbeat; run by ``leases`` after each extension
        of its lease (not after a lost one); never raises."""
        try:
            await self.ledger.update(ctx.job.job_id, expect=ctx.owned, heartbeat_at=self.reactor.seconds())
        except JobCanceled:
            ctx.stop(CANCELED)
        except NotOwner:
            ctx.stop(LEASE_LOST)
        except Exception:
            self.log.failure("heartbeat of job {job_id} failed", job_id=ctx.job.job_id, worker_id=self.worker_id)
