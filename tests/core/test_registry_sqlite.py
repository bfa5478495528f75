"""SQLiteWorkerRegistry: the contract, and its table beside the jobs in the job store's file."""

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.sqlite import SQLiteWorkerRegistry
from nommer.core.store import make_store
from tests.core.registry_contract import WorkerRegistryContract, make_record
from tests.helpers import ensure, temp_settings


class SQLiteWorkerRegistryTests(WorkerRegistryContract, TestCase):
    def make_registry(self):
        return SQLiteWorkerRegistry(os.path.join(self.mktemp(), "jobs.sqlite"), reactor)


class SQLiteRegistryFileTests(TestCase):

    @ensure
    async def test_shares_the_job_store_file(self):
        """make_registry picks SQLite by default and uses the job store's file: both tables live there."""
        settings, _ = temp_settings(self)
        store, registry = make_store(settings, reactor), make_registry(settings, reactor)
        self.addCleanup(store.close)
        self.addCleanup(registry.close)
        self.assertIsInstance(registry, SQLiteWorkerRegistry)
        await store.create(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                               nommer="n", job_options=[]))
        await registry.heartbeat(make_record())
        self.assertEqual(registry._db.path, store._db.path)
        self.assertEqual(registry._db.path, os.path.join(settings.DATA_DIR, "jobs.sqlite"))
        self.assertEqual(len((await store.list())[0]), 1)
        self.assertEqual(await registry.get("w-1"), make_record())
