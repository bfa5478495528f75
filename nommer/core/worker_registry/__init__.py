"""Worker registries, one per job store backend (JOB_STORE_BACKEND)."""

from nommer.core.worker_registry.base import WorkerRecord, WorkerRegistry  # noqa: F401

BACKENDS = {
    "sqlite": "nommer.core.worker_registry.sqlite.SQLiteWorkerRegistry",
    "dynamodb": "nommer.core.worker_registry.dynamodb.DynamoDBWorkerRegistry",
    "simpledb": "nommer.core.worker_registry.simpledb.SimpleDBWorkerRegistry",
}


def make_registry(settings, reactor):
    """Build the worker registry beside ``settings.JOB_STORE_BACKEND``'s store."""
    from nommer.core.classes import load_class
    return load_class(BACKENDS[settings.JOB_STORE_BACKEND], what="worker registry backend").from_settings(settings, reactor)
