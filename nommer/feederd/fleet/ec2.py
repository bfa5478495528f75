"""The EC2 fleet: worker instances launched by feederd (FLEET_BACKEND = "ec2").

Gather, decide, effect, as the house rules ask: ``Ec2Fleet`` lists the
fleet and the worker registry, asks the pure functions of ``ec2_plan`` what
that means (``reconcile``, ``count_instances``, ``plan_terminations``,
``launch_specs``) and makes the calls through ``ec2_api.Ec2Api``.

``Ec2Fleet`` is a ``Fleet`` (``nommer.feederd.fleet.base``) whose calls
return Deferreds, with ``housekeeping()`` and ``instances()``. The
autoscaler drives it: each tick calls ``housekeeping()``, then ``counts()``,
then ``launch(n)``. The fleet has no timer of its own; the only waiting is
the autoscaler's reactor timer between ticks (no sleep, no polling loop in a
thread: Buildbot's ``worker/ec2.py`` is the pattern avoided).

Lifecycle seen by feederd (instance state from EC2, registration from the
worker registry, ``nommer.core.worker_registry``)::

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

import socket

import attr
from botocore.exceptions import ClientError
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.aws import AWS, error_code
from nommer.feederd.fleet.base import Fleet, FleetUnavailable
from nommer.feederd.fleet.ec2_api import Ec2Api, NoCapacity
from nommer.feederd.fleet.ec2_plan import (count_instances, estimate_cost_usd, fleet_instance, launch_specs,
                                           plan_terminations, price_of, reconcile, spot_prices_due)
from nommer.feederd.fleet.userdata import render_user_data


class Ec2Fleet(Fleet):
    """Worker instances on EC2; see the module docstring.

    ``Ec2Fleet(settings, reactor, registry, api=None, clock=None, hostname=None)``:

    - ``registry``: a worker registry (``nommer.core.worker_registry.base``);
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
    ``trouble`` (``Fleet``): the last refused RunInstances (or
    DescribeInstances) with AWS's code and reason, until a launch gets every
    instance asked for (or a listing succeeds); ``launch_failures()``
    counts the refused RunInstances by code.
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

    def __init__(self, settings, reactor, registry, api=None, clock=None, hostname=None, pool=None):
        self.settings = settings
        #: The pool its workers serve (``nommer.core.pools``; None: default): its
        #: instances' user data says so (NOMMER_POOLS), and ``settings`` are the
        #: pool's fleet settings (its own EC2_FLEET_NAME, so each pool counts its own).
        self.pool = pool
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.registry = registry
        self._aws = None
        if api is None:
            self._aws = AWS(settings, reactor, name="ec2")
            api = Ec2Api(self._aws, clock=self.clock)
        self.api = api
        self.hostname = hostname or socket.gethostname()
        self.user_data = render_user_data(settings, pools=None if pool in (None, "default") else [pool])
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
            self.report_trouble(_error_code(e), f"DescribeInstances of EC2 fleet {fleet_name!r} failed: "
                                f"{_aws_reason(e)}", self.clock.seconds(), during="list")
            raise FleetUnavailable(f"could not list EC2 fleet {fleet_name!r}: {_describe_error(e)}") from e
        self.clear_trouble("list")
        try:
            records = await defer.maybeDeferred(self.registry.list)
        except Exception as e:
            raise FleetUnavailable(f"could not read the worker registry: {_describe_error(e)}") from e
        seen = reconcile(described, records, self._view, self._launched, self._terminated, now,
                         self.DESCRIBE_GRACE_S)
        self._launched, self._terminated = seen.launched, seen.terminated
        for inst in seen.never_listed:
            self.log.warn("instance {instance_id} ({instance_type}) launched {age:.0f} s ago never showed "
                          "in DescribeInstances; no longer counted", instance_id=inst.instance_id,
                          instance_type=inst.instance_type, age=now - inst.launched_at)
        for inst in seen.gone:
            self._log_gone(inst, now)
        await self._update_prices(seen.view.values(), now)
        self._view, self._view_at = seen.view, now

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
        for instance_type, az in spot_prices_due(instances, self._prices, now):
            try:
                price = await self.api.spot_price(instance_type, az)
            except Exception as e:
                self.log.warn("no spot price for {instance_type} in {availability_zone}: {error}; "
                              "using EC2_SPOT_PRICE_PER_HOUR", instance_type=instance_type,
                              availability_zone=az, error=_describe_error(e))
                price = None
            again = self.SPOT_PRICE_TTL_S if price is not None else self.SPOT_PRICE_RETRY_S
            self._prices[(instance_type, az)] = (price, now + again)

    def _price_of(self, inst):
        """USD/hour of ``inst`` (``ec2_plan.price_of``)."""
        return price_of(inst, self._prices, self.settings.EC2_SPOT_PRICE_PER_HOUR)

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
        except Exception as e:
            already_gone = isinstance(e, ClientError) and error_code(e) == "InvalidInstanceID.NotFound"
            if not already_gone:
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
            self.report_trouble("LaunchesDisabled", f"{n} instance(s) wanted, but FEEDERD_ALLOW_EC2_LAUNCHES "
                                "is False: none launched", now, count=False)
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
                self._launch_refused(e.code, e.message, context)
                continue
            except ClientError as e:
                self.log.error("RunInstances of {count} x {instance_type} ({market}) in {subnet_id} failed: "
                               "{error}; next tick retries", error=_describe_error(e), **context)
                self._launch_refused(_error_code(e), _aws_reason(e), context)
                break
            except Exception as e:
                self.log.failure("RunInstances of {count} x {instance_type} ({market}) in {subnet_id} failed; "
                                 "next tick retries", **context)
                self._launch_refused(_error_code(e), _aws_reason(e), context)
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
        else:
            self.clear_trouble("launch")
        return launched

    def _launch_refused(self, code, reason, context):
        """Count a refused RunInstances and make it the fleet's ``trouble``
        (``/health``, ``/metrics``), with AWS's reason and what to do."""
        what = "RunInstances of {count} x {instance_type} ({market}) in {subnet_id}".format(**context)
        hint = TROUBLE_HINTS.get(code)
        message = f"{what} refused: {reason}" + (f" ({hint})" if hint else "")
        self.report_trouble(code, message, self.clock.seconds())


