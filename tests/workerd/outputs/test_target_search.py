"""Target quality's search logic, pure: bisect, interpolate, stop, clamp,
max_probes, with fake score functions (no ffmpeg); the sample windows,
the ladder's scale and rung choice."""

import math
from fractions import Fraction

import pytest

from nommer.workerd.outputs import ladder as ladder_mod
from nommer.workerd.outputs import target
from nommer.workerd.outputs.source import SourceInfo
from nommer.workerd.outputs.target import Probe, Search, search


def concave(crf):
    """A concave falling curve like x264's (media-notes §4.3: 96.8 at 18, 93.4 at 23, 72.5 at 33)."""
    return 100.0 - 0.05 * (crf - 10) ** 2 - 0.2 * (crf - 10)


def linear(crf):
    return 130.0 - 2.0 * crf


def steep(crf):
    """A hard title: about 3 points a CRF."""
    return 140.0 - 3.0 * crf


def crfs(probes):
    return [p.crf for p in probes]


# --- bisect, interpolate, stop -----------------------------------------------------------

@pytest.mark.parametrize("score, target_, expected_first_two", [
    (linear, 70.0, [26.0, 31.0]),   # 26 scores 78 >= 70: go up, midpoint of [26, 36]
    (linear, 80.0, [26.0, 21.0]),   # 26 scores 78 < 80: go down, midpoint of [16, 26]
])
def test_first_two_probes_bisect_the_range(score, target_, expected_first_two):
    _, _, probes = search(score, target_, (16, 36), 4)
    assert crfs(probes)[:2] == expected_first_two


def test_a_probe_within_tolerance_stops_the_search():
    # linear(26) = 78: target 78.3 is within 0.5 -> one probe, CRF 26.
    crf, predicted, probes = search(linear, 78.3, (16, 36), 4)
    assert crfs(probes) == [26.0] and crf == 26.0 and predicted == 78.0


def test_third_probe_interpolates_linearly_between_the_two_around_the_target():
    # Target 75: 26 scores 78 (go up), 31 scores 68; the line between them gives 27.5.
    crf, predicted, probes = search(linear, 75.0, (16, 36), 4)
    assert crfs(probes) == [26.0, 31.0, 27.5]
    assert crf == 27.5 and predicted == pytest.approx(75.0)


def test_interpolation_is_rounded_down_to_the_step():
    # steep: 26 -> 62, 21 -> 77: target 70 -> 23.33 by the line -> 23.25 (the higher quality side).
    crf, predicted, probes = search(steep, 70.0, (16, 36), 4)
    assert crfs(probes)[:3] == [26.0, 21.0, 23.25]
    assert crf == 23.25 and predicted == pytest.approx(70.25)


def test_concave_curve_reaches_the_target_from_above_in_few_probes():
    for t in (95.0, 93.0, 90.0, 85.0, 80.0):
        crf, predicted, probes = search(concave, t, (16, 36), 4)
        assert len(probes) <= 4
        assert concave(crf) >= t - target.TOLERANCE, (t, crf, probes)
        assert abs(concave(crf) - t) <= 1.0, (t, crf, probes)
        assert crf == target.round_down(crf)


def test_fourth_probe_uses_the_monotone_cubic_through_three_probes():
    s = Search(90.0, (16, 36), 6, tolerance=0.01)
    for crf, score in ((26.0, concave(26.0)), (21.0, concave(21.0)), (31.0, concave(31.0))):
        s.add(crf, score)
    # Three falling points: PCHIP through them, inverted between 21 and 26.
    f = target.pchip([21.0, 26.0, 31.0], [concave(21.0), concave(26.0), concave(31.0)])
    expected = target.round_down(target.invert(f, 90.0, 21.0, 26.0))
    assert s.next_crf() == expected
    # The line through 21 and 26 alone would say otherwise (the curve is concave).
    line = target.pchip([21.0, 26.0], [concave(21.0), concave(26.0)])
    assert target.round_down(target.invert(line, 90.0, 21.0, 26.0)) != expected


