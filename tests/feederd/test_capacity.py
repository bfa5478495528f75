"""Table tests of the pure capacity policy."""

import pytest

from nommer.feederd.capacity import workers_to_start

# The original's defaults: P=2 jobs per instance, T=2 overflow, M=3 instances.
ORIGINAL = dict(jobs_per_worker=2, overflow_thresh=2, max_workers=3)


@pytest.mark.parametrize("running,unfinished,expected", [
    (0, 0, 0),   # nothing to do
    (0, 1, 1),   # no workers: one job is enough to start one
    (0, 5, 2),   # 5 // 2
    (0, 10, 3),  # 10 // 2 = 5, clamped to M
    (1, 4, 0),   # 4 <= 1*2 + 2: tolerated overflow
    (1, 5, 1),   # 5 - 2 - 2 = 1 -> max(0, 1) = 1
    (1, 9, 2),   # (9 - 4) // 2 = 2
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
