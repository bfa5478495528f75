"""The EC2 fleet: worker instances launched by feederd (FLEET_BACKEND = "ec2").

Three layers, as the house rules ask (gather, decide, effect):

- ``Ec2Api``: a thin async adapter over boto3's EC2 client. Every call runs
  in the thread pool of a ``nommer.core.aws.AWS``; nothing here waits in a
  thread. Capacity refusals become ``NoCapacity``; other AWS errors are
  raised as botocore ``ClientError``.
- Pure functions of plain values: ``launch_specs`` (the ordered list of
  what to try), ``count_instances``, ``plan_terminations``,
  ``estimate_cost_usd``.
- ``Ec2Fleet``: a Service with the shape of ``LocalFleet`` (``counts``,
  ``launch``, ``worker_ids``, ``max_workers``) whose calls return
  Deferreds, plus ``housekeeping()`` and ``instances()``. The autoscaler
  drives it: each tick calls ``housekeeping()``, then ``counts()``, then
  ``launch(n)``. The fleet has no timer of its own; the only waiting is the
  autoscaler's reactor timer between ticks (no sleep, no polling loop in a
  thread: Buildbot's ``worker/ec2.py`` is the pattern avoided).

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

Instances are found by tag (``nommer:fleet`` = EC2_FLEET_NAME and
``nommer:role`` = ``worker``), never by AMI id as the original did
(reference section 4.6): an unrelated instance from the same image is never
counted, and never terminated.

Lifecycle seen by feederd (instance state from EC2, registration from the
worker registry, ``nommer.core.registry``)::

    launched --(DescribeInstances)--> pending --> running, not registered
        = booting (counts toward the maximum and toward capacity)
    running + registered (a worker heartbeat names the instance) = running
    booting for EC2_BOOT_TIMEOUT_S (never registered)     -> terminated by feederd
    registered, silent for WORKER_HEARTBEAT_TIMEOUT_S     -> terminated by feederd (zombie)
    idle worker                                           -> terminates itself (workerd)
    spot interruption                                     -> terminated by AWS

feederd never terminates a healthy idle instance; scale-down is the workers'
(idle self-termination, as in the original).
"""

import datetime
import socket

import attr
from botocore.exceptions import ClientError
from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.aws import AWS, error_code
from nommer.core.registry.base import EXITED, INTERRUPTED, TERMINATING
from nommer.feederd.fleet import FleetUnavailable
from nommer.feederd.userdata import render_user_data

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

#: EC2 bills Linux instances per second with a 60-second minimum, seconds.
MIN_BILLED_S = 60.0


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


# --- what to launch --------------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class LaunchSpec:
    """One RunInstances request: ``count`` instances of ``instance_type`` in
    ``market`` ("spot" or "on-demand"), in ``subnet_id`` (None: the default
    VPC's choice).

    - ``user_data``: str (``nommer.feederd.userdata.render_user_data``).
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


# --- the AWS adapter ---------------------------------------------------------------------


def _tag(instance, key):
    for tag in instance.get("Tags") or []:
        if tag.get("Key") == key:
            return tag.get("Value")
    return None


def is_fleet_instance(instance, fleet_name):
    """True if a DescribeInstances instance dict carries this fleet's tags
    (``nommer:fleet`` = ``fleet_name`` and ``nommer:role`` = ``worker``)."""
    return _tag(instance, TAG_FLEET) == fleet_name and _tag(instance, TAG_ROLE) == ROLE_WORKER


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


# --- the fleet as feederd sees it ------------------------------------------------------------


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class FleetInstance:
    """One instance of the fleet: EC2's view joined with the registry's.

    - ``state``: EC2 state name; ``launched_at``: epoch seconds.
    - ``market``: "spot" or "on-demand".
    - ``registered``: a worker record names this instance; ``last_seen``:
      its last heartbeat (epoch seconds) or None; ``worker_state``: its
      reported state (``nommer.core.registry.base``) or None.
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


def estimate_cost_usd(uptime_s, price_per_hour):
    """What ``uptime_s`` seconds of one instance cost at ``price_per_hour``
    USD/hour, billed per second with a 60 s minimum (EC2 Linux billing); None
    if the price is unknown. The spot price changes over time: an estimate."""
    if price_per_hour is None:
        return None
    return price_per_hour * max(uptime_s, MIN_BILLED_S) / 3600.0