def test_non_monotone_probes_fall_back_to_the_line():
    s = Search(90.0, (16, 36), 6, tolerance=0.01)
    s.add(26.0, 88.0)
    s.add(21.0, 92.0)
    s.add(31.0, 89.0)  # noise: higher than at 26
    assert s.next_crf() == target.round_down(21.0 + 5.0 * (92.0 - 90.0) / (92.0 - 88.0))


def test_two_probes_one_step_apart_end_the_search_on_the_good_one():
    s = Search(90.0, (16, 36), 8)
    s.add(24.0, 91.0)
    s.add(24.25, 89.0)
    assert s.next_crf() is None
    assert s.result() == (24.0, 91.0)


# --- clamp, max_probes --------------------------------------------------------------------

def test_target_above_the_best_quality_clamps_to_the_lowest_crf():
    crf, predicted, probes = search(linear, 99.0, (16, 36), 8)   # linear(16) = 98
    assert crf == 16.0 and predicted == 98.0
    assert min(crfs(probes)) == 16.0 and all(16.0 <= c <= 36.0 for c in crfs(probes))


def test_target_below_the_worst_quality_clamps_to_the_highest_crf():
    crf, predicted, probes = search(linear, 40.0, (16, 36), 8)   # linear(36) = 58
    assert crf == 36.0 and predicted == 58.0
    assert max(crfs(probes)) == 36.0


def test_max_probes_bounds_the_search():
    calls = []

    def score(crf):
        calls.append(crf)
        return concave(crf)
    for n in (2, 3, 4):
        calls.clear()
        crf, _, probes = search(score, 90.123, (16, 36), n, tolerance=0.001)
        assert len(calls) == len(probes) <= n


def test_after_max_probes_the_choice_is_the_interpolation_rounded_down():
    # Two probes only: 26 (78) and 31 (68) around target 75: no third probe, the line gives 27.5.
    crf, predicted, probes = search(linear, 75.0, (16, 36), 2)
    assert crfs(probes) == [26.0, 31.0]
    assert crf == 27.5 and predicted == pytest.approx(75.0)


def test_after_max_probes_all_good_keeps_the_highest_probed_crf():
    # Everything beats the target, max 2 probes: 26 and 31 both above 50 -> 31 (probed, safe).
    crf, predicted, probes = search(linear, 50.0, (16, 36), 2)
    assert crfs(probes) == [26.0, 31.0] and crf == 31.0 and predicted == 68.0


def test_the_range_is_respected_when_narrow():
    crf, _, probes = search(concave, 90.0, (30, 32), 4)
    assert all(30.0 <= c <= 32.0 for c in crfs(probes)) and 30.0 <= crf <= 32.0


def test_a_single_point_range():
    crf, predicted, probes = search(concave, 90.0, (22, 22), 4)
    assert crf == 22.0 and crfs(probes) == [22.0] and predicted == concave(22.0)


def test_upside_down_range_is_refused():
    with pytest.raises(ValueError):
        Search(90.0, (36, 16), 4)


def test_result_before_the_end_is_an_error():
    with pytest.raises(RuntimeError):
        Search(90.0, (16, 36), 4).result()


# --- pchip ---------------------------------------------------------------------------------

def test_pchip_passes_through_the_points_and_stays_monotone():
    xs, ys = [16.0, 21.0, 26.0, 36.0], [97.0, 95.0, 90.0, 60.0]
    f = target.pchip(xs, ys)
    for x, y in zip(xs, ys):
        assert f(x) == pytest.approx(y)
    values = [f(16.0 + i * 0.1) for i in range(201)]
    assert all(b <= a + 1e-9 for a, b in zip(values, values[1:]))


def test_pchip_of_two_points_is_the_line():
    f = target.pchip([20.0, 30.0], [90.0, 70.0])
    assert f(25.0) == pytest.approx(80.0) and f(22.5) == pytest.approx(85.0)


def test_pchip_needs_increasing_xs():
    with pytest.raises(ValueError):
        target.pchip([20.0, 20.0], [1.0, 2.0])


# --- sample, bitrates, ladder --------------------------------------------------------------

def test_short_or_unknown_sources_are_probed_whole():
    assert target.sample_windows(None) is None
    assert target.sample_windows(3.0) is None
    assert target.sample_windows(target.WHOLE_SOURCE_MAX_S) is None


