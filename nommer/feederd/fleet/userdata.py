"""EC2 user data of a worker instance: a cloud-init ``#cloud-config``
document that writes workerd's environment file and starts its unit.

The document is ``"#cloud-config\\n"`` followed by JSON (JSON is valid YAML,
and cloud-init parses it with PyYAML). It does two things and nothing else
(other parts rely on this shape exactly: ``deploy/`` units and workerd):

- ``write_files``: one entry, ``path`` ``/etc/nommer/workerd.env``,
  ``permissions`` ``"0644"``, whose ``content`` is ``KEY=value`` lines:

  * ``NOMMER_CONFIG=s3://<CONFIG_S3_BUCKET>/nomconf.py``: where workerd
    loads its settings (``nommer.conf.remote.config_uri``);
  * ``AWS_DEFAULT_REGION=<region>``: the region feederd launches in;
  * ``AWS_ENDPOINT_URL=<url>``: only when ``AWS_ENDPOINT_URL`` is set
    (tests against moto; real fleets leave it unset);
  * ``NOMMER_POOLS=<pool>``: only for a pool other than ``default``
    (``nommer.core.pools``): the pools workerd serves.

- ``runcmd``: ``[["systemctl", "enable", "--now", "nommer-workerd.service"]]``.

No credential is ever written: user data is readable by any process on the
instance (through the metadata service) and by anyone allowed
``ec2:DescribeInstanceAttribute``; the original put feederd's own keys here
(reference section 4.7). Workers reach AWS with their instance profile
(EC2_IAM_INSTANCE_PROFILE). Values are not secret, so the file is 0644.
"""

import json

from nommer.conf.remote import config_uri
from nommer.core.aws import client_kwargs

#: Where the environment file is written on the instance (read by the
#: ``nommer-workerd.service`` unit as its ``EnvironmentFile``).
ENV_FILE_PATH = "/etc/nommer/workerd.env"

#: The systemd unit user data starts.
WORKERD_UNIT = "nommer-workerd.service"

#: EC2's limit on user data, bytes, "in raw form, before it is base64-encoded"
#: (RunInstances API, ``UserData``).
MAX_USER_DATA_BYTES = 16 * 1024


def worker_environment(settings, pools=None):
    """The ``{name: value}`` workerd's environment file holds (all str).

    The region is ``AWS_REGION``, else boto3's default, else us-east-1 (the
    region feederd's EC2 client launches in; ``nommer.core.aws.client_kwargs``).
    ``pools`` (names, or None): NOMMER_POOLS, the pools the worker serves.
    """
    env = {
        "NOMMER_CONFIG": config_uri(settings),
        "AWS_DEFAULT_REGION": client_kwargs(settings, "ec2")["region_name"],
    }
    if settings.AWS_ENDPOINT_URL:
        env["AWS_ENDPOINT_URL"] = settings.AWS_ENDPOINT_URL
    if pools:
        env["NOMMER_POOLS"] = ",".join(pools)
    return env


def render_env_file(env):
    """``KEY=value`` lines (str, one per item, newline-terminated), in the
    order given. Raises ValueError for a key that is not an identifier or a
    value with a line break, quote, backslash or blank (systemd's
    ``EnvironmentFile`` would read them differently)."""
    lines = []
    for key, value in env.items():
        value = str(value)
        if not key.isidentifier():
            raise ValueError(f"not an environment variable name: {key!r}")
        if any(c in value for c in "\r\n\"'\\ \t") or not value:
            raise ValueError(f"{key}: value {value!r} cannot be written unquoted")
        lines.append(f"{key}={value}\n")
    return "".join(lines)


def parse_env_file(text):
    """``{KEY: value}`` of an environment file (str): ``KEY=value`` lines;
    blank lines and lines starting with ``#`` are skipped, one pair of
    matching surrounding quotes is removed from a value. Raises ValueError
    for a line without ``=``."""
    env = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"line {number}: no '=' in {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def render_user_data(settings, pools=None):
    """The user data of a worker instance (str), as described in the module
    docstring (``pools``: see ``worker_environment``). Raises ValueError if
    it exceeds MAX_USER_DATA_BYTES (EC2's 16 KB limit) or a value cannot be
    written (see ``render_env_file``)."""
    document = {
        "write_files": [{
            "path": ENV_FILE_PATH,
            "permissions": "0644",
            "content": render_env_file(worker_environment(settings, pools)),
        }],
        "runcmd": [["systemctl", "enable", "--now", WORKERD_UNIT]],
    }
    text = "#cloud-config\n" + json.dumps(document, indent=1) + "\n"
    size = len(text.encode("utf-8"))
    if size > MAX_USER_DATA_BYTES:
        raise ValueError(f"user data is {size} bytes; EC2 accepts at most {MAX_USER_DATA_BYTES}")
    return text
