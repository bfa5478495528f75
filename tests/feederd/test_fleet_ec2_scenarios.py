"""The EC2 fleet and the autoscaler on a scripted EC2 and a fake clock
(``tests/feederd/fleet_fakes.py``: ``World`` plays the workers, the test
decides what happens to each launch)."""

from twisted.trial.unittest import TestCase

from nommer.feederd.fleet.ec2_plan import ON_DEMAND
from tests.feederd.fleet_fakes import T0, World, client_error, launched_counts


class BurstTests(TestCase):

    def test_burst_never_over_max_and_no_over_launch_while_booting(self):
        """20 jobs at once, P=2, M=5, 90 s boots: 5 launched in one call, none more while they boot or after."""
        w = World(self)
        w.start(unfinished=20)
        self.assertEqual(launched_counts(w.ec2), [("spot", "c7i.large", None, 5)])
        w.advance(89)
        self.assertEqual(len(w.ec2.launched()), 5)
        self.assertEqual(self.successResultOf(w.fleet.counts()), (0, 5, 0))
        w.advance(120)
        self.assertEqual(len(w.ec2.run_calls), 1)
        self.assertEqual(w.ec2.peak, 5)
        self.assertEqual(self.successResultOf(w.fleet.counts()), (5, 0, 0))
        self.assertEqual(w.ec2.terminate_calls, [])

    def test_jobs_trickling_in_during_boot(self):
        """One job every 2 s for 40 s: launches follow the jobs, counting booting instances, up to M and no more."""
        w = World(self)
        w.start(unfinished=0)
        for _ in range(20):
            w.store.unfinished += 1
            w.autoscaler.poke()
            w.advance(2)
            self.assertLessEqual(len(w.ec2.live()), 5)
            # capacity launched so far always covers the jobs seen (up to M), and never exceeds what they need
            self.assertEqual(len(w.ec2.launched()), min(5, -(-w.store.unfinished // 2)))
        w.advance(300)
        self.assertEqual(w.ec2.peak, 5)
        self.assertEqual(len(w.ec2.launched()), 5)

    def test_launch_not_visible_in_describe_yet_is_counted(self):
        """EC2 is eventually consistent: an instance missing from DescribeInstances for 20 s is not launched twice."""
        w = World(self)
        w.ec2.describe_lag_s = 20.0
        w.start(unfinished=2)
        w.advance(30)
        self.assertEqual(len(w.ec2.launched()), 1)
        self.assertEqual(self.successResultOf(w.fleet.counts()), (0, 1, 0))


class HousekeepingTests(TestCase):

    def test_never_registers_is_terminated_and_replaced(self):
        """An instance with no heartbeat EC2_BOOT_TIMEOUT_S after launch is terminated (cost logged), then replaced."""
        w = World(self, MAX_NUM_EC2_INSTANCES=1)
        w.break_next("never-register")
        w.start(unfinished=1)
        [first] = w.ec2.launched()
        w.advance(599)
        self.assertEqual(w.ec2.terminate_calls, [])
        self.assertEqual(self.successResultOf(w.fleet.counts()), (0, 1, 0))
        w.advance(10)
        self.assertEqual(w.ec2.terminate_calls, [first])
        [event] = w.logged("terminated", instance_id=first)
        self.assertIn("never registered", event["reason"])
        self.assertGreaterEqual(event["uptime_s"], 600)
        self.assertEqual(event["cost"], f"{0.04 * event['uptime_s'] / 3600:.4f} USD")
        # replaced in the same tick; the cap (1) held throughout
        self.assertEqual(len(w.ec2.launched()), 2)
        self.assertEqual(w.ec2.peak, 1)
        w.advance(120)
        self.assertEqual(self.successResultOf(w.fleet.counts()), (1, 0, 0))

    def test_heartbeat_loss_is_a_zombie(self):
        """A registered worker silent for WORKER_HEARTBEAT_TIMEOUT_S is terminated; a healthy one never is."""
        w = World(self, MAX_NUM_EC2_INSTANCES=2, MAX_ENCODING_JOBS_PER_WORKER=1)
        w.start(unfinished=2)
        w.advance(120)
        sick, healthy = w.ec2.launched()
        self.assertEqual(self.successResultOf(w.fleet.counts()), (2, 0, 0))
        w.silent.add(sick)
        last_beat = w.registry.records[sick].last_seen
        w.advance(last_beat + 180 - w.now)
        self.assertEqual(w.ec2.terminate_calls, [])
        w.advance(6)
        self.assertEqual(w.ec2.terminate_calls, [sick])
        [event] = w.logged("terminated", instance_id=sick)
        self.assertIn("zombie", event["reason"])
        self.assertNotIn(healthy, w.ec2.terminate_calls)
        self.assertEqual(len(w.ec2.launched()), 3)  # the jobs still wait: replaced

    def test_idle_healthy_instances_are_never_terminated(self):
        """No job left, instances idle and heartbeating: feederd leaves them to terminate themselves."""
        w = World(self)
        w.start(unfinished=4)
        w.advance(120)
        w.store.unfinished = 0
        w.advance(3600, step=5)
        self.assertEqual(w.ec2.terminate_calls, [])
        self.assertEqual(len(w.ec2.live("running")), 2)

    def test_spot_interruption_is_replaced_while_jobs_remain(self):
        """An interrupted instance disappears: its cost is logged and a replacement starts if the jobs need it."""
        w = World(self, EC2_SPOT_PRICE_PER_HOUR=None)
        w.ec2.prices = {"c7i.large": 0.05}
        w.start(unfinished=4)
        w.advance(360)
        first, second = w.ec2.launched()
        w.ec2.interrupt(first)
        w.advance(5)
        [gone] = w.logged("is gone", instance_id=first)
        self.assertEqual(gone["uptime_s"], 365)
        self.assertEqual(gone["cost"], f"{0.05 * 365 / 3600:.4f} USD")
        self.assertEqual(len(w.ec2.launched()), 3)
        # with only as many jobs as the survivor holds, an interruption is not replaced
        w.advance(120)
        w.store.unfinished = 2
        w.ec2.interrupt(second)
        w.advance(30)
        self.assertEqual(len(w.ec2.launched()), 3)
        self.assertEqual(w.ec2.terminate_calls, [])


class FallbackTests(TestCase):

    def test_capacity_refused_for_the_first_type(self):
        """No spot capacity for c7i.large: the same request goes to m7i.large."""
        w = World(self, MAX_ENCODING_JOBS_PER_WORKER=1)
        w.ec2.refused = {"c7i.large"}
        w.start(unfinished=2)
        self.assertEqual(launched_counts(w.ec2), [("spot", "c7i.large", None, 2), ("spot", "m7i.large", None, 2)])
        self.assertEqual({d["InstanceType"] for d in w.ec2.instances.values()}, {"m7i.large"})
        self.assertTrue(w.logged("no {market} capacity", instance_type="c7i.large",
                                 code="InsufficientInstanceCapacity"))

    def test_types_then_subnets_in_order_with_partial_grants(self):
        """Each type is tried in each subnet in order; a partial grant moves the remainder on."""
        w = World(self, MAX_ENCODING_JOBS_PER_WORKER=1, EC2_SUBNET_IDS=["subnet-aaaa", "subnet-bbbb"])
        w.ec2.grant = {"c7i.large": 1}
        w.start(unfinished=4)
        self.assertEqual(launched_counts(w.ec2), [("spot", "c7i.large", "subnet-aaaa", 4),
                                                  ("spot", "c7i.large", "subnet-bbbb", 3),
                                                  ("spot", "m7i.large", "subnet-aaaa", 2)])
        self.assertEqual(len(w.ec2.live()), 4)

    def test_all_spot_refused_falls_back_to_on_demand(self):
        """With EC2_ON_DEMAND_FALLBACK, when no type has spot capacity, on-demand instances are launched."""
        w = World(self, MAX_ENCODING_JOBS_PER_WORKER=1, EC2_ON_DEMAND_FALLBACK=True)
        w.ec2.refused = {("spot", "c7i.large"), ("spot", "m7i.large")}
        w.start(unfinished=2)
        self.assertEqual(launched_counts(w.ec2), [("spot", "c7i.large", None, 2), ("spot", "m7i.large", None, 2),
                                                  ("on-demand", "c7i.large", None, 2)])
        self.assertNotIn("InstanceMarketOptions", w.ec2.run_calls[-1].request())
        w.advance(1)
        self.assertEqual({i["market"] for i in w.fleet.instances()}, {ON_DEMAND})
        self.assertEqual({i["price_per_hour"] for i in w.fleet.instances()}, {None})

    def test_all_spot_refused_without_fallback_launches_nothing_and_retries(self):
        """Without the fallback nothing is launched; each tick asks again, and capacity coming back is used."""
        w = World(self, MAX_ENCODING_JOBS_PER_WORKER=1)
        w.ec2.refused = {"c7i.large", "m7i.large"}
        w.start(unfinished=1)
        self.assertEqual(len(w.ec2.run_calls), 2)
        self.assertEqual(w.ec2.launched(), [])
        self.assertTrue(w.logged("launched {launched} of {n}", launched=0, n=1))
        w.advance(5)
        self.assertEqual(len(w.ec2.run_calls), 4)
        self.assertNotIn("on-demand", {s.market for s in w.ec2.run_calls})
        w.ec2.refused = {"c7i.large"}
        w.advance(5)
        self.assertEqual(len(w.ec2.launched()), 1)

    def test_launches_disabled(self):
        """FEEDERD_ALLOW_EC2_LAUNCHES False: nothing is ever launched, and it is said (not every tick)."""
        w = World(self, FEEDERD_ALLOW_EC2_LAUNCHES=False)
        w.start(unfinished=10)
        w.advance(60)
        self.assertEqual(w.ec2.run_calls, [])
        self.assertEqual(len(w.logged("FEEDERD_ALLOW_EC2_LAUNCHES is False")), 1)


class ErrorTests(TestCase):

    def test_describe_error_in_one_tick(self):
        """DescribeInstances throttled for one tick: logged, nothing launched; the next tick launches."""
        w = World(self)
        w.ec2.errors["describe_fleet"] = [client_error("RequestLimitExceeded"), client_error("RequestLimitExceeded")]
        w.start(unfinished=1)
        self.assertEqual(w.ec2.run_calls, [])
        self.assertTrue(w.logged("housekeeping skipped"))
        [event] = w.logged("fleet unknown")
        self.assertIn("RequestLimitExceeded", event["error"])
        w.advance(5)
        self.assertEqual(len(w.ec2.launched()), 1)

    def test_run_instances_error_in_one_tick(self):
        """RunInstances failing (not for capacity): logged with context, the other types not tried; next tick works."""
        w = World(self)
        w.ec2.errors["run_instances"] = [client_error("InternalError", "RunInstances")]
        w.start(unfinished=1)
        self.assertEqual(len(w.ec2.run_calls), 1)
        [event] = w.logged("RunInstances of", instance_type="c7i.large")
        self.assertIn("InternalError", event["error"])
        w.advance(5)
        self.assertEqual(len(w.ec2.launched()), 1)
        self.assertTrue(w.autoscaler.running)

    def test_registry_error_decides_nothing(self):
        """Registry unreadable for a tick: no instance is taken for never registered, nothing is launched."""
        w = World(self, MAX_NUM_EC2_INSTANCES=2, MAX_ENCODING_JOBS_PER_WORKER=1)
        w.start(unfinished=1)
        w.advance(700)
        [healthy] = w.ec2.launched()
        w.store.unfinished = 2
        w.registry.errors = [ConnectionError("registry down"), ConnectionError("registry down")]
        w.advance(5)
        self.assertEqual(w.ec2.terminate_calls, [])
        self.assertEqual(w.ec2.launched(), [healthy])
        [event] = w.logged("fleet unknown")
        self.assertIn("could not read the worker registry", event["error"])
        w.advance(5)
        self.assertEqual(len(w.ec2.launched()), 2)
        self.assertEqual(w.ec2.terminate_calls, [])

    def test_terminate_error_is_retried(self):
        """TerminateInstances failing once: logged, the instance still counts, terminated next tick."""
        w = World(self, MAX_NUM_EC2_INSTANCES=1)
        w.break_next("never-register")
        w.ec2.errors["terminate"] = [client_error("InternalError", "TerminateInstances")]
        w.start(unfinished=1)
        [stuck] = w.ec2.launched()
        w.advance(600)
        self.assertEqual(w.ec2.terminate_calls, [stuck])
        self.assertTrue(w.logged("could not terminate", instance_id=stuck))
        self.assertEqual(len(w.ec2.launched()), 1)  # it still counts: the cap holds
        w.advance(5)
        self.assertEqual(w.ec2.terminate_calls, [stuck, stuck])
        self.assertEqual(len(w.ec2.launched()), 2)

    def test_spot_price_error_falls_back_to_the_setting(self):
        """DescribeSpotPriceHistory failing: the estimate uses EC2_SPOT_PRICE_PER_HOUR."""
        w = World(self)
        w.ec2.errors["spot_price"] = [client_error("UnauthorizedOperation", "DescribeSpotPriceHistory")]
        w.start(unfinished=1)
        w.advance(720, step=5)
        [inst] = w.fleet.instances()
        self.assertEqual(inst["price_per_hour"], 0.04)
        self.assertAlmostEqual(inst["cost_usd"], 0.04 * 720 / 3600)
        self.assertTrue(w.logged("no spot price"))


class InstancesTests(TestCase):

    def test_instances_for_get_workers(self):
        """instances(): id, type, AZ, market, state, launch time, uptime, price, cost, registered."""
        w = World(self)
        w.ec2.prices = {"c7i.large": 0.05}
        w.start(unfinished=1)
        w.advance(5)
        [booting] = w.fleet.instances()
        self.assertFalse(booting["registered"])
        w.advance(715)
        [inst] = w.fleet.instances()
        self.assertEqual(inst, {"instance_id": w.ec2.launched()[0], "instance_type": "c7i.large",
                                "availability_zone": "us-east-1c", "market": "spot", "state": "running",
                                "launched_at": T0, "uptime_s": 720.0, "price_per_hour": 0.05,
                                "cost_usd": round(0.05 * 720 / 3600, 6), "registered": True})
        self.assertEqual(w.fleet.worker_ids(), [inst["instance_id"]])
        self.assertEqual(w.fleet.max_workers, 5)
