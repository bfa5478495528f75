"""The workers' copy of the configuration, kept in S3 as the original did.

feederd renders its effective settings as a nomconf module, minus secrets and
paths that belong to one machine, and puts it at
``s3://CONFIG_S3_BUCKET/nomconf.py``; ``twistd workerd --config s3://...``
loads it at start. Workers reach AWS with their instance role, so no
credential is ever written there (the original uploaded its keys).
"""

import os
import tempfile

from nommer.conf.loader import load_settings
from nommer.conf.settings import _is_secret

#: Settings not copied to workers: credentials (workers use their instance
#: role; a worker that must unseal URI credentials gets JOB_CREDENTIALS_KEY
#: from a local nomconf instead), and paths of feederd's machine.
NOT_FOR_WORKERS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "JOB_CREDENTIALS_KEY",
                   "DATA_DIR", "SCRATCH_DIR", "FILE_STORAGE_ROOTS", "API_PORT", "API_INTERFACE",
                   "PRESETS_DIR", "PRESETS"}
CONFIG_KEY = "nomconf.py"


def render_nomconf(settings):
    """Python source of a nomconf with ``settings`` minus secrets and
    machine-local paths (str)."""
    lines = ['"""nommer settings for workers, written by feederd. Do not edit: it is rewritten at each start."""', ""]
    for name, value in sorted(settings.as_dict().items()):
        if name in NOT_FOR_WORKERS or _is_secret(name):
            continue
        lines.append(f"{name} = {value!r}")
    return "\n".join(lines) + "\n"


def config_uri(settings):
    return f"s3://{settings.CONFIG_S3_BUCKET}/{CONFIG_KEY}"


async def upload_nomconf(aws, settings):
    """Put the rendered nomconf in the config bucket (created if missing and
    AWS_CREATE_RESOURCES). Returns its s3:// URI."""
    bucket = settings.CONFIG_S3_BUCKET
    if settings.AWS_CREATE_RESOURCES:
        await aws.run(_ensure_bucket, aws.client("s3"), bucket, aws.client("s3").meta.region_name)
    await aws.call("s3", "put_object", Bucket=bucket, Key=CONFIG_KEY,
                   Body=render_nomconf(settings).encode(), ContentType="text/x-python")
    return config_uri(settings)


def _ensure_bucket(s3, bucket, region):
    from botocore.exceptions import ClientError
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        kwargs = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)


def load_remote_settings(uri, cwd=None, overrides=None):
    """Download a nomconf from ``s3://bucket/key`` (boto3 default chain; runs
    before the reactor starts) and load it like a local file. Endpoint and
    region come from the environment (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION),
    since no settings exist yet. Raises ConfigErrors / botocore errors."""
    import boto3
    bucket, _, key = uri[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tempfile.NamedTemporaryFile("wb", suffix=".py", prefix="nomconf-", delete=False) as f:
        f.write(body)
        path = f.name
    try:
        return load_settings(path, cwd=cwd, overrides=overrides)
    finally:
        os.unlink(path)
