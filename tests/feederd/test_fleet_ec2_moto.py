"""The EC2 fleet against a moto server: the Fleet contract, the real
RunInstances request and what EC2 (moto) records of it, counting by tag,
termination, spot prices, and the autoscaler's cap over several ticks. Error
mapping is checked with botocore's Stubber (moto never runs out of
capacity)."""

import base64
import copy
import time

from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.aws import AWS
from nommer.core.worker_registry.base import WorkerRecord
from nommer.core.worker_registry.sqlite import SQLiteWorkerRegistry
from nommer.feederd.fleet.autoscaler import Autoscaler
from nommer.feederd.fleet.ec2 import Ec2Fleet
from nommer.feederd.fleet.ec2_api import Ec2Api, NoCapacity
from nommer.feederd.fleet.ec2_plan import LIVE_STATES, LaunchSpec
from nommer.feederd.fleet.userdata import render_user_data
from tests.aws_server import aws_settings, reset_moto
from tests.feederd.fleet_contract import FleetContract
from tests.helpers import ensure


class Jobs:
    def __init__(self, unfinished):
        self.unfinished = unfinished

    def count_by_state(self):
        return defer.succeed({"PENDING": self.unfinished})


def tags(instance):
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


class Ec2FleetMotoTests(TestCase):

    @ensure
    async def setUp(self):
        reset_moto()
        base, _ = aws_settings(self)
        self.aws = AWS(base, reactor, name="test-ec2")
        self.addCleanup(self.aws.close)
        images = await self.aws.call("ec2", "describe_images", Owners=["amazon"])
        self.ami = images["Images"][0]["ImageId"]
        await self.aws.call("iam", "create_instance_profile", InstanceProfileName="nommer-worker")
        await self.aws.call("ec2", "create_security_group", GroupName="media_nommer", Description="nommer workers")
        await self.aws.call("ec2", "create_key_pair", KeyName="nommer-key")
        self.settings, _ = aws_settings(
            self, EC2_AMI_ID=self.ami, EC2_INSTANCE_TYPES=["c7i.large", "m7i.large"], EC2_KEY_NAME="nommer-key",
            EC2_IAM_INSTANCE_PROFILE="nommer-worker", EC2_SECURITY_GROUPS=["media_nommer"],
            EC2_FLEET_NAME="nommer-test", SPOT_MAX_PRICE="0.09", MAX_NUM_EC2_INSTANCES=2,
            MAX_ENCODING_JOBS_PER_WORKER=1, CONFIG_S3_BUCKET="nommer-test-config",
            EC2_SPOT_PRICE_PER_HOUR=0.03, AWS_SECRET_ACCESS_KEY="testing", AWS_ACCESS_KEY_ID="testing")
        self.registry = SQLiteWorkerRegistry.from_settings(self.settings, reactor)
        self.addCleanup(self.registry.close)

    def fleet(self, clock=None):
        fleet = Ec2Fleet(self.settings, reactor, self.registry, clock=clock, hostname="feederd-host")
        fleet.startService()
        self.addCleanup(lambda: defer.ensureDeferred(fleet.stopService()))
        return fleet

    async def describe(self, ids):
        response = await self.aws.call("ec2", "describe_instances", InstanceIds=list(ids))
        return {i["InstanceId"]: i for r in response["Reservations"] for i in r["Instances"]}

    @ensure
    async def test_spot_launch_as_recorded_by_ec2(self):
        """RunInstances lands spot instances with tags (instance and volume), IMDSv2, terminate on shutdown,
        the instance profile, key, groups and the user data, as EC2 records them."""
        fleet = self.fleet()
        sent = []
        fleet._aws.client("ec2").meta.events.register(
            "provide-client-params.ec2.RunInstances", lambda params, **kw: sent.append(copy.deepcopy(params)))
        ids = await fleet.launch(2)
        self.assertEqual(len(ids), 2)
        # moto grants MinCount (1) where EC2 grants up to MaxCount: the remainder goes to the next type
        self.assertEqual([(r["InstanceType"], r["MinCount"], r["MaxCount"]) for r in sent],
                         [("c7i.large", 1, 2), ("m7i.large", 1, 1)])
        for request in sent:
            self.assertEqual(request["InstanceMarketOptions"], {
                "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time",
                                                      "InstanceInterruptionBehavior": "terminate", "MaxPrice": "0.09"}})
        described = await self.describe(ids)
        self.assertEqual(sorted(i["InstanceType"] for i in described.values()), ["c7i.large", "m7i.large"])
        for iid, inst in described.items():
            self.assertEqual(tags(inst), {"nommer:fleet": "nommer-test", "nommer:role": "worker",
                                          "Name": "nommer-test-worker", "nommer:launched-by": "feederd-host"})
            self.assertEqual(inst["InstanceLifecycle"], "spot")
            self.assertEqual(inst["MetadataOptions"]["HttpTokens"], "required")
            self.assertEqual(inst["MetadataOptions"]["HttpEndpoint"], "enabled")
            self.assertTrue(inst["IamInstanceProfile"]["Arn"].endswith(":instance-profile/nommer-worker"))
            self.assertEqual(inst["KeyName"], "nommer-key")
            self.assertEqual(inst["ImageId"], self.ami)
            self.assertEqual([g["GroupName"] for g in inst["SecurityGroups"]], ["media_nommer"])
            shutdown = await self.aws.call("ec2", "describe_instance_attribute", InstanceId=iid,
                                           Attribute="instanceInitiatedShutdownBehavior")
            self.assertEqual(shutdown["InstanceInitiatedShutdownBehavior"]["Value"], "terminate")
            user_data = await self.aws.call("ec2", "describe_instance_attribute", InstanceId=iid, Attribute="userData")
            text = base64.b64decode(user_data["UserData"]["Value"]).decode()
            self.assertEqual(text, render_user_data(self.settings))
            self.assertNotIn("testing", text.replace("nommer-test", ""))  # the keys in settings stay out
        volumes = await self.aws.call("ec2", "describe_volumes",
                                      Filters=[{"Name": "tag:nommer:fleet", "Values": ["nommer-test"]}])
        self.assertGreaterEqual(len(volumes["Volumes"]), 2)

    @ensure
    async def test_instance_profile_by_arn(self):
        """An ARN in EC2_IAM_INSTANCE_PROFILE is sent as IamInstanceProfile.Arn."""
        profile = (await self.aws.call("iam", "get_instance_profile",
                                       InstanceProfileName="nommer-worker"))["InstanceProfile"]["Arn"]
        api = Ec2Api(self.aws)
        sent = []
        self.aws.client("ec2").meta.events.register(
            "provide-client-params.ec2.RunInstances", lambda params, **kw: sent.append(copy.deepcopy(params)))
        [inst] = await api.run_instances(LaunchSpec(image_id=self.ami, instance_type="c7i.large", market="on-demand",
                                                    iam_instance_profile=profile, fleet_name="x"))
        self.assertEqual(sent[0]["IamInstanceProfile"], {"Arn": profile})
        self.assertNotIn("InstanceMarketOptions", sent[0])
        self.assertNotIn("InstanceLifecycle", inst)

    @ensure
    async def test_counts_by_tag_not_by_ami(self):
        """Same AMI without the tags, or another fleet's tags: never counted; registered instances run."""
        await self.aws.call("ec2", "run_instances", ImageId=self.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro")
        await self.aws.call("ec2", "run_instances", ImageId=self.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                {"Key": "nommer:fleet", "Value": "other"}, {"Key": "nommer:role", "Value": "worker"}]}])
        fleet = self.fleet()
        self.assertEqual(await fleet.counts(), (0, 0, 0))
        ids = await fleet.launch(2)
        self.assertEqual(await fleet.counts(), (0, 2, 0))
        await self.registry.heartbeat(WorkerRecord(worker_id=ids[0], instance_id=ids[0], instance_type="c7i.large",
                                                   market="spot", last_seen=reactor.seconds()))
        fleet._view_at = None  # a new tick
        self.assertEqual(await fleet.counts(), (1, 1, 0))
        self.assertEqual(fleet.worker_ids(), sorted(ids))
        self.assertEqual({i["registered"] for i in fleet.instances()}, {True, False})

    @ensure
    async def test_terminate_and_housekeeping(self):
        """TerminateInstances ends an instance, which leaves the fleet; one never registered is terminated."""
        api = Ec2Api(self.aws)
        fleet = self.fleet()
        gone, stuck = await fleet.launch(2)
        states = await api.terminate([gone])
        self.assertIn(states[gone], ("shutting-down", "terminated"))
        listed = [i["InstanceId"] for i in await api.describe_fleet("nommer-test")]
        self.assertEqual(listed, [stuck])
        clock = task.Clock()
        clock.advance(time.time() + self.settings.EC2_BOOT_TIMEOUT_S + 60)
        later = self.fleet(clock=clock)
        await later.housekeeping()
        self.assertEqual(await api.describe_fleet("nommer-test"), [])
        self.assertEqual((await self.describe([stuck]))[stuck]["State"]["Name"], "terminated")

    @ensure
    async def test_spot_price_history(self):
        """DescribeSpotPriceHistory gives a price (moto's); none for an unknown type, where the setting is used."""
        api = Ec2Api(self.aws)
        price = await api.spot_price("c7i.large", "us-east-1a")
        self.assertIsInstance(price, float)
        self.assertGreater(price, 0)
        self.assertIsNone(await api.spot_price("x9.unknown"))
        fleet = self.fleet()
        await fleet.launch(1)
        fleet._view_at = None
        await fleet.counts()
        [inst] = fleet.instances()
        self.assertEqual(inst["price_per_hour"], price if inst["availability_zone"] == "us-east-1a"
                         else await api.spot_price("c7i.large", inst["availability_zone"]))

    @ensure
    async def test_autoscaler_cap_over_several_ticks(self):
        """10 jobs, MAX_NUM_EC2_INSTANCES = 2: after several ticks there are exactly 2 tagged instances."""
        fleet = self.fleet()
        autoscaler = Autoscaler(Jobs(10), fleet, self.settings, reactor)
        for _ in range(4):
            fleet._view_at = None
            await autoscaler.tick()
        listed = await Ec2Api(self.aws).describe_fleet("nommer-test")
        self.assertEqual(len(listed), 2)


