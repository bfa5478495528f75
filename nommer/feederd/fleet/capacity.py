"""The capacity policy: how many workers to start. Pure: plain numbers in, a
number out; the autoscaler gathers the numbers and a fleet starts workers.

It is media-nommer's formula (reference §4.6) with two fixes:

- the cap: the original clamped the number to start to the maximum instead
  of to the maximum minus what already runs, so totals could exceed it.
- the rounding: the original started ``overage // P`` workers (at least
  one). With P > 1 that floor leaves up to P - 1 jobs beyond the tolerated
  overflow, and the next evaluation starts one more worker: the fleet the
  rule settles at is the smallest one that holds the jobs, but it gets there
  one tick (60 s in the original) late. Here the number is rounded up, so
  one decision reaches that size. The same target is used with no worker at
  all (the original ignored T then, and could start more workers from cold
  than its own rule keeps once one runs: P=2, T=2, 4 jobs started 2, while
  1 worker with 4 jobs starts none); one job still starts one worker.

Workers still booting count as running, so a slow boot never leads to
launching twice.
"""


def target_workers(unfinished_jobs, jobs_per_worker, overflow_thresh):
    """The fleet size the policy aims at: the smallest ``n >= 1`` with
    ``unfinished <= n * P + T`` (0 when nothing is unfinished)."""
    if unfinished_jobs <= 0:
        return 0
    over = unfinished_jobs - overflow_thresh
    return max(1, -(-over // jobs_per_worker))  # ceil(over / P), integers only


def workers_to_start(unfinished_jobs, running, booting, jobs_per_worker, overflow_thresh, max_workers,
                     leaving=0):
    """Number of workers to start now (0 or more).

    - ``unfinished_jobs``: jobs not in a final state (waiting or running).
    - ``running``, ``booting``: workers up, and started but not up yet.
    - ``jobs_per_worker``: concurrent jobs one worker runs (P).
    - ``overflow_thresh``: unfinished jobs tolerated above capacity before
      another worker is started (T).
    - ``max_workers``: most workers there may ever be, running and booting (M).
    - ``leaving``: workers on their way out (spot interruption, idle
      termination, exited on an instance not gone yet): they count against
      M but run no job, so they are no capacity.

    With no workers, one job is enough to start one. Otherwise start only when
    ``unfinished > n * P + T``: ``ceil((unfinished - n * P - T) / P)`` workers,
    i.e. up to ``target_workers``, and never more than ``M - n`` so the total
    stays <= M.
    """
    n = running + booting
    room = max_workers - n - leaving
    if room <= 0 or unfinished_jobs <= 0:
        return 0
    wanted = target_workers(unfinished_jobs, jobs_per_worker, overflow_thresh) - n
    return max(0, min(wanted, room))
