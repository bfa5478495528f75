"""Plays EC2 for the boot end-to-end tests: every instance feederd launches on
moto is booted here as the worker image would boot it.

For each instance tagged with the fleet's name that moto reports pending or
running, ``Ec2Player``:

1. reads the instance's user data back from the EC2 API
   (DescribeInstanceAttribute ``userData``), parses the ``#cloud-config``
   document and checks it does what the image expects: write
   ``/etc/nommer/workerd.env``, ``systemctl enable --now nommer-workerd``;
2. starts a fake IMDS (``tests.fake_imds``) answering for that instance
   (its id, type, AZ, spot or on-demand, its user data);
3. runs the ``ExecStart`` of ``deploy/systemd/nommer-workerd.service`` with
   the environment file's variables, as systemd would (``${X}`` and ``$X``
   expanded, word-split), in a directory of its own (the unit's
   ``WorkingDirectory``); ``NOMMER_WORKERD_OPTS`` points workerd at the fake
   IMDS, the only thing that differs from an instance. The venv's twistd is
   this interpreter's.

It also plays EC2's side of an instance's end: when moto says an instance
is terminated (the worker terminated itself, or feederd did) and its worker
still runs, the worker is killed (the machine is gone); ``reclaim(id)``
terminates an instance after a spot notice, as EC2 does two minutes later.
"""

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import boto3

from nommer.feederd.fleet.userdata import ENV_FILE_PATH, parse_env_file
from tests.fake_imds import FakeIMDS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(REPO, "deploy", "systemd", "nommer-workerd.service")
TWISTD = "from twisted.scripts.twistd import run; run()"
VENV_TWISTD = "/opt/nommer/venv/bin/twistd"


def unit_exec_start(unit_path=UNIT):
    """The ``ExecStart=`` line of a unit file (str)."""
    with open(unit_path) as f:
        for line in f:
            if line.startswith("ExecStart="):
                return line[len("ExecStart="):].strip()
    raise AssertionError(f"no ExecStart in {unit_path}")


def systemd_argv(exec_start, env):
    """argv of ``exec_start`` with systemd's expansion: ``${X}`` is replaced
    as one word, ``$X`` split on whitespace (systemd.service, "Command lines")."""
    words = []
    for word in shlex.split(exec_start):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words.extend(env.get(whole.group(1), "").split())
            continue
        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def parse_user_data(raw):
    """(cloud-config dict, workerd env dict) of an instance's user data (bytes)."""
    text = raw.decode()
    assert text.startswith("#cloud-config\n"), text[:100]
    doc = json.loads(text[len("#cloud-config\n"):])
    (entry,) = [f for f in doc["write_files"] if f["path"] == ENV_FILE_PATH]
    assert doc["runcmd"] == [["systemctl", "enable", "--now", "nommer-workerd.service"]], doc["runcmd"]
    return doc, parse_env_file(entry["content"])


class Instance:
    def __init__(self, description):
        self.instance_id = description["InstanceId"]
        self.instance_type = description["InstanceType"]
        self.az = description.get("Placement", {}).get("AvailabilityZone", "us-east-1a")
        self.spot = description.get("InstanceLifecycle") == "spot"
        self.env = None
        self.imds = None
        self.proc = None
        self.log_path = None
        self.exit_code = None
        self.reclaimed = False


class Ec2Player:
    """Boots the fleet's instances (see the module docstring). Use as a
    context manager, or ``start()`` / ``stop()``. ``instances`` maps
    instance id -> ``Instance`` for every instance booted."""

    def __init__(self, endpoint, root, fleet_name="nommer", region="us-east-1", poll_s=0.2):
        self.ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)
        self.root = root
        self.fleet_name = fleet_name
        self.poll_s = poll_s
        self.instances = {}
        self.errors = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._thread = threading.Thread(target=self._run, name="ec2-player", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._halt.is_set():
            try:
                self._step()
            except Exception as e:  # a test reads self.errors; the loop goes on
                self.errors.append(repr(e))
            self._halt.wait(self.poll_s)

    def describe(self):
        """{instance id: description} of every instance of the fleet, any state."""
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:nommer:fleet", "Values": [self.fleet_name]}])
        return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

    def states(self):
        """{instance id: EC2 state name}."""
        return {k: d["State"]["Name"] for k, d in self.describe().items()}

    def _step(self):
        for instance_id, description in self.describe().items():
            state = description["State"]["Name"]
            with self._lock:
                known = self.instances.get(instance_id)
            if known is None and state in ("pending", "running"):
                self._boot(Instance(description))
            elif known is not None and state in ("shutting-down", "terminated"):
                self._machine_gone(known)
        with self._lock:
            for inst in self.instances.values():
                if inst.proc is not None and inst.exit_code is None and inst.proc.poll() is not None:
                    inst.exit_code = inst.proc.returncode

    def _boot(self, inst):
        raw = self.ec2.describe_instance_attribute(InstanceId=inst.instance_id, Attribute="userData")
        user_data = base64.b64decode(raw["UserData"]["Value"])
        _, inst.env = parse_user_data(user_data)
        inst.imds = FakeIMDS(instance_id=inst.instance_id, instance_type=inst.instance_type, az=inst.az,
                             life_cycle="spot" if inst.spot else "on-demand", user_data=user_data).start()
        env = dict(inst.env, NOMMER_WORKERD_OPTS=f"--metadata-url {inst.imds.url}")
        argv = systemd_argv(unit_exec_start(), env)
        assert argv[0] == VENV_TWISTD, argv
        argv = [sys.executable, "-c", TWISTD] + argv[1:]
        workdir = os.path.join(self.root, "instances", inst.instance_id)
        os.makedirs(workdir, exist_ok=True)
        inst.log_path = os.path.join(workdir, "journal.log")
        with open(inst.log_path, "ab") as log:
            inst.proc = subprocess.Popen(argv, cwd=workdir, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with self._lock:
            self.instances[inst.instance_id] = inst

    def _machine_gone(self, inst):
        """The instance is terminated: whatever still runs on it stops now."""
        if inst.proc is not None and inst.proc.poll() is None:
            # Let a worker that terminated itself finish exiting on its own (a real instance's
            # shutdown gives its processes time too): up to 5 s, a loaded machine needs more than 0.5.
            try:
                inst.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
            if inst.proc.poll() is None:
                os.killpg(inst.proc.pid, signal.SIGKILL)
                inst.proc.wait()
                inst.reclaimed = True
        if inst.imds is not None:
            inst.imds.stop()
            inst.imds = None

    def interrupt(self, instance_id, action="terminate"):
        """A spot interruption notice for ``instance_id`` (in two minutes)."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        return self.instances[instance_id].imds.spot_notice(action, when)

    def reclaim(self, instance_id):
        """EC2 takes the instance back (after its spot notice)."""
        self.ec2.terminate_instances(InstanceIds=[instance_id])

    def journal(self, instance_id):
        inst = self.instances[instance_id]
        with open(inst.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-20000:]

    def journals(self):
        return "\n".join(f"--- {i} ---\n{self.journal(i)}" for i in list(self.instances))

    def wait(self, predicate, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; instances {self.states()}; "
                             f"errors {self.errors}\n{self.journals()}")

    def stop(self):
        self._halt.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            instances = list(self.instances.values())
        for inst in instances:
            if inst.proc is not None and inst.proc.poll() is None:
                os.killpg(inst.proc.pid, signal.SIGKILL)
                inst.proc.wait()
            if inst.imds is not None:
                inst.imds.stop()
