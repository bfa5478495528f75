"""The EC2 fleet's decisions, pure: plain values and ``now`` in, what to do
out; no AWS call, no clock, no log (``nommer.feederd.fleet.ec2`` gathers,
``ec2_api`` calls EC2).

- what to launch: ``LaunchSpec`` (one RunInstances request) and
  ``launch_specs`` (the ordered list of what to try: markets, then instance
  types, then subnets);
- what there is: ``fleet_instance`` (EC2's view of an instance joined with
  the worker registry's), ``reconcile`` (one listing against what feederd
  launched and terminated and has not seen listed yet), ``count_instances``;
- what to end: ``plan_terminations``;
- what it cost: ``estimate_cost_usd``, ``price_of``, ``spot_prices_due``.

Instances are found by tag (``nommer:fleet`` = EC2_FLEET_NAME and
``nommer:role`` = ``worker``; ``is_fleet_instance``), never by AMI id as the
original did (reference section 4.6): an unrelated instance from the same
image is never counted, and never terminated.
"""

import datetime

import attr

from nommer.core.worker_registry.base import EXITED, INTERRUPTED, TERMINATING

#: EC2 instance state names (DescribeInstances ``State.Name``).
PENDING = "pending"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
SHUTTING_DOWN = "shutting-down"
TERMINATED = "terminated"
#: States of an instance that still belongs to the fleet (counted, shown).
LIVE_STATES = (PENDING, RUNNING, STOPPING, STOPPED)

#: Markets (``EC2_MARKET``; ``InstanceMarketOptions.MarketType``).
SPOT = "spot"
ON_DEMAND = "on-demand"

#: Tags put on every instance and volume launched, and used to find them.
TAG_FLEET = "nommer:fleet"
TAG_ROLE = "nommer:role"
TAG_LAUNCHED_BY = "nommer:launched-by"
ROLE_WORKER = "worker"

#: EC2 bills Linux instances per second with a 60-second minimum, seconds.
MIN_BILLED_S = 60.0


