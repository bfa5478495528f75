"""What follows an attempt: one pure decision.

An attempt is one run of a job on this worker (the job leased, DOWNLOADING
stored with attempts + 1, its nommer run). How it ended (``Ended``) and why
it was stopped from outside, if it was (the stop reason its ``JobContext``
recorded, first reason wins: ``nommer.workerd.context``), make an
``Attempt``; ``decide`` turns that into what to do, a small value; the worker
only executes it (``nommer.workerd.attempt``).

The worker's state reaches the decision through the stop reason it gave the
attempt: a cold shutdown stops the running jobs with SHUTDOWN, a spot
interruption notice with SPOT_INTERRUPTION (``nommer.workerd.lifecycle``). A
stop reason wins over how the nommer ended: a job stopped from outside is
never finished, failed or retried by this worker.

==========================================  =====================================================
the attempt                                 decision
==========================================  =====================================================
stopped: lease lost                         Leave: job and message are another worker's now
stopped: canceled (or no reason given)      DeleteMessage: the stored state is final already
stopped: cold shutdown                      Release, visible at once, "released by worker W
                                            shutting down"
stopped: spot interruption                  Release, visible at once, progress kept, "released:
                                            spot interruption notice on W (P% done)"
succeeded                                   Finish: FINISHED (progress 100, output), then delete
handed off (a chunked job's chunks queued)  DeleteMessage: the job stays ENCODING; its chunk tasks
                                            carry it on
out of scratch space (``NoScratchSpace``)   Release, visible at once, "released: scratch space
                                            low on W: ..." (logged as a warning; not a failure)
transient, attempts < MAX_JOB_ATTEMPTS      Release, visible after ``retry_delay_s``, "attempt N
                                            failed, retrying in D s: ..."
transient, attempts >= MAX_JOB_ATTEMPTS     Fail: ERROR "gave up after N attempts: ..."
permanent, or the spec refused here         Fail: ERROR with the reason
crashed (a bug in the nommer or ours)       Fail: ERROR "internal error in <nommer>: <exc>"
==========================================  =====================================================

Executing a decision (``AttemptRunner._execute``): the state is written fenced
(this worker's attempt only); a write refused as an illegal transition (the
job is final) deletes the message, one refused for ownership leaves it, a
store failure leaves it to reappear when its lease ends (visibility
timeout). FINISHED refused because the job became final or another worker's
is decided again as stopped.
"""

import enum

import attr

from nommer.core.errors import InvalidJobSpec, JobCanceled, PermanentJobError, TransientJobError
from nommer.workerd.context import CANCELED, LEASE_LOST, SHUTDOWN, SPOT_INTERRUPTION
from nommer.workerd.nommers.base import ChunksQueued, NoScratchSpace


class Ended(enum.Enum):
    """How the nommer's run ended."""

    SUCCEEDED = "succeeded"                # returned its output
    STOPPED = "stopped"                    # JobCanceled: stopped from outside
    NO_SCRATCH_SPACE = "no scratch space"  # NoScratchSpace (before it started, or ENOSPC)
    TRANSIENT = "transient"                # TransientJobError: may work on another try
    PERMANENT = "permanent"                # PermanentJobError, InvalidJobSpec: never will
    CRASHED = "crashed"                    # any other exception
    HANDED_OFF = "handed off"              # ChunksQueued: the job's chunks are queued tasks now


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Attempt:
    """One attempt, as it ended.

    - ``ended``: ``Ended``; ``stop_reason``: the context's (None: not stopped).
    - ``attempts``: the job's attempts, this one included (1-based).
    - ``worker_id``: this worker, named in released jobs' details.
    - ``reason``: the error's message (transient, permanent, no scratch
      space), ``repr`` of the exception when crashed.
    - ``output``: what the nommer returned (succeeded).
    - ``nommer``: the job's nommer path (named when it crashed).
    - ``progress``: last percent reported, None if none (kept by a spot release).
    - ``free_bytes``: free scratch space now, None if unknown (no scratch space).
    """

    ended: Ended
    attempts: int
    worker_id: str
    stop_reason: str = None
    reason: str = ""
    output: object = None
    nommer: str = ""
    progress: float = None
    free_bytes: int = None


@attr.s(frozen=True, auto_attribs=True)
class Finish:
    """Store FINISHED with ``output`` (progress 100), then delete the message."""

    output: object


