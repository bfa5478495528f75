"""Doubles for the fleet tests, and a world to run them in.

``FakeEc2`` has ``Ec2Api``'s methods and answers at once; the test decides
what happens to each launch (refused for capacity per instance type and
market, partly granted, never registering, going silent, interrupted) and
``World`` plays the workers: an instance boots in ``boot_s`` seconds, then
heartbeats to ``FakeRegistry`` every 30 s, unless the test broke it. A
``task.Clock`` drives the Autoscaler's timer and the fleet's notion of now;
``FakeStore`` holds the unfinished job count the autoscaler reads.
"""

import copy
import datetime

from botocore.exceptions import ClientError
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher

from nommer.core.worker_registry.base import WorkerRecord
from nommer.feederd.fleet.autoscaler import Autoscaler
from nommer.feederd.fleet.ec2 import Ec2Fleet
from nommer.feederd.fleet.ec2_api import NoCapacity
from nommer.feederd.fleet.ec2_plan import LIVE_STATES, SPOT, is_fleet_instance
from tests.helpers import temp_settings

T0 = 1_700_000_000.0
SUBNET_AZ = {"subnet-aaaa": "us-east-1a", "subnet-bbbb": "us-east-1b", None: "us-east-1c"}


def client_error(code, operation="DescribeInstances"):
    return ClientError({"Error": {"Code": code, "Message": f"{code} (scripted)"}}, operation)


class FakeEc2:
    """An in-memory EC2 with Ec2Api's methods (Deferreds that have fired)."""

    def __init__(self, clock):
        self.clock = clock
        self.instances = {}        # id -> boto3-shaped instance dict
        self.refused = set()       # instance types or (market, type) without capacity
        self.grant = {}            # instance type -> most instances one call gets
        self.errors = {}           # method name -> exceptions raised by its next calls
        self.prices = {}           # instance type -> USD/hour (None: no history)
        self.describe_lag_s = 0.0  # a new instance shows in describe_fleet after this long
        self.run_calls = []        # LaunchSpecs asked, in order
        self.terminate_calls = []  # ids asked
        self.peak = 0              # most live instances ever
        self.on_launch = None      # callable(instance id) run for each new instance
        self._serial = 0

    def _fail(self, method):
        queued = self.errors.get(method)
        if queued:
            raise queued.pop(0)

    def run_instances(self, spec):
        self.run_calls.append(spec)
        try:
            self._fail("run_instances")
            if spec.instance_type in self.refused or (spec.market, spec.instance_type) in self.refused:
                raise NoCapacity("InsufficientInstanceCapacity", f"no {spec.market} {spec.instance_type}")
        except Exception as e:
            return defer.fail(e)
        out = []
        for _ in range(min(spec.count, self.grant.get(spec.instance_type, spec.count))):
            self._serial += 1
            iid = f"i-{self._serial:017x}"
            d = {"InstanceId": iid, "InstanceType": spec.instance_type, "ImageId": spec.image_id,
                 "State": {"Code": 0, "Name": "pending"},
                 "LaunchTime": datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc),
                 "Placement": {"AvailabilityZone": SUBNET_AZ[spec.subnet_id]}, "Tags": spec.tags(),
                 "SubnetId": spec.subnet_id}
            if spec.market == SPOT:
                d["InstanceLifecycle"] = "spot"
            self.instances[iid] = d
            out.append(copy.deepcopy(d))
            if self.on_launch is not None:
                self.on_launch(iid)
        self.peak = max(self.peak, len(self.live()))
        return defer.succeed(out)

    def describe_fleet(self, fleet_name):
        try:
            self._fail("describe_fleet")
        except Exception as e:
            return defer.fail(e)
        now = self.clock.seconds()
        return defer.succeed([copy.deepcopy(d) for d in self.instances.values()
                              if d["State"]["Name"] in LIVE_STATES and is_fleet_instance(d, fleet_name)
                              and now - d["LaunchTime"].timestamp() >= self.describe_lag_s])

    def terminate(self, instance_ids):
        self.terminate_calls.extend(instance_ids)
        try:
            self._fail("terminate")
        except Exception as e:
            return defer.fail(e)
        for iid in instance_ids:
            self.instances[iid]["State"] = {"Code": 48, "Name": "terminated"}
        return defer.succeed({iid: "shutting-down" for iid in instance_ids})

    def spot_price(self, instance_type, az=None):
        try:
            self._fail("spot_price")
        except Exception as e:
            return defer.fail(e)
        return defer.succeed(self.prices.get(instance_type))

    # --- the test's controls ---

    def live(self, state=None):
        return sorted(iid for iid, d in self.instances.items()
                      if d["State"]["Name"] in LIVE_STATES and (state is None or d["State"]["Name"] == state))

    def set_state(self, iid, name):
        self.instances[iid]["State"] = {"Code": 0, "Name": name}

    def interrupt(self, iid):
        """A spot interruption: AWS terminates the instance."""
        self.set_state(iid, "terminated")

    def launched(self):
        """Instances ever launched (ids, in order)."""
        return list(self.instances)


