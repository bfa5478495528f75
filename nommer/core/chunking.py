"""A chunked job's request and plan record, as the job store keeps them.

A declarative job may be chunked (``nommer.workerd.chunks``): its source is
cut into chunks that any worker encodes, then a merge joins them. What the
job asked is ``job_options["chunking"]`` (``normalize_request``); what was
planned is ``Job.chunks``, a list of dicts, one per chunk::

    {"index": 3, "start_s": 36.0, "end_s": 48.0, "frames": 288,
     "state": "PENDING" | "ENCODING" | "FINISHED", "attempts": 1,
     "worker_id": "w-2", "progress": 40.0, "details": None,
     "heartbeat_at": epoch s, "files": {"p0r0": {"name": "chunk_00003_p0r0.mp4",
                                                  "bytes": 123}},
     "plan": {Chunk.to_dict()}}

``CHUNK_TRANSITIONS`` is the table a chunk's state moves along; the worker
refuses any other write (``check_chunk_transition``).
"""

import enum

from nommer.core.errors import InvalidJobSpec

#: Fields of a chunk the API shows (``public_chunks``).
PUBLIC_FIELDS = ("index", "start_s", "end_s", "frames", "state", "attempts", "worker_id", "progress",
                 "details")
#: Percent of a chunked job's progress its chunks make (the merge makes the rest).
CHUNKS_SHARE = 90.0
#: Between a job's message body and a chunk task's index (``chunk_message_body``).
CHUNK_SEPARATOR = "@chunk"


class ChunkState(str, enum.Enum):
    PENDING = "PENDING"      # planned, or released back to the queue
    ENCODING = "ENCODING"    # a worker holds its task
    FINISHED = "FINISHED"    # encoded, checked and stored in the work area (a checkpoint)

    def __str__(self):
        return self.value


CHUNK_TRANSITIONS = {
    ChunkState.PENDING: {ChunkState.ENCODING},
    ChunkState.ENCODING: {ChunkState.ENCODING, ChunkState.PENDING, ChunkState.FINISHED},
    ChunkState.FINISHED: set(),
}


class IllegalChunkTransition(Exception):
    """A chunk state write the table refuses (a late worker finishing a chunk again)."""


def check_chunk_transition(index, old, new):
    """Return ``new`` (a ChunkState) if a chunk may go from ``old`` to it,
    else raise ``IllegalChunkTransition``."""
    old, new = ChunkState(old), ChunkState(new)
    if new not in CHUNK_TRANSITIONS[old]:
        raise IllegalChunkTransition(f"chunk {index}: cannot go from {old} to {new}")
    return new


def normalize_request(value, settings):
    """A body's ``chunking`` (absent/None, a bool, or an object with
    ``target_s``, ``min_s``, ``max_s`` seconds, already schema-checked) as
    ``{"mode": "auto"|"on"|"off", "target_s", "min_s", "max_s"}`` (seconds,
    the server's CHUNK_TARGET_S / CHUNK_MIN_S / CHUNK_MAX_S where not given).
    Raises ``InvalidJobSpec`` (field ``chunking``) when min_s > target_s or
    target_s > max_s."""
    mode = "auto" if value is None else ("off" if value is False else "on")
    given = value if isinstance(value, dict) else {}
    target = float(given.get("target_s", settings.CHUNK_TARGET_S))
    low = float(given.get("min_s", min(settings.CHUNK_MIN_S, target)))
    high = float(given.get("max_s", max(settings.CHUNK_MAX_S, target)))
    if not low <= target <= high:
        raise InvalidJobSpec("chunking", f"needs min_s <= target_s <= max_s, not {low:g} / {target:g} / "
                                         f"{high:g} seconds")
    return {"mode": mode, "target_s": target, "min_s": low, "max_s": high}


def public_chunks(chunks):
    """The API's view of ``Job.chunks``: each chunk's PUBLIC_FIELDS; None when not chunked."""
    if not chunks:
        return None
    return [{k: c.get(k) for k in PUBLIC_FIELDS} for c in chunks]


def all_finished(chunks):
    """Whether every chunk of a plan is FINISHED (False for no plan)."""
    return bool(chunks) and all(c.get("state") == ChunkState.FINISHED for c in chunks)


def chunks_progress(chunks):
    """Percent (0..100) of a plan's frames encoded: each chunk's frames
    weighted by its progress (100 once FINISHED)."""
    total = sum(c.get("frames") or 0 for c in chunks) or 1
    done = sum((c.get("frames") or 0) * (100.0 if c.get("state") == ChunkState.FINISHED
                                         else float(c.get("progress") or 0.0)) for c in chunks)
    return done / total


def chunk_message_body(job_body, index):
    """The message body of chunk ``index``'s task: the job's message body
    (``nommer.core.workqueue.jobs.job_message_body``) + ``@chunk<index>``."""
    return f"{job_body}{CHUNK_SEPARATOR}{int(index)}"


def parse_chunk_message(body):
    """``(job_body, index)`` of a message body; index None for a job's own message."""
    head, sep, tail = body.rpartition(CHUNK_SEPARATOR)
    if sep and tail.isascii() and tail.isdigit():
        return head, int(tail)
    return body, None