# --- what to launch --------------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class LaunchSpec:
    """One RunInstances request: ``count`` instances of ``instance_type`` in
    ``market`` ("spot" or "on-demand"), in ``subnet_id`` (None: the default
    VPC's choice).

    - ``user_data``: str (``nommer.feederd.fleet.userdata.render_user_data``).
    - ``security_group_ids`` (tuple of ``sg-...``) are used when given, else
      ``security_groups`` (names; default VPC only, the original's way).
    - ``iam_instance_profile``: a profile name or ARN (``arn:...``), or None.
    - ``max_price``: spot maximum, USD per hour as a str, or None (AWS's
      default: up to the on-demand price). Ignored for on-demand.
    - ``metadata_tags``: expose the instance's tags through IMDS.
    """

    image_id: str
    instance_type: str
    market: str = SPOT
    count: int = 1
    subnet_id: str = None
    user_data: str = ""
    fleet_name: str = "nommer"
    launched_by: str = ""
    security_group_ids: tuple = ()
    security_groups: tuple = ()
    key_name: str = None
    iam_instance_profile: str = None
    max_price: str = None
    metadata_tags: bool = False

    def tags(self):
        """Tags of the instance and its volumes (boto3 ``[{Key, Value}]``)."""
        return [
            {"Key": TAG_FLEET, "Value": self.fleet_name},
            {"Key": TAG_ROLE, "Value": ROLE_WORKER},
            {"Key": "Name", "Value": f"{self.fleet_name}-worker"},
            {"Key": TAG_LAUNCHED_BY, "Value": self.launched_by or "unknown"},
        ]

    def request(self):
        """Keyword arguments of boto3 ``ec2.run_instances`` (per the
        RunInstances API): MinCount 1 and MaxCount ``count``, so a partial
        grant is accepted and the rest is asked elsewhere."""
        kw = {
            "ImageId": self.image_id,
            "InstanceType": self.instance_type,
            "MinCount": 1,
            "MaxCount": self.count,
            "UserData": self.user_data,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {
                "HttpTokens": "required",       # IMDSv2 only
                "HttpEndpoint": "enabled",
                "InstanceMetadataTags": "enabled" if self.metadata_tags else "disabled",
            },
            "TagSpecifications": [{"ResourceType": kind, "Tags": self.tags()}
                                  for kind in ("instance", "volume")],
        }
        if self.market == SPOT:
            spot = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            if self.max_price:
                spot["MaxPrice"] = self.max_price
            kw["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        if self.subnet_id:
            kw["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            kw["SecurityGroupIds"] = list(self.security_group_ids)
        elif self.security_groups:
            kw["SecurityGroups"] = list(self.security_groups)
        if self.key_name:
            kw["KeyName"] = self.key_name
        if self.iam_instance_profile:
            kw["IamInstanceProfile"] = instance_profile_param(self.iam_instance_profile)
        return kw


def instance_profile_param(profile):
    """RunInstances ``IamInstanceProfile`` for a profile name or ARN."""
    return {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}


def markets(settings):
    """Markets to try, in order: EC2_MARKET, then on-demand when it is spot
    and EC2_ON_DEMAND_FALLBACK is set."""
    if settings.EC2_MARKET == ON_DEMAND:
        return [ON_DEMAND]
    return [SPOT, ON_DEMAND] if settings.EC2_ON_DEMAND_FALLBACK else [SPOT]


def launch_specs(settings, user_data, launched_by):
    """Every (market, instance type, subnet) to try, in order, as LaunchSpecs
    with ``count`` 1 (the caller sets it): for each market (``markets``), for
    each of EC2_INSTANCE_TYPES in order, for each of EC2_SUBNET_IDS in order
    (or the default VPC's choice when there are none)."""
    specs = []
    for market in markets(settings):
        for instance_type in settings.EC2_INSTANCE_TYPES:
            for subnet_id in settings.EC2_SUBNET_IDS or [None]:
                specs.append(LaunchSpec(
                    image_id=settings.EC2_AMI_ID, instance_type=instance_type, market=market,
                    subnet_id=subnet_id, user_data=user_data, fleet_name=settings.EC2_FLEET_NAME,
                    launched_by=launched_by, security_group_ids=tuple(settings.EC2_SECURITY_GROUP_IDS),
                    security_groups=tuple(settings.EC2_SECURITY_GROUPS), key_name=settings.EC2_KEY_NAME,
                    iam_instance_profile=settings.EC2_IAM_INSTANCE_PROFILE,
                    max_price=settings.SPOT_MAX_PRICE if market == SPOT else None))
    return specs


# --- what there is ---------------------------------------------------------------------


def _tag(instance, key):
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == key:
            return tag.get("Value")
    return None


def is_fleet_instance(instance, fleet_name):
    """True if a DescribeInstances instance dict carries this fleet's tags
    (``nommer:fleet`` = ``fleet_name`` and ``nommer:role`` = ``worker``)."""
    return _tag(instance, TAG_FLEET) == fleet_name and _tag(instance, TAG_ROLE) == ROLE_WORKER


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class FleetInstance:
    """One instance of the fleet: EC2's view joined with the registry's.

    - ``state``: EC2 state name; ``launched_at``: epoch seconds.
    - ``market``: "spot" or "on-demand".
    - ``registered``: a worker record names this instance; ``last_seen``:
      its last heartbeat (epoch seconds) or None; ``worker_state``: its
      reported state (``nommer.core.worker_registry.base``) or None.
    """

    instance_id: str
    instance_type: str = None
    availability_zone: str = None
    market: str = ON_DEMAND
    state: str = PENDING
    launched_at: float = 0.0
    registered: bool = False
    last_seen: float = None
    worker_state: str = None


def _epoch(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    return float(value or 0.0)


def fleet_instance(described, record=None, market=None):
    """A FleetInstance from a DescribeInstances / RunInstances instance dict
    and the worker record naming it (or None). ``market`` overrides the one
    read from ``InstanceLifecycle`` ("spot" there, absent for on-demand)."""
    return FleetInstance(
        instance_id=described["InstanceId"],
        instance_type=described.get("InstanceType"),
        availability_zone=(described.get("Placement") or {}).get("AvailabilityZone"),
        market=market or (SPOT if described.get("InstanceLifecycle") == "spot" else ON_DEMAND),
        state=(described.get("State") or {}).get("Name", PENDING),
        launched_at=_epoch(described.get("LaunchTime")),
        registered=record is not None,
        last_seen=record.last_seen if record is not None else None,
        worker_state=record.state if record is not None else None)


def records_by_instance(records):
    """``{instance_id: WorkerRecord}`` from worker records (the most recently
    seen one wins). A record names its instance by ``instance_id``, or by
    ``worker_id`` (on EC2 the worker id is the instance id)."""
    index = {}
    for record in records:
        for key in {record.instance_id, record.worker_id} - {None}:
            if key not in index or record.last_seen > index[key].last_seen:
                index[key] = record
    return index


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Reconciled:
    """What one listing makes of the fleet (``reconcile``); each dict is new.

    - ``view``: ``{instance_id: FleetInstance}``, the fleet now;
    - ``launched``: ``{instance_id: FleetInstance}`` launched by feederd and
      not listed yet, still within the grace (counted in ``view``);
    - ``terminated``: ``{instance_id: epoch s}`` terminated by feederd,
      still within the grace (left out of ``view`` while EC2 lists them);
    - ``never_listed``: FleetInstances launched longer than the grace ago
      that never showed in a listing: no longer counted (to log);
    - ``gone``: FleetInstances of the previous view that are no longer there
      and that feederd did not terminate: ended on their own (idle
      self-termination, spot interruption, outside action; to log).
    """

    view: dict
    launched: dict
    terminated: dict
    never_listed: list
    gone: list


def reconcile(described, records, previous, launched, terminated, now, grace_s):
    """One listing of the fleet joined with the worker registry and with what
    feederd did that EC2 (eventually consistent) may not show yet.

    - ``described``: DescribeInstances instance dicts of the fleet;
    - ``records``: every WorkerRecord of the registry;
    - ``previous``: the last view, ``{instance_id: FleetInstance}``;
    - ``launched``: ``{instance_id: FleetInstance}`` launched, not yet listed;
    - ``terminated``: ``{instance_id: epoch s}`` terminated by feederd;
    - ``now``: epoch seconds; ``grace_s``: how long a launch missing from the
      listing still counts, and a termination still listed is ignored.

    Returns a ``Reconciled``. A launched instance still unlisted keeps the
    fields it had at launch, with its registration (``registered``,
    ``last_seen``) from ``records``."""
    index = records_by_instance(records)
    view = {}
    for d in described:
        iid = d["InstanceId"]
        terminated_at = terminated.get(iid)
        if terminated_at is not None and now - terminated_at <= grace_s:
            continue  # we terminated it; EC2 has not caught up yet
        view[iid] = fleet_instance(d, index.get(iid))
    still_launched, never_listed = {}, []
    for iid, inst in launched.items():
        if iid in view:
            continue
        if now - inst.launched_at > grace_s:
            never_listed.append(inst)
        else:
            still_launched[iid] = inst
            view[iid] = attr.evolve(inst, registered=iid in index,
                                    last_seen=index[iid].last_seen if iid in index else None)
    still_terminated = {iid: t for iid, t in terminated.items() if now - t <= grace_s}
    gone = [inst for iid, inst in previous.items() if iid not in view and iid not in still_terminated]
    return Reconciled(view=view, launched=still_launched, terminated=still_terminated,
                      never_listed=never_listed, gone=gone)


#: Worker states of a worker on its way out: its instance still counts
#: against MAX_NUM_EC2_INSTANCES but is no capacity.
LEAVING_STATES = (INTERRUPTED, TERMINATING, EXITED)


def is_leaving(inst):
    return inst.registered and inst.worker_state in LEAVING_STATES


def count_instances(instances):
    """``(running, booting, leaving)`` of FleetInstances: running = EC2
    running and registered as taking jobs; leaving = registered with a
    worker interrupted, terminating its instance or exited; booting = every
    other live instance (pending, running but not registered yet, and
    stopping/stopped, which are left alone), so that the three sum to every
    instance there is and the maximum holds."""
    leaving = sum(1 for i in instances if is_leaving(i))
    running = sum(1 for i in instances if i.state == RUNNING and i.registered and not is_leaving(i))
    return running, len(instances) - running - leaving, leaving


# --- what to end ------------------------------------------------------------------------


def plan_terminations(instances, now, boot_timeout_s, heartbeat_timeout_s):
    """Instances feederd must terminate, as ``[(FleetInstance, reason)]``:

    - pending or running, never registered, launched at least
      ``boot_timeout_s`` seconds before ``now``: it will never come up;
    - running and registered, last heartbeat more than
      ``heartbeat_timeout_s`` seconds before ``now``: a zombie;
    - running, and its worker reported it exited: nothing runs there any
      more (the worker's own TerminateInstances failed, or it is still in
      flight: terminating twice is harmless).

    Anything else (booting in time, healthy, idle, stopped) is left alone.
    ``now`` is epoch seconds."""
    plan = []
    for inst in instances:
        age = now - inst.launched_at
        if inst.state in (PENDING, RUNNING) and not inst.registered and age >= boot_timeout_s:
            plan.append((inst, f"never registered: no heartbeat {age:.0f} s after launch "
                               f"(EC2_BOOT_TIMEOUT_S = {boot_timeout_s:g})"))
        elif inst.state == RUNNING and inst.registered and inst.worker_state == EXITED:
            plan.append((inst, "its worker exited"))
        elif (inst.state == RUNNING and inst.registered and inst.last_seen is not None
              and now - inst.last_seen > heartbeat_timeout_s):
            plan.append((inst, f"zombie: last heartbeat {now - inst.last_seen:.0f} s ago "
                               f"(WORKER_HEARTBEAT_TIMEOUT_S = {heartbeat_timeout_s:g})"))
    return plan


# --- what it costs ---------------------------------------------------------------------


def estimate_cost_usd(uptime_s, price_per_hour):
    """What ``uptime_s`` seconds of one instance cost at ``price_per_hour``
    USD/hour, billed per second with a 60 s minimum (EC2 Linux billing); None
    if the price is unknown. The spot price changes over time: an estimate."""
    if price_per_hour is None:
        return None
    return price_per_hour * max(uptime_s, MIN_BILLED_S) / 3600.0


def price_of(inst, prices, default_per_hour):
    """USD/hour of FleetInstance ``inst``: the spot price of its type and AZ
    in ``prices`` (``{(instance_type, az): (USD/hour or None, refresh
    after)}``), else ``default_per_hour`` (EC2_SPOT_PRICE_PER_HOUR); None for
    on-demand (no price source)."""
    if inst.market != SPOT:
        return None
    cached = prices.get((inst.instance_type, inst.availability_zone))
    if cached is not None and cached[0] is not None:
        return cached[0]
    return default_per_hour


def spot_prices_due(instances, prices, now):
    """The ``(instance_type, az)`` of spot FleetInstances whose price in
    ``prices`` (as in ``price_of``) is missing or due for a refresh at
    ``now``, each once, in the order first seen."""
    keys = dict.fromkeys((i.instance_type, i.availability_zone) for i in instances if i.market == SPOT)
    return [key for key in keys if prices.get(key) is None or now >= prices[key][1]]