class Ec2ApiErrorTests(TestCase):
    """RunInstances errors as AWS sends them (botocore Stubber)."""

    def setUp(self):
        settings, _ = aws_settings(self, AWS_ENDPOINT_URL="http://127.0.0.1:9")  # never reached
        self.aws = AWS(settings, reactor, name="stubbed")
        self.addCleanup(self.aws.close)
        self.stub = Stubber(self.aws.client("ec2"))
        self.stub.activate()
        self.addCleanup(self.stub.deactivate)
        self.spec = LaunchSpec(image_id="ami-12345678", instance_type="c7i.large", count=3)

    @ensure
    async def test_capacity_errors_are_no_capacity(self):
        """Capacity and limit refusals become NoCapacity with the AWS code."""
        for code in ("InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded",
                     "InstanceLimitExceeded", "Unsupported", "VcpuLimitExceeded"):
            self.stub.add_client_error("run_instances", service_error_code=code, service_message="no")
            with self.assertRaises(NoCapacity) as caught:
                await Ec2Api(self.aws).run_instances(self.spec)
            self.assertEqual(caught.exception.code, code)

    @ensure
    async def test_other_errors_are_raised(self):
        """Anything else (a wrong AMI, missing permission) is a ClientError for the caller to log."""
        self.stub.add_client_error("run_instances", service_error_code="InvalidAMIID.NotFound",
                                   service_message="no AMI")
        with self.assertRaises(ClientError):
            await Ec2Api(self.aws).run_instances(self.spec)

    @ensure
    async def test_request_parameters(self):
        """The exact RunInstances parameters of a spot launch in a subnet with security group ids."""
        spec = LaunchSpec(image_id="ami-12345678", instance_type="c7i.large", count=3, subnet_id="subnet-0a",
                          security_group_ids=("sg-01",), security_groups=("ignored",), user_data="#cloud-config\n{}",
                          fleet_name="f", launched_by="h")
        tag_list = [{"Key": "nommer:fleet", "Value": "f"}, {"Key": "nommer:role", "Value": "worker"},
                    {"Key": "Name", "Value": "f-worker"}, {"Key": "nommer:launched-by", "Value": "h"}]
        self.stub.add_response("run_instances", {"Instances": [{"InstanceId": "i-0abc"}]}, {
            "ImageId": "ami-12345678", "InstanceType": "c7i.large", "MinCount": 1, "MaxCount": 3,
            "UserData": "#cloud-config\n{}", "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                                "InstanceMetadataTags": "disabled"},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list},
                                  {"ResourceType": "volume", "Tags": tag_list}],
            "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
                "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}},
            "SubnetId": "subnet-0a", "SecurityGroupIds": ["sg-01"]})
        self.assertEqual(await Ec2Api(self.aws).run_instances(spec), [{"InstanceId": "i-0abc"}])
        self.stub.assert_no_pending_responses()


