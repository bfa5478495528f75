"""A moto server (``moto[server]``) for the AWS tests: real HTTP, real boto3.

``moto_endpoint()`` starts one server per test process on a free loopback
port (lazily, stopped at exit) and returns its URL; ``reset_moto()`` wipes
its state between tests (``POST /moto-api/reset``). ``aws_settings(tc, ...)``
builds Settings pointing every AWS client at it, with throwaway credentials.
``sdb_client()`` and ``sdb_item(domain, name)`` look at what a SimpleDB
backend stored there.
"""

import atexit
import os
import subprocess
import sys
import time
import urllib.request

from tests.processes import free_port, stop_process

_SERVER = {}

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}


def moto_endpoint():
    """URL of this process's moto server, started on first use."""
    if "url" in _SERVER:
        return _SERVER["url"]
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    port = free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"moto-{port}.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.moto_plus", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start (see {log.name})")
            time.sleep(0.05)

    def stop():
        stop_process(proc)
        log.close()
    atexit.register(stop)
    _SERVER["url"] = url
    return url


def reset_moto():
    """Forget every resource the moto server holds."""
    request = urllib.request.Request(f"{moto_endpoint()}/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=10).read()


def aws_settings(testcase, **overrides):
    """Settings (temp data dir, temp file root) with every AWS client on moto."""
    from tests.helpers import temp_settings
    values = dict(AWS_ENDPOINT_URL=moto_endpoint(), AWS_REGION="us-east-1")
    values.update(overrides)
    return temp_settings(testcase, **values)


def sdb_client():
    """A boto3 SimpleDB client on the moto server."""
    import boto3
    return boto3.client("sdb", endpoint_url=moto_endpoint(), region_name="us-east-1")


def sdb_item(domain, name):
    """The attributes of item ``name`` of ``domain`` as SimpleDB holds them
    (dict name -> value; {} for no item), read consistently."""
    result = sdb_client().get_attributes(DomainName=domain, ItemName=name, ConsistentRead=True)
    return {a["Name"]: a["Value"] for a in result.get("Attributes", [])}
