"""The EC2 fleet's pure decisions (``nommer.feederd.fleet.ec2_plan``): plain
values and ``now`` in, what to do out."""

import attr
from twisted.trial.unittest import TestCase

from nommer.core.worker_registry.base import WorkerRecord
from nommer.feederd.fleet.ec2_plan import (FleetInstance, count_instances, estimate_cost_usd, launch_specs,
                                           plan_terminations, price_of, reconcile, records_by_instance,
                                           spot_prices_due)
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


GRACE_S = 120.0
NOW = 10_000.0


def described(iid, state="running", launched_at=NOW - 300):
    """A DescribeInstances instance dict (spot, in us-east-1a)."""
    return {"InstanceId": iid, "InstanceType": "c7i.large", "State": {"Name": state},
            "LaunchTime": launched_at, "Placement": {"AvailabilityZone": "us-east-1a"},
            "InstanceLifecycle": "spot"}


def launched(iid, launched_at):
    """A FleetInstance as the fleet notes it at launch."""
    return FleetInstance(instance_id=iid, instance_type="c7i.large", availability_zone="us-east-1b",
                         market="spot", launched_at=launched_at)


def record(iid, last_seen=NOW - 10, state="running"):
    return WorkerRecord(worker_id=iid, instance_id=iid, state=state, last_seen=last_seen)


class ReconcileTests(TestCase):
    """One listing against the registry and what feederd launched and terminated (EC2 lags both)."""

    # (name, listed, records, previous view ids, launched {id: at}, terminated {id: at},
    #  expected: view {id: (registered, state)}, launched ids kept, terminated ids kept, never listed, gone)
    TABLE = [
        ("listed, registered", [described("i-1")], [record("i-1")], [], {}, {},
         {"i-1": (True, "running")}, [], [], [], []),
        ("listed, not registered", [described("i-1", "pending")], [], [], {}, {},
         {"i-1": (False, "pending")}, [], [], [], []),
        ("terminated by us, still listed within the grace: left out",
         [described("i-1")], [record("i-1")], ["i-1"], {}, {"i-1": NOW - GRACE_S},
         {}, [], ["i-1"], [], []),
        ("terminated by us, still listed after the grace: counted again, forgotten",
         [described("i-1")], [], ["i-1"], {}, {"i-1": NOW - GRACE_S - 1},
         {"i-1": (False, "running")}, [], [], [], []),
        ("launched, not listed yet, within the grace: counted with its registration",
         [], [record("i-new")], [], {"i-new": NOW - GRACE_S}, {},
         {"i-new": (True, "pending")}, ["i-new"], [], [], []),
        ("launched, not listed, not registered", [], [], [], {"i-new": NOW - 5}, {},
         {"i-new": (False, "pending")}, ["i-new"], [], [], []),
        ("launched, now listed: the listing wins", [described("i-new")], [], [], {"i-new": NOW - 5}, {},
         {"i-new": (False, "running")}, [], [], [], []),
        ("launched, never listed after the grace: no longer counted",
         [], [], ["i-new"], {"i-new": NOW - GRACE_S - 1}, {},
         {}, [], [], ["i-new"], ["i-new"]),
        ("gone from the listing on its own", [described("i-2")], [], ["i-1", "i-2"], {}, {},
         {"i-2": (False, "running")}, [], [], [], ["i-1"]),
        ("gone from the listing because we terminated it: not gone on its own",
         [], [], ["i-1"], {}, {"i-1": NOW - 30}, {}, [], ["i-1"], [], []),
        ("terminated by us long ago and no longer listed: forgotten",
         [], [], [], {}, {"i-1": NOW - GRACE_S - 1}, {}, [], [], [], []),
        ("in the last view, terminated by us longer than the grace ago, now unlisted: gone",
         [], [], ["i-1"], {}, {"i-1": NOW - GRACE_S - 1}, {}, [], [], [], ["i-1"]),
    ]

    def test_table(self):
        """Each row: the view, what is still awaited from EC2, and what to log."""
        for (name, listed, records, previous_ids, launched_at, terminated, view, kept_launched, kept_terminated,
             never_listed, gone) in self.TABLE:
            previous = {iid: launched(iid, NOW - 400) for iid in previous_ids}
            pending = {iid: launched(iid, at) for iid, at in launched_at.items()}
            seen = reconcile(listed, records, previous, pending, dict(terminated), NOW, GRACE_S)
            self.assertEqual({iid: (i.registered, i.state) for iid, i in seen.view.items()}, view, name)
            self.assertEqual(sorted(seen.launched), kept_launched, name)
            self.assertEqual(sorted(seen.terminated), kept_terminated, name)
            self.assertEqual([i.instance_id for i in seen.never_listed], never_listed, name)
            self.assertEqual([i.instance_id for i in seen.gone], gone, name)

    def test_the_inputs_are_left_alone(self):
        """reconcile returns new dicts; the fleet's own are not changed under it."""
        pending = {"i-old": launched("i-old", NOW - GRACE_S - 1), "i-new": launched("i-new", NOW - 1)}
        terminated = {"i-t": NOW - GRACE_S - 1}
        previous = {"i-p": launched("i-p", NOW - 400)}
        reconcile([described("i-new")], [], previous, pending, terminated, NOW, GRACE_S)
        self.assertEqual(sorted(pending), ["i-new", "i-old"])
        self.assertEqual(terminated, {"i-t": NOW - GRACE_S - 1})
        self.assertEqual(list(previous), ["i-p"])

    def test_fields_of_a_listed_and_of_an_awaited_instance(self):
        """A listed instance takes EC2's fields and the record's; an awaited one keeps its launch fields."""
        seen = reconcile([described("i-1", launched_at=NOW - 50)], [record("i-1", NOW - 7, "draining"),
                                                                    record("i-2", NOW - 3)],
                         {}, {"i-2": launched("i-2", NOW - 9)}, {}, NOW, GRACE_S)
        self.assertEqual(seen.view["i-1"], FleetInstance(
            instance_id="i-1", instance_type="c7i.large", availability_zone="us-east-1a", market="spot",
            state="running", launched_at=NOW - 50, registered=True, last_seen=NOW - 7, worker_state="draining"))
        self.assertEqual(seen.view["i-2"], FleetInstance(
            instance_id="i-2", instance_type="c7i.large", availability_zone="us-east-1b", market="spot",
            state="pending", launched_at=NOW - 9, registered=True, last_seen=NOW - 3))


