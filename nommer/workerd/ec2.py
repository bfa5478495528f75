"""A worker's life on EC2: who it is, when it must go, how it goes.

- ``InstanceMetadata``: the instance metadata service (IMDS), IMDSv2 only:
  identity (instance id, type, zone, region, spot or on-demand), user data,
  spot interruption notices and rebalance recommendations.
- ``SpotWatcher``: a Service polling IMDS every SPOT_INTERRUPTION_POLL_S; a
  spot interruption notice interrupts the worker (jobs released at once), a
  rebalance recommendation drains it (warm).
- ``terminate_self`` / ``exit_on_ec2``: the end of an idle (or interrupted)
  worker on EC2: registry told, own instance terminated, reactor stopped.

Sources: the EC2 user guide, "Use the Instance Metadata Service to access
instance metadata" (IMDSv2 session tokens), "Instance metadata categories",
"Spot Instance interruption notices" and "EC2 instance rebalance
recommendations".

IAM: a worker terminates its own instance, so the instance role needs
``ec2:TerminateInstances`` -- scoped, never on ``*`` alone, with the
condition that the instance carries the tag nommer's EC2 fleet puts on its
workers::

    {"Effect": "Allow", "Action": "ec2:TerminateInstances",
     "Resource": "arn:aws:ec2:*:*:instance/*",
     "Condition": {"StringEquals": {"aws:ResourceTag/nommer:role": "worker"}}}

Without it ``terminate_self`` logs the refusal and the process still exits;
an instance launched with ``InstanceInitiatedShutdownBehavior=terminate``
(nommer's fleet launches them so) is also terminated by ``shutdown -h now``
run by its boot script (deploy/) after ``twistd`` returns -- this module never
runs ``shutdown`` itself. Either way a worker that lost its registry
heartbeat is found by feederd (WORKER_HEARTBEAT_TIMEOUT_S) and terminated
from there.
"""

import json
import re

from twisted.application.service import Service
from twisted.internet import defer, error as net_error, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from treq.client import HTTPClient

from nommer.core.registry import base as registry_states

log = Logger(namespace="nommer.workerd.ec2")

#: IMDSv2 headers (EC2 user guide, "Use the Instance Metadata Service").
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
#: The longest token lifetime IMDS grants, seconds (6 h).
MAX_TOKEN_TTL_S = 21600

#: How long ``exit_on_ec2`` waits for the registry write before terminating,
#: and for TerminateInstances, seconds: a worker that cannot reach them
#: still exits.
BEFORE_TERMINATE_TIMEOUT_S = 10.0
TERMINATE_TIMEOUT_S = 30.0


class MetadataUnavailable(Exception):
    """IMDS could not be read at ``url``: unreachable (not on EC2, IMDS
    disabled, hop limit 1 inside a container), no answer in time, or an
    answer other than the documented ones. ``url`` and ``why`` are kept."""

    def __init__(self, url, why):
        self.url = url
        self.why = why
        super().__init__(f"EC2 instance metadata unavailable at {url}: {why}")


def region_from_az(az):
    """The region of an availability zone name: ``"us-east-1a"`` ->
    ``"us-east-1"``, ``"us-west-2-lax-1a"`` (Local Zone) -> ``"us-west-2"``;
    None if ``az`` does not look like one."""
    m = re.match(r"^([a-z]{2}(?:-[a-z]+)+-\d+)", az or "")
    return m.group(1) if m else None


