"""Rules between settings, checked once each setting is valid alone."""

from nommer.conf.pools_rule import _check_pools
from nommer.conf.rules import _fmt


def _check_together(values, valid, labels, errors):
    """Rules between settings; only checked when each setting is valid alone."""
    _check_pools(values, valid, errors)
    if {"HEARTBEAT_INTERVAL_S", "JOB_LEASE_S"} <= valid:
        beat, lease = values["HEARTBEAT_INTERVAL_S"], values["JOB_LEASE_S"]
        if beat > lease / 3:
            errors.append(
                f"{_labelled(labels, 'HEARTBEAT_INTERVAL_S', beat)} is more than a third of "
                f"{_labelled(labels, 'JOB_LEASE_S', lease)}: a worker extends its lease at every "
                f"heartbeat, so it must beat at least three times per lease; use "
                f"HEARTBEAT_INTERVAL_S <= {_fmt(lease / 3)} or JOB_LEASE_S >= {_fmt(beat * 3)}")
    if {"HEARTBEAT_INTERVAL_S", "ABANDON_INACTIVE_JOBS_S"} <= valid:
        beat, abandon = values["HEARTBEAT_INTERVAL_S"], values["ABANDON_INACTIVE_JOBS_S"]
        if abandon <= beat:
            errors.append(
                f"{_labelled(labels, 'ABANDON_INACTIVE_JOBS_S', abandon)} is not more than "
                f"{_labelled(labels, 'HEARTBEAT_INTERVAL_S', beat)}: healthy jobs would be "
                f"abandoned between two heartbeats")
    if "FLEET_BACKEND" in valid and values["FLEET_BACKEND"] == "ec2":
        label, where = labels["FLEET_BACKEND"]
        fleet = f"{label} = 'ec2'{where}"
        if "EC2_AMI_ID" in valid and not values["EC2_AMI_ID"]:
            errors.append(f"{fleet} needs EC2_AMI_ID: the image workers boot from (see deploy/packer)")
        if "WORK_QUEUE_BACKEND" in valid and values["WORK_QUEUE_BACKEND"] != "sqs":
            errors.append(f"{fleet} needs WORK_QUEUE_BACKEND = 'sqs': instances cannot reach a local queue")
        if "JOB_STORE_BACKEND" in valid and values["JOB_STORE_BACKEND"] == "sqlite":
            errors.append(f"{fleet} needs JOB_STORE_BACKEND = 'dynamodb' or 'simpledb': "
                          f"instances cannot reach a local SQLite store")


def _labelled(labels, name, value):
    label, where = labels[name]
    return f"{label} = {_fmt(value)}{where}"

