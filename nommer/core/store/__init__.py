"""Job stores: where job documents live. Chosen by JOB_STORE_BACKEND."""

from nommer.core.store.base import JobStore, decode_cursor, encode_cursor  # noqa: F401

BACKENDS = {
    "sqlite": "nommer.core.store.sqlite.SQLiteJobStore",
    "dynamodb": "nommer.core.store.dynamodb.DynamoDBJobStore",
    "simpledb": "nommer.core.store.simpledb.SimpleDBJobStore",
}


def make_store(settings, reactor):
    """Build the job store named by ``settings.JOB_STORE_BACKEND``."""
    from twisted.python.reflect import namedAny
    return namedAny(BACKENDS[settings.JOB_STORE_BACKEND]).from_settings(settings, reactor)
