"""DynamoDB Local (AWS's own DynamoDB engine, run offline) for the store tests.

The jar ships inside the npm package ``amplify-dynamodb-simulator``;
``make dynamodb-local`` installs it under ``.cache/dynamodb-local`` (and Java
17 when ``java`` is missing). ``NOMMER_DDB_LOCAL_DIR`` may name another
directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib/``.

``dynamodb_local_endpoint()`` starts one in-memory server per test process
on a free loopback port (lazily, stopped at exit) and returns its URL;
``dynamodb_local_missing()`` says why it cannot start, or None.

A DynamoDB backend's tests run twice, on moto and on DynamoDB Local: the
TestCase mixes in ``OnMoto`` or ``OnDynamoDBLocal`` before its tests, which
use ``backend_settings(**overrides)`` (each setUp starts from an empty server)::

    class DynamoDBStoreMotoTests(OnMoto, DynamoDBSpecifics, JobStoreContract, TestCase): ...
    class DynamoDBStoreLocalTests(OnDynamoDBLocal, DynamoDBSpecifics, JobStoreContract, TestCase): ...
"""

import atexit
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.aws_server import aws_settings, reset_moto
from tests.processes import free_port, stop_process

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO, ".cache", "dynamodb-local", "node_modules", "amplify-dynamodb-simulator",
                           "emulator")

_SERVER = {}


def jar_dir():
    """Directory holding DynamoDBLocal.jar (NOMMER_DDB_LOCAL_DIR or the make target's)."""
    return os.environ.get("NOMMER_DDB_LOCAL_DIR") or DEFAULT_DIR


def dynamodb_local_missing():
    """Why DynamoDB Local cannot run here (a sentence), or None."""
    if shutil.which("java") is None:
        return "java is not installed (run `make dynamodb-local`)"
    if not os.path.isfile(os.path.join(jar_dir(), "DynamoDBLocal.jar")):
        return f"no DynamoDBLocal.jar in {jar_dir()} (run `make dynamodb-local` or set NOMMER_DDB_LOCAL_DIR)"
    return None


def _die_with_parent():
    """In the child before exec (Linux): get SIGTERM when the test process
    dies, so a test run killed by a timeout leaves no JVM behind."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _answers(url):
    """True once the server answers HTTP at all (it refuses unsigned requests
    with 400, which is an answer)."""
    try:
        urllib.request.urlopen(url, timeout=2).read()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def dynamodb_local_endpoint():
    """URL of this process's DynamoDB Local, started on first use.
    Raises RuntimeError when it cannot start (see ``dynamodb_local_missing``)."""
    if "url" in _SERVER:
        return _SERVER["url"]
    missing = dynamodb_local_missing()
    if missing:
        raise RuntimeError(f"DynamoDB Local cannot run: {missing}")
    directory = jar_dir()
    port = free_port()
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dynamodb-local-{port}.log"), "wb")
    proc = subprocess.Popen(
        ["java", f"-Djava.library.path={os.path.join(directory, 'DynamoDBLocal_lib')}", "-jar",
         os.path.join(directory, "DynamoDBLocal.jar"), "-inMemory", "-port", str(port)],
        cwd=directory, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    url = f"http://127.0.0.1:{port}"

    def stop():
        stop_process(proc)
        log.close()
    atexit.register(stop)
    deadline = time.monotonic() + 60
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"DynamoDB Local did not start (see {log.name})")
        time.sleep(0.05)
    _SERVER["url"] = url
    return url


def reset_dynamodb_local():
    """Delete every table this process's DynamoDB Local holds (the
    ``reset_moto`` of DynamoDB Local; in-memory tables go at once)."""
    import boto3
    client = boto3.client("dynamodb", endpoint_url=dynamodb_local_endpoint(), region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    for page in client.get_paginator("list_tables").paginate():
        for name in page["TableNames"]:
            client.delete_table(TableName=name)


def dynamodb_local_settings(testcase, **overrides):
    """(Settings, temp root) with every AWS client on DynamoDB Local and
    throwaway credentials (DynamoDB Local keeps one database per key and region)."""
    from tests.helpers import temp_settings
    values = dict(AWS_ENDPOINT_URL=dynamodb_local_endpoint(), AWS_REGION="us-east-1",
                  AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    values.update(overrides)
    return temp_settings(testcase, **values)


class OnMoto:
    """The server is moto in server mode (``tests.aws_server``), reset before each test."""

    def setUp(self):
        reset_moto()
        super().setUp()

    def backend_settings(self, **overrides):
        return aws_settings(self, **overrides)[0]


class OnDynamoDBLocal:
    """The server is DynamoDB Local, every table deleted before each test."""

    # Skipped (reason shown by -ra) where the jar or java is missing; under CI a missing
    # DynamoDB Local fails these tests instead, so an install step cannot quietly break.
    skip = None if os.environ.get("CI") else dynamodb_local_missing()

    def setUp(self):
        reset_dynamodb_local()
        super().setUp()

    def backend_settings(self, **overrides):
        return dynamodb_local_settings(self, **overrides)[0]
