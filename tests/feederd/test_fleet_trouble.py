"""Fleet trouble made visible: an EC2 fleet that cannot launch says why (AWS's code and reason, since
when) in ``Fleet.trouble``, in GET /health, GET /workers and /metrics, and counts the refused launches.

- against a moto server: RunInstances refused because the security group does not exist;
- with botocore's Stubber (moto never runs out of capacity nor quota): VcpuLimitExceeded,
  InstanceLimitExceeded, no spot capacity, with the messages AWS sends;
- on the scripted EC2 of ``fleet_fakes`` and a fake clock: the trouble's life (since kept, cleared when
  a launch gets everything, a listing failure apart from a launch one, launches disabled).
"""

import datetime
import json

import jsonschema
from botocore.stub import Stubber
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.aws import AWS
from nommer.core.ledger import JobLedger
from nommer.core.store import make_store
from nommer.core.worker_registry.sqlite import SQLiteWorkerRegistry
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI
from nommer.feederd.fleet.base import FleetTrouble
from nommer.feederd.fleet.ec2 import Ec2Fleet
from nommer.feederd.fleet.ec2_api import Ec2Api, NoCapacity
from nommer.feederd.metrics import FeederMetrics, fleet_status
from tests.aws_server import aws_settings, reset_moto
from tests.feederd.fleet_fakes import T0, World, client_error
from tests.feederd.test_api_workers import openapi_schema
from tests.helpers import ensure, pumped, temp_settings

MISSING_GROUP = "sg-0123456789abcdef0"


def samples(text):
    """``{(name, frozenset(labels.items())): value}`` of a metrics text (prometheus_client's parser)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


async def api_get(api, path):
    stub = StubTreq(api.resource())
    response = await pumped(stub, stub.get("http://127.0.0.1:8001" + path))
    content = await pumped(stub, stub.content(response))
    return response.code, content.decode()


class MissingSecurityGroupMotoTests(TestCase):
    """The EC2 fleet on moto, configured with a security group id that does not exist."""

    timeout = 60

    @ensure
    async def setUp(self):
        reset_moto()
        base, _ = aws_settings(self)
        self.aws = AWS(base, reactor, name="test-trouble")
        self.addCleanup(self.aws.close)
        ami = (await self.aws.call("ec2", "describe_images", Owners=["amazon"]))["Images"][0]["ImageId"]
        self.settings, _ = aws_settings(
            self, EC2_AMI_ID=ami, EC2_INSTANCE_TYPES=["c7i.large"], EC2_SECURITY_GROUP_IDS=[MISSING_GROUP],
            EC2_FLEET_NAME="nommer-trouble", MAX_NUM_EC2_INSTANCES=2, CONFIG_S3_BUCKET="nommer-test-config",
            FLEET_BACKEND="ec2", JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs")
        self.registry = SQLiteWorkerRegistry.from_settings(self.settings, reactor)
        self.addCleanup(self.registry.close)
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.fleet = Ec2Fleet(self.settings, reactor, self.registry, clock=self.clock, hostname="feederd-host")
        self.fleet.startService()
        self.addCleanup(lambda: defer.ensureDeferred(self.fleet.stopService()))

    def api(self):
        store, queue = make_store(self.settings, reactor), make_queue(self.settings, reactor)
        self.addCleanup(store.close)
        self.addCleanup(queue.close)
        metrics = FeederMetrics(store, queue, self.settings, registry=self.registry, fleet=self.fleet,
                                clock=self.clock)
        return JobAPI(JobLedger(store, queue, self.settings), self.settings, registry=self.registry,
                      clock=self.clock, metrics=metrics, fleet_view=self.fleet.instances,
                      health_extra=lambda: {"workers": self.fleet.worker_ids(),
                                            "fleet": fleet_status(self.settings, self.fleet)},
                      fleet_status=lambda: fleet_status(self.settings, self.fleet))

    @ensure
    async def test_refused_launch_shows_in_health_workers_and_metrics(self):
        """RunInstances refused (InvalidGroup.NotFound): nothing launched, and the reason AWS gave is the
        fleet's trouble in /health, /workers and /metrics, with the launch failures counted."""
        self.assertIsNone(self.fleet.trouble)
        self.assertEqual(await self.fleet.launch(2), [])
        trouble = self.fleet.trouble
        self.assertEqual((trouble.code, trouble.since, trouble.during), ("InvalidGroup.NotFound", T0, "launch"))
        self.assertIn(f"The security group '{MISSING_GROUP}' does not exist", trouble.message)  # moto's, as AWS's
        self.assertIn("RunInstances of 2 x c7i.large (spot) in default subnet refused", trouble.message)
        self.assertIn("nommer aws setup", trouble.message)
        self.clock.advance(30)
        self.assertEqual(await self.fleet.launch(2), [])
        self.assertEqual(self.fleet.trouble.since, T0)  # the same run of failures
        self.assertEqual(self.fleet.launch_failures(), {"InvalidGroup.NotFound": 2})

        api = self.api()
        code, text = await api_get(api, "/health")
        self.assertEqual(code, 200, text)
        health = json.loads(text)
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["fleet"]["backend"], "ec2")
        self.assertEqual(health["fleet"]["trouble"], {
            "code": "InvalidGroup.NotFound", "message": trouble.message, "since": "2023-11-14T22:13:20Z",
            "since_epoch_s": T0, "during": "launch"})
        self.assertEqual(health["fleet"]["launch_failures"], {"InvalidGroup.NotFound": 2})
        jsonschema.validate(health, openapi_schema("Health"))

        code, text = await api_get(api, "/workers")
        self.assertEqual(code, 200, text)
        workers = json.loads(text)
        self.assertEqual(workers["fleet"]["trouble"]["code"], "InvalidGroup.NotFound")
        self.assertEqual(workers["instances"], [])
        jsonschema.validate(workers, openapi_schema("WorkerList"))

        code, text = await api_get(api, "/metrics")
        self.assertEqual(code, 200, text)
        found = samples(text)
        self.assertEqual(found[("nommer_fleet_trouble", frozenset({("code", "InvalidGroup.NotFound")}))], 1)
        self.assertEqual(found[("nommer_fleet_launch_failures_total",
                                frozenset({("code", "InvalidGroup.NotFound")}))], 2)
        self.assertEqual(found[("nommer_fleet_instances", frozenset({("spot", "true")}))], 0)


