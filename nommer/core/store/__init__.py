"""Job stores: where job documents live. Chosen by JOB_STORE_BACKEND."""

from nommer.core.store.base import JobStore, decode_cursor, encode_cursor  # noqa: F401

BACKENDS = {
    "sqlite": "nommer.core.store.sqlite.SQLiteJobStore",
    "dynamodb": "nommer.core.store.dynamodb.DynamoDBJobStore",
    "simpledb": "nommer.core.store.simpledb.SimpleDBJobStore",
}


def make_store(settings, reactor):
    """Build the job store named by ``settings.JOB_STORE_BACKEND``."""
    from nommer.core.classes import load_class
    return load_class(BACKENDS[settings.JOB_STORE_BACKEND], what="job store backend").from_settings(settings, reactor)
