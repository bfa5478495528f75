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
    SQS queues with the dead-letter redrive (WORK_QUEUE_BACKEND), the
    config bucket, and with FLEET_BACKEND "ec2" the workers' security group
    (no inbound rules; ``nommer.feederd.fleet.ec2_setup``). Returns what
    was done, one line each (list of str). Raises the backend's error on an
    existing resource that does not fit (e.g. a queue without its redrive
    policy, a group id in EC2_SECURITY_GROUP_IDS that does not exist)."""
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
    if settings.FLEET_BACKEND == "ec2":
        from nommer.feederd.fleet.ec2_setup import ensure_worker_security_groups
        aws = AWS(settings, reactor, name="setup-ec2")
        try:
            lines += await ensure_worker_security_groups(settings, aws)
        finally:
            aws.close()
    if not lines:
        lines.append("nothing to do: this configuration uses no AWS backend")
    return lines


def _make_key_store(settings, reactor):
    return open_key_store(settings, reactor=reactor)
