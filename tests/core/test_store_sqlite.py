import json
import os
import sqlite3

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.store.sqlite import SQLiteJobStore
from tests.core.store_contract import JobEventsContract, JobStoreContract, make_job
from tests.helpers import ensure


class SQLiteJobStoreTests(JobStoreContract, JobEventsContract, TestCase):
    def make_store(self, clock):
        return SQLiteJobStore(os.path.join(self.mktemp(), "jobs.sqlite"), reactor, clock=clock)


#: The jobs table as nommer made it before jobs had an owner.
OLD_SCHEMA = """CREATE TABLE jobs (
    job_id     TEXT PRIMARY KEY,
    job_state  TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc        TEXT NOT NULL)"""


class SQLiteOwnerMigrationTests(TestCase):
    def old_database(self):
        """A jobs.sqlite made before ``owner``, holding one job."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "jobs.sqlite")
        job = make_job(created_at=1.0, updated_at=1.0)
        doc = job.to_dict()
        del doc["owner"]
        conn = sqlite3.connect(path)
        conn.execute(OLD_SCHEMA)
        conn.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
                     (job.job_id, "PENDING", 1.0, 1.0, json.dumps(doc)))
        conn.commit()
        conn.close()
        return path, job

    def columns(self, path):
        conn = sqlite3.connect(path)
        try:
            return ({row[1] for row in conn.execute("PRAGMA table_info(jobs)")},
                    {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")})
        finally:
            conn.close()

    @ensure
    async def test_old_database_gets_owner_column(self):
        """Opening a database made before ``owner`` adds the column and its indexes; its
        old job reads back without owner, new jobs store one, and filters work."""
        path, old = self.old_database()
        self.assertNotIn("owner", self.columns(path)[0])
        stores = [SQLiteJobStore(path, reactor), SQLiteJobStore(path, reactor)]  # two processes' worth
        for store in stores:
            self.addCleanup(store.close)
        got = await stores[0].get(old.job_id)
        self.assertIsNone(got.owner)
        self.assertEqual(got.source_path, old.source_path)
        new = await stores[1].create(make_job(owner="k1"))
        columns, indexes = self.columns(path)
        self.assertIn("owner", columns)
        self.assertLessEqual({"jobs_by_owner", "jobs_by_owner_state"}, indexes)
        self.assertEqual([j.job_id for j in (await stores[0].list(owner="k1"))[0]], [new.job_id])
        self.assertEqual(await stores[0].count_unfinished("k1"), 1)
        self.assertEqual({j.job_id for j in (await stores[0].list())[0]}, {old.job_id, new.job_id})