class Ec2FleetContractTests(FleetContract, TestCase):
    """The Fleet contract on moto; "unavailable" is an endpoint where nothing listens."""

    fleet_class = Ec2Fleet
    WORKERS_OUTLIVE_STOP = True
    CALLS_ON_CHANGE = False
    UNAVAILABLE_LOGGED_ERRORS = (EndpointConnectionError,)

    @ensure
    async def setUp(self):
        FleetContract.setUp(self)
        reset_moto()
        base, _ = aws_settings(self)
        self.aws = AWS(base, reactor, name="test-ec2")
        self.addCleanup(self.aws.close)
        images = await self.aws.call("ec2", "describe_images", Owners=["amazon"])
        self.values = dict(EC2_AMI_ID=images["Images"][0]["ImageId"], EC2_INSTANCE_TYPES=["c7i.large", "m7i.large"],
                           EC2_SECURITY_GROUPS=[], EC2_FLEET_NAME="nommer-contract", MAX_NUM_EC2_INSTANCES=3,
                           CONFIG_S3_BUCKET="nommer-test-config")
        settings, _ = aws_settings(self, **self.values)
        self.registry = SQLiteWorkerRegistry.from_settings(settings, reactor)
        self.addCleanup(self.registry.close)
        # the fleet's now: real time, moved on by the test when a new listing is due
        self.clock = task.Clock()
        self.clock.advance(time.time())

    def make_fleet(self, available=True):
        endpoint = {} if available else {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
        settings, _ = aws_settings(self, **self.values, **endpoint)
        return Ec2Fleet(settings, reactor, self.registry, clock=self.clock, hostname="feederd-contract")

    async def worker_up(self, fleet, worker_id):
        await self.registry.heartbeat(WorkerRecord(worker_id=worker_id, instance_id=worker_id,
                                                   last_seen=self.clock.seconds()))
        self.wait_ended(fleet, [])  # a new listing is due

    async def end_worker(self, fleet, worker_id):
        await self.aws.call("ec2", "terminate_instances", InstanceIds=[worker_id])
        self.wait_ended(fleet, [worker_id])

    def wait_ended(self, fleet, worker_ids):
        self.clock.advance(Ec2Fleet.VIEW_MAX_AGE_S + 1)  # the next counts() lists the fleet again

    async def alive(self, worker_ids):
        if not worker_ids:
            return []
        response = await self.aws.call("ec2", "describe_instances", InstanceIds=list(worker_ids))
        live = {i["InstanceId"] for r in response["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] in LIVE_STATES}
        return [w for w in worker_ids if w in live]
