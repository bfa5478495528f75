"""WorkerRegistry on SimpleDB: the domain SIMPLEDB_EC2_NOMMER_STATE_DOMAIN,
where the original media-nommer's workers reported their state.

One item per worker, item name = worker_id. Attributes (each value at most
1024 bytes, split like the job store's, see ``nommer.core.store.simpledb``)::

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
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.aws import error_code
from nommer.core.registry.base import WorkerRecord, WorkerRegistry
from nommer.core.store.simpledb import (MAX_JOB_ATTRIBUTES, SimpleDBDomain, chunked, iso_fixed, quote,
                                        quote_name, select, time_text, time_value, unchunked)

#: WorkerRecord fields stored as JSON (all but worker_id, the item name, and last_seen).
JSON_FIELDS = tuple(a.name for a in attr.fields(WorkerRecord) if a.name not in ("worker_id", "last_seen"))


def encode_record(record):
    """The attributes (dict name -> text, each <= 1024 bytes) storing
    ``record``. ValueError if they would not fit in one item (a jobs list
    of thousands of ids)."""
    texts = {name: json.dumps(getattr(record, name)) for name in JSON_FIELDS}
    texts["last_seen"] = time_text(float(record.last_seen))
    attrs = chunked(texts)
    if len(attrs) > MAX_JOB_ATTRIBUTES:
        raise ValueError(f"worker {record.worker_id} needs {len(attrs)} SimpleDB attributes, more than "
                         f"the {MAX_JOB_ATTRIBUTES} one item can hold")
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

    log = Logger()

    def __init__(self, settings, reactor):
        self._domain = settings.SIMPLEDB_EC2_NOMMER_STATE_DOMAIN
        self._open_domain(settings, reactor, name="simpledb-registry")
        self._written = {}   # worker_id -> attributes of the last record this registry wrote

    @classmethod
    def from_settings(cls, settings, reactor):
        return cls(settings, reactor)

    async def _call(self, method, **kwargs):
        """One SimpleDB call on the domain, after the lazy set-up."""
        await self._ready()
        return await self._aws.call("sdb", method, DomainName=self._domain, **kwargs)

    async def _select(self, what, where):
        await self._ready()
        return await select(self._aws, f"select {what} from {quote_name(self._domain)} where {where}")

    # --- WorkerRegistry ----------------------------------------------------------------------

    def heartbeat(self, record):
        return defer.Deferred.fromCoroutine(self._heartbeat(record))

    async def _heartbeat(self, record):
        attrs = encode_record(record)
        await self._call("put_attributes", ItemName=record.worker_id,
                         Attributes=[{"Name": n, "Value": v, "Replace": True} for n, v in attrs.items()])
        stale = [{"Name": n, "Value": v} for n, v in self._written.get(record.worker_id, {}).items()
                 if n not in attrs]
        self._written[record.worker_id] = attrs
        if stale:
            try:
                await self._call("delete_attributes", ItemName=record.worker_id, Attributes=stale)
            except ClientError as e:
                self.log.warn("worker {worker_id}: stale SimpleDB attributes left ({error})",
                              worker_id=record.worker_id, error=e)

    def get(self, worker_id):
        return defer.Deferred.fromCoroutine(self._get(worker_id))

    async def _get(self, worker_id):
        result = await self._call("get_attributes", ItemName=worker_id, ConsistentRead=True)
        attrs = {a["Name"]: a["Value"] for a in result.get("Attributes", [])}
        if "last_seen" not in attrs:
            raise KeyError(worker_id)
        return decode_record(worker_id, attrs)

    def list(self):
        return defer.Deferred.fromCoroutine(self._list())

    async def _list(self):
        items = await self._select("*", "last_seen is not null")
        records = [decode_record(name, attrs) for name, attrs in items]
        return sorted(records, key=lambda r: (-r.last_seen, r.worker_id))

    def remove(self, worker_id):
        self._written.pop(worker_id, None)
        return defer.Deferred.fromCoroutine(self._call("delete_attributes", ItemName=worker_id))

    def forget_older_than(self, t):
        """Select the records seen before ``t``, then delete each on the
        condition that its ``last_seen`` is unchanged (a worker that
        heartbeated meanwhile stays). Deferred[int]: how many were deleted."""
        return defer.Deferred.fromCoroutine(self._forget(float(t)))

    async def _forget(self, t):
        # Text order is time order to the microsecond; the exact comparison is made here.
        items = await self._select("last_seen", f"last_seen < {quote(iso_fixed(t) + ' ~')}")
        deleted = 0
        for name, attrs in items:
            if time_value(attrs["last_seen"]) >= t:
                continue
            try:
                await self._call("delete_attributes", ItemName=name,
                                 Expected={"Name": "last_seen", "Value": attrs["last_seen"]})
                deleted += 1
                self._written.pop(name, None)
            except ClientError as e:
                if error_code(e) not in ("ConditionalCheckFailed", "AttributeDoesNotExist"):
                    raise
        return deleted

    def close(self):
        """Stop this registry's AWS thread pool."""
        self._aws.close()
