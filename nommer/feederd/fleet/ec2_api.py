"""The EC2 calls the fleet makes (``Ec2Api``): a thin async adapter over
boto3's EC2 client. Every call runs in the bounded thread pool of a
``nommer.core.aws.AWS``, one boto3 call (or one paginated listing) at a
time; nothing here waits in a thread. Capacity refusals become
``NoCapacity``; other AWS errors are raised as botocore ``ClientError``.

Why RunInstances, not EC2 Fleet / CreateFleet or a launch template
------------------------------------------------------------------
One-time spot instances through ``RunInstances`` with
``InstanceMarketOptions`` (what AWS recommends over RequestSpotInstances):

- the fallback order is explicit and ours: instance types in order, then
  subnets in order, then (optionally) on-demand; every refusal is logged with
  its reason. CreateFleet ``instant`` would choose among overrides itself
  and report per-override errors in a shape that is harder to log and test;
- moto serves RunInstances faithfully (tags, metadata options, instance
  profile, user data, shutdown behaviour), so the real request path is
  tested; its CreateFleet support is partial;
- nothing extra to create, version or clean up (no launch template, no fleet
  resource): the instances and their tags are the whole state. A launch
  template could be added later as an option (``LaunchTemplate`` in the same
  request) for settings nomconf does not cover.
"""

import datetime

from botocore.exceptions import ClientError

from nommer.core.aws import error_code
from nommer.feederd.fleet.ec2_plan import LIVE_STATES, ROLE_WORKER, TAG_FLEET, TAG_ROLE, is_fleet_instance

#: RunInstances error codes that mean "no capacity here": try the next
#: instance type / subnet / market (EC2 API error codes reference). Codes
#: starting with "Unsupported" (an instance type not offered in an AZ, spot
#: not available for a type) are read the same way.
NO_CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
})

#: DescribeSpotPriceHistory product description of Linux instances.
LINUX = "Linux/UNIX"


class NoCapacity(Exception):
    """RunInstances refused for lack of capacity or limits (``code`` is the
    AWS error code, ``message`` its text): try elsewhere."""

    def __init__(self, code, message=""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def is_no_capacity(code):
    """True if a RunInstances error ``code`` (str or None) means no capacity."""
    return bool(code) and (code in NO_CAPACITY_CODES or code.startswith("Unsupported"))


def _thd_describe_fleet(client, fleet_name):
    filters = [{"Name": f"tag:{TAG_FLEET}", "Values": [fleet_name]},
               {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_WORKER]},
               {"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    found = []
    for page in client.get_paginator("describe_instances").paginate(Filters=filters):
        for reservation in page.get("Reservations", []):
            found.extend(reservation.get("Instances", []))
    # The filters again, client-side: a backend that ignores one (an old
    # moto) must not make us count (or terminate) someone else's instance.
    return [i for i in found
            if is_fleet_instance(i, fleet_name) and i.get("State", {}).get("Name") in LIVE_STATES]


class Ec2Api:
    """The EC2 calls the fleet makes, each one boto3 call (or one paginated
    listing) in the thread pool of ``aws`` (a ``nommer.core.aws.AWS``). All
    methods return Deferreds; ``clock`` (IReactorTime, default
    ``aws.reactor``) dates the spot price query."""

    def __init__(self, aws, clock=None):
        self.aws = aws
        self.clock = clock if clock is not None else aws.reactor

    async def run_instances(self, spec):
        """Launch up to ``spec.count`` instances (RunInstances, MinCount 1).
        Returns the RunInstances ``Instances`` dicts (1 to ``count``).
        Raises ``NoCapacity`` when AWS refuses for capacity or limits
        (``is_no_capacity``), ``ClientError`` for anything else."""
        try:
            response = await self.aws.call("ec2", "run_instances", **spec.request())
        except ClientError as e:
            code = error_code(e)
            if is_no_capacity(code):
                raise NoCapacity(code, e.response.get("Error", {}).get("Message", "")) from e
            raise
        return response.get("Instances", [])

    def describe_fleet(self, fleet_name):
        """Deferred list of DescribeInstances instance dicts of the fleet
        ``fleet_name`` in LIVE_STATES (pending, running, stopping, stopped;
        never shutting-down or terminated), found by tag, never by AMI."""
        return self.aws.run(lambda: _thd_describe_fleet(self.aws.client("ec2"), fleet_name))

    async def terminate(self, instance_ids):
        """TerminateInstances; returns ``{instance_id: new state name}``.
        Raises ``ClientError`` (``InvalidInstanceID.NotFound`` if one is gone)."""
        response = await self.aws.call("ec2", "terminate_instances", InstanceIds=list(instance_ids))
        return {i["InstanceId"]: i.get("CurrentState", {}).get("Name")
                for i in response.get("TerminatingInstances", [])}

    async def spot_price(self, instance_type, az=None):
        """The current spot price of ``instance_type`` (in ``az`` if given,
        else the highest among the AZs), USD per hour (float), or None if
        DescribeSpotPriceHistory has none. The price in effect now is the
        most recent entry at or before now (StartTime = EndTime = now, per
        the DescribeSpotPriceHistory API). Raises ``ClientError``."""
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
        kw = {"InstanceTypes": [instance_type], "ProductDescriptions": [LINUX],
              "StartTime": now, "EndTime": now, "MaxResults": 100}
        if az:
            kw["AvailabilityZone"] = az
        response = await self.aws.call("ec2", "describe_spot_price_history", **kw)
        return latest_spot_price(response.get("SpotPriceHistory", []), instance_type, az)


def latest_spot_price(history, instance_type, az=None):
    """From DescribeSpotPriceHistory entries: the most recent Linux price of
    ``instance_type`` per AZ, then the one of ``az`` (or the highest of them
    when ``az`` is None). USD per hour (float) or None."""
    latest = {}
    for entry in history:
        if entry.get("InstanceType") != instance_type:
            continue
        if not str(entry.get("ProductDescription", LINUX)).startswith(LINUX):
            continue
        zone = entry.get("AvailabilityZone")
        if az and zone != az:
            continue
        if zone not in latest or entry["Timestamp"] > latest[zone]["Timestamp"]:
            latest[zone] = entry
    prices = [float(e["SpotPrice"]) for e in latest.values()]
    return max(prices) if prices else None
