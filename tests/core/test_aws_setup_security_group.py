"""``nommer aws setup`` and the workers' security group, against moto: created (no inbound rules,
tagged) when missing, found the next time, used by the EC2 fleet's launches; group ids that do not
exist are an error naming the setting; outside the default VPC the group is made in the subnets' VPC.
Once through the real command (a subprocess)."""

import os
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from nommer.core.aws import AWS
from nommer.core.aws_setup import setup_resources
from nommer.core.worker_registry.sqlite import SQLiteWorkerRegistry
from nommer.feederd.fleet.ec2 import Ec2Fleet
from nommer.feederd.fleet.ec2_setup import DESCRIPTION, SecurityGroupSetupError, ensure_worker_security_groups
from tests.aws_server import FAKE_CREDENTIALS, aws_settings, moto_endpoint, reset_moto
from tests.helpers import ensure

EC2_ON_MOTO = dict(FLEET_BACKEND="ec2", JOB_STORE_BACKEND="dynamodb", WORK_QUEUE_BACKEND="sqs",
                   CONFIG_S3_BUCKET="nommer-sg-config", EC2_FLEET_NAME="nommer-sg")


class SecurityGroupSetupTests(TestCase):
    timeout = 60

    @ensure
    async def setUp(self):
        reset_moto()
        base, _ = aws_settings(self)
        self.aws = AWS(base, reactor, name="test-sg")
        self.addCleanup(self.aws.close)
        self.ami = (await self.aws.call("ec2", "describe_images", Owners=["amazon"]))["Images"][0]["ImageId"]

    async def groups(self, name):
        return (await self.aws.call("ec2", "describe_security_groups",
                                    Filters=[{"Name": "group-name", "Values": [name]}]))["SecurityGroups"]

    @ensure
    async def test_setup_creates_the_group_once_and_the_fleet_launches_with_it(self):
        """setup_resources with FLEET_BACKEND "ec2" creates EC2_SECURITY_GROUPS' group in the default VPC,
        with no inbound rule and the fleet's tags; the second run finds it; RunInstances then works."""
        settings, _ = aws_settings(self, EC2_AMI_ID=self.ami, EC2_SECURITY_GROUPS=["nommer_workers"], **EC2_ON_MOTO)
        self.assertEqual(await self.groups("nommer_workers"), [])
        lines = await setup_resources(settings, reactor)
        [group] = await self.groups("nommer_workers")
        default_vpc = (await self.aws.call("ec2", "describe_vpcs", Filters=[
            {"Name": "isDefault", "Values": ["true"]}]))["Vpcs"][0]["VpcId"]
        self.assertEqual(lines[-1], f"created EC2 security group nommer_workers ({group['GroupId']}) in {default_vpc}, "
                                    "no inbound rules")
        self.assertIn("created DynamoDB table nommer_jobs", lines)
        self.assertEqual((group["VpcId"], group["Description"], group["IpPermissions"]),
                         (default_vpc, DESCRIPTION, []))
        self.assertEqual({t["Key"]: t["Value"] for t in group["Tags"]},
                         {"nommer:fleet": "nommer-sg", "nommer:role": "worker", "Name": "nommer_workers"})
        again = await setup_resources(settings, reactor)
        self.assertEqual(again[-1], f"EC2 security group nommer_workers ({group['GroupId']}) exists in {default_vpc}")
        self.assertEqual(len(await self.groups("nommer_workers")), 1)

        registry = SQLiteWorkerRegistry.from_settings(settings, reactor)
        self.addCleanup(registry.close)
        fleet = Ec2Fleet(settings, reactor, registry, hostname="setup-test")
        fleet.startService()
        self.addCleanup(lambda: defer.ensureDeferred(fleet.stopService()))
        [iid] = await fleet.launch(1)
        self.assertIsNone(fleet.trouble)
        described = await self.aws.call("ec2", "describe_instances", InstanceIds=[iid])
        instance = described["Reservations"][0]["Instances"][0]
        self.assertEqual([g["GroupId"] for g in instance["SecurityGroups"]], [group["GroupId"]])

    @ensure
    async def test_group_ids_are_checked_not_created(self):
        """EC2_SECURITY_GROUP_IDS: existing ids are reported; a missing one is an error naming the setting
        and what to do, and nothing is created."""
        made = await self.aws.call("ec2", "create_security_group", GroupName="mine", Description="workers")
        settings, _ = aws_settings(self, EC2_SECURITY_GROUP_IDS=[made["GroupId"]])
        self.assertEqual(await ensure_worker_security_groups(settings, self.aws),
                         [f"EC2 security group {made['GroupId']} (mine) exists (EC2_SECURITY_GROUP_IDS)"])
        settings, _ = aws_settings(self, EC2_SECURITY_GROUP_IDS=["sg-0123456789abcdef0"])
        with self.assertRaises(SecurityGroupSetupError) as raised:
            await ensure_worker_security_groups(settings, self.aws)
        message = str(raised.exception)
        self.assertIn("EC2_SECURITY_GROUP_IDS sg-0123456789abcdef0", message)
        self.assertIn("does not exist", message)
        self.assertIn("EC2_SECURITY_GROUPS", message)
        self.assertEqual(await self.groups("media_nommer"), [])

    @ensure
    async def test_subnets_outside_the_default_vpc(self):
        """With EC2_SUBNET_IDS in another VPC the group is made there, and the line says to use its id."""
        vpc = (await self.aws.call("ec2", "create_vpc", CidrBlock="10.42.0.0/16"))["Vpc"]["VpcId"]
        subnet = (await self.aws.call("ec2", "create_subnet", VpcId=vpc, CidrBlock="10.42.1.0/24"))["Subnet"]["SubnetId"]
        settings, _ = aws_settings(self, EC2_SUBNET_IDS=[subnet])
        [line] = await ensure_worker_security_groups(settings, self.aws)
        [group] = await self.groups("media_nommer")
        self.assertEqual(group["VpcId"], vpc)
        self.assertEqual(line, f"created EC2 security group media_nommer ({group['GroupId']}) in {vpc}, no inbound "
                               f"rules (not the default VPC: set EC2_SECURITY_GROUP_IDS = ['{group['GroupId']}'])")
        self.assertEqual(await ensure_worker_security_groups(settings, self.aws),
                         [f"EC2 security group media_nommer ({group['GroupId']}) exists in {vpc}"])

    @ensure
    async def test_no_group_named(self):
        """No names and no ids: nothing made, and the line says the VPC's default group is used."""
        settings, _ = aws_settings(self, EC2_SECURITY_GROUPS=[])
        [line] = await ensure_worker_security_groups(settings, self.aws)
        self.assertIn("default group", line)

    def test_the_command(self):
        """`nommer aws setup --config nomconf.py` (a subprocess) prints the group created, then found."""
        reset_moto()
        config = os.path.join(os.path.abspath(self.mktemp()), "nomconf.py")
        os.makedirs(os.path.dirname(config))
        base = os.path.dirname(config)
        with open(config, "w") as f:
            for name, value in dict(EC2_ON_MOTO, DATA_DIR=os.path.join(base, "data"), AWS_ENDPOINT_URL=moto_endpoint(),
                                    AWS_REGION="us-east-1", EC2_AMI_ID=self.ami,
                                    FILE_STORAGE_ROOTS=[os.path.join(base, "media")]).items():
                f.write(f"{name} = {value!r}\n")
        os.makedirs(os.path.join(base, "media"))
        env = dict(os.environ, **FAKE_CREDENTIALS)

        def run():
            return subprocess.run([sys.executable, "-m", "nommer.client.cli", "aws", "setup", "--config", config],
                                  capture_output=True, text=True, timeout=120, env=env, cwd=base)
        first = run()
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertRegex(first.stdout, r"created EC2 security group media_nommer \(sg-[0-9a-f]+\) in vpc-[0-9a-f]+, "
                                       r"no inbound rules")
        second = run()
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertRegex(second.stdout, r"EC2 security group media_nommer \(sg-[0-9a-f]+\) exists in vpc-")
