"""A worker's end on EC2: report TERMINATING, terminate its own instance,
stop the reactor (``exit_on_ec2``, the worker's ``on_exit`` there, and
``terminate_self``). Spot or on-demand alike: an idle worker goes this way,
as does one interrupted by a spot notice (``nommer.workerd.spot``).

IAM: a worker terminates its own instance, so the instance role needs
``ec2:TerminateInstances`` -- scoped, never on ``*`` alone, with the
condition that the instance carries the tag nommer's EC2 fleet puts on its
workers::

    {"Effect": "Allow", "Action": "ec2:TerminateInstances",
     "Resource": "arn:aws:ec2:*:*:instance/*",
     "Condition": {"StringEquals": {"aws:ResourceTag/nommer:role": "worker"}}}

Without it ``terminate_self`` logs the refusal and the process still exits;
an instance launched with ``InstanceInitiatedShutdownBehavior=terminate``
(nommer's fleet launches them so) is also terminated by ``shutdown -h now``
run by its boot script (deploy/) after ``twistd`` returns -- this module never
runs ``shutdown`` itself. Either way a worker that lost its registry
heartbeat is found by feederd (WORKER_HEARTBEAT_TIMEOUT_S) and terminated
from there.
"""

from twisted.internet import defer, error as net_error
from twisted.logger import Logger

log = Logger(namespace="nommer.workerd.terminate")

#: How long ``exit_on_ec2`` waits for the registry write before terminating,
#: and for TerminateInstances, seconds: a worker that cannot reach them
#: still exits.
BEFORE_TERMINATE_TIMEOUT_S = 10.0
TERMINATE_TIMEOUT_S = 30.0


async def terminate_self(aws, instance_id):
    """TerminateInstances on this worker's own instance ``instance_id``
    through ``aws`` (a ``nommer.core.aws.AWS``). Returns True if EC2 took the
    request, False if it refused or could not be reached (logged: the usual
    cause is an instance role without ``ec2:TerminateInstances`` on
    instances tagged ``nommer:role=worker``, see the module docstring); the
    caller exits the process either way."""
    try:
        answer = await aws.call("ec2", "terminate_instances", InstanceIds=[instance_id])
    except Exception as exc:
        log.error("terminating own instance {instance_id} failed: {why}. The process exits anyway; the "
                  "instance stays up unless it shuts down with InstanceInitiatedShutdownBehavior=terminate "
                  "or feederd terminates it when its heartbeat stops. Does the instance role allow "
                  "ec2:TerminateInstances on instances tagged nommer:role=worker?",
                  instance_id=instance_id, why=f"{exc.__class__.__name__}: {exc}")
        return False
    states = [i.get("CurrentState", {}).get("Name") for i in answer.get("TerminatingInstances", [])]
    log.info("own instance {instance_id} terminating: {states}", instance_id=instance_id, states=states)
    return True


async def exit_on_ec2(worker, aws, instance_id, reason, reactor, before_terminate=None):
    """The worker's ``on_exit`` on EC2 (wrap it: ``lambda reason:
    Deferred.fromCoroutine(exit_on_ec2(...))``; ``Worker`` also accepts a
    coroutine). In order:

    1. ``worker.terminating()`` (its state EXITED -> TERMINATING, which the
       registry shows as terminating), once the worker's own last state
       report (``worker.state_reported()``) is written, so the two reports
       cannot land out of order.
    2. ``before_terminate()`` (the registry heartbeat's ``beat_now``), if
       given; waited for at most BEFORE_TERMINATE_TIMEOUT_S, its failure
       logged.
    3. ``terminate_self(aws, instance_id)``, at most TERMINATE_TIMEOUT_S.
    4. ``reactor.stop()``: twistd returns (the boot script may then run
       ``shutdown -h now``, see the module docstring).

    By the time the worker calls ``on_exit`` its receive loops have ended
    (see ``Worker``): nothing is taken from the queue during any of this.
    Returns whether the terminate call was accepted.
    """
    log.info("worker {worker_id} leaving EC2 ({reason}): terminating instance {instance_id}",
             worker_id=worker.worker_id, reason=reason, instance_id=instance_id)
    if hasattr(worker, "state_reported"):
        await _bounded(worker.state_reported(), BEFORE_TERMINATE_TIMEOUT_S, reactor, "the last state report",
                       worker)
    try:
        worker.terminating()
    except Exception:
        # A bug in the worker's state bookkeeping must not keep the instance up.
        log.failure("worker {worker_id}: marking it TERMINATING failed", worker_id=worker.worker_id)
    if before_terminate is not None:
        await _bounded(defer.maybeDeferred(before_terminate), BEFORE_TERMINATE_TIMEOUT_S, reactor,
                       "reporting TERMINATING", worker)
    terminated = False
    try:
        d = defer.Deferred.fromCoroutine(terminate_self(aws, instance_id))
        d.addTimeout(TERMINATE_TIMEOUT_S, reactor)
        terminated = await d
    except defer.TimeoutError:
        log.error("terminating own instance {instance_id}: no answer within {s} s; exiting anyway",
                  instance_id=instance_id, s=TERMINATE_TIMEOUT_S)
    try:
        reactor.stop()
    except net_error.ReactorNotRunning:
        pass
    return terminated


async def _bounded(d, timeout_s, reactor, what, worker):
    """Wait for ``d`` at most ``timeout_s``; log (never raise) a failure."""
    d.addTimeout(timeout_s, reactor)
    try:
        await d
    except Exception as exc:
        log.warn("worker {worker_id}: {what} failed or timed out: {why}", worker_id=worker.worker_id,
                 what=what, why=f"{exc.__class__.__name__}: {exc}")

