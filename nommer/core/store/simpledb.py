"""JobStore on Amazon SimpleDB: the original media-nommer's store, done safely.

One item per job in the domain SIMPLEDB_JOB_STATE_DOMAIN, item name = job_id.
Attribute layout (every value at most 1024 bytes, SimpleDB's limit)::

    version       "7"               decimal counter; every write is a PutAttributes
                                    conditional on it (Expected), so writes never cross
    job_state     "ENCODING"        the state name, plain (Select filters on it)
    created_key   "2023-11-14T22:13:20.000000Z <job_id>"
                                    fixed-width UTC ISO 8601 + job id: the sort key of
                                    ``list`` (text order = time order, ties by id)
    created_at, updated_at, started_at, finished_at, heartbeat_at
                  "2023-11-14T22:13:20.000000Z 1700000000.0" | "null"
                                    fixed-width UTC ISO 8601 (text order = time order),
                                    then the exact epoch seconds
    every other Job field (source_path, dest_path, nommer, job_options, notify_url,
    job_state_details, progress, attempts, worker_id, output, owner)
                  JSON, ASCII-only  '"file:///in.mp4"', '[{"outfile_options": []}]', 'null'
    chunks        "job_options=3 job_state_details=2" | ""
                                    fields whose text is longer than 1024 characters:
                                    their text is split over ``<field>.0`` .. ``<field>.<n-1>``
                                    (1024 characters each, in order) instead of ``<field>``

JSON with ``ensure_ascii`` makes any text lossless on SimpleDB's XML wire (control
characters, carriage returns and non-ASCII are escaped), keeps ``None`` distinct
from ``"None"`` and ``""`` (the original stored the text ``'None'``), and makes
a character a byte, so chunks split anywhere. Nothing is truncated: a job whose
attributes would not fit in one item (about 120 KB of text) is refused with
ValueError (the original cut details to their last 1023 characters).

Every write puts every attribute with Replace, in one atomic PutAttributes, so
the item always reads whole: attributes a previous version needed and this one
does not (chunks of a field that shrank) are ignored by readers (``chunks``
says which attributes count) and deleted right after the write by a
DeleteAttributes conditional on the new version. ``modify`` is the
optimistic write of ``nommer.core.store.versioned`` (another writer's win is
ConditionalCheckFailed, and the job is read again).

Reads are consistent (ConsistentRead). ``list`` pages with Select ``order by
created_key desc``, resuming after the cursor's sort key (a ``where``
predicate, not SimpleDB's NextToken, so cursors do not expire). An item
without ``created_key`` in the domain (a 2011 media-nommer item: attributes
``unique_id``, ``creation_dtime``...) is not a nommer job: ``get`` raises
NoSuchJob and ``list``, ``list_unfinished`` and ``count_by_state`` skip it.

The jobs' event logs (``append_event``, ``list_events``) live in a second
domain, SIMPLEDB_EVENTS_DOMAIN (``nommer.core.store.simpledb_events``),
created with the jobs' (``ensure_resources``, so by ``nommer aws setup``).

``owner`` (the submitting API key's key_id) is JSON like the other fields
(``'"3f9c0a1b2c3d4e5f"'``, or ``'null'``): ``list(owner=)`` and
``count_unfinished(owner)`` select on that exact text. An item written
before ``owner`` existed has no such attribute: it reads as no owner and no
key's listing shows it.
"""

import json

import attr
from botocore.exceptions import ClientError

from nommer.core.aws.pool import condition_held, error_code
from nommer.core.aws.simpledb import (CONFLICT_CODES, MAX_ITEM_ATTRIBUTES, MAX_SELECT_LIMIT, SimpleDBDomain, chunked,
                                      iso_fixed, left_over, quote, replacing, time_text, time_value, unchunked)
from nommer.core.deferreds import deferred, gather
from nommer.core.errors import NoSuchJob
from nommer.core.job import Job
from nommer.core.states import FINAL_STATES, JobState
from nommer.core.store.base import decode_cursor, encode_cursor, page_limit
from nommer.core.store.event_log import SeparateEventLog
from nommer.core.store.simpledb_events import SimpleDBEventLog
from nommer.core.store.versioned import VersionedJobStore

