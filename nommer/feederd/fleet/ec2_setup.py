"""The EC2 fleet's own AWS resources, for ``nommer aws setup``: the workers'
security group.

Workers need no inbound access at all (they reach SQS, S3 and DynamoDB out;
nothing connects to them), so the group is created with no inbound rule and
EC2's default outbound rule. Which group:

- EC2_SECURITY_GROUP_IDS set: those groups must exist (an id cannot be
  created); each is checked, a missing one is an error naming the setting;
- else each name of EC2_SECURITY_GROUPS (default ``media_nommer``, the
  original's) in the VPC the workers launch into (that of EC2_SUBNET_IDS, or
  the default VPC): found, or created and tagged ``nommer:fleet``.

Idempotent: a second run finds what the first made (and a group created by
someone else at the same moment is found, not an error).
"""

from botocore.exceptions import ClientError

from nommer.core.aws import error_code
from nommer.feederd.fleet.ec2_plan import ROLE_WORKER, TAG_FLEET, TAG_ROLE

#: Description of a group made by ``ensure_worker_security_groups``.
DESCRIPTION = "nommer workers: no inbound access (they only connect out)"


class SecurityGroupSetupError(Exception):
    """The workers' security group cannot be had as the settings name it."""


async def _vpcs(settings, aws):
    """``[(vpc_id, is_default)]`` the workers launch into: the VPCs of
    EC2_SUBNET_IDS, else the default VPC. Raises SecurityGroupSetupError
    without either."""
    if settings.EC2_SUBNET_IDS:
        subnets = (await aws.call("ec2", "describe_subnets", SubnetIds=list(settings.EC2_SUBNET_IDS)))["Subnets"]
        ids = list(dict.fromkeys(s["VpcId"] for s in subnets))
        vpcs = (await aws.call("ec2", "describe_vpcs", VpcIds=ids))["Vpcs"]
        default = {v["VpcId"]: bool(v.get("IsDefault")) for v in vpcs}
        return [(vpc_id, default.get(vpc_id, False)) for vpc_id in ids]
    vpcs = (await aws.call("ec2", "describe_vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}]))["Vpcs"]
    if not vpcs:
        raise SecurityGroupSetupError("this region has no default VPC: set EC2_SUBNET_IDS (the workers' subnets) "
                                      "so that the workers' security group can be made in their VPC")
    return [(vpcs[0]["VpcId"], True)]


async def _find(aws, name, vpc_id):
    groups = (await aws.call("ec2", "describe_security_groups", Filters=[
        {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]))["SecurityGroups"]
    return groups[0] if groups else None


async def _check_ids(settings, aws):
    ids = list(settings.EC2_SECURITY_GROUP_IDS)
    try:
        groups = (await aws.call("ec2", "describe_security_groups", GroupIds=ids))["SecurityGroups"]
    except ClientError as e:
        if error_code(e) not in ("InvalidGroup.NotFound", "InvalidGroupId.Malformed"):
            raise
        message = e.response.get("Error", {}).get("Message", "")
        raise SecurityGroupSetupError(
            f"EC2_SECURITY_GROUP_IDS {', '.join(ids)}: {message or error_code(e)}. A group id cannot be created: "
            "create the group (no inbound rules) and put its id there, or leave EC2_SECURITY_GROUP_IDS empty "
            "and name the group in EC2_SECURITY_GROUPS for `nommer aws setup` to create it") from None
    names = {g["GroupId"]: g.get("GroupName", "") for g in groups}
    return [f"EC2 security group {gid} ({names.get(gid, '?')}) exists (EC2_SECURITY_GROUP_IDS)" for gid in ids]


async def ensure_worker_security_groups(settings, aws):
    """Check or create the workers' security group(s) (see the module
    docstring) through ``aws`` (a ``nommer.core.aws.AWS``). Returns what was
    done, one line each (list of str). Raises SecurityGroupSetupError (a
    group id that does not exist, no VPC to make it in) or botocore's
    ClientError (AWS refusing, e.g. no ec2:CreateSecurityGroup right)."""
    if settings.EC2_SECURITY_GROUP_IDS:
        return await _check_ids(settings, aws)
    if not settings.EC2_SECURITY_GROUPS:
        return ["no workers' security group named (EC2_SECURITY_GROUPS and EC2_SECURITY_GROUP_IDS are empty): "
                "instances get their VPC's default group"]
    lines = []
    for vpc_id, default_vpc in await _vpcs(settings, aws):
        for name in settings.EC2_SECURITY_GROUPS:
            group = await _find(aws, name, vpc_id)
            if group is not None:
                lines.append(f"EC2 security group {name} ({group['GroupId']}) exists in {vpc_id}")
                continue
            tags = [{"Key": TAG_FLEET, "Value": settings.EC2_FLEET_NAME}, {"Key": TAG_ROLE, "Value": ROLE_WORKER},
                    {"Key": "Name", "Value": name}]
            try:
                created = await aws.call("ec2", "create_security_group", GroupName=name, Description=DESCRIPTION,
                                         VpcId=vpc_id, TagSpecifications=[{"ResourceType": "security-group",
                                                                           "Tags": tags}])
                group_id = created["GroupId"]
            except ClientError as e:
                if error_code(e) != "InvalidGroup.Duplicate":
                    raise
                group = await _find(aws, name, vpc_id)  # made by someone else meanwhile
                lines.append(f"EC2 security group {name} ({group['GroupId'] if group else '?'}) exists in {vpc_id}")
                continue
            line = f"created EC2 security group {name} ({group_id}) in {vpc_id}, no inbound rules"
            if not default_vpc:  # RunInstances takes group names in the default VPC only
                line += f" (not the default VPC: set EC2_SECURITY_GROUP_IDS = ['{group_id}'])"
            lines.append(line)
    return lines
