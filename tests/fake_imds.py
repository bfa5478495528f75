"""A fake EC2 instance metadata service (IMDSv2 only), for tests: real HTTP.

It answers the paths nommer reads, with the shapes the EC2 instance metadata
documentation gives (IMDSv2 session tokens, "Use instance metadata to manage
your EC2 instance"), and enforces IMDSv2 as an instance configured with
``HttpTokens=required`` does:

- ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds``
  (1..21600): 400 without it or out of range; answers the token (text).
- every ``GET`` needs ``X-aws-ec2-metadata-token`` naming a token that was
  handed out and has not expired: 401 otherwise.
- ``/latest/meta-data/instance-id``, ``instance-type``,
  ``placement/availability-zone``, ``placement/region``,
  ``instance-life-cycle`` ("spot" or "on-demand"): text.
- ``/latest/meta-data/spot/instance-action``: 404 until a notice is raised,
  then JSON ``{"action": "terminate"|"stop"|"hibernate", "time": ISO 8601}``.
- ``/latest/meta-data/events/recommendations/rebalance``: 404 until set,
  then JSON ``{"noticeTime": ISO 8601}``.
- ``/latest/user-data``: the bytes of ``--user-data-file``; 404 without one.
- ``/latest/dynamic/instance-identity/document``: JSON with ``instanceId``,
  ``instanceType``, ``availabilityZone``, ``region``, ``accountId``,
  ``imageId``, ``architecture``, ``pendingTime``, ``privateIp``, ``version``.

A control API (no token; on ``--control-port`` when given, else on the same
port under ``/_control/``) lets a test act as EC2:

- ``POST /_control/spot-notice`` (optional JSON body ``{"action", "time"}``;
  default terminate, two minutes from now): raise an interruption notice.
- ``POST /_control/rebalance`` (optional JSON ``{"noticeTime"}``).
- ``DELETE /_control/notices``: withdraw both.
- ``POST /_control/expire-tokens``: every token handed out stops working
  (the next GET with one gets 401, as after its TTL).
- ``GET /_control/stats``: JSON counts ``token_puts``, ``gets``,
  ``unauthorized`` (GETs refused 401), ``bad_puts`` (PUTs refused 400).

Run it as a process (the form the end-to-end tests need, one per worker)::

    python -m tests.fake_imds --port 0 --control-port 0 --instance-id i-0123456789abcdef0 \\
        --instance-type c7i.large --az us-east-1a --life-cycle spot --user-data-file F

It prints one JSON line ``{"url": ..., "control_url": ...}`` on stdout once
it listens (port 0 = a free port), and exits with ``--parent-pid``'s process.
``FakeIMDS`` starts and drives such a process from a test with urllib only.
``make_apps(state)`` gives the Klein apps, to serve in-process instead.
"""

import argparse
import datetime
import json
import os
import secrets
import select
import subprocess
import sys
import time
import urllib.request

from tests.processes import stop_process

MAX_TOKEN_TTL_S = 21600
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _iso(epoch_s):
    return datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeIMDSState:
    """What the fake knows: the instance's identity, tokens, notices."""

    def __init__(self, instance_id="i-0123456789abcdef0", instance_type="c7i.large", az="us-east-1a",
                 life_cycle="spot", user_data=None, region=None, clock=time.monotonic):
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.az = az
        self.region = region or az[:-1]
        self.life_cycle = life_cycle
        self.user_data = user_data
        self.clock = clock
        self.tokens = {}          # token -> expiry (clock seconds)
        self.spot_notice = None   # dict or None
        self.rebalance = None     # dict or None
        self.stats = {"token_puts": 0, "gets": 0, "unauthorized": 0, "bad_puts": 0}

    def new_token(self, ttl_s):
        token = secrets.token_urlsafe(42)
        self.tokens[token] = self.clock() + ttl_s
        return token

    def valid(self, token):
        expiry = self.tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def meta_data(self):
        """meta-data path -> text (the items that always exist)."""
        return {
            "instance-id": self.instance_id,
            "instance-type": self.instance_type,
            "placement/availability-zone": self.az,
            "placement/region": self.region,
            "instance-life-cycle": self.life_cycle,
        }

    def identity_document(self):
        return {"instanceId": self.instance_id, "instanceType": self.instance_type,
                "availabilityZone": self.az, "region": self.region, "accountId": "123456789012",
                "imageId": "ami-0123456789abcdef0", "architecture": "x86_64",
                "pendingTime": _iso(time.time()), "privateIp": "10.0.0.10", "version": "2017-09-30"}


