import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.workqueue.local import LocalWorkQueue
from tests.core.queue_contract import WorkQueueContract


class LocalWorkQueueTests(WorkQueueContract, TestCase):
    def make_queue(self, clock, redrive):
        path = os.path.join(self.mktemp(), "queue.sqlite")
        return LocalWorkQueue(path, reactor, redrive=redrive, poll_interval_s=0.01, clock=clock)
