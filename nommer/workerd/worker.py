"""The worker: a Service running up to MAX_ENCODING_JOBS_PER_WORKER jobs at once.

Each slot receives a message from the queues of the worker's pools
(``pools``, default ``["default"]``: NEW_JOB_QUEUE_NAME; see
``nommer.core.pools``), highest priority first (``nommer.core.priority``),
with visibility timeout JOB_LEASE_S, and runs an attempt at its job (``nommer.workerd.attempt``:
lease, heartbeat, nommer, outcome). This module is the rest of the worker's
life: start, the slots, the idle exit, shutdowns, spot interruptions, exit;
its states and their transitions are ``nommer.workerd.lifecycle``'s.

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

import attr
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from nommer.core.chunking import parse_chunk_message
from nommer.core.errors import NoSuchJob
from nommer.core.pools import DEFAULT_POOL
from nommer.core.retry import retry
from nommer.core.workqueue.jobs import parse_job_message, worker_queues
from nommer.workerd import sandbox
from nommer.workerd.attempt import AttemptRunner
from nommer.workerd.chunk_attempt import ChunkRunner
from nommer.workerd.context import SHUTDOWN, SPOT_INTERRUPTION
from nommer.workerd.lifecycle import (
    GONE, INTERRUPTED_OR_GONE, REGISTRY_STATE, TAKING_JOBS, Lifecycle, check_transition, idle_exit_due,
    reports)
from nommer.workerd.scratch import SCRATCH_RECHECK_S, ScratchSpace

#: After a spot interruption notice the worker exits at the latest this many
#: seconds later, released or not (EC2 takes the instance back two minutes
#: after the notice); a job not released by then comes back when its lease ends.
SPOT_EXIT_DEADLINE_S = 90.0
#: Pause after a failed receive from the new-job queue before the next one, seconds.
RECEIVE_ERROR_PAUSE_S = 1.0


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

    ``pools``: the pools whose queues it takes jobs from (names; default
    ``["default"]``); ``settings`` should already hold their ``worker``
    settings (``nommer.core.pools.worker_settings``). A message of an
    earlier life of its job (sent before a retry) is dropped, not run
    (``nommer.core.workqueue.jobs``).
    """

    log = Logger()

    def __init__(self, ledger, settings, reactor, worker_id=None, on_exit=None, install_signals=True,
                 on_state_change=None, on_fatal=None, pools=None):
        self.ledger = ledger
        self.pools = list(pools or [DEFAULT_POOL])
        queues = worker_queues(settings, self.pools)
        #: What ``receive`` is given: one queue name, or the list of the pools' queues.
        self.job_queues = queues[0] if len(queues) == 1 else queues
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
        self.attempts = AttemptRunner(self)
        self.chunks = ChunkRunner(self)
        self._contexts = self.attempts.contexts   # job_id -> JobContext of each running attempt
        self._receives = set()
        self._loops = []
        self._last_activity = None
        self._busy = 0            # slots holding a message (taken or about to be)
        self._exit_reason = None  # set once the exit waits for the slot loops to end
        self._exit_deadline = None
        self._state_reported = None
        self.on_state_change = on_state_change
        self.started_at = reactor.seconds()

    # --- lifecycle -----------------------------------------------------------

    @property
    def jobs_done(self):
        """Jobs this worker has run since start (whatever their outcome)."""
        return self.attempts.jobs_done

    @property
    def state(self):
        """What the worker registry shows: a ``nommer.core.worker_registry.base`` state."""
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
        self.log.info("worker {worker_id} ready: {slots} slot(s), pool(s) {pools} (queue {queue})",
                      worker_id=self.worker_id, slots=slots, pools=", ".join(self.pools),
                      queue=self.job_queues if isinstance(self.job_queues, str) else ", ".join(self.job_queues))
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
        if self.lifecycle is Lifecycle.DRAINING:
            self._transition(Lifecycle.RELEASING)
        self.attempts.stop_all(SHUTDOWN)

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
        self._transition(Lifecycle.INTERRUPTED)
        self.attempts.stop_all(SPOT_INTERRUPTION)
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
        (a ``nommer.core.worker_registry.base`` state), ``jobs`` (ids of running
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

    async def _receive(self):
        """Messages for one slot (a list, maybe empty): a job from the new-job
        queue, waiting at most QUEUE_WAIT_TIME_S and no longer than the idle
        time left; none, after a pause, while scratch space is short (the job
        waits in the queue for a worker with room). None once the worker
        takes no more jobs."""
        s = self.settings
        if self.lifecycle not in TAKING_JOBS:  # stopped while pausing after a failed receive
            return None
        wait_s = s.QUEUE_WAIT_TIME_S
        if s.WORKER_TERMINATE_WHEN_IDLE:
            left = self._last_activity + s.WORKER_MAX_IDLE_S - self.reactor.seconds()
            wait_s = max(0.0, min(wait_s, left))
        short = await self.scratch.short()
        if short is not None:
            # Take nothing: the job waits in the queue for a worker with room.
            d = task.deferLater(self.reactor, min(wait_s, SCRATCH_RECHECK_S), lambda: [])
        else:
            d = defer.Deferred.fromCoroutine(self.queue.receive(
                self.job_queues, max_messages=1, visibility_timeout_s=s.JOB_LEASE_S,
                wait_time_s=wait_s))
        self._receives.add(d)
        try:
            return await d
        finally:
            self._receives.discard(d)

    async def _current_life(self, message):
        """``message`` with its body the bare job id, or None when it is a
        message of an earlier life of its job (its retry count is not the
        stored job's ``retries``: sent before a retry), which is deleted.
        A job that cannot be read here is left to the attempt (which reads
        it again and handles a missing job or a failing store)."""
        job_body, _ = parse_chunk_message(message.body)
        job_id, retries = parse_job_message(job_body)
        try:
            job = await self.store.get(job_id)
        except NoSuchJob:
            job = None
        except Exception:
            self.log.failure("reading job {job_id} before its attempt failed", job_id=job_id,
                             worker_id=self.worker_id)
            job = None
        if job is not None and job.retries != retries:
            self.log.info("dropping a message of job {job_id} from before its retry {retries} (the "
                          "message is of retry {old})", job_id=job_id, retries=job.retries, old=retries,
                          worker_id=self.worker_id)
            try:
                await self.attempts.leases.delete(message, job_id=job_id)
            except Exception:
                self.log.failure("deleting an old message of job {job_id} failed; it comes back and is "
                                 "dropped then", job_id=job_id, worker_id=self.worker_id)
            return None
        return message if message.body == job_id else attr.evolve(message, body=job_id)

    async def _run(self, message):
        """Run ``message``: a chunk task (``@chunk<i>``) or an attempt at its job."""
        _, index = parse_chunk_message(message.body)
        message = await self._current_life(message)
        if message is None:
            return
        if index is None:
            return await self.attempts.run_message(message)
        await self.chunks.run_message(message, message.body, index)

    async def _slot_loop(self, slot):
        s = self.settings
        while self.lifecycle in TAKING_JOBS:
            try:
                # A failed receive is retried after RECEIVE_ERROR_PAUSE_S, for
                # ever; _receive answers None once the worker takes no more jobs.
                messages = await retry(
                    self._receive, clock=self.reactor, backoff_s=RECEIVE_ERROR_PAUSE_S,
                    max_backoff_s=RECEIVE_ERROR_PAUSE_S,
                    on_retry=lambda exc, n, pause_s: self.log.failure(
                        "receiving a job failed; retrying in 1 s", Failure(exc)))
            except defer.CancelledError:
                break
            if messages is None:
                break
            if messages:
                self._busy += 1
                try:
                    await self._run(messages[0])
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
