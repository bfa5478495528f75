"""Work queues: how jobs and state changes travel. Chosen by WORK_QUEUE_BACKEND.

A received message's lease is kept with a ``LeaseKeeper`` (``lease``).
"""

from nommer.core.workqueue.base import (  # noqa: F401
    Message, ReceiptHandleInvalid, RedrivePolicy, WorkQueue, dead_letter_name, redrive_policies)
from nommer.core.workqueue.lease import LeaseKeeper  # noqa: F401

BACKENDS = {
    "local": "nommer.core.workqueue.local.LocalWorkQueue",
    "sqs": "nommer.core.workqueue.sqs.SQSWorkQueue",
}


def make_queue(settings, reactor):
    """Build the work queue named by ``settings.WORK_QUEUE_BACKEND``."""
    from nommer.core.classes import load_class
    return load_class(BACKENDS[settings.WORK_QUEUE_BACKEND], what="work queue backend").from_settings(settings, reactor)