class FakeRegistry:
    def __init__(self):
        self.records = {}
        self.errors = []  # exceptions raised by the next list() calls

    def beat(self, instance_id, at):
        self.records[instance_id] = WorkerRecord(worker_id=instance_id, instance_id=instance_id,
                                                 state="running", last_seen=at, started_at=at)

    def list(self):
        if self.errors:
            return defer.fail(self.errors.pop(0))
        return defer.succeed(sorted(self.records.values(), key=lambda r: -r.last_seen))


class FakeStore:
    def __init__(self):
        self.unfinished = 0

    def count_by_state(self):
        return defer.succeed({"PENDING": self.unfinished, "FINISHED": 7})


class World:
    """Clock, scripted EC2, registry, store, the real Ec2Fleet and Autoscaler."""

    HEARTBEAT_EVERY_S = 30.0

    def __init__(self, testcase, boot_s=90.0, **overrides):
        values = dict(EC2_AMI_ID="ami-0123456789abcdef0", EC2_INSTANCE_TYPES=["c7i.large", "m7i.large"],
                      MAX_NUM_EC2_INSTANCES=5, MAX_ENCODING_JOBS_PER_WORKER=2, JOB_OVERFLOW_THRESH=0,
                      AUTOSCALE_INTERVAL_S=5.0, EC2_BOOT_TIMEOUT_S=600.0, WORKER_HEARTBEAT_TIMEOUT_S=180.0,
                      EC2_SPOT_PRICE_PER_HOUR=0.04, CONFIG_S3_BUCKET="nommer-config", AWS_REGION="us-east-1")
        values.update(overrides)
        self.settings, _ = temp_settings(testcase, **values)
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.boot_s = boot_s
        self.ec2 = FakeEc2(self.clock)
        self.ec2.on_launch = self._launched
        self.registry = FakeRegistry()
        self.store = FakeStore()
        self.fleet = Ec2Fleet(self.settings, self.clock, self.registry, api=self.ec2, clock=self.clock,
                              hostname="feederd-test")
        self.autoscaler = Autoscaler(self.store, self.fleet, self.settings, self.clock)
        self.never_register = set()   # instance ids that boot but never heartbeat
        self.silent = set()           # instance ids that stopped heartbeating
        self._break_next = []         # what happens to the next launches
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        testcase.addCleanup(self.stop)

    def start(self, unfinished=0):
        self.store.unfinished = unfinished
        self.fleet.startService()
        self.autoscaler.startService()

    @defer.inlineCallbacks
    def stop(self):
        if self.autoscaler.running:
            yield self.autoscaler.stopService()
        if self.fleet.running:
            yield defer.ensureDeferred(self.fleet.stopService())

    def break_next(self, how):
        """The next launched instance will ``how``: "never-register"."""
        self._break_next.append(how)

    def _launched(self, iid):
        if self._break_next:
            how = self._break_next.pop(0)
            assert how == "never-register"
            self.never_register.add(iid)

    @property
    def now(self):
        return self.clock.seconds()

    def advance(self, seconds, step=1.0):
        """Let ``seconds`` pass, one ``step`` at a time: instances boot after
        boot_s, then heartbeat every 30 s unless broken."""
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)
            now = self.now
            for iid, d in self.ec2.instances.items():
                state = d["State"]["Name"]
                if state == "pending" and now - d["LaunchTime"].timestamp() >= self.boot_s:
                    self.ec2.set_state(iid, "running")
                    state = "running"
                if state != "running" or iid in self.never_register or iid in self.silent:
                    continue
                record = self.registry.records.get(iid)
                if record is None or now - record.last_seen >= self.HEARTBEAT_EVERY_S:
                    self.registry.beat(iid, now)

    def logged(self, text, **fields):
        """Events whose format contains ``text`` and whose fields match."""
        return [e for e in self.events if text in (e.get("log_format") or "")
                and all(e.get(k) == v for k, v in fields.items())]


def launched_counts(ec2):
    return [(s.market, s.instance_type, s.subnet_id, s.count) for s in ec2.run_calls]
