"""A worker's lifecycle: one explicit state and the table of its transitions.

As Buildbot's latent worker keeps its ``States``: ``Worker.lifecycle`` is a
``Lifecycle``, changed only through ``check_transition``; a change not in
``TRANSITIONS`` raises ``IllegalWorkerTransition``. What the worker registry
shows (``WorkerRecord.state``, ``nommer.core.worker_registry.base``) is read from
the state through ``REGISTRY_STATE``; the registry's values are unchanged.

=============  ===========  ==============================================  ===========================
state          registry     meaning                                         left for
=============  ===========  ==============================================  ===========================
CREATED        running      built, not started                              STARTING; DRAINING,
                                                                            INTERRUPTED
STARTING       running      checking the ffmpeg sandbox; no job yet         RUNNING (check passed),
                                                                            REFUSED (failed); STOPPING,
                                                                            DRAINING, INTERRUPTED
RUNNING        running      slot loops taking jobs                          STOPPING, DRAINING,
                                                                            INTERRUPTED
REFUSED        running      the sandbox check failed: takes no job          EXITED (no ``on_fatal``);
                                                                            DRAINING, INTERRUPTED
STOPPING       running      takes no new job: idle exit begun (then exits   EXITED (idle exit);
                            when the slot loops end) or the service         DRAINING, INTERRUPTED
                            stopped (twistd stops the reactor)
DRAINING       draining     warm shutdown (first SIGTERM, rebalance         EXITED; RELEASING,
                            recommendation): running jobs finish, exit      INTERRUPTED
RELEASING      draining     cold shutdown (second SIGTERM): running jobs    EXITED; INTERRUPTED
                            stopped and released, exit
INTERRUPTED    interrupted  spot interruption notice: running jobs          EXITED
                            released at once, exit (SPOT_EXIT_DEADLINE_S)
EXITED         exited       ``on_exit`` called                              TERMINATING
TERMINATING    terminating  on EC2, terminating its own instance            (none)
                            (``nommer.workerd.terminate``)
=============  ===========  ==============================================  ===========================

Events that do not change the state are the worker's to ignore, before any
transition: a drain or SIGTERM once interrupted or gone, a second drain, a
third SIGTERM (``Worker.request_shutdown``), an interrupt once interrupted
or gone, a stop of a service already taking no job.

A change of the registry value is reported (``Worker.on_state_change``),
except TERMINATING: ``exit_on_ec2`` reports that one itself, once the
EXITED report has landed (``reports``).

The idle exit's arithmetic is here too, pure (``idle_exit_due``).
"""

import enum

from nommer.core.worker_registry import base as registry


class Lifecycle(enum.Enum):
    """A worker's state (see the module docstring's table)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    REFUSED = "refused"
    STOPPING = "stopping"
    DRAINING = "draining"
    RELEASING = "releasing"
    INTERRUPTED = "interrupted"
    EXITED = "exited"
    TERMINATING = "terminating"


L = Lifecycle

#: The legal transitions: state -> the states it may change to.
TRANSITIONS = {
    L.CREATED: {L.STARTING, L.DRAINING, L.INTERRUPTED},
    L.STARTING: {L.RUNNING, L.REFUSED, L.STOPPING, L.DRAINING, L.INTERRUPTED},
    L.RUNNING: {L.STOPPING, L.DRAINING, L.INTERRUPTED},
    L.REFUSED: {L.EXITED, L.DRAINING, L.INTERRUPTED},
    L.STOPPING: {L.EXITED, L.DRAINING, L.INTERRUPTED},
    L.DRAINING: {L.EXITED, L.RELEASING, L.INTERRUPTED},
    L.RELEASING: {L.EXITED, L.INTERRUPTED},
    L.INTERRUPTED: {L.EXITED},
    L.EXITED: {L.TERMINATING},
    L.TERMINATING: set(),
}

#: What the worker registry shows of each state (``WorkerRecord.state``).
REGISTRY_STATE = {
    L.CREATED: registry.RUNNING,
    L.STARTING: registry.RUNNING,
    L.RUNNING: registry.RUNNING,
    L.REFUSED: registry.RUNNING,
    L.STOPPING: registry.RUNNING,
    L.DRAINING: registry.DRAINING,
    L.RELEASING: registry.DRAINING,
    L.INTERRUPTED: registry.INTERRUPTED,
    L.EXITED: registry.EXITED,
    L.TERMINATING: registry.TERMINATING,
}

#: The states in which the slot loops take jobs (or will, once started).
TAKING_JOBS = frozenset({L.STARTING, L.RUNNING})

#: Releasing every job at once, or gone: a drain or shutdown changes nothing more.
INTERRUPTED_OR_GONE = frozenset({L.INTERRUPTED, L.EXITED, L.TERMINATING})

#: ``on_exit`` called already.
GONE = frozenset({L.EXITED, L.TERMINATING})


class IllegalWorkerTransition(Exception):
    """A change of a worker's state that ``TRANSITIONS`` does not allow (a bug)."""


def check_transition(old, new):
    """Return ``new`` if ``old`` -> ``new`` is in ``TRANSITIONS``; raise
    ``IllegalWorkerTransition`` otherwise."""
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(sorted(s.name for s in TRANSITIONS[old])) or "none"
        raise IllegalWorkerTransition(f"worker state {old.name} -> {new.name} is not in the table "
                                      f"(from {old.name}: {allowed})")
    return new


def reports(old, new):
    """Whether ``old`` -> ``new`` is reported through ``on_state_change``: the
    registry value changes, and ``new`` is not TERMINATING (reported by
    ``exit_on_ec2``)."""
    return REGISTRY_STATE[old] != REGISTRY_STATE[new] and new is not L.TERMINATING


def idle_exit_due(now, last_activity, running_jobs, max_idle_s, enabled=True):
    """Whether an idle worker should exit: it is enabled, runs no job, and
    has run none for at least ``max_idle_s`` seconds (times in seconds)."""
    return enabled and running_jobs == 0 and now - last_activity >= max_idle_s