TIME_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "heartbeat_at")
#: Job fields stored as JSON (all but job_id, the item name, and job_state, plain text).
JSON_FIELDS = tuple(a.name for a in attr.fields(Job)
                    if a.name not in TIME_FIELDS and a.name not in ("job_id", "job_state"))
#: Job fields stored under another attribute name: ``chunks`` (a chunked
#: job's plan) would clash with the attribute ``nommer.core.aws.simpledb.chunked``
#: lists split values in.
ATTRIBUTE_NAMES = {"chunks": "chunk_plan"}
UNFINISHED_STATES = tuple(s.value for s in JobState if s not in FINAL_STATES)
#: The Select condition on ``job_state`` of the jobs not in a final state.
_UNFINISHED_CONDITION = f"job_state in ({', '.join(quote(s) for s in UNFINISHED_STATES)})"


def created_key(created_at, job_id):
    """The sort key of ``list``: ISO creation time, a space, the job id."""
    return f"{iso_fixed(created_at)} {job_id}"


def encode_job(job, version):
    """The attributes (dict name -> text, each <= 1024 bytes) storing ``job``
    at ``version``. Raises ValueError if they would not fit in one item."""
    attrs = {"version": str(version), "job_state": job.job_state.value,
             "created_key": created_key(job.created_at, job.job_id)}
    attrs.update(chunked({ATTRIBUTE_NAMES.get(name, name): time_text(getattr(job, name)) if name in TIME_FIELDS
                          else json.dumps(getattr(job, name)) for name in JSON_FIELDS + TIME_FIELDS}))
    if len(attrs) > MAX_ITEM_ATTRIBUTES:
        raise ValueError(f"job {job.job_id} needs {len(attrs)} SimpleDB attributes, more than the "
                         f"{MAX_ITEM_ATTRIBUTES} one item can hold (about {MAX_ITEM_ATTRIBUTES} KB of "
                         "text); shorten its options, details or output")
    return attrs


def decode_job(job_id, attrs):
    """The Job an item's attributes (dict name -> text) hold; a field the
    item predates gets the Job default."""
    fields = {"job_id": job_id, "job_state": attrs["job_state"]}
    stored_as = {ATTRIBUTE_NAMES.get(name, name): name for name in JSON_FIELDS + TIME_FIELDS}
    for attribute, text in unchunked(attrs, list(stored_as)).items():
        name = stored_as[attribute]
        fields[name] = time_value(text) if name in TIME_FIELDS else json.loads(text)
    return Job.from_dict(fields)


def owner_text(owner):
    """The stored text of an ``owner`` (a key_id): its JSON, as ``encode_job`` writes it."""
    return json.dumps(str(owner))