#: What to do about a refused launch, by AWS error code (shown with the trouble).
TROUBLE_HINTS = {
    "InvalidGroup.NotFound": "`nommer aws setup` creates the workers' security group named in EC2_SECURITY_GROUPS",
    "InvalidGroupId.Malformed": "check EC2_SECURITY_GROUP_IDS",
    "VcpuLimitExceeded": "ask AWS for a higher vCPU quota (Service Quotas) or lower MAX_NUM_EC2_INSTANCES",
    "InstanceLimitExceeded": "ask AWS for a higher instance quota or lower MAX_NUM_EC2_INSTANCES",
    "MaxSpotInstanceCountExceeded": "ask AWS for a higher spot quota, or allow EC2_ON_DEMAND_FALLBACK",
    "InsufficientInstanceCapacity": "no capacity now: more EC2_INSTANCE_TYPES or EC2_SUBNET_IDS, "
                                    "or EC2_ON_DEMAND_FALLBACK, widen the choice",
    "SpotMaxPriceTooLow": "the spot price is above SPOT_MAX_PRICE",
    "InvalidAMIID.NotFound": "check EC2_AMI_ID (and the region)",
    "UnauthorizedOperation": "feederd's IAM role may not do this",
}


def _error_code(e):
    """AWS's error code of ``e``, or its class name when it is not an AWS error."""
    return error_code(e) or type(e).__name__


def _aws_reason(e):
    """AWS's message of ``e`` (its code when it has none), or ``str(e)``."""
    if error_code(e):
        return e.response.get("Error", {}).get("Message", "") or error_code(e)
    return str(e) or type(e).__name__


def _describe_error(e):
    code = error_code(e)
    if code:
        message = e.response.get("Error", {}).get("Message", "")
        return f"{code}: {message}" if message else code
    return f"{type(e).__name__}: {e}"


def _usd(cost):
    return "unknown (no price)" if cost is None else f"{cost:.4f} USD"