def make_apps(state, combined=False):
    """``(imds, control)``: two Klein apps over one ``FakeIMDSState`` (one
    app twice with ``combined``: control routes beside the metadata)."""
    from klein import Klein

    imds = Klein()
    control = imds if combined else Klein()

    @imds.route("/latest/api/token", methods=["PUT"])
    def token(request):
        raw = request.getHeader(TTL_HEADER)
        try:
            ttl = int(raw)
        except (TypeError, ValueError):
            ttl = None
        if ttl is None or not 1 <= ttl <= MAX_TOKEN_TTL_S:
            state.stats["bad_puts"] += 1
            request.setResponseCode(400)
            return b"Bad Request: " + TTL_HEADER.encode() + b" missing or out of range"
        state.stats["token_puts"] += 1
        request.setHeader(TTL_HEADER, str(ttl))
        request.setHeader("Content-Type", "text/plain")
        return state.new_token(ttl).encode()

    def authorized(request):
        state.stats["gets"] += 1
        if state.valid(request.getHeader(TOKEN_HEADER)):
            return True
        state.stats["unauthorized"] += 1
        request.setResponseCode(401)
        return False

    def not_found(request):
        request.setResponseCode(404)
        request.setHeader("Content-Type", "text/html")
        return b"<?xml version=\"1.0\"?><html><body><h1>404 - Not Found</h1></body></html>"

    @imds.route("/latest/meta-data/<path:item>", methods=["GET"])
    def meta_data(request, item):
        if not authorized(request):
            return b""
        request.setHeader("Content-Type", "text/plain")
        item = item.rstrip("/")
        if item == "spot/instance-action":
            return json.dumps(state.spot_notice).encode() if state.spot_notice else not_found(request)
        if item == "events/recommendations/rebalance":
            return json.dumps(state.rebalance).encode() if state.rebalance else not_found(request)
        text = state.meta_data().get(item)
        return text.encode() if text is not None else not_found(request)

    @imds.route("/latest/user-data", methods=["GET"])
    def user_data(request):
        if not authorized(request):
            return b""
        if state.user_data is None:
            return not_found(request)
        request.setHeader("Content-Type", "application/octet-stream")
        return state.user_data

    @imds.route("/latest/dynamic/instance-identity/document", methods=["GET"])
    def document(request):
        if not authorized(request):
            return b""
        request.setHeader("Content-Type", "text/plain")
        return json.dumps(state.identity_document(), indent=2).encode()

    def body_json(request):
        raw = request.content.read()
        return json.loads(raw) if raw.strip() else {}

    @control.route("/_control/spot-notice", methods=["POST"])
    def raise_spot_notice(request):
        body = body_json(request)
        state.spot_notice = {"action": body.get("action", "terminate"),
                             "time": body.get("time") or _iso(time.time() + 120)}
        return json.dumps(state.spot_notice).encode()

    @control.route("/_control/rebalance", methods=["POST"])
    def raise_rebalance(request):
        body = body_json(request)
        state.rebalance = {"noticeTime": body.get("noticeTime") or _iso(time.time())}
        return json.dumps(state.rebalance).encode()

    @control.route("/_control/notices", methods=["DELETE"])
    def clear_notices(request):
        state.spot_notice = state.rebalance = None
        return b"{}"

    @control.route("/_control/expire-tokens", methods=["POST"])
    def expire_tokens(request):
        state.tokens.clear()
        return b"{}"

    @control.route("/_control/stats", methods=["GET"])
    def stats(request):
        request.setHeader("Content-Type", "application/json")
        return json.dumps(state.stats).encode()

    return imds, control


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.fake_imds", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=None,
                        help="serve /_control/ on this port (0 = free port); default: on --port")
    parser.add_argument("--instance-id", default="i-0123456789abcdef0")
    parser.add_argument("--instance-type", default="c7i.large")
    parser.add_argument("--az", default="us-east-1a")
    parser.add_argument("--region", default=None, help="default: the AZ less its last letter")
    parser.add_argument("--life-cycle", default="spot", choices=["spot", "on-demand", "scheduled"])
    parser.add_argument("--user-data-file", default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    args = parser.parse_args(argv)

    from twisted.internet import reactor, task
    from twisted.web.server import Site

    user_data = None
    if args.user_data_file:
        with open(args.user_data_file, "rb") as f:
            user_data = f.read()
    state = FakeIMDSState(args.instance_id, args.instance_type, args.az, args.life_cycle, user_data, args.region)
    imds, control = make_apps(state, combined=args.control_port is None)
    if args.control_port is None:
        port = reactor.listenTCP(args.port, Site(imds.resource()), interface=args.host)
        control_port = port
    else:
        port = reactor.listenTCP(args.port, Site(imds.resource()), interface=args.host)
        control_port = reactor.listenTCP(args.control_port, Site(control.resource()), interface=args.host)
    url = f"http://{args.host}:{port.getHost().port}"
    control_url = f"http://{args.host}:{control_port.getHost().port}"
    if args.parent_pid:
        def check_parent():
            try:
                os.kill(args.parent_pid, 0)
            except ProcessLookupError:
                reactor.stop()
        task.LoopingCall(check_parent).start(1.0)
    reactor.callWhenRunning(lambda: (print(json.dumps({"url": url, "control_url": control_url}), flush=True)))
    reactor.run()


class FakeIMDS:
    """A ``python -m tests.fake_imds`` process, driven with urllib (no Twisted).

    ``start()`` returns self once it listens; ``url`` is the value for
    EC2_METADATA_URL. ``spot_notice(action, time)``, ``rebalance()``,
    ``clear()``, ``expire_tokens()``, ``stats()`` use its control API;
    ``stop()`` ends it (also a context manager).
    """

    def __init__(self, instance_id="i-0123456789abcdef0", instance_type="c7i.large", az="us-east-1a",
                 life_cycle="spot", user_data=None, region=None, log_path=None):
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.az = az
        self.life_cycle = life_cycle
        self.user_data = user_data
        self.region = region
        self.log_path = log_path
        self.url = self.control_url = None
        self._proc = None
        self._log = None
        self._files = []

    def start(self, timeout_s=30):
        argv = [sys.executable, "-m", "tests.fake_imds", "--port", "0", "--control-port", "0",
                "--instance-id", self.instance_id, "--instance-type", self.instance_type, "--az", self.az,
                "--life-cycle", self.life_cycle, "--parent-pid", str(os.getpid())]
        if self.region:
            argv += ["--region", self.region]
        if self.user_data is not None:
            path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fake-imds-user-data-{secrets.token_hex(6)}")
            with open(path, "wb") as f:
                f.write(self.user_data if isinstance(self.user_data, bytes) else self.user_data.encode())
            self._files.append(path)
            argv += ["--user-data-file", path]
        self._log = open(self.log_path or os.devnull, "ab")
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, cwd=REPO_ROOT)
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.stop()
                raise RuntimeError(f"fake IMDS did not start within {timeout_s} s")
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                code = self._proc.wait()
                self.stop()
                raise RuntimeError(f"fake IMDS exited with {code} before listening")
            line += chunk
        ready = json.loads(line.decode())
        self.url, self.control_url = ready["url"], ready["control_url"]
        return self

    def stop(self):
        if self._proc is not None:
            stop_process(self._proc)
            self._proc.stdout.close()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        for path in self._files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _control(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(f"{self.control_url}/_control/{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def spot_notice(self, action="terminate", time=None):
        """Raise a spot interruption notice; returns the instance-action dict."""
        return self._control("POST", "spot-notice", {"action": action, "time": time})

    def rebalance(self, notice_time=None):
        """Raise a rebalance recommendation; returns its dict."""
        return self._control("POST", "rebalance", {"noticeTime": notice_time})

    def clear(self):
        """Withdraw both notices."""
        self._control("DELETE", "notices")

    def expire_tokens(self):
        """Make every token handed out so far invalid (the next GET gets 401)."""
        self._control("POST", "expire-tokens")

    def stats(self):
        """Counts: token_puts, gets, unauthorized, bad_puts."""
        return self._control("GET", "stats")


if __name__ == "__main__":
    main()
