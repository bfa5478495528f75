import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.store.sqlite import SQLiteJobStore
from tests.core.store_contract import JobStoreContract


class SQLiteJobStoreTests(JobStoreContract, TestCase):
    def make_store(self, clock):
        return SQLiteJobStore(os.path.join(self.mktemp(), "jobs.sqlite"), reactor, clock=clock)
