"""The EC2 instance metadata service (IMDS), IMDSv2 only.

``InstanceMetadata`` reads who the instance is (instance id, type, zone,
region, spot or on-demand), its user data, and the two signals EC2 gives a
spot instance before taking it back (spot interruption notice, rebalance
recommendation; ``nommer.workerd.spot`` acts on them).

Sources: the EC2 user guide, "Use the Instance Metadata Service to access
instance metadata" (IMDSv2 session tokens), "Instance metadata categories",
"Spot Instance interruption notices" and "EC2 instance rebalance
recommendations".
"""

import json
import re

from twisted.internet import defer, error as net_error
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from treq.client import HTTPClient

from nommer.core.deferreds import deferred

log = Logger(namespace="nommer.workerd.imds")

#: IMDSv2 headers (EC2 user guide, "Use the Instance Metadata Service").
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
#: The longest token lifetime IMDS grants, seconds (6 h).
MAX_TOKEN_TTL_S = 21600


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

    @deferred
    async def identity(self):
        """Deferred dict: ``instance_id``, ``instance_type``,
        ``availability_zone``, ``market`` ("spot" if
        ``meta-data/instance-life-cycle`` is "spot", else "on-demand") and
        ``region`` (from ``dynamic/instance-identity/document``, else derived
        from the zone)."""
        return await self._identity()

    @deferred
    async def user_data(self):
        """Deferred bytes of the instance's user data, or None if it has none
        (IMDS answers 404)."""
        return await self._get("user-data")

    @deferred
    async def spot_notice(self):
        """Deferred None, or the spot interruption notice: the dict of
        ``meta-data/spot/instance-action``, ``{"action": "terminate" | "stop"
        | "hibernate", "time": "2026-11-22T06:00:45Z"}`` (UTC, when it
        happens: about two minutes after the notice). 404 means none. A body
        that is not the documented JSON still means a notice:
        ``{"action": None, "time": None, "raw": text}``."""
        return await self._json_item("meta-data/spot/instance-action")

    @deferred
    async def rebalance_recommendation(self):
        """Deferred None, or the dict of
        ``meta-data/events/recommendations/rebalance``: ``{"noticeTime":
        ISO 8601}`` (the instance is at elevated risk of interruption; it
        usually comes before the interruption notice). 404 means none."""
        return await self._json_item("meta-data/events/recommendations/rebalance")

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

