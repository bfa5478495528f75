"""The capacity policy: how many workers to start. Pure: plain numbers in, a
number out; the autoscaler gathers the numbers and a fleet starts workers.

It is media-nommer's formula (reference §4.6) with its cap bug fixed: the
original clamped the number to start to the maximum instead of to the
maximum minus what already runs, so totals could exceed it. Workers still
booting count as running, so a slow boot never leads to launching twice.
"""


def workers_to_start(unfinished_jobs, running, booting, jobs_per_worker, overflow_thresh, max_workers):
    """Number of workers to start now (0 or more).

    - ``unfinished_jobs``: jobs not in a final state (waiting or running).
    - ``running``, ``booting``: workers up, and started but not up yet.
    - ``jobs_per_worker``: concurrent jobs one worker runs (P).
    - ``overflow_thresh``: unfinished jobs tolerated above capacity before
      scaling up while at least one worker exists (T).
    - ``max_workers``: most workers there may ever be, running and booting (M).

    With no workers, one job is enough to start one. Otherwise start only when
    ``unfinished > capacity + T``, ``(unfinished - capacity - T) // P`` workers
    (at least one), and never more than ``M - n`` so the total stays <= M.
    """
    n = running + booting
    if n >= max_workers or unfinished_jobs <= 0:
        return 0
    capacity = n * jobs_per_worker
    if n > 0 and unfinished_jobs < capacity + overflow_thresh:
        return 0
    overage = unfinished_jobs - capacity - (overflow_thresh if capacity > 0 else 0)
    if overage <= 0:
        return 0
    wanted = max(overage // jobs_per_worker, 1)
    return min(wanted, max_workers - n)