class SimpleDBJobStore(SeparateEventLog, SimpleDBDomain, VersionedJobStore):
    """Jobs in a SimpleDB domain (see the module docstring for the item layout).

    ``settings`` gives SIMPLEDB_JOB_STATE_DOMAIN, AWS_CREATE_RESOURCES and the
    AWS client settings; boto3 calls run in this store's own bounded pool.
    ``clock`` (default ``reactor``) provides ``seconds()`` for the times stamped.
    AWS failures surface as ``botocore.exceptions.ClientError``.
    """

    def __init__(self, settings, reactor, clock=None):
        self._open_domain(settings, reactor, settings.SIMPLEDB_JOB_STATE_DOMAIN, "simpledb-store")
        self._clock = clock or reactor
        #: The event logs' domain, its calls made in this store's pool.
        self.events = SimpleDBEventLog(settings, reactor, pool=self.aws, max_events=settings.MAX_EVENTS_PER_JOB)

    async def ensure_resources(self):
        """Create the jobs' domain and the events' (CreateDomain is
        idempotent). Lines for a person, one per domain."""
        lines = await super().ensure_resources()
        return lines + await self.events.ensure_resources()

    # --- low level ---------------------------------------------------------------------------

    async def _put(self, job_id, attrs, expected):
        await self._call("put_attributes", ItemName=job_id, Attributes=replacing(attrs), Expected=expected)

    async def _drop_stale(self, job_id, old, new):
        """Delete attributes of ``old`` that version ``new`` does not use, unless
        a newer version was written meanwhile (its writer cleans up instead).
        Best effort: stale attributes are ignored by readers anyway."""
        stale = left_over(old, new)
        if not stale:
            return
        try:
            await self._call("delete_attributes", ItemName=job_id, Attributes=stale,
                             Expected={"Name": "version", "Value": new["version"]})
        except ClientError as e:
            if error_code(e) not in CONFLICT_CODES:
                self.log.warn("job {job_id}: stale SimpleDB attributes left ({error})",
                              job_id=job_id, error=e)

    # --- VersionedJobStore --------------------------------------------------------------------

    async def _insert(self, job):
        return await condition_held(self._put(job.job_id, encode_job(job, 1), {"Name": "version", "Exists": False}),
                                    CONFLICT_CODES)

    async def _fetch(self, job_id):
        """(Job, the attributes read: ``_replace`` writes the next version and drops what it left over)."""
        attrs = await self._read(job_id)
        if "version" not in attrs or "created_key" not in attrs:
            raise NoSuchJob(job_id)
        return decode_job(job_id, attrs), attrs

    async def _replace(self, job, old):
        new = encode_job(job, int(old["version"]) + 1)
        try:
            await self._put(job.job_id, new, {"Name": "version", "Value": old["version"]})
        except ClientError as e:
            code = error_code(e)
            if code == "ConditionalCheckFailed":
                return False
            if code == "AttributeDoesNotExist":
                raise NoSuchJob(job.job_id) from None
            raise
        await self._drop_stale(job.job_id, old, new)
        return True

    # --- JobStore ----------------------------------------------------------------------------

    @deferred
    async def list(self, state=None, limit=50, cursor=None, owner=None):
        """Deferred[(jobs, next_cursor)], newest first (created_at, then job_id,
        descending); ``state`` a JobState or None; ``owner`` a key_id or None
        (every job); ``limit`` >= 1; ``next_cursor`` None on the last page.
        ValueError on a bad cursor."""
        limit = page_limit(limit)
        where = []
        if owner is not None:
            where.append(f"owner = {quote(owner_text(owner))}")
        if state is not None:
            where.append(f"job_state = {quote(JobState(state).value)}")
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            where.append(f"created_key < {quote(created_key(created_at, job_id))}")
        else:
            where.append("created_key is not null")
        items = await self._select("*", " and ".join(where), order_by="created_key desc", limit=limit + 1)
        jobs = [decode_job(name, attrs) for name, attrs in items[:limit]]
        next_cursor = None
        if len(items) > limit:
            next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].job_id)
        return jobs, next_cursor

    @deferred
    async def list_unfinished(self):
        """Deferred[list[Job]]: every job not in a final state, oldest first."""
        items = await self._select("*", f"{_UNFINISHED_CONDITION} and created_key is not null",
                                   order_by="created_key asc", page_size=MAX_SELECT_LIMIT)
        return [decode_job(name, attrs) for name, attrs in items]

    @deferred
    async def count_unfinished(self, owner):
        """Deferred[int]: jobs of ``owner`` (a key_id) not in a final state
        (one ``select count(*)``)."""
        return await self._count(f"owner = {quote(owner_text(owner))} and {_UNFINISHED_CONDITION}")

    @deferred
    async def count_by_state(self):
        """Deferred[dict[str, int]]: state name -> number of jobs, states with
        no job left out. One ``select count(*)`` per state, in parallel."""
        await self._ready()
        counts = await gather(self._count(f"job_state = {quote(state.value)}") for state in JobState)
        return {state.value: n for state, n in zip(JobState, counts) if n}

    async def _count(self, where):
        """How many jobs (items with ``created_key``) match ``where``: one ``select count(*)``."""
        pages = await self._select("count(*)", f"{where} and created_key is not null")
        return sum(int(attrs["Count"]) for _, attrs in pages)
