"""WorkerRegistry on SimpleDB: the domain SIMPLEDB_EC2_NOMMER_STATE_DOMAIN,
where the original media-nommer's workers reported their state.

One item per worker, item name = worker_id. Attributes (each value at most
1024 bytes, split as ``nommer.core.aws.simpledb`` does)::

    last_seen   "2023-11-14T22:13:20.000000Z 1700000000.0"
                fixed-width UTC ISO 8601 (text order = time order), then the exact
                epoch seconds: Select filters on it
    every other WorkerRecord field (state, jobs, capacity, host, instance_id...)
                JSON, ASCII-only: '"running"', '["3f9c...", ...]', '2', 'null'
    chunks      "jobs=3" | ""   fields longer than 1024 characters, split over
                                ``jobs.0`` .. ``jobs.2``

A heartbeat is one PutAttributes replacing every attribute. Chunks a longer
earlier record used and this one does not are ignored by readers and, when
this registry wrote that earlier record, deleted right after. Items without
``last_seen`` (the 2011 workers' ``id``/``state``/``last_report_dtime``
items) are not nommer's: ``get`` raises KeyError, ``list`` and
``forget_older_than`` skip them.
"""

import json

import attr
from botocore.exceptions import ClientError

from nommer.core.aws.pool import condition_held
from nommer.core.aws.simpledb import (CONFLICT_CODES, MAX_ITEM_ATTRIBUTES, SimpleDBDomain, chunked, iso_fixed,
                                      left_over, quote, replacing, time_text, time_value, unchunked)
from nommer.core.deferreds import deferred
from nommer.core.worker_registry.base import WorkerRecord, WorkerRegistry

#: WorkerRecord fields stored as JSON (all but worker_id, the item name, and last_seen).
JSON_FIELDS = tuple(a.name for a in attr.fields(WorkerRecord) if a.name not in ("worker_id", "last_seen"))


def encode_record(record):
    """The attributes (dict name -> text, each <= 1024 bytes) storing
    ``record``. ValueError if they would not fit in one item (a jobs list
    of thousands of ids)."""
    texts = {name: json.dumps(getattr(record, name)) for name in JSON_FIELDS}
    texts["last_seen"] = time_text(float(record.last_seen))
    attrs = chunked(texts)
    if len(attrs) > MAX_ITEM_ATTRIBUTES:
        raise ValueError(f"worker {record.worker_id} needs {len(attrs)} SimpleDB attributes, more than "
                         f"the {MAX_ITEM_ATTRIBUTES} one item can hold")
    return attrs


def decode_record(worker_id, attrs):
    """The WorkerRecord an item's attributes hold (fields it lacks get the defaults)."""
    texts = unchunked(attrs, JSON_FIELDS + ("last_seen",))
    fields = {name: json.loads(text) for name, text in texts.items() if name != "last_seen"}
    return WorkerRecord(worker_id=worker_id, last_seen=time_value(texts["last_seen"]), **fields)


class SimpleDBWorkerRegistry(SimpleDBDomain, WorkerRegistry):
    """Worker records in a SimpleDB domain (see the module docstring).

    Its own boto3 thread pool; with AWS_CREATE_RESOURCES the domain is
    created on first use. Every method returns a Deferred (see
    ``WorkerRegistry``); AWS failures are ``botocore.exceptions.ClientError``
    (``NoSuchDomain`` for a missing domain). Reads are consistent. ``list``
    orders ties of ``last_seen`` by worker_id.
    """

    def __init__(self, settings, reactor):
        self._open_domain(settings, reactor, settings.SIMPLEDB_EC2_NOMMER_STATE_DOMAIN, "simpledb-registry")
        self._written = {}   # worker_id -> attributes of the last record this registry wrote

    # --- WorkerRegistry ----------------------------------------------------------------------

    @deferred
    async def heartbeat(self, record):
        attrs = encode_record(record)
        await self._call("put_attributes", ItemName=record.worker_id, Attributes=replacing(attrs))
        stale = left_over(self._written.get(record.worker_id, {}), attrs)
        self._written[record.worker_id] = attrs
        if stale:
            try:
                await self._call("delete_attributes", ItemName=record.worker_id, Attributes=stale)
            except ClientError as e:
                self.log.warn("worker {worker_id}: stale SimpleDB attributes left ({error})",
                              worker_id=record.worker_id, error=e)

    @deferred
    async def get(self, worker_id):
        attrs = await self._read(worker_id)
        if "last_seen" not in attrs:
            raise KeyError(worker_id)
        return decode_record(worker_id, attrs)

    @deferred
    async def list(self):
        items = await self._select("*", "last_seen is not null")
        records = [decode_record(name, attrs) for name, attrs in items]
        return sorted(records, key=lambda r: (-r.last_seen, r.worker_id))

    @deferred
    async def remove(self, worker_id):
        self._written.pop(worker_id, None)
        await self._call("delete_attributes", ItemName=worker_id)

    @deferred
    async def forget_older_than(self, t):
        """Select the records seen before ``t``, then delete each on the
        condition that its ``last_seen`` is unchanged (a worker that
        heartbeated meanwhile stays). Deferred[int]: how many were deleted."""
        deleted = 0
        for name, last_seen in await self._older_than(float(t)):
            if await condition_held(self._call("delete_attributes", ItemName=name,
                                               Expected={"Name": "last_seen", "Value": last_seen}), CONFLICT_CODES):
                deleted += 1
                self._written.pop(name, None)
        return deleted

    async def _older_than(self, t):
        """(worker_id, ``last_seen`` text) of the records seen before ``t``:
        what ``forget_older_than`` deletes if their ``last_seen`` is unchanged."""
        # Text order is time order to the microsecond; the exact comparison is made here.
        items = await self._select("last_seen", f"last_seen < {quote(iso_fixed(t) + ' ~')}")
        return [(name, attrs["last_seen"]) for name, attrs in items if time_value(attrs["last_seen"]) < t]