class InstanceMetadata:
    """IMDSv2 client (treq on ``reactor``), never IMDSv1.

    ``base_url`` is EC2_METADATA_URL (``http://169.254.169.254``; the IPv6
    endpoint ``http://[fd00:ec2::254]`` works too). A session token is
    fetched with ``PUT {base}/latest/api/token`` (header TTL_HEADER =
    ``token_ttl_s``, at most 21600 s) and sent with every GET (TOKEN_HEADER);
    a new one is fetched 60 s before the token expires (at 90 % of its
    lifetime for one shorter than 10 min), or when IMDS answers 401 (the token expired or was revoked), once
    per request. Concurrent requests share one token fetch.

    Each HTTP exchange (connect, request, whole body) must complete within
    ``timeout_s`` seconds; failures raise ``MetadataUnavailable`` naming the
    URL. Token lifetimes and timeouts run on ``clock`` (an ``IReactorTime``,
    default ``reactor``); the network on ``reactor``. Every method returns a
    Deferred. No proxy is ever used (IMDS is link-local).
    """

    def __init__(self, base_url, reactor, timeout_s=2, token_ttl_s=MAX_TOKEN_TTL_S, clock=None):
        if not 1 <= token_ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"token_ttl_s must be 1..{MAX_TOKEN_TTL_S}, not {token_ttl_s}")
        self.base_url = base_url.rstrip("/")
        self.reactor = reactor
        self.clock = clock or reactor
        self.timeout_s = timeout_s
        self.token_ttl_s = token_ttl_s
        # Not persistent: one request every few seconds, and no socket left
        # open between polls.
        agent = Agent(reactor, connectTimeout=timeout_s, pool=HTTPConnectionPool(reactor, persistent=False))
        self._http = HTTPClient(agent)
        self._token = None
        self._token_refresh_at = 0.0
        self._token_waiters = []

    # --- public --------------------------------------------------------------

    def identity(self):
        """Deferred dict: ``instance_id``, ``instance_type``,
        ``availability_zone``, ``market`` ("spot" if
        ``meta-data/instance-life-cycle`` is "spot", else "on-demand") and
        ``region`` (from ``dynamic/instance-identity/document``, else derived
        from the zone)."""
        return defer.Deferred.fromCoroutine(self._identity())

    def user_data(self):
        """Deferred bytes of the instance's user data, or None if it has none
        (IMDS answers 404)."""
        return defer.Deferred.fromCoroutine(self._get("user-data"))

    def spot_notice(self):
        """Deferred None, or the spot interruption notice: the dict of
        ``meta-data/spot/instance-action``, ``{"action": "terminate" | "stop"
        | "hibernate", "time": "2026-11-22T06:00:45Z"}`` (UTC, when it
        happens: about two minutes after the notice). 404 means none. A body
        that is not the documented JSON still means a notice:
        ``{"action": None, "time": None, "raw": text}``."""
        return defer.Deferred.fromCoroutine(self._json_item("meta-data/spot/instance-action"))

    def rebalance_recommendation(self):
        """Deferred None, or the dict of
        ``meta-data/events/recommendations/rebalance``: ``{"noticeTime":
        ISO 8601}`` (the instance is at elevated risk of interruption; it
        usually comes before the interruption notice). 404 means none."""
        return defer.Deferred.fromCoroutine(self._json_item("meta-data/events/recommendations/rebalance"))

    # --- internals -----------------------------------------------------------

    async def _identity(self):
        async def text(path, required=True):
            body = await self._get(path)
            if body is None:
                if required:
                    raise MetadataUnavailable(self._url(path), "404 Not Found")
                return None
            return body.decode("utf-8", "replace").strip()

        instance_id = await text("meta-data/instance-id")
        instance_type = await text("meta-data/instance-type")
        az = await text("meta-data/placement/availability-zone")
        life_cycle = await text("meta-data/instance-life-cycle", required=False)
        region = None
        try:
            document = await self._get("dynamic/instance-identity/document")
            region = json.loads(document)["region"] if document else None
        except (MetadataUnavailable, ValueError, KeyError, TypeError) as exc:
            log.warn("instance identity document unreadable ({why}); region taken from zone {az}",
                     why=str(exc), az=az)
        return {"instance_id": instance_id, "instance_type": instance_type, "availability_zone": az,
                "market": "spot" if life_cycle == "spot" else "on-demand",
                "region": region or region_from_az(az)}

    async def _json_item(self, path):
        body = await self._get(path)
        if body is None:
            return None
        text = body.decode("utf-8", "replace")
        try:
            value = json.loads(text)
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
        return {"action": None, "time": None, "raw": text}

    def _url(self, path):
        return f"{self.base_url}/latest/{path}"

    async def _get(self, path):
        """Bytes at ``/latest/{path}``, or None on 404."""
        url = self._url(path)
        for attempt in (1, 2):
            token = await self._token_value()
            status, body = await self._exchange("GET", url, {TOKEN_HEADER: token})
            if status == 401 and attempt == 1:
                log.info("IMDS token refused (401) at {url}; fetching a new one", url=url)
                self._token = None
                continue
            break
        if status == 404:
            return None
        if status != 200:
            raise MetadataUnavailable(url, f"HTTP {status}")
        return body

    async def _token_value(self):
        if self._token is not None and self.clock.seconds() < self._token_refresh_at:
            return self._token
        waiter = defer.Deferred()
        self._token_waiters.append(waiter)
        if len(self._token_waiters) == 1:
            defer.Deferred.fromCoroutine(self._fetch_token()).addBoth(self._token_fetched)
        return await waiter

    def _token_fetched(self, result):
        waiters, self._token_waiters = self._token_waiters, []
        for waiter in waiters:
            waiter.errback(result) if isinstance(result, Failure) else waiter.callback(result)

    async def _fetch_token(self):
        url = self._url("api/token")
        fetched = self.clock.seconds()
        status, body = await self._exchange("PUT", url, {TTL_HEADER: str(self.token_ttl_s)})
        if status != 200 or not body:
            raise MetadataUnavailable(url, f"token request answered HTTP {status}")
        self._token = body.decode("ascii", "replace").strip()
        self._token_refresh_at = fetched + self.token_ttl_s - min(60.0, 0.1 * self.token_ttl_s)
        return self._token

    async def _exchange(self, method, url, headers):
        """(status, body bytes) of one request, within ``timeout_s``."""
        async def go():
            response = await self._http.request(method, url, headers=headers, allow_redirects=False)
            return response.code, await response.content()
        d = defer.Deferred.fromCoroutine(go())
        # Whatever the cancelled request raised (ResponseNeverReceived...),
        # a timeout is reported as one.
        d.addTimeout(self.timeout_s, self.clock, onTimeoutCancel=lambda _, timeout_s: Failure(
            MetadataUnavailable(url, f"no answer within {timeout_s} s")))
        try:
            return await d
        except MetadataUnavailable:
            raise
        except net_error.ConnectError as exc:
            raise MetadataUnavailable(url, f"cannot connect ({exc.__class__.__name__}: {exc})") from exc
        except Exception as exc:
            raise MetadataUnavailable(url, f"{exc.__class__.__name__}: {exc}") from exc


