"""``nommer aws setup``: create the AWS resources a configuration names, or
check the ones that exist. Idempotent; safe to run at every deploy."""

from nommer.conf.remote import _ensure_bucket
from nommer.core.aws import AWS
from nommer.core.keys import open_key_store
from nommer.core.worker_registry import make_registry
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue


async def setup_resources(settings, reactor):
    """Create or validate, per ``settings``: the DynamoDB tables or SimpleDB
    domains of the jobs, of the worker registry and of the API keys
    (JOB_STORE_BACKEND), the
    SQS queues with the dead-letter redrive (WORK_QUEUE_BACKEND), and the
    config bucket. Returns what was done, one line each (list of str).
    Raises the backend's error on an existing resource that does not fit
    (e.g. a queue without its redrive policy)."""
    lines = []
    if settings.JOB_STORE_BACKEND != "sqlite":
        for make in (make_store, make_registry, _make_key_store):
            backend = make(settings, reactor)
            try:
                lines += await backend.ensure_resources()
            finally:
                backend.close()
    if settings.WORK_QUEUE_BACKEND != "local":
        queue = make_queue(settings, reactor)
        try:
            lines += await queue.ensure_resources()
        finally:
            queue.close()
        aws = AWS(settings, reactor, name="setup")
        try:
            s3 = aws.client("s3")
            await aws.run(_ensure_bucket, s3, settings.CONFIG_S3_BUCKET, s3.meta.region_name)
            lines.append(f"S3 config bucket {settings.CONFIG_S3_BUCKET} ready")
        finally:
            aws.close()
    if not lines:
        lines.append("nothing to do: this configuration uses no AWS backend")
    return lines


def _make_key_store(settings, reactor):
    return open_key_store(settings, reactor=reactor)
