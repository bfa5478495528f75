"""The autoscaler simulator of bench/autoscaler_sim.py, on traces small
enough to work out by hand: billing, waits, idle exit, slots, and the
original policy's cap bug. (The benchmark itself is not run here.)"""

import json

import pytest

from bench.autoscaler_sim import (NOMMER, ORIGINAL, Setting, generate_trace, load_trace,
                                  original_workers_to_start, simulate)

# One job per instance, no tolerance, fixed 60 s boots, 600 s idle exit.
ONE = Setting("test P=1", jobs_per_instance=1, overflow_thresh=0, max_instances=5, boot_s=(60.0, 60.0))


def test_one_job_nommer_launches_on_submit():
    r = simulate([(0.0, 100.0)], ONE, NOMMER)
    # launched at 0 (poked by the submit), up at 60, job 60-160, idle until 760
    assert r.waits == [60.0]
    assert r.launches == 1
    assert r.instance_seconds == 760
    assert r.lower_bound_s == 100.0
    assert r.cost_ratio == pytest.approx(7.6)


def test_one_job_original_waits_for_its_first_tick():
    r = simulate([(0.0, 100.0)], ONE, ORIGINAL)
    # first autoscale run at 60 s: launched at 60, up at 120, job 120-220, idle until 820
    assert r.waits == [120.0]
    assert r.instance_seconds == 760
    assert r.instances[0].launched_at == 60.0


def test_an_idle_instance_takes_the_next_job_before_it_exits():
    r = simulate([(0.0, 100.0), (400.0, 100.0)], ONE, NOMMER)
    assert r.launches == 1
    assert r.waits == [60.0, 0.0]
    assert r.instance_seconds == 1100  # 0 -> 500 + 600 idle


def test_an_instance_idle_for_max_idle_s_is_gone():
    r = simulate([(0.0, 100.0), (800.0, 100.0)], ONE, NOMMER)
    # the first instance terminated at 760; the second job pays a new boot
    assert r.launches == 2
    assert r.waits == [60.0, 60.0]
    assert r.instance_seconds == 760 + 760


def test_an_instance_runs_jobs_per_instance_at_once_and_no_more():
    setting = Setting("P=2 M=1", jobs_per_instance=2, overflow_thresh=0, max_instances=1, boot_s=(60.0, 60.0))
    r = simulate([(0.0, 100.0)] * 4, setting, NOMMER)
    assert r.waits == [60.0, 60.0, 160.0, 160.0]
    assert r.instance_seconds == 60 + 200 + 600
    assert r.lower_bound_s == 200.0


def cap_bug_trace():
    # 5 jobs, then 7 more after the original's first tick (60 s) launched 2
    return [(0.0, 1000.0)] * 5 + [(61.0, 1000.0)] * 7


CAPPED = Setting("P=2 T=2 M=3", jobs_per_instance=2, overflow_thresh=2, max_instances=3, boot_s=(90.0, 90.0))


def test_original_policy_exceeds_its_cap_in_the_simulator():
    r = simulate(cap_bug_trace(), CAPPED, ORIGINAL)
    # t=60: n=0, u=5 -> 2; t=120: n=2 (pending), u=12 -> min(3, M=3) = 3: five instances
    assert r.peak_instances == 5
    assert [i.launched_at for i in r.instances] == [60.0, 60.0, 120.0, 120.0, 120.0]


def test_nommer_policy_keeps_the_cap_on_the_same_trace():
    r = simulate(cap_bug_trace(), CAPPED, NOMMER)
    assert r.peak_instances == 3
    assert r.launches == 3


@pytest.mark.parametrize("n,u,expected", [
    (0, 1, 1), (0, 5, 2), (0, 10, 3), (1, 4, 0), (1, 5, 1), (1, 9, 2), (2, 12, 3), (3, 50, 0), (0, 0, 0)])
def test_original_formula_gives_the_reference_examples(n, u, expected):
    # reference §4.6 with its defaults P=2, T=2, M=3; pending instances count like running ones
    assert original_workers_to_start(u, n, 0, 2, 2, 3) == expected
    assert original_workers_to_start(u, 0, n, 2, 2, 3) == expected


def test_trace_generation_is_deterministic_and_saved_once(tmp_path):
    assert generate_trace(5) == generate_trace(5)
    assert generate_trace(5) != generate_trace(6)
    path = tmp_path / "traces" / "t.json"
    jobs = load_trace(str(path))
    assert jobs == generate_trace()
    assert jobs == sorted(jobs) and all(d >= 10.0 for _, d in jobs)
    doc = json.loads(path.read_text())
    doc["jobs"] = [[1.0, 2.0]]
    path.write_text(json.dumps(doc))
    assert load_trace(str(path)) == [(1.0, 2.0)]  # an existing trace is replayed, not regenerated


def test_simulation_is_deterministic():
    jobs = generate_trace(3)[:200]
    a, b = simulate(jobs, CAPPED, ORIGINAL), simulate(jobs, CAPPED, ORIGINAL)
    assert (a.instance_seconds, a.waits, a.peak_instances) == (b.instance_seconds, b.waits, b.peak_instances)


def test_a_policy_that_never_launches_is_reported():
    never = NOMMER.__class__("never", lambda *args: 0, 60.0, 0.0, False)
    with pytest.raises(RuntimeError, match="still waiting"):
        simulate([(0.0, 10.0)], ONE, never, give_up_after_s=600.0)
