"""The original media-nommer's names: renamed and obsolete settings, its storage backend classes."""

#: Original media-nommer name -> new name (same meaning, same value).
RENAMED = {
    "SQS_NEW_JOB_QUEUE_NAME": "NEW_JOB_QUEUE_NAME",
    "SQS_JOB_STATE_CHANGE_QUEUE_NAME": "STATE_CHANGE_QUEUE_NAME",
    "MAX_ENCODING_JOBS_PER_EC2_INSTANCE": "MAX_ENCODING_JOBS_PER_WORKER",
    "FEEDERD_AUTO_SCALE_INTERVAL": "AUTOSCALE_INTERVAL_S",
    "FEEDERD_PRUNE_JOBS_INTERVAL": "PRUNE_JOBS_INTERVAL_S",
    "FEEDERD_ABANDON_INACTIVE_JOBS_THRESH": "ABANDON_INACTIVE_JOBS_S",
    "NOMMERD_MAX_INACTIVITY": "WORKER_MAX_IDLE_S",
    "NOMMERD_TERMINATE_WHEN_IDLE": "WORKER_TERMINATE_WHEN_IDLE",
    "NOMMERD_HEARTBEAT_INTERVAL": "HEARTBEAT_INTERVAL_S",
    # A single instance type; becomes a one-element list (see nommer.conf.loader._collect).
    "EC2_INSTANCE_TYPE": "EC2_INSTANCE_TYPES",
}

_LONG_POLLED = ("queues are long-polled (QUEUE_WAIT_TIME_S), so there is no "
                "poll interval; ignored")

#: Original media-nommer settings that no longer apply -> why (shown as a warning).
OBSOLETE = {
    "FEEDERD_JOB_STATE_CHANGE_CHECK_INTERVAL": _LONG_POLLED,
    "NOMMERD_NEW_JOB_CHECK_INTERVAL": _LONG_POLLED,
    "NOMMERD_QTFASTSTART_BIN_PATH": ("qtfaststart runs as a library inside the "
                                     "worker, not as an executable; ignored"),
}

#: The original's storage backend classes -> ours (STORAGE_BACKENDS values).
ORIGINAL_STORAGE_CLASSES = {
    "media_nommer.core.storage_backends.file.FileBackend": "nommer.core.storage.file.FileStorage",
    "media_nommer.core.storage_backends.http.HTTPBackend": "nommer.core.storage.http.HTTPStorage",
    "media_nommer.core.storage_backends.s3.S3Backend": "nommer.core.storage.s3.S3Storage",
}
