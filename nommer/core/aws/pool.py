"""boto3 for Twisted: clients built from settings, every call in a bounded
thread pool, never on the reactor thread.

Each AWS-backed part (job store, work queue, S3 storage) owns one ``AWS``:
its clients and its pool of at most AWS_MAX_THREADS threads (or uses one it
is given and leaves it open: feederd's API keys use the job store's). Credentials come
from boto3's default chain (environment, profile, instance role), or from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when a nomconf sets them (the
original's way). AWS_REGION picks the region (boto3's own default when None,
else us-east-1); AWS_ENDPOINT_URL points every client at one endpoint (a local
moto or DynamoDB Local) and AWS_ENDPOINT_URLS overrides it per service.
"""

import threading

import boto3
import botocore.config
from twisted.internet import threads
from twisted.python.threadpool import ThreadPool

DEFAULT_REGION = "us-east-1"


def client_kwargs(settings, service_name):
    """Keyword arguments for ``boto3.session.Session.client`` for one service."""
    endpoints = settings.AWS_ENDPOINT_URLS or {}
    kwargs = {
        "region_name": settings.AWS_REGION or boto3.session.Session().region_name or DEFAULT_REGION,
        "config": botocore.config.Config(retries={"mode": "standard", "max_attempts": 5},
                                         max_pool_connections=settings.AWS_MAX_THREADS),
    }
    endpoint = endpoints.get(service_name, settings.AWS_ENDPOINT_URL)
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if settings.AWS_ACCESS_KEY_ID and settings.AWS_SECRET_ACCESS_KEY:
        kwargs["aws_access_key_id"] = settings.AWS_ACCESS_KEY_ID
        kwargs["aws_secret_access_key"] = settings.AWS_SECRET_ACCESS_KEY
    return kwargs


class AWS:
    """Clients for one part of nommer and the thread pool its calls run in.

    ``call(service, method, **kwargs)`` returns a Deferred of the boto3
    method's result (errors as ``botocore.exceptions.ClientError`` failures);
    ``run(fn, *args, **kwargs)`` runs any blocking boto3 work (an S3 managed
    transfer) in the same pool. ``close()`` stops the pool.
    """

    def __init__(self, settings, reactor, name="aws"):
        self.settings = settings
        self.reactor = reactor
        self._session = boto3.session.Session()
        self._clients = {}
        self._lock = threading.Lock()
        self._pool = ThreadPool(minthreads=0, maxthreads=settings.AWS_MAX_THREADS, name=f"nommer-{name}")
        self._started = False
        self._closed = False

    def client(self, service_name):
        """The boto3 client for ``service_name`` (created once; clients are thread-safe)."""
        with self._lock:
            if service_name not in self._clients:
                self._clients[service_name] = self._session.client(
                    service_name, **client_kwargs(self.settings, service_name))
            return self._clients[service_name]

    def run(self, fn, *args, **kwargs):
        if self._closed:
            raise RuntimeError("AWS pool is closed")
        if not self._started:
            self._pool.start()
            self._started = True
        return threads.deferToThreadPool(self.reactor, self._pool, fn, *args, **kwargs)

    def call(self, service_name, method, **kwargs):
        return self.run(lambda: getattr(self.client(service_name), method)(**kwargs))

    def close(self):
        if not self._closed:
            self._closed = True
            if self._started:
                self._pool.stop()


def error_code(exc):
    """The AWS error code of a botocore ClientError (e.g.
    ``"ConditionalCheckFailedException"``), or None."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code")


async def condition_held(write, codes):
    """Await ``write``, a conditional write (a Deferred of ``AWS.call``):
    True once it is done, False when AWS refused it with one of the error
    ``codes`` (its condition did not hold). Other failures are raised."""
    try:
        await write
    except Exception as exc:
        if error_code(exc) in codes:
            return False
        raise
    return True