class Ec2Fleet(Service):
    """Worker instances on EC2; see the module docstring.

    ``Ec2Fleet(settings, reactor, registry, api=None, clock=None, hostname=None)``:

    - ``registry``: a worker registry (``nommer.core.registry.base``);
      only ``list()`` is used.
    - ``api``: an ``Ec2Api`` (or a double with its methods); None: one on an
      ``AWS`` pool of its own, closed when the service stops.
    - ``clock``: IReactorTime for ``now`` (default ``reactor``).
    - ``hostname``: the ``nommer:launched-by`` tag (default this host's name).

    Raises ValueError at construction if the user data cannot be rendered
    (``render_user_data``), so a bad configuration fails at start.

    ``counts()`` -> Deferred ``(running, booting, leaving)``; raises
    ``FleetUnavailable`` when the fleet cannot be listed. ``launch(n)`` ->
    Deferred list of the instance ids launched (never raises; failures are
    logged). ``housekeeping()`` -> Deferred None (never raises).
    ``worker_ids()``, ``instances()``: from the last listing, synchronous.
    """

    log = Logger()

    #: A launched instance still absent from DescribeInstances (EC2 is
    #: eventually consistent) counts as pending for this long, seconds; and a
    #: terminated one still listed as running is ignored for this long.
    DESCRIBE_GRACE_S = 120.0
    #: counts() reuses a listing at most this old (the one housekeeping() made
    #: in the same tick), seconds.
    VIEW_MAX_AGE_S = 1.0
    #: Spot prices are asked again after this long, seconds; after a failed or
    #: empty answer, after SPOT_PRICE_RETRY_S.
    SPOT_PRICE_TTL_S = 3600.0
    SPOT_PRICE_RETRY_S = 300.0
    #: "launches disabled" is logged at most this often, seconds.
    DISABLED_LOG_EVERY_S = 300.0

    def __init__(self, settings, reactor, registry, api=None, clock=None, hostname=None):
        self.settings = settings
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.registry = registry
        self._aws = None
        if api is None:
            self._aws = AWS(settings, reactor, name="ec2")
            api = Ec2Api(self._aws, clock=self.clock)
        self.api = api
        self.hostname = hostname or socket.gethostname()
        self.user_data = render_user_data(settings)
        #: Most instances there may be (the autoscaler's M).
        self.max_workers = settings.MAX_NUM_EC2_INSTANCES
        #: Called when the fleet changes on its own (LocalFleet's hook); the
        #: autoscaler ticks anyway, so the EC2 fleet does not call it.
        self.on_change = None
        self._view = {}          # instance id -> FleetInstance (last listing)
        self._view_at = None     # clock time of the last listing
        self._launched = {}      # id -> FleetInstance: launched, not yet listed
        self._terminated = {}    # id -> clock time we terminated it
        self._prices = {}        # (type, az) -> (USD/hour or None, refresh after)
        self._refresh_lock = defer.DeferredLock()
        self._in_flight = set()
        self._disabled_logged_at = None

    # --- the fleet interface ---

    def counts(self):
        return self._track(self._counts())

    def launch(self, n):
        return self._track(self._launch(n))

    def housekeeping(self):
        return self._track(self._housekeeping())

    def worker_ids(self):
        """Instance ids of the last listing (sorted)."""
        return sorted(self._view)

    def instances(self):
        """The fleet as of the last listing, for ``GET /workers``: a list of
        dicts ``{instance_id, instance_type, availability_zone, market,
        state, launched_at (epoch s), uptime_s, price_per_hour (USD/hour or
        None), cost_usd (estimate or None), registered}``, oldest first."""
        now = self.clock.seconds()
        out = []
        for inst in sorted(self._view.values(), key=lambda i: (i.launched_at, i.instance_id)):
            uptime = max(0.0, now - inst.launched_at)
            price = self._price_of(inst)
            cost = estimate_cost_usd(uptime, price)
            out.append({"instance_id": inst.instance_id, "instance_type": inst.instance_type,
                        "availability_zone": inst.availability_zone, "market": inst.market,
                        "state": inst.state, "launched_at": inst.launched_at, "uptime_s": round(uptime, 3),
                        "price_per_hour": price, "cost_usd": None if cost is None else round(cost, 8),
                        "registered": inst.registered})
        return out

    async def stopService(self):
        """Wait for the AWS calls under way, then close our thread pool."""
        super().stopService()
        if self._in_flight:
            await defer.DeferredList(list(self._in_flight), consumeErrors=True)
        if self._aws is not None:
            self._aws.close()

    # --- internals ---

    def _track(self, coro):
        d = defer.Deferred.fromCoroutine(coro)
        self._in_flight.add(d)

        def done(result):
            self._in_flight.discard(d)
            return result
        d.addBoth(done)
        return d

    async def _counts(self):
        await self._fresh_view()
        return count_instances(list(self._view.values()))

    async def _fresh_view(self):
        """Refresh the listing unless one at most VIEW_MAX_AGE_S old exists.
        Raises FleetUnavailable."""
        await self._refresh_lock.acquire()
        try:
            now = self.clock.seconds()
            if self._view_at is not None and now - self._view_at <= self.VIEW_MAX_AGE_S:
                return
            await self._refresh(now)
        finally:
            self._refresh_lock.release()

    async def _refresh(self, now):
        """List the fleet (DescribeInstances) and the worker registry, and
        make the new view. Raises FleetUnavailable if either fails: with no
        registry, every instance would look unregistered (and be terminated
        as never come up), so nothing is decided without both."""
        fleet_name = self.settings.EC2_FLEET_NAME
        try:
            described = await self.api.describe_fleet(fleet_name)
        except Exception as e:
            raise FleetUnavailable(f"could not list EC2 fleet {fleet_name!r}: {_describe_error(e)}") from e
        try:
            records = await defer.maybeDeferred(self.registry.list)
        except Exception as e:
            raise FleetUnavailable(f"could not read the worker registry: {_describe_error(e)}") from e
        index = records_by_instance(records)
        view = {}
        for d in described:
            iid = d["InstanceId"]
            terminated_at = self._terminated.get(iid)
            if terminated_at is not None and now - terminated_at <= self.DESCRIBE_GRACE_S:
                continue  # we terminated it; EC2 has not caught up yet
            view[iid] = fleet_instance(d, index.get(iid))
        for iid, inst in list(self._launched.items()):
            if iid in view:
                del self._launched[iid]
            elif now - inst.launched_at > self.DESCRIBE_GRACE_S:
                del self._launched[iid]
                self.log.warn("instance {instance_id} ({instance_type}) launched {age:.0f} s ago never showed "
                              "in DescribeInstances; no longer counted", instance_id=iid,
                              instance_type=inst.instance_type, age=now - inst.launched_at)
            else:
                view[iid] = attr.evolve(inst, registered=iid in index,
                                        last_seen=index[iid].last_seen if iid in index else None)
        for iid in [i for i, t in self._terminated.items() if now - t > self.DESCRIBE_GRACE_S]:
            del self._terminated[iid]
        for iid, inst in self._view.items():
            if iid not in view and iid not in self._terminated:
                self._log_gone(inst, now)
        await self._update_prices(view.values(), now)
        self._view, self._view_at = view, now

    def _log_gone(self, inst, now):
        uptime = max(0.0, now - inst.launched_at)
        cost = estimate_cost_usd(uptime, self._price_of(inst))
        self.log.info("instance {instance_id} ({instance_type}, {market}, {availability_zone}) is gone "
                      "(self-terminated when idle, spot interruption or outside action) after about "
                      "{uptime_s:.0f} s; estimated cost {cost}", instance_id=inst.instance_id,
                      instance_type=inst.instance_type, market=inst.market,
                      availability_zone=inst.availability_zone, uptime_s=uptime, cost=_usd(cost),
                      worker_state=inst.worker_state)

    async def _update_prices(self, instances, now):
        for key in {(i.instance_type, i.availability_zone) for i in instances if i.market == SPOT}:
            cached = self._prices.get(key)
            if cached is not None and now < cached[1]:
                continue
            instance_type, az = key
            try:
                price = await self.api.spot_price(instance_type, az)
            except Exception as e:
                self.log.warn("no spot price for {instance_type} in {availability_zone}: {error}; "
                              "using EC2_SPOT_PRICE_PER_HOUR", instance_type=instance_type,
                              availability_zone=az, error=_describe_error(e))
                price = None
            again = self.SPOT_PRICE_TTL_S if price is not None else self.SPOT_PRICE_RETRY_S
            self._prices[key] = (price, now + again)

    def _price_of(self, inst):
        """USD/hour of ``inst``: the spot price of its type and AZ, else
        EC2_SPOT_PRICE_PER_HOUR; None for on-demand (no price source)."""
        if inst.market != SPOT:
            return None
        cached = self._prices.get((inst.instance_type, inst.availability_zone))
        if cached is not None and cached[0] is not None:
            return cached[0]
        return self.settings.EC2_SPOT_PRICE_PER_HOUR

    async def _housekeeping(self):
        try:
            await self._fresh_view()
        except FleetUnavailable as e:
            self.log.error("EC2 housekeeping skipped: {error}; next tick retries", error=str(e))
            return
        except Exception:
            self.log.failure("EC2 housekeeping failed; next tick retries")
            return
        now = self.clock.seconds()
        plan = plan_terminations(list(self._view.values()), now, self.settings.EC2_BOOT_TIMEOUT_S,
                                 self.settings.WORKER_HEARTBEAT_TIMEOUT_S)
        for inst, reason in plan:
            await self._terminate(inst, reason, now)

    async def _terminate(self, inst, reason, now):
        uptime = max(0.0, now - inst.launched_at)
        cost = estimate_cost_usd(uptime, self._price_of(inst))
        context = dict(instance_id=inst.instance_id, instance_type=inst.instance_type, market=inst.market,
                       availability_zone=inst.availability_zone, uptime_s=uptime, reason=reason,
                       worker_state=inst.worker_state, worker_id=inst.instance_id)
        try:
            await self.api.terminate([inst.instance_id])
        except ClientError as e:
            if error_code(e) != "InvalidInstanceID.NotFound":
                self.log.error("could not terminate {instance_id} ({instance_type}, up {uptime_s:.0f} s, "
                               "{reason}): {error}; next tick retries", error=_describe_error(e), **context)
                return
        except Exception as e:
            self.log.error("could not terminate {instance_id} ({instance_type}, up {uptime_s:.0f} s, "
                           "{reason}): {error}; next tick retries", error=_describe_error(e), **context)
            return
        self._view.pop(inst.instance_id, None)
        self._launched.pop(inst.instance_id, None)
        self._terminated[inst.instance_id] = now
        self.log.warn("terminated {instance_id} ({instance_type}, {market}, {availability_zone}): {reason}; "
                      "up {uptime_s:.0f} s, estimated cost {cost}", cost=_usd(cost), **context)

    async def _launch(self, n):
        if n <= 0:
            return []
        if not self.settings.FEEDERD_ALLOW_EC2_LAUNCHES:
            now = self.clock.seconds()
            if self._disabled_logged_at is None or now - self._disabled_logged_at >= self.DISABLED_LOG_EVERY_S:
                self._disabled_logged_at = now
                self.log.warn("{n} instance(s) wanted, but FEEDERD_ALLOW_EC2_LAUNCHES is False: none launched",
                              n=n)
            return []
        launched = []
        for spec in launch_specs(self.settings, self.user_data, self.hostname):
            remaining = n - len(launched)
            if remaining <= 0:
                break
            spec = attr.evolve(spec, count=remaining)
            context = dict(market=spec.market, instance_type=spec.instance_type,
                           subnet_id=spec.subnet_id or "default subnet", count=remaining)
            try:
                described = await self.api.run_instances(spec)
            except NoCapacity as e:
                self.log.info("no {market} capacity for {count} x {instance_type} in {subnet_id} ({code}); "
                              "trying the next", code=e.code, **context)
                continue
            except ClientError as e:
                self.log.error("RunInstances of {count} x {instance_type} ({market}) in {subnet_id} failed: "
                               "{error}; next tick retries", error=_describe_error(e), **context)
                break
            except Exception:
                self.log.failure("RunInstances of {count} x {instance_type} ({market}) in {subnet_id} failed; "
                                 "next tick retries", **context)
                break
            now = self.clock.seconds()
            for d in described:
                inst = fleet_instance(d, market=spec.market)
                if not inst.launched_at:
                    inst = attr.evolve(inst, launched_at=now)
                self._launched[inst.instance_id] = inst
                self._view[inst.instance_id] = inst
                launched.append(inst.instance_id)
                self.log.info("launched {instance_id} ({instance_type}, {market}, {availability_zone})",
                              instance_id=inst.instance_id, instance_type=inst.instance_type,
                              market=inst.market, availability_zone=inst.availability_zone,
                              worker_id=inst.instance_id)
        if len(launched) < n:
            self.log.warn("launched {launched} of {n} instance(s) wanted; the next tick asks again",
                          launched=len(launched), n=n)
        return launched


def _describe_error(e):
    code = error_code(e)
    if code:
        message = e.response.get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code
    return f"{type(e).__name__}: {e}"


def _usd(cost):
    return "unknown (no price)" if cost is None else f"{cost:.4f} USD"