class AwsRefusalTests(TestCase):
    """The codes and messages AWS answers RunInstances with (botocore Stubber), through the real
    Ec2Api into the fleet's trouble."""

    #: (code, AWS's message), as EC2 words them.
    REFUSALS = [
        ("VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 32 allows "
                              "for the instance bucket that the specified instance type belongs to."),
        ("InstanceLimitExceeded", "Your quota allows for 0 more running instance(s). You requested at least 1"),
        ("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request."),
    ]

    def setUp(self):
        self.settings, _ = temp_settings(self, EC2_AMI_ID="ami-0123456789abcdef0", EC2_INSTANCE_TYPES=["c7i.large"],
                                         AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_REGION="us-east-1",
                                         CONFIG_S3_BUCKET="nommer-config")
        self.aws = AWS(self.settings, reactor, name="stubbed-trouble")
        self.addCleanup(self.aws.close)
        self.stub = Stubber(self.aws.client("ec2"))
        self.stub.activate()
        self.addCleanup(self.stub.deactivate)
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.fleet = Ec2Fleet(self.settings, reactor, registry=None, api=Ec2Api(self.aws, clock=self.clock),
                              clock=self.clock, hostname="feederd-test")

    @ensure
    async def test_quota_and_capacity_refusals_carry_aws_reason(self):
        """Each refusal becomes the trouble with AWS's code and its message (and what to do); the
        counter has one per refusal."""
        for code, message in self.REFUSALS:
            self.stub.add_client_error("run_instances", service_error_code=code, service_message=message,
                                       http_status_code=400)
            self.assertEqual(await self.fleet.launch(1), [])
            trouble = self.fleet.trouble
            self.assertEqual(trouble.code, code)
            self.assertIn(message, trouble.message)
            self.assertIn("c7i.large (spot)", trouble.message)
            self.assertEqual(trouble.since, T0)
        self.assertEqual(self.fleet.launch_failures(), {code: 1 for code, _ in self.REFUSALS})
        self.stub.assert_no_pending_responses()

    @ensure
    async def test_a_full_launch_clears_the_trouble(self):
        """After a refusal, a RunInstances that grants every instance asked for clears the trouble; the
        failures counted stay."""
        self.stub.add_client_error("run_instances", service_error_code="VcpuLimitExceeded",
                                   service_message=self.REFUSALS[0][1], http_status_code=400)
        await self.fleet.launch(1)
        self.assertEqual(self.fleet.trouble.code, "VcpuLimitExceeded")
        self.assertIn("Service Quotas", self.fleet.trouble.message)
        self.stub.add_response("run_instances", {"Instances": [{
            "InstanceId": "i-0123456789abcdef0", "InstanceType": "c7i.large", "InstanceLifecycle": "spot",
            "State": {"Code": 0, "Name": "pending"}, "Placement": {"AvailabilityZone": "us-east-1a"},
            "LaunchTime": datetime.datetime.fromtimestamp(T0, datetime.timezone.utc)}]})
        self.assertEqual(await self.fleet.launch(1), ["i-0123456789abcdef0"])
        self.assertIsNone(self.fleet.trouble)
        self.assertEqual(self.fleet.launch_failures(), {"VcpuLimitExceeded": 1})