@attr.s(frozen=True, auto_attribs=True)
class Fail:
    """Store ERROR with ``details``, then delete the message."""

    details: str


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Release:
    """Store PENDING with ``details`` (and ``progress`` unless None), then make
    the message visible again after ``visibility_s`` seconds. ``log_warning``:
    log the details as a warning first; ``doing``: what the log says failed
    if the store or queue cannot be written."""

    details: str
    visibility_s: float
    progress: float = None
    log_warning: bool = False
    doing: str = "releasing it"


@attr.s(frozen=True, auto_attribs=True)
class DeleteMessage:
    """Delete the message only: the job's stored state is final already."""


@attr.s(frozen=True, auto_attribs=True)
class Leave:
    """Do nothing: another worker holds the job and its message now."""


def retry_delay_s(attempt, base_s):
    """Delay before attempt ``attempt + 1`` after a transient failure, seconds:
    ``base_s`` doubling per attempt (attempt is 1-based)."""
    return base_s * 2 ** max(0, attempt - 1)


def keeps_progress(stop_reason):
    """Whether a release for ``stop_reason`` keeps the job's progress (the
    worker lets the last progress write land before deciding)."""
    return stop_reason == SPOT_INTERRUPTION


def ending_of(exc):
    """``(Ended, reason)`` of a nommer's run that raised ``exc``: the
    reason is the error's message ("" when stopped or handed off, ``repr``
    when it crashed). ``InvalidJobSpec`` here is PERMANENT: the job passed
    submit's checks but not this worker's (settings differ), and retrying
    cannot help."""
    if isinstance(exc, ChunksQueued):
        return Ended.HANDED_OFF, ""
    if isinstance(exc, JobCanceled):
        return Ended.STOPPED, ""
    if isinstance(exc, NoScratchSpace):
        return Ended.NO_SCRATCH_SPACE, exc.message
    if isinstance(exc, TransientJobError):
        return Ended.TRANSIENT, exc.message
    if isinstance(exc, (PermanentJobError, InvalidJobSpec)):
        return Ended.PERMANENT, exc.message
    return Ended.CRASHED, repr(exc)


def decide(attempt, max_attempts, retry_backoff_s):
    """What to do after ``attempt`` (an ``Attempt``): a ``Finish``, ``Fail``,
    ``Release``, ``DeleteMessage`` or ``Leave`` (see the module docstring's
    table). ``max_attempts``: MAX_JOB_ATTEMPTS; ``retry_backoff_s``:
    RETRY_BACKOFF_S (seconds)."""
    a = attempt
    if a.stop_reason is not None or a.ended is Ended.STOPPED:
        return _stopped(a, a.stop_reason or CANCELED)
    if a.ended is Ended.SUCCEEDED:
        return Finish(a.output)
    if a.ended is Ended.HANDED_OFF:
        return DeleteMessage()
    if a.ended is Ended.NO_SCRATCH_SPACE:
        if a.reason[:1].isdigit():  # the pre-start check's "N bytes free, M needed (...)"
            details = f"released: scratch space low on {a.worker_id}: {a.reason}"
        else:
            details = f"released: scratch space low on {a.worker_id}: {a.free_bytes} bytes free; {a.reason}"
        return Release(details=details, visibility_s=0, log_warning=True)
    if a.ended is Ended.TRANSIENT:
        if a.attempts >= max_attempts:
            return Fail(f"gave up after {a.attempts} attempts: {a.reason}")
        delay = retry_delay_s(a.attempts, retry_backoff_s)
        return Release(details=f"attempt {a.attempts} failed, retrying in {delay:.0f} s: {a.reason}",
                       visibility_s=delay, doing="sending it back to the queue")
    if a.ended is Ended.PERMANENT:
        return Fail(a.reason)
    if a.ended is Ended.CRASHED:
        return Fail(f"internal error in {a.nommer}: {a.reason}")
    raise ValueError(f"attempt ended {a.ended!r}: no decision")


def _stopped(a, reason):
    if reason == LEASE_LOST:
        return Leave()
    if reason == SHUTDOWN:
        return Release(details=f"released by worker {a.worker_id} shutting down", visibility_s=0)
    if reason == SPOT_INTERRUPTION:
        details = f"released: spot interruption notice on {a.worker_id}"
        if a.progress is not None:
            details += f" ({a.progress:.0f}% done)"
        return Release(details=details, visibility_s=0, progress=a.progress)
    return DeleteMessage()  # canceled: the stored state is final already
