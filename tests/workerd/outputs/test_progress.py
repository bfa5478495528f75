"""WeightedProgress: one monotonic percentage over weighted steps and the upload."""

from nommer.workerd.outputs.progress import UPLOAD_SHARE, WeightedProgress


def meter(weights):
    seen = []
    return WeightedProgress(weights, seen.append), seen


def test_steps_share_the_encode_part_by_weight():
    m, seen = meter([3.0, 1.0])
    m.step(0, 0.5)
    assert seen[-1] == round(0.375 * (1 - UPLOAD_SHARE) * 100, 2)
    m.step(0, 1.0)
    m.step(1, 1.0)
    assert seen[-1] == round((1 - UPLOAD_SHARE) * 100, 2)


def test_never_goes_down_nor_repeats():
    m, seen = meter([1.0, 1.0])
    m.step(1, 0.5)
    m.step(0, 0.9)  # an earlier step reporting late: below what was shown
    m.step(1, 0.5)
    assert seen == sorted(set(seen))
    assert len(seen) == 1


def test_upload_runs_to_100():
    m, seen = meter([1.0])
    m.step(0, 1.0)
    m.uploaded(50, 100)
    assert (1 - UPLOAD_SHARE) * 100 < seen[-1] < 100
    m.uploaded(100, 100)
    assert seen[-1] == 100.0
    m.uploaded(0, 0)
    assert seen[-1] == 100.0 and seen == sorted(seen)


def test_zero_and_negative_weights_still_progress():
    m, seen = meter([0.0, -1.0])
    m.step(0, 1.0)
    m.step(1, 1.0)
    assert seen[-1] == round((1 - UPLOAD_SHARE) * 100, 2)
    assert all(0 <= p <= 100 for p in seen)
