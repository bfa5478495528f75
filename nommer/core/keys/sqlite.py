"""KeyStore in a SQLite file of its own, ``<DATA_DIR>/keys.sqlite``.

Not the job store's file: workers open that one, and they have no business
with keys. Table ``api_keys``: ``key_id`` TEXT PRIMARY KEY, ``secret_hash``
TEXT (SHA-256 hex of the secret; the secret itself is never written),
``name`` TEXT, ``scopes`` TEXT (sorted, comma-separated), ``created_at``
REAL, ``revoked_at`` REAL or NULL (epoch seconds). The file is made
readable by its owner only.

No cache: ``authenticate`` is one indexed read, so a revocation (by
``nommer keys revoke`` in another process, say) counts from the next request.
"""

import os

from twisted.internet import defer

from nommer.core.keys.base import ApiKey, KeyStore, NoSuchKey
from nommer.core.sqlite import IntegrityError, SQLiteDB

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id      TEXT PRIMARY KEY,
        secret_hash TEXT NOT NULL,
        name        TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        revoked_at  REAL)""",
]

_COLUMNS = "key_id, name, scopes, created_at, revoked_at"


def _key(row):
    key_id, name, scopes, created_at, revoked_at = row
    return ApiKey(key_id=key_id, name=name, scopes=frozenset(scopes.split(",")), created_at=created_at,
                  revoked_at=revoked_at)


class SQLiteKeyStore(KeyStore):
    """API keys in the ``api_keys`` table of the SQLite file at ``path`` (see
    the module docstring). ``clock.seconds()`` stamps created_at/revoked_at
    (default ``reactor``). Every method returns a Deferred (see ``KeyStore``);
    a closed store fails with ``DatabaseClosed``."""

    def __init__(self, path, reactor, clock=None):
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._db = SQLiteDB(path, SCHEMA, reactor)
        self._clock = clock or reactor

    @classmethod
    def from_settings(cls, settings, reactor, pool=None, clock=None):
        """``<DATA_DIR>/keys.sqlite`` (``pool`` is for the AWS backends and ignored)."""
        return cls(os.path.join(settings.DATA_DIR, "keys.sqlite"), reactor, clock=clock)

    @property
    def path(self):
        return self._db.path

    async def _insert(self, key, secret_hash):
        def txn(cur):
            cur.execute("INSERT INTO api_keys (key_id, secret_hash, name, scopes, created_at, revoked_at) "
                        "VALUES (?, ?, ?, ?, ?, NULL)",
                        (key.key_id, secret_hash, key.name, ",".join(sorted(key.scopes)), float(key.created_at)))
        try:
            await self._db.interaction(txn)
        except IntegrityError:   # the key_id is taken
            return False
        return True

    def _fetch(self, key_id):
        def txn(cur):
            cur.execute(f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = ?", (str(key_id),))
            row = cur.fetchone()
            return None if row is None else (_key(row[:-1]), row[-1])
        return self._db.interaction(txn, write=False)

    def list(self):
        def txn(cur):
            cur.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
            return [_key(row) for row in cur.fetchall()]
        return self._db.interaction(txn, write=False)

    def revoke(self, key_id):
        now = float(self._clock.seconds())

        def txn(cur):
            cur.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                        (now, str(key_id)))
            cur.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (str(key_id),))
            row = cur.fetchone()
            if row is None:
                raise NoSuchKey(key_id)
            return _key(row)
        return self._db.interaction(txn)

    def any_active(self):
        def txn(cur):
            cur.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1")
            return cur.fetchone() is not None
        return self._db.interaction(txn, write=False)

    def close(self):
        self._db.close()
        return defer.succeed(None)
