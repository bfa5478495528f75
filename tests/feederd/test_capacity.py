"""Table tests of the pure capacity policy."""

import pytest

from nommer.feederd.fleet.capacity import target_workers, workers_to_start

# The original's defaults: P=2 jobs per instance, T=2 overflow, M=3 instances.
ORIGINAL = dict(jobs_per_worker=2, overflow_thresh=2, max_workers=3)


@pytest.mark.parametrize("running,unfinished,expected", [
    (0, 0, 0),   # nothing to do
    (0, 1, 1),   # no workers: one job is enough to start one
    (0, 5, 2),   # ceil((5 - 2) / 2) = 2 (the original: 5 // 2)
    (0, 10, 3),  # ceil(8 / 2) = 4, clamped to M
    (1, 4, 0),   # 4 <= 1*2 + 2: tolerated overflow
    (1, 5, 1),   # 5 - 2 - 2 = 1 -> ceil(1 / 2) = 1
    (1, 9, 2),   # ceil((9 - 4) / 2) = 3, clamped to M - n = 2 (the original: 5 // 2 = 2)
    (3, 50, 0),  # at the maximum already
])
def test_original_formula_cases(running, unfinished, expected):
    """The media-nommer formula's documented cases give the documented answers."""
    assert workers_to_start(unfinished, running, 0, **ORIGINAL) == expected


def test_cap_bug_fixed():
    """n=2, u=12: the original started 3 (total 5 > M=3); the fixed cap starts 1."""
    assert workers_to_start(12, 2, 0, **ORIGINAL) == 1


def test_never_exceeds_maximum():
    """Whatever the inputs, the total after starting never exceeds the maximum."""
    for running in range(5):
        for booting in range(4):
            for unfinished in range(40):
                for max_workers in range(1, 6):
                    for per, thresh in ((1, 0), (2, 2), (3, 1)):
                        n = workers_to_start(unfinished, running, booting, per, thresh, max_workers)
                        assert n >= 0
                        assert n == 0 or running + booting + n <= max_workers, (running, booting, unfinished)


def test_booting_workers_count():
    """Workers still booting count as capacity: no second launch while they come up."""
    assert workers_to_start(1, 0, 0, 1, 0, 4) == 1
    assert workers_to_start(1, 0, 1, 1, 0, 4) == 0


def test_local_default_runs_one_job_per_core():
    """Local default (P=1, T=0, M=cores=2): two waiting jobs start two workers, a third none."""
    assert workers_to_start(2, 0, 0, 1, 0, 2) == 2
    assert workers_to_start(3, 2, 0, 1, 0, 2) == 0
    assert workers_to_start(3, 1, 0, 1, 0, 2) == 1


@pytest.mark.parametrize("running,booting,unfinished,per,thresh,maximum,expected", [
    # P=2, T=0: an odd overage needs the extra worker now, not one tick later
    (0, 0, 3, 2, 0, 10, 2),    # floor gave 1 (3 // 2), then 1 more next tick
    (1, 0, 5, 2, 0, 10, 2),    # overage 3 -> 2 (floor: 1)
    (0, 1, 5, 2, 0, 10, 2),    # booting counts like running
    (2, 0, 21, 4, 0, 10, 4),   # overage 13, P=4 -> 4 (floor: 3)
    (2, 0, 21, 4, 0, 5, 3),    # ... clamped to M - n
    (0, 0, 20, 2, 0, 5, 5),    # the burst: 10 wanted, M=5
    (5, 0, 20, 2, 0, 5, 0),    # at M: none
    # P=2, T=2, from cold: the target is the size the warm rule keeps
    (0, 0, 4, 2, 2, 10, 1),    # 4 <= 1*2 + 2 (the original started 2)
    (0, 0, 7, 2, 2, 10, 3),    # 7 > 2*2 + 2 -> 3
    (0, 0, 1, 2, 2, 10, 1),    # one job starts one worker whatever T
    (0, 0, 1, 3, 5, 10, 1),
    # P=1: ceil and floor agree
    (0, 0, 3, 1, 0, 10, 3),
    (1, 1, 3, 1, 0, 10, 1),
    (2, 0, 5, 1, 1, 10, 2),
])
def test_rounded_up_cases(running, booting, unfinished, per, thresh, maximum, expected):
    """Overage is rounded up to whole workers, and clamped to M - n."""
    assert workers_to_start(unfinished, running, booting, per, thresh, maximum) == expected


def test_one_decision_reaches_the_fleet_the_rule_settles_at():
    """After one decision, evaluating again starts nothing (no tick-late
    extra worker), and the fleet is the smallest that holds the jobs
    within capacity + T (or M)."""
    for running in range(4):
        for booting in range(3):
            for unfinished in range(1, 40):
                for per, thresh in ((1, 0), (2, 0), (2, 2), (3, 1), (4, 0)):
                    maximum = 8
                    n = running + booting
                    started = workers_to_start(unfinished, running, booting, per, thresh, maximum)
                    total = n + started
                    assert workers_to_start(unfinished, total, 0, per, thresh, maximum) == 0
                    if started:
                        assert total == maximum or unfinished <= total * per + thresh
                        assert total - 1 < 1 or unfinished > (total - 1) * per + thresh


def test_target_workers():
    """The target: smallest n >= 1 with unfinished <= n*P + T; 0 with no job."""
    assert target_workers(0, 2, 2) == 0
    assert target_workers(1, 2, 2) == 1
    assert target_workers(6, 2, 2) == 2
    assert target_workers(7, 2, 2) == 3
    assert target_workers(3, 2, 0) == 2


def test_leaving_workers_use_room_but_give_no_capacity():
    """One worker interrupted (leaving), one job waiting, M = 2: a replacement starts; with M = 1 it cannot."""
    assert workers_to_start(1, running=0, booting=0, jobs_per_worker=1, overflow_thresh=0, max_workers=2,
                            leaving=1) == 1
    assert workers_to_start(1, running=0, booting=0, jobs_per_worker=1, overflow_thresh=0, max_workers=1,
                            leaving=1) == 0
    assert workers_to_start(5, running=1, booting=0, jobs_per_worker=1, overflow_thresh=0, max_workers=4,
                            leaving=2) == 1
