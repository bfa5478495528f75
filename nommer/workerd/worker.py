"""The worker loop: lease a job, run its nommer, store the outcome.

For each job (one message on the new-job queue, body = job id):

1. Lease it (receive with visibility timeout JOB_LEASE_S). A job whose stored
   state is already final (finished, canceled...) is refused: the message is
   deleted and nothing runs.
2. DOWNLOADING, attempts + 1. While the job runs, every HEARTBEAT_INTERVAL_S
   the lease is extended and a heartbeat written; a job canceled meanwhile,
   or a lease lost to another worker, stops the nommer.
3. The nommer moves the job through ENCODING and UPLOADING and returns the
   output info; the worker stores FINISHED (or ERROR), and only then deletes
   the message. A permanent failure ends in ERROR at once; a transient one
   goes back to PENDING and the message reappears after a backoff, until
   MAX_JOB_ATTEMPTS is used up.

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

Start: before taking any job the worker checks that the ffmpeg sandbox
(``nommer.workerd.sandbox``) really starts, by running ``ffmpeg -version`` in
it; if it cannot, the worker refuses to start (``on_fatal``, which in twistd
exits with status 1 and the reason). With FFMPEG_SANDBOX = "none" it logs a
warning at every start.

Scratch space (``nommer.workerd.scratch``): a worker whose scratch
directory has less than SCRATCH_MIN_FREE_BYTES free takes no job, so the
jobs wait for a worker with room. A job taken when the space left is short
of SCRATCH_MIN_FREE_BYTES + the source's size (known for file:// sources),
or whose download or ffmpeg runs out of space (ENOSPC, ``NoScratchSpace``),
is released to the queue at once (PENDING, visible again, details
"released: scratch space low on <worker_id>: N bytes free, M needed"):
neither failed nor retried here. The attempt counts, as any receive does
for the queue's dead-letter limit.

Shutdown: the first SIGTERM stops taking jobs and exits when the running ones
are done (warm); a second one stops them now and releases them to the queue
(cold). A worker that has run nothing for WORKER_MAX_IDLE_S exits by itself;
no job is taken once that exit has begun (the receive loops have ended, so a
job queued meanwhile waits for another worker).

On EC2 (``nommer.workerd.spot``): a spot interruption notice calls
``interrupt``: no new job, the running ones are stopped and released to the
queue at once (visibility 0), with their progress kept and details saying so,
then the worker exits, well within the two minutes the notice gives. The
attempt counts as one, as in a cold shutdown (attempts and the queue's
receive count are not given back). A rebalance recommendation calls
``drain``, the warm shutdown. ``on_exit`` then terminates the instance
(``nommer.workerd.terminate``).
"""

import os
import signal
import socket

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from nommer.core.errors import (
    InvalidJobSpec, JobCanceled, NoSuchJob, PermanentJobError, TransientJobError)
from nommer.core.spec import resolve_nommer
from nommer.core.states import IllegalTransition, JobState
from nommer.core.workqueue import ReceiptHandleInvalid
from nommer.workerd import sandbox
from nommer.workerd.context import CANCELED, LEASE_LOST, SHUTDOWN, SPOT_INTERRUPTION, JobContext, NotOwner
from nommer.workerd.lifecycle import (
    GONE, INTERRUPTED_OR_GONE, REGISTRY_STATE, TAKING_JOBS, Lifecycle, check_transition, idle_exit_due,
    reports)
from nommer.workerd.nommers.base import NoScratchSpace
from nommer.workerd.outcome import (
    Attempt, DeleteMessage, Ended, Fail, Finish, Leave, Release, decide, keeps_progress)
from nommer.workerd.scratch import SCRATCH_RECHECK_S, ScratchSpace


#: After a spot interruption notice the worker exits at the latest this many
#: seconds later, released or not (EC2 takes the instance back two minutes
#: after the notice); a job not released by then comes back when its lease ends.
SPOT_EXIT_DEADLINE_S = 90.0