@pytest.mark.parametrize("duration, n", [(20.0, 1), (60.0, 2), (100.0, 3), (600.0, target.MAX_WINDOWS),
                                         (7200.0, target.MAX_WINDOWS)])
def test_windows_spread_over_the_title(duration, n):
    windows = target.sample_windows(duration)
    assert len(windows) == n
    for start, length in windows:
        assert length == target.WINDOW_S and target.LEAD_IN_S <= start and start + length <= duration
    starts = [s for s, _ in windows]
    assert starts == sorted(starts)
    centres = [s + l / 2 for s, l in windows]
    assert centres == pytest.approx([duration * (i + 0.5) / n for i in range(n)], abs=0.001)


def test_the_first_window_gets_a_lead_in():
    assert target.sample_cuts([(9.0, 2.0)]) == [(7.0, 4.0)]
    assert target.sample_cuts([(4.0, 2.0), (10.0, 2.0)]) == [(2.0, 4.0), (10.0, 2.0)]
    # Every window leaves room for the lead-in before the first.
    for duration in (8.1, 9.0, 20.0, 61.0):
        assert target.sample_windows(duration)[0][0] >= target.LEAD_IN_S


def test_lead_frames_end_at_the_keyframe():
    assert target.lead_frames(Fraction(30)) == 60
    assert target.lead_frames(Fraction(30000, 1001)) == 60   # frame 60 is at 2.002 s
    assert target.lead_frames(Fraction(25)) == 50
    assert target.lead_frames(Fraction(24000, 1001)) == 48
    assert target.lead_frames(None) == 50


def test_probe_subsample_is_odd():
    assert target.probe_subsample(4, 30) == 1            # 120 frames: every one
    assert target.probe_subsample(6, 30) == 3            # 180: every 3rd
    assert target.probe_subsample(12, 30) == 3
    assert target.probe_subsample(12, 60) == 5           # 720: at most every 5th
    assert target.probe_subsample(None, None) == 1


def test_bitrate_at_interpolates_the_logarithm():
    probes = [Probe(20.0, 95.0, 2_000_000), Probe(26.0, 90.0, 1_000_000)]
    assert target.bitrate_at(probes, 20.0) == 2_000_000
    assert target.bitrate_at(probes, 23.0) == pytest.approx(math.sqrt(2) * 1_000_000)
    assert target.bitrate_at(probes, 32.0) == pytest.approx(500_000)   # extrapolated
    assert target.bitrate_at([Probe(26.0, 90.0, 1_000_000)], 20.0) == pytest.approx(2_000_000)


def test_scale_factor_is_clamped():
    assert target.scale_factor(1_500_000, 3_000_000) == 0.5
    assert target.scale_factor(300_000, 3_000_000) == target.SCALE_RANGE[0]
    assert target.scale_factor(9_000_000, 3_000_000) == target.SCALE_RANGE[1]


def test_rungs_gaining_too_little_are_dropped():
    # 80 -> 81.5 gains 1.5 over the last kept (80): dropped; 83 gains 3 over 80: kept; 84.5: 1.5 -> dropped.
    assert target.keep_rungs([80.0, 81.5, 83.0, 84.5]) == [True, False, True, False]
    assert target.keep_rungs([60.0, 75.0, 88.0, 94.0]) == [True, True, True, True]
    assert target.keep_rungs([95.0]) == [True]


@pytest.mark.parametrize("width, height, fps", [(1280, 720, Fraction(60)), (720, 1280, Fraction(30)),
                                                (640, 360, Fraction(30000, 1001))])
def test_custom_rungs_plan_the_same_sizes_and_fps(width, height, fps):
    source = SourceInfo(duration_s=10.0, width=width, height=height, fps=fps)
    rungs = ladder_mod.plan_rungs({"ladder": "default", "codec": "h264"}, source)
    again = ladder_mod.plan_rungs({"ladder": target.custom_rungs(rungs, 0.5), "codec": "h264"}, source)
    assert [(r.width, r.height, r.fps) for r in again] == [(r.width, r.height, r.fps) for r in rungs]
    assert [r.bitrate_bps for r in again] == [round(r.bitrate_bps * 0.5) for r in rungs]