class PriceTests(TestCase):

    def test_price_of(self):
        """A known spot price of the type and AZ, else the setting; on-demand has none."""
        spot = launched("i-1", NOW)
        prices = {("c7i.large", "us-east-1b"): (0.05, NOW + 60), ("m7i.large", "us-east-1b"): (None, NOW + 60)}
        self.assertEqual(price_of(spot, prices, 0.04), 0.05)
        self.assertEqual(price_of(attr.evolve(spot, instance_type="m7i.large"), prices, 0.04), 0.04)
        self.assertEqual(price_of(attr.evolve(spot, availability_zone="us-east-1a"), prices, None), None)
        self.assertIsNone(price_of(attr.evolve(spot, market="on-demand"), prices, 0.04))

    def test_spot_prices_due(self):
        """Each spot (type, AZ) once, when never asked or its refresh time has come; on-demand never."""
        a, b = launched("i-1", NOW), attr.evolve(launched("i-2", NOW), availability_zone="us-east-1a")
        c = attr.evolve(launched("i-3", NOW), instance_type="m7i.large")
        on_demand = attr.evolve(launched("i-4", NOW), instance_type="x9.large", market="on-demand")
        instances = [a, attr.evolve(a, instance_id="i-5"), b, c, on_demand]
        self.assertEqual(spot_prices_due(instances, {}, NOW), [("c7i.large", "us-east-1b"),
                                                               ("c7i.large", "us-east-1a"),
                                                               ("m7i.large", "us-east-1b")])
        prices = {("c7i.large", "us-east-1b"): (0.05, NOW + 1), ("c7i.large", "us-east-1a"): (None, NOW)}
        self.assertEqual(spot_prices_due(instances, prices, NOW), [("c7i.large", "us-east-1a"),
                                                                   ("m7i.large", "us-east-1b")])
