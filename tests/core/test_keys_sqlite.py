"""SQLiteKeyStore: the KeyStore contract, and its file of its own in DATA_DIR."""

import glob
import os
import stat

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.keys import open_key_store
from nommer.core.keys.sqlite import SQLiteKeyStore
from tests.core.keys_contract import KeyStoreContract
from tests.helpers import ensure, temp_settings


class SQLiteKeyStoreTests(KeyStoreContract, TestCase):

    def make_store(self, clock):
        self.path = os.path.join(self.mktemp(), "keys.sqlite")
        return SQLiteKeyStore(self.path, reactor, clock=clock)

    def make_twin(self, clock):
        return SQLiteKeyStore(self.path, reactor, clock=clock)

    def raw_dump(self):
        data = b""
        for name in sorted(glob.glob(self.path + "*")):   # the file, its -wal and -shm
            with open(name, "rb") as f:
                data += f.read()
        return data.decode("latin-1")


class SQLiteKeyFileTests(TestCase):

    @ensure
    async def test_open_key_store_uses_keys_sqlite_in_data_dir(self):
        """open_key_store picks SQLite by default: DATA_DIR/keys.sqlite, not the jobs file, owner-only."""
        settings, _ = temp_settings(self)
        keys = open_key_store(settings, reactor=reactor, clock=task.Clock())
        self.addCleanup(keys.close)
        self.assertIsInstance(keys, SQLiteKeyStore)
        key, secret = await keys.create("k")
        self.assertEqual(keys.path, os.path.join(settings.DATA_DIR, "keys.sqlite"))
        self.assertEqual(stat.S_IMODE(os.stat(keys.path).st_mode), 0o600)
        self.assertEqual(await keys.authenticate(secret), key)
        self.assertFalse(os.path.exists(os.path.join(settings.DATA_DIR, "jobs.sqlite")))

    @ensure
    async def test_open_key_store_takes_the_reactor_either_way(self):
        """open_key_store(settings, reactor) works like make_store(settings, reactor); close() is awaitable."""
        settings, _ = temp_settings(self)
        keys = open_key_store(settings, reactor)
        self.assertIsInstance(keys, SQLiteKeyStore)
        self.assertFalse(await keys.any_active())
        self.assertIsNone(await keys.close())
