"""The EC2 fleet's pure decisions (``nommer.feederd.fleet.ec2_plan``): plain
values and ``now`` in, what to do out."""

from twisted.trial.unittest import TestCase

from nommer.core.registry.base import WorkerRecord
from nommer.feederd.fleet.ec2_plan import (FleetInstance, count_instances, estimate_cost_usd, launch_specs,
                                           plan_terminations, records_by_instance)
from tests.helpers import temp_settings


class PureTests(TestCase):

    def inst(self, **kw):
        values = dict(instance_id="i-1", state="running", launched_at=1000.0)
        values.update(kw)
        return FleetInstance(**values)

    def test_plan_terminations(self):
        """Only never-registered past the boot timeout and silent registered workers are planned."""
        booting = self.inst(instance_id="i-boot", state="pending", launched_at=1500.0)
        late = self.inst(instance_id="i-late", launched_at=1000.0)
        zombie = self.inst(instance_id="i-zombie", registered=True, last_seen=1700.0)
        healthy = self.inst(instance_id="i-ok", registered=True, last_seen=1950.0)
        stopped = self.inst(instance_id="i-stopped", state="stopped", launched_at=0.0)
        plan = plan_terminations([booting, late, zombie, healthy, stopped], now=2000.0,
                                 boot_timeout_s=600.0, heartbeat_timeout_s=180.0)
        self.assertEqual([(i.instance_id, r.split(":")[0]) for i, r in plan],
                         [("i-late", "never registered"), ("i-zombie", "zombie")])

    def test_count_instances(self):
        """running = EC2 running and registered; everything else live is booting (the cap counts all)."""
        instances = [self.inst(registered=True), self.inst(), self.inst(state="pending"),
                     self.inst(state="stopped", registered=True)]
        self.assertEqual(count_instances(instances), (1, 3, 0))

    def test_leaving_workers_count_against_the_max_but_are_no_capacity(self):
        """Interrupted / terminating / exited workers: in the total, not in the capacity."""
        instances = [self.inst(registered=True, worker_state="running"),
                     self.inst(registered=True, worker_state="interrupted"),
                     self.inst(registered=True, worker_state="terminating"),
                     self.inst(registered=True, worker_state="exited")]
        self.assertEqual(count_instances(instances), (1, 0, 3))

    def test_exited_worker_instance_is_terminated(self):
        """A running instance whose worker said it exited is terminated at once (nothing runs there)."""
        exited = self.inst(instance_id="i-exited", registered=True, last_seen=1990.0, worker_state="exited")
        interrupted = self.inst(instance_id="i-int", registered=True, last_seen=1990.0, worker_state="interrupted")
        plan = plan_terminations([exited, interrupted], now=2000.0, boot_timeout_s=600.0, heartbeat_timeout_s=180.0)
        self.assertEqual([(i.instance_id, r) for i, r in plan], [("i-exited", "its worker exited")])

    def test_records_by_instance(self):
        """Records name their instance by instance_id or worker_id; the most recent wins."""
        old = WorkerRecord(worker_id="i-1", instance_id="i-1", last_seen=10.0)
        new = WorkerRecord(worker_id="w-x", instance_id="i-1", last_seen=20.0)
        local = WorkerRecord(worker_id="host-1-w1", last_seen=30.0)
        index = records_by_instance([old, new, local])
        self.assertIs(index["i-1"], new)
        self.assertEqual(set(index), {"i-1", "w-x", "host-1-w1"})

    def test_cost_estimate(self):
        """Per-second billing with a 60 s minimum; unknown price: no estimate."""
        self.assertAlmostEqual(estimate_cost_usd(3600, 0.1), 0.1)
        self.assertAlmostEqual(estimate_cost_usd(10, 0.36), 0.006)
        self.assertIsNone(estimate_cost_usd(100, None))

    def test_launch_specs_order(self):
        """Markets, then types, then subnets: the order tried."""
        settings, _ = temp_settings(self, EC2_AMI_ID="ami-1", EC2_INSTANCE_TYPES=["a.large", "b.large"],
                                    EC2_SUBNET_IDS=["subnet-01", "subnet-02"], EC2_ON_DEMAND_FALLBACK=True,
                                    SPOT_MAX_PRICE="0.07")
        specs = launch_specs(settings, "#cloud-config\n{}", "me")
        self.assertEqual([(s.market, s.instance_type, s.subnet_id, s.max_price) for s in specs], [
            ("spot", "a.large", "subnet-01", "0.07"), ("spot", "a.large", "subnet-02", "0.07"),
            ("spot", "b.large", "subnet-01", "0.07"), ("spot", "b.large", "subnet-02", "0.07"),
            ("on-demand", "a.large", "subnet-01", None), ("on-demand", "a.large", "subnet-02", None),
            ("on-demand", "b.large", "subnet-01", None), ("on-demand", "b.large", "subnet-02", None)])
        on_demand, _ = temp_settings(self, EC2_AMI_ID="ami-1", EC2_MARKET="on-demand", EC2_ON_DEMAND_FALLBACK=True)
        self.assertEqual({s.market for s in launch_specs(on_demand, "", "me")}, {"on-demand"})