class TroubleLifeTests(TestCase):
    """The trouble over autoscaler ticks, on the scripted EC2 (tests/feederd/fleet_fakes.py)."""

    def test_no_capacity_anywhere_then_capacity_again(self):
        """No spot capacity for any type: trouble from the first tick on, `since` kept while it lasts,
        each refused request counted; capacity back: launched and cleared."""
        w = World(self)
        w.ec2.refused = {"c7i.large", "m7i.large"}
        w.start(unfinished=2)
        trouble = w.fleet.trouble
        self.assertEqual((trouble.code, trouble.since), ("InsufficientInstanceCapacity", T0))
        self.assertIn("m7i.large", trouble.message)  # the last one tried
        w.advance(12)
        self.assertEqual(w.fleet.trouble.since, T0)
        refused = w.fleet.launch_failures()["InsufficientInstanceCapacity"]
        self.assertEqual(refused, len(w.ec2.run_calls))
        self.assertGreaterEqual(refused, 4)
        w.ec2.refused = set()
        w.advance(5)
        self.assertEqual(len(w.ec2.launched()), 1)
        self.assertIsNone(w.fleet.trouble)
        self.assertEqual(w.fleet.launch_failures()["InsufficientInstanceCapacity"], refused)

    def test_partial_capacity_keeps_the_trouble(self):
        """The first type refused, the second granted everything: all wanted launched, no trouble."""
        w = World(self)
        w.ec2.refused = {"c7i.large"}
        w.start(unfinished=2)
        self.assertEqual(len(w.ec2.launched()), 1)
        self.assertIsNone(w.fleet.trouble)
        self.assertEqual(w.fleet.launch_failures(), {"InsufficientInstanceCapacity": 1})

    def test_listing_refused_is_trouble_until_a_listing_works(self):
        """DescribeInstances refused: trouble 'list' with AWS's code; a good listing clears it."""
        w = World(self)
        # housekeeping and counts each list the fleet: both refused in the first tick
        w.ec2.errors["describe_fleet"] = [client_error("UnauthorizedOperation") for _ in range(2)]
        w.start(unfinished=0)
        self.assertEqual((w.fleet.trouble.code, w.fleet.trouble.during), ("UnauthorizedOperation", "list"))
        self.assertIn("UnauthorizedOperation (scripted)", w.fleet.trouble.message)
        self.assertEqual(w.fleet.launch_failures(), {})
        w.advance(5)
        self.assertIsNone(w.fleet.trouble)

    def test_a_good_listing_leaves_a_launch_trouble(self):
        """A refused launch is not cleared by the next listing, only by a launch that works."""
        w = World(self)
        w.ec2.errors["run_instances"] = [NoCapacity("VcpuLimitExceeded", "over the vCPU limit")] * 2
        w.start(unfinished=1)
        self.assertEqual(w.fleet.trouble.code, "VcpuLimitExceeded")
        self.assertEqual(self.successResultOf(w.fleet.counts()), (0, 0, 0))
        self.assertEqual(w.fleet.trouble.code, "VcpuLimitExceeded")
        w.advance(5)
        self.assertIsNone(w.fleet.trouble)
        self.assertEqual(len(w.ec2.launched()), 1)

    def test_launches_disabled_is_trouble_not_a_failure(self):
        """FEEDERD_ALLOW_EC2_LAUNCHES off with jobs waiting: trouble LaunchesDisabled, nothing counted."""
        w = World(self, FEEDERD_ALLOW_EC2_LAUNCHES=False)
        w.start(unfinished=3)
        self.assertEqual(w.fleet.trouble.code, "LaunchesDisabled")
        self.assertIn("FEEDERD_ALLOW_EC2_LAUNCHES", w.fleet.trouble.message)
        self.assertEqual(w.fleet.launch_failures(), {})


class FleetTroubleShapeTests(TestCase):

    def test_to_dict_and_since_kept(self):
        """to_dict gives ISO 8601 UTC; report_trouble keeps `since` of a trouble already there."""
        from nommer.feederd.fleet.base import Fleet
        fleet = Fleet()
        first = fleet.report_trouble("InsufficientInstanceCapacity", "no spot", T0)
        self.assertEqual(first, FleetTrouble(code="InsufficientInstanceCapacity", message="no spot", since=T0))
        later = fleet.report_trouble("VcpuLimitExceeded", "quota", T0 + 60)
        self.assertEqual((later.code, later.since), ("VcpuLimitExceeded", T0))
        self.assertEqual(later.to_dict()["since"], "2023-11-14T22:13:20Z")
        fleet.clear_trouble("list")
        self.assertIs(fleet.trouble, later)
        fleet.clear_trouble()
        self.assertIsNone(fleet.trouble)
        self.assertEqual(fleet.launch_failures(), {"InsufficientInstanceCapacity": 1, "VcpuLimitExceeded": 1})
        self.assertEqual(Fleet().launch_failures(), {})