class SpotWatcher(Service):
    """Polls IMDS every SPOT_INTERRUPTION_POLL_S seconds (a LoopingCall on
    ``reactor``, first poll at start) for the two signals EC2 gives a spot
    instance before taking it back:

    - a spot interruption notice (``meta-data/spot/instance-action``, about
      two minutes ahead): ``worker.interrupt(reason)`` once -- running jobs
      are stopped and released to the queue at once, the worker exits -- and
      polling ends.
    - a rebalance recommendation (``meta-data/events/recommendations/
      rebalance``, often well before any notice): ``worker.drain(reason)``
      once: no new job, the running ones finish, then the worker exits (and
      on EC2 terminates its instance). Draining rather than ignoring it: a
      job that finishes before the interruption loses nothing, where one cut
      by the notice is encoded again from the start; the price is a
      replacement instance booting sooner (feederd's autoscaler starts one
      when the queue needs it). Polling goes on for the notice, which then
      interrupts the draining worker.

    A failed poll (IMDS unreachable, slow) is logged (the first, then every
    12th in a row) and the next one runs on time; polling never stops by
    itself before a notice. ``on_state_change()``, if given, is called after
    ``interrupt``/``drain``: pass it only for a worker built without its own
    ``on_state_change`` (the worker calls that one itself), else the registry
    is written twice.
    """

    log = Logger()

    def __init__(self, metadata, worker, settings, reactor, on_state_change=None):
        self.metadata = metadata
        self.worker = worker
        self.settings = settings
        self.reactor = reactor
        self.on_state_change = on_state_change
        self.notice = None          # the instance-action dict, once seen
        self.rebalance = None       # the rebalance dict, once seen
        self.failures = 0           # failed polls in a row
        self.polls = 0              # polls done (failed or not)
        self._loop = None
        self._loop_done = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self._poll)
        self._loop.clock = self.reactor
        self._loop_done = self._loop.start(self.settings.SPOT_INTERRUPTION_POLL_S, now=True)
        self._loop_done.addErrback(lambda f: self.log.failure("spot watcher loop died", f))

    def stopService(self):
        """Stops polling; the Deferred fires once a poll under way is over."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._loop_done

    async def _poll(self):
        """One look at IMDS. Never raises (it runs in a LoopingCall)."""
        try:
            await self._look()
        finally:
            self.polls += 1

    async def _look(self):
        try:
            notice = await self.metadata.spot_notice()
            if notice is not None:
                return self._interrupted(notice)
            if self.rebalance is None:
                recommendation = await self.metadata.rebalance_recommendation()
                if recommendation is not None:
                    self._rebalance(recommendation)
        except Exception as exc:
            self.failures += 1
            if self.failures % 12 == 1:
                self.log.warn("spot watcher: polling instance metadata failed ({n} in a row), retrying in "
                              "{interval} s: {why}", n=self.failures, why=str(exc),
                              interval=self.settings.SPOT_INTERRUPTION_POLL_S, worker_id=self.worker.worker_id)
            return
        if self.failures:
            self.log.info("spot watcher: instance metadata readable again after {n} failed poll(s)",
                          n=self.failures, worker_id=self.worker.worker_id)
            self.failures = 0

    def _interrupted(self, notice):
        self.notice = notice
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        reason = f"spot interruption notice: {notice.get('action')} at {notice.get('time')}"
        self.log.warn("worker {worker_id}: {reason}", worker_id=self.worker.worker_id, reason=reason)
        self._call("interrupt", reason)

    def _rebalance(self, recommendation):
        self.rebalance = recommendation
        reason = f"rebalance recommendation at {recommendation.get('noticeTime')}"
        self.log.warn("worker {worker_id}: {reason}; draining (finishing running jobs, taking no new one)",
                      worker_id=self.worker.worker_id, reason=reason)
        self._call("drain", reason)

    def _call(self, method, reason):
        try:
            getattr(self.worker, method)(reason)
        except Exception:
            self.log.failure("worker.{method} failed", method=method, worker_id=self.worker.worker_id)
        if self.on_state_change is not None:
            d = defer.maybeDeferred(self.on_state_change)
            d.addErrback(lambda f: self.log.failure("reporting the worker's state failed", f,
                                                    worker_id=self.worker.worker_id))


async def terminate_self(aws, instance_id):
    """TerminateInstances on this worker's own instance ``instance_id``
    through ``aws`` (a ``nommer.core.aws.AWS``). Returns True if EC2 took the
    request, False if it refused or could not be reached (logged: the usual
    cause is an instance role without ``ec2:TerminateInstances`` on
    instances tagged ``nommer:role=worker``, see the module docstring); the
    caller exits the process either way."""
    try:
        answer = await aws.call("ec2", "terminate_instances", InstanceIds=[instance_id])
    except Exception as exc:
        log.error("terminating own instance {instance_id} failed: {why}. The process exits anyway; the "
                  "instance stays up unless it shuts down with InstanceInitiatedShutdownBehavior=terminate "
                  "or feederd terminates it when its heartbeat stops. Does the instance role allow "
                  "ec2:TerminateInstances on instances tagged nommer:role=worker?",
                  instance_id=instance_id, why=f"{exc.__class__.__name__}: {exc}")
        return False
    states = [i.get("CurrentState", {}).get("Name") for i in answer.get("TerminatingInstances", [])]
    log.info("own instance {instance_id} terminating: {states}", instance_id=instance_id, states=states)
    return True


async def exit_on_ec2(worker, aws, instance_id, reason, reactor, before_terminate=None):
    """The worker's ``on_exit`` on EC2 (wrap it: ``lambda reason:
    Deferred.fromCoroutine(exit_on_ec2(...))``; ``Worker`` also accepts a
    coroutine). In order:

    1. ``worker.state`` = TERMINATING, once the worker's own last state
       report (``worker.state_reported()``) is written, so the two reports
       cannot land out of order.
    2. ``before_terminate()`` (the registry heartbeat's ``beat_now``), if
       given; waited for at most BEFORE_TERMINATE_TIMEOUT_S, its failure
       logged.
    3. ``terminate_self(aws, instance_id)``, at most TERMINATE_TIMEOUT_S.
    4. ``reactor.stop()``: twistd returns (the boot script may then run
       ``shutdown -h now``, see the module docstring).

    By the time the worker calls ``on_exit`` its receive loops have ended
    (see ``Worker``): nothing is taken from the queue during any of this.
    Returns whether the terminate call was accepted.
    """
    log.info("worker {worker_id} leaving EC2 ({reason}): terminating instance {instance_id}",
             worker_id=worker.worker_id, reason=reason, instance_id=instance_id)
    if hasattr(worker, "state_reported"):
        await _bounded(worker.state_reported(), BEFORE_TERMINATE_TIMEOUT_S, reactor, "the last state report",
                       worker)
    worker.state = registry_states.TERMINATING
    if before_terminate is not None:
        await _bounded(defer.maybeDeferred(before_terminate), BEFORE_TERMINATE_TIMEOUT_S, reactor,
                       "reporting TERMINATING", worker)
    terminated = False
    try:
        d = defer.Deferred.fromCoroutine(terminate_self(aws, instance_id))
        d.addTimeout(TERMINATE_TIMEOUT_S, reactor)
        terminated = await d
    except defer.TimeoutError:
        log.error("terminating own instance {instance_id}: no answer within {s} s; exiting anyway",
                  instance_id=instance_id, s=TERMINATE_TIMEOUT_S)
    try:
        reactor.stop()
    except net_error.ReactorNotRunning:
        pass
    return terminated


async def _bounded(d, timeout_s, reactor, what, worker):
    """Wait for ``d`` at most ``timeout_s``; log (never raise) a failure."""
    d.addTimeout(timeout_s, reactor)
    try:
        await d
    except Exception as exc:
        log.warn("worker {worker_id}: {what} failed or timed out: {why}", worker_id=worker.worker_id,
                 what=what, why=f"{exc.__class__.__name__}: {exc}")
