"""The worker registry: who is working, on what, and since when.

Every worker heartbeats a ``WorkerRecord`` every HEARTBEAT_INTERVAL_S to a
table or domain of its own beside the jobs (SQLite table ``workers``,
DYNAMODB_WORKER_TABLE, SIMPLEDB_EC2_NOMMER_STATE_DOMAIN, the original's
domain for its EC2 workers). feederd reads it for ``GET /workers`` and, with
the EC2 fleet, to find instances that never came up or went silent.

Every backend passes ``tests/core/registry_contract.py``.
"""

import attr

#: Values of ``WorkerRecord.state``.
RUNNING = "running"            # taking jobs
DRAINING = "draining"          # finishing its jobs, taking no new one (warm shutdown)
INTERRUPTED = "interrupted"    # spot interruption notice: released its jobs, exiting
TERMINATING = "terminating"    # idle: terminating its own instance
EXITED = "exited"              # process ended cleanly
WORKER_STATES = (RUNNING, DRAINING, INTERRUPTED, TERMINATING, EXITED)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class WorkerRecord:
    """One worker as it last reported itself.

    - ``worker_id``: unique name (the instance id on EC2, host-pid-wN locally).
    - ``instance_id``, ``instance_type``, ``availability_zone``, ``market``
      ("spot"/"on-demand"): from the instance metadata; None off EC2.
    - ``host``: hostname; ``version``: nommer version string.
    - ``state``: one of WORKER_STATES.
    - ``jobs``: ids of the jobs it runs now (list of str); ``capacity``: jobs
      it runs at once (MAX_ENCODING_JOBS_PER_WORKER).
    - ``jobs_done``: jobs it has finished since start.
    - ``started_at``, ``last_seen``: epoch seconds (worker's clock).
    - encode figures since start (``nommer.workerd.metrics.EncodeFigures``,
      read by feederd's /metrics): ``jobs_finished`` (attempts stored
      FINISHED), ``encode_seconds_total`` and ``media_seconds_total`` (their
      wall time and the media seconds they made, float seconds),
      ``last_encode_speed`` (x real time, or None) and ``recent_encodes``
      (``[[seconds, media seconds or None], ...]``, the last 20, oldest first).
    """

    worker_id: str
    state: str = RUNNING
    jobs: list = attr.Factory(list)
    capacity: int = 1
    jobs_done: int = 0
    host: str = ""
    version: str = ""
    instance_id: str = None
    instance_type: str = None
    availability_zone: str = None
    market: str = None
    started_at: float = 0.0
    last_seen: float = 0.0
    jobs_finished: int = 0
    encode_seconds_total: float = 0.0
    media_seconds_total: float = 0.0
    last_encode_speed: float = None
    recent_encodes: list = attr.Factory(list)

    def to_dict(self):
        """JSON-ready dict (the shape of ``GET /workers`` entries)."""
        return attr.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict``; unknown keys are ignored (newer workers)."""
        names = {a.name for a in attr.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class WorkerRegistry:
    """Interface of a worker registry (documentation; backends subclass it).
    All methods return Deferreds.

    - ``heartbeat(record) -> Deferred[None]``: insert or replace the record
      of ``record.worker_id`` (last writer wins; one worker writes its own).
    - ``get(worker_id) -> Deferred[WorkerRecord]``: raises ``KeyError``.
    - ``list() -> Deferred[list[WorkerRecord]]``: every record, most recently
      seen first.
    - ``remove(worker_id) -> Deferred[None]``: no error if absent.
    - ``forget_older_than(t) -> Deferred[int]``: delete records whose
      ``last_seen`` < t (epoch seconds); returns how many.
    - ``close() -> Deferred|None``.
    """

    def heartbeat(self, record):
        raise NotImplementedError

    def get(self, worker_id):
        raise NotImplementedError

    def list(self):
        raise NotImplementedError

    def remove(self, worker_id):
        raise NotImplementedError

    def forget_older_than(self, t):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError
