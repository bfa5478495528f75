"""API key stores, one per job store backend (JOB_STORE_BACKEND): SQLite
(``DATA_DIR/keys.sqlite``), DynamoDB (DYNAMODB_KEY_TABLE), SimpleDB
(SIMPLEDB_KEY_DOMAIN). See ``nommer.core.keys.base``.

    keys = open_key_store(settings, reactor=reactor)
    key, secret = await keys.create("ci", ["submit", "read"])   # secret: show once
    key = await keys.authenticate(secret)     # ApiKey, or None (malformed, unknown, revoked)

Every method returns a Deferred (the project's backends all do): ``await``
it in a coroutine, or add callbacks.
"""

from nommer.core.keys.base import (  # noqa: F401
    DEFAULT_SCOPES,
    SCOPES,
    ApiKey,
    InvalidKeySpec,
    KeyStore,
    NoSuchKey,
    validate_scopes,
)

BACKENDS = {
    "sqlite": "nommer.core.keys.sqlite.SQLiteKeyStore",
    "dynamodb": "nommer.core.keys.dynamodb.DynamoDBKeyStore",
    "simpledb": "nommer.core.keys.simpledb.SimpleDBKeyStore",
}


def open_key_store(settings, reactor=None, *, pool=None, clock=None):
    """The key store beside ``settings.JOB_STORE_BACKEND``'s job store
    (``open_key_store(settings, reactor=reactor)``; ``reactor`` may also come
    second, as ``make_store(settings, reactor)`` takes it).

    ``reactor``: runs the store's threads and timers (default: the global
    reactor). ``pool``: an ``nommer.core.aws.AWS`` to make the AWS calls in
    (the caller keeps owning it: ``close()`` leaves it running); by default
    an AWS backend makes its own. ``clock``: ``seconds()`` for created_at,
    revoked_at and the AWS backends' cache (default: ``reactor``).
    """
    from nommer.core.classes import load_class
    if reactor is None:
        from twisted.internet import reactor
    cls = load_class(BACKENDS[settings.JOB_STORE_BACKEND], what="API key store backend")
    return cls.from_settings(settings, reactor, pool=pool, clock=clock)