class Worker(Service):
    """Runs up to MAX_ENCODING_JOBS_PER_WORKER jobs at once.

    ``lifecycle`` is the worker's state, a ``Lifecycle`` changed only along
    ``nommer.workerd.lifecycle.TRANSITIONS`` (anything else raises
    ``IllegalWorkerTransition``); ``state`` is what the worker registry shows
    of it (``REGISTRY_STATE``: running, draining, interrupted, exited,
    terminating).

    ``on_exit(reason)`` is called once when the worker is done (idle, or a
    shutdown finished); the default stops the reactor. It may return a
    Deferred or be a coroutine function (``nommer.workerd.terminate.exit_on_ec2``).

    ``on_state_change()`` (attribute of the same name; e.g. the registry
    heartbeat's ``beat_now``), if set, is called with no argument each time
    ``state`` changes (DRAINING, INTERRUPTED, EXITED); it may return a
    Deferred; its failure is logged.

    ``on_fatal(message)`` is called, instead of taking any job, when the
    worker cannot run jobs at all (the ffmpeg sandbox does not start); the
    default logs it and exits (``on_exit``). ``ready`` (a Deferred set by
    ``startService``) fires with True once the sandbox check passed and the
    job loops run, with False when the worker refused to start.
    """

    log = Logger()

    def __init__(self, ledger, settings, reactor, worker_id=None, on_exit=None, install_signals=True,
                 on_state_change=None, on_fatal=None):
        self.ledger = ledger
        self.store = ledger.store
        self.queue = ledger.queue
        self.settings = settings
        self.reactor = reactor
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._on_exit = on_exit or (lambda reason: reactor.stop())
        self._install_signals = install_signals
        self._on_fatal = on_fatal
        self.scratch = ScratchSpace(settings, self.worker_id)
        self.ready = None
        self.lifecycle = Lifecycle.CREATED
        self._contexts = {}   # job_id -> JobContext
        self._receives = set()
        self._loops = []
        self._last_activity = None
        self._busy = 0            # slots holding a message (taken or about to be)
        self._stop_new = None     # stop reason for a job starting now (set by a cold shutdown or a spot notice)
        self._exit_reason = None  # set once the exit waits for the slot loops to end
        self._exit_deadline = None
        self._state_reported = None
        self.on_state_change = on_state_change
        self.jobs_done = 0
        self.started_at = reactor.seconds()

    # --- lifecycle -----------------------------------------------------------

    @property
    def state(self):
        """What the worker registry shows: a ``nommer.core.registry.base`` state."""
        return REGISTRY_STATE[self.lifecycle]

    def _transition(self, new, report=True):
        """``lifecycle`` = ``new`` if the table allows it (else raises
        ``IllegalWorkerTransition``); out of the states taking jobs, pending
        receives are cancelled; a change the registry shows is reported
        (``on_state_change``) unless ``report`` is false."""
        old = self.lifecycle
        self.lifecycle = check_transition(old, new)
        if new not in TAKING_JOBS:
            for d in list(self._receives):
                d.cancel()
        if report and reports(old, new):
            self._report_state()

    def startService(self):
        super().startService()
        self._transition(Lifecycle.STARTING)
        self._last_activity = self.reactor.seconds()
        if self._install_signals:
            self.reactor.callWhenRunning(self._install_signal_handlers)
        # Once at start, beside the job loop; fires with how many were removed.
        self.swept = defer.Deferred.fromCoroutine(self.scratch.sweep(self.store, self._contexts,
                                                                     lambda: self.running))
        self.ready = defer.Deferred.fromCoroutine(self._start_loops())
        self.ready.addErrback(self._refuse_to_start)

    async def _start_loops(self):
        """Check the ffmpeg sandbox, then start the slot loops."""
        if self.settings.FFMPEG_SANDBOX == "none":
            self.log.warn("worker {worker_id}: {what}", worker_id=self.worker_id,
                          what=sandbox.describe(self.settings))
        else:
            version = await sandbox.check(self.reactor, self.settings)
            self.log.info("worker {worker_id}: {what}; {version}", worker_id=self.worker_id,
                          what=sandbox.describe(self.settings), version=version)
        if self.lifecycle is not Lifecycle.STARTING:
            return False  # stopped, drained or interrupted during the check
        self._transition(Lifecycle.RUNNING)
        slots = self.settings.MAX_ENCODING_JOBS_PER_WORKER
        self._loops = [defer.Deferred.fromCoroutine(self._slot_loop(i)) for i in range(slots)]
        for d in self._loops:
            d.addErrback(lambda f: self.log.failure("worker slot loop died", f))
        self.log.info("worker {worker_id} ready: {slots} slot(s), queue {queue}", worker_id=self.worker_id,
                      slots=slots, queue=self.settings.NEW_JOB_QUEUE_NAME)
        return True

    def _refuse_to_start(self, failure):
        if self.lifecycle is Lifecycle.STARTING:
            self._transition(Lifecycle.REFUSED)
        message = f"worker {self.worker_id} refuses to start: {failure.getErrorMessage()}"
        if not failure.check(sandbox.SandboxUnavailable):
            self.log.failure("worker {worker_id}: start-up check crashed", failure, worker_id=self.worker_id)
        if self._on_fatal is not None:
            self._on_fatal(message)
        else:
            self.log.critical("{message}", message=message)
            self._exit(message)
        return False

    async def stopService(self):
        """Warm stop: take no new job, wait for the running ones."""
        super().stopService()
        if self.lifecycle in TAKING_JOBS:
            self._transition(Lifecycle.STOPPING)
        if self.ready is not None:
            await self.ready
        await defer.DeferredList(self._loops)

    def _install_signal_handlers(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self.reactor.callFromThread(self.request_shutdown))

    def request_shutdown(self):
        """First call: warm shutdown (finish running jobs). Second: cold
        (stop them now and release them to the queue)."""
        if self.lifecycle in INTERRUPTED_OR_GONE:
            return  # already releasing its jobs, or gone: nothing more to stop
        if self.lifecycle not in (Lifecycle.DRAINING, Lifecycle.RELEASING):
            return self._drain("shutdown", "shutdown")
        self.log.info("worker {worker_id}: cold shutdown, releasing {n} job(s)",
                      worker_id=self.worker_id, n=len(self._contexts))
        self._stop_new = SHUTDOWN
        if self.lifecycle is Lifecycle.DRAINING:
            self._transition(Lifecycle.RELEASING)
        for ctx in list(self._contexts.values()):
            ctx.stop(SHUTDOWN)

    def drain(self, reason):
        """Warm shutdown for ``reason`` (an EC2 rebalance recommendation):
        take no new job, finish the running ones, then exit with ``reason``.
        As a first SIGTERM (a later one is cold); no-op if already stopping."""
        if self.lifecycle in INTERRUPTED_OR_GONE | {Lifecycle.DRAINING, Lifecycle.RELEASING}:
            self.log.info("worker {worker_id}: already stopping; ignoring drain ({reason})",
                          worker_id=self.worker_id, reason=reason)
            return
        self._drain(reason, reason)

    def _drain(self, why, exit_reason):
        self.log.info("worker {worker_id}: warm shutdown ({why}), finishing {n} running job(s)",
                      worker_id=self.worker_id, why=why, n=len(self._contexts))
        self._transition(Lifecycle.DRAINING)
        self._exit_when_idle(exit_reason)

    def interrupt(self, reason="spot interruption notice"):
        """A spot interruption notice (``reason`` says which): take no new
        job, state INTERRUPTED, stop every running job and release it to the
        queue at once with its progress (details "released: spot interruption
        notice on <worker_id>"), then ``on_exit("spot interruption")``: when
        the jobs are released (seconds: ffmpeg gets TERM, KILL after
        FFMPEG_KILL_GRACE_S), at the latest after SPOT_EXIT_DEADLINE_S.
        Called again, or after the worker exited: no-op."""
        if self.lifecycle in INTERRUPTED_OR_GONE:
            return
        self.log.warn("worker {worker_id}: {reason}; releasing {n} job(s) and exiting",
                      worker_id=self.worker_id, reason=reason, n=len(self._contexts))
        self._stop_new = SPOT_INTERRUPTION
        self._transition(Lifecycle.INTERRUPTED)
        for ctx in list(self._contexts.values()):
            ctx.stop(SPOT_INTERRUPTION)
        self._exit_deadline = self.reactor.callLater(
            SPOT_EXIT_DEADLINE_S, self._exit, "spot interruption (not every job released in time)")
        self._exit_when_idle("spot interruption")

    def terminating(self):
        """EXITED -> TERMINATING: the worker's instance is being terminated
        (``exit_on_ec2``, which reports it itself: not ``on_state_change``)."""
        self._transition(Lifecycle.TERMINATING, report=False)

    def _report_state(self):
        """``on_state_change()``, if set (never raises; ``state_reported``
        waits for it)."""
        if self.on_state_change is None:
            return
        state = self.state
        d = defer.maybeDeferred(self.on_state_change)
        d.addErrback(lambda f: self.log.failure("reporting worker {worker_id} {state} failed", f,
                                                worker_id=self.worker_id, state=state))
        self._state_reported = d

    def state_reported(self):
        """Deferred (never failing) that fires when the last
        ``on_state_change`` call is done; at once if there is none."""
        done = defer.Deferred()
        if self._state_reported is None:
            done.callback(None)
        else:
            self._state_reported.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def status(self):
        """What the worker registry shows of this worker: dict with ``state``
        (a ``nommer.core.registry.base`` state), ``jobs`` (ids of running
        jobs), ``capacity`` (slots), ``jobs_done`` and ``started_at`` (epoch s)."""
        return {"state": self.state, "jobs": sorted(self._contexts), "capacity":
                self.settings.MAX_ENCODING_JOBS_PER_WORKER, "jobs_done": self.jobs_done,
                "started_at": self.started_at}

    def _exit_when_idle(self, reason):
        """Exit once every slot loop has ended. Called again before then (a
        drain escalated to an interrupt), the later reason is the one given."""
        waiting = self._exit_reason is not None
        self._exit_reason = reason
        if waiting:
            return
        d = defer.DeferredList(self._loops)
        d.addCallback(lambda _: self._exit(self._exit_reason))

    def _exit(self, reason):
        if self.lifecycle in GONE:
            return
        if self._exit_deadline is not None and self._exit_deadline.active():
            self._exit_deadline.cancel()
        self.log.info("worker {worker_id} exiting: {reason} ({n} jobs done)", worker_id=self.worker_id,
                      reason=reason, n=self.jobs_done)
        self._transition(Lifecycle.EXITED)
        d = defer.maybeDeferred(self._on_exit, reason)
        d.addErrback(lambda f: self.log.failure("on_exit of worker {worker_id} failed", f,
                                                worker_id=self.worker_id))

    # --- the loop ------------------------------------------------------------

    async def _slot_loop(self, slot):
        s = self.settings
        while self.lifecycle in TAKING_JOBS:
            wait_s = s.QUEUE_WAIT_TIME_S
            if s.WORKER_TERMINATE_WHEN_IDLE:
                left = self._last_activity + s.WORKER_MAX_IDLE_S - self.reactor.seconds()
                wait_s = max(0.0, min(wait_s, left))
            short = await self.scratch.short()
            try:
                if short is not None:
                    # Take nothing: the job waits in the queue for a worker with room.
                    d = task.deferLater(self.reactor, min(wait_s, SCRATCH_RECHECK_S), lambda: [])
                else:
                    d = defer.Deferred.fromCoroutine(self.queue.receive(
                        s.NEW_JOB_QUEUE_NAME, max_messages=1, visibility_timeout_s=s.JOB_LEASE_S,
                        wait_time_s=wait_s))
                self._receives.add(d)
                try:
                    messages = await d
                finally:
                    self._receives.discard(d)
            except defer.CancelledError:
                break
            except Exception:
                self.log.failure("receiving a job failed; retrying in 1 s")
                await task.deferLater(self.reactor, 1.0)
                continue
            if messages:
                self._busy += 1
                try:
                    await self._run_message(messages[0])
                finally:
                    self._busy -= 1
                self._last_activity = self.reactor.seconds()
                continue
            # Busy slots, not only running jobs: a message another slot just
            # received is not running yet, and will be.
            if self.lifecycle in TAKING_JOBS and idle_exit_due(
                    self.reactor.seconds(), self._last_activity, self._busy, s.WORKER_MAX_IDLE_S,
                    s.WORKER_TERMINATE_WHEN_IDLE):
                self._transition(Lifecycle.STOPPING)
                self._exit_when_idle(f"idle for {s.WORKER_MAX_IDLE_S:.0f} s")
                break

    async def _run_message(self, message):
        try:
            await self._run_job(message)
        except Exception:
            # Bug in our own code, or the store or queue failing before the job
            # started: leave the message; the lease expires and the job is
            # retried, or dead-lettered after MAX_JOB_ATTEMPTS.
            self.log.failure("worker {worker_id} failed on message {body}", worker_id=self.worker_id,
                             body=message.body)

    async def _delete(self, message):
        try:
            await self.queue.delete(self.settings.NEW_JOB_QUEUE_NAME, message.receipt_handle)
        except ReceiptHandleInvalid:
            self.log.warn("message for job {job_id} was re-leased before delete", job_id=message.body)

    async def _run_job(self, message):
        s = self.settings
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
        if self._stop_new is not None:
            # Received just as the worker was interrupted or cold-stopped:
            # not taken; visible again at once for another worker.
            self.log.info("not taking job {job_id}: worker {worker_id} stopping ({why})", job_id=job_id,
                          worker_id=self.worker_id, why=self._stop_new)
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
        ctx = self._contexts[job_id] = JobContext(self, job, scratch)
        if self._stop_new is not None:
            ctx.stop(self._stop_new)  # interrupted while DOWNLOADING was being stored
        lease = task.LoopingCall(self._keep_lease, ctx, message)
        lease.clock = self.reactor
        lease.start(s.HEARTBEAT_INTERVAL_S, now=False)
        try:
            await self._run_nommer(ctx, message)
        finally:
            if lease.running:
                lease.stop()
            del self._contexts[job_id]
            self.jobs_done += 1
            await self.scratch.remove(scratch)

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
        except JobCanceled:
            ended, reason = Ended.STOPPED, ""
        except NoScratchSpace as exc:
            ended, reason = Ended.NO_SCRATCH_SPACE, exc.message
        except TransientJobError as exc:
            ended, reason = Ended.TRANSIENT, exc.message
        except (PermanentJobError, InvalidJobSpec) as exc:
            # InvalidJobSpec here: the job passed submit checks but not this
            # worker's (e.g. settings differ): retrying cannot help.
            ended, reason = Ended.PERMANENT, exc.message
        except Exception as exc:
            self.log.failure("nommer crashed on job {job_id}", job_id=job.job_id)
            ended, reason = Ended.CRASHED, repr(exc)
        await self._conclude(ctx, message, ended, reason, output)

    async def _conclude(self, ctx, message, ended, reason="", output=None):
        """Gather what ``outcome.decide`` needs, decide, execute."""
        stop_reason = ctx.stop_reason  # as the attempt ended: first reason wins, it cannot change
        if keeps_progress(stop_reason):
            await ctx.wait_progress_written()
        free = await self.scratch.free_bytes(ctx.scratch_dir) if ended is Ended.NO_SCRATCH_SPACE else None
        attempt = Attempt(ended=ended, attempts=ctx.job.attempts, worker_id=self.worker_id, stop_reason=stop_reason,
                          reason=reason, output=output, nommer=ctx.job.nommer, progress=ctx.progress,
                          free_bytes=free)
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
            await self.ledger.set_state(ctx.job.job_id, JobState.PENDING, details, expect=ctx.owned, **fields)
        except IllegalTransition:
            return await self._delete(message)
        except NotOwner:
            return
        except Exception:
            return self._left(ctx, doing)
        await self._change_visibility(message, delay_s)

    async def _change_visibility(self, message, seconds):
        try:
            await self.queue.change_visibility(self.settings.NEW_JOB_QUEUE_NAME, message.receipt_handle, seconds)
        except ReceiptHandleInvalid:
            pass
        except Exception:  # the queue failed: the message reappears when its lease ends anyway
            self.log.failure("setting the visibility of job {job_id}'s message failed", job_id=message.body)

    async def _keep_lease(self, ctx, message):
        """Extend the lease and heartbeat; never raises (it runs in a LoopingCall)."""
        try:
            await self.queue.change_visibility(self.settings.NEW_JOB_QUEUE_NAME, message.receipt_handle,
                                               self.settings.JOB_LEASE_S)
        except ReceiptHandleInvalid:
            ctx.stop(LEASE_LOST)
            return
        except Exception:
            self.log.failure("extending the lease of job {job_id} failed", job_id=ctx.job.job_id)
        try:
            await self.ledger.update(ctx.job.job_id, expect=ctx.owned, heartbeat_at=self.reactor.seconds())
        except JobCanceled:
            ctx.stop(CANCELED)
        except NotOwner:
            ctx.stop(LEASE_LOST)
        except Exception:
            self.log.failure("heartbeat of job {job_id} failed", job_id=ctx.job.job_id)

