"""The jobs' event logs on DynamoDB: a second table beside the job table.

Table ``DYNAMODB_EVENTS_TABLE`` (default: ``DYNAMODB_JOB_TABLE`` +
``"_events"``, so ``nommer_jobs_events``), PAY_PER_REQUEST:

================  ====  ======================================================
attribute         type  what
================  ====  ======================================================
``job_id``        S     partition key: one job's log is one item collection
``seq``           N     sort key: the event's position in the log, 1, 2, ...
event fields      any   ``JobEvent.to_dict()`` (``kind`` S, ``at`` N, ...)
``expires_at``    N     epoch s, when DYNAMODB_JOB_TTL_S is set, once the job
                        ended: its end + the TTL, as on the job's item (the
                        table's TTL attribute), so the log goes with the job
================  ====  ======================================================

``seq`` is allocated by a conditional put: read the log's last ``seq`` (a
consistent Query, newest first, Limit 1), put the event at the next one
on the condition ``attribute_not_exists(seq)``; another writer taking that
``seq`` first fails the condition and the log is read again (at most
MAX_WRITE_ATTEMPTS times, then ``StoreConflict``). A counter on the job's
item was rejected: the job store rewrites the whole item with PutItem on
each ``modify`` (optimistic locking on ``version``), which would erase a
counter kept beside it, and every event would then contend with the job's
own writes. The count of a log is its last ``seq`` (kept events have no
gaps), which ``nommer.core.events.bounds`` needs; so an append is one Query
and one PutItem.

Retention: the job table expires a final job DYNAMODB_JOB_TTL_S after it
ended. An event whose ``state`` is final (the job's last STATE event, a
webhook outcome after it) is stored with ``expires_at`` = its time + the
TTL, and stamps the same on the job's earlier events that have none
(one Query and an UpdateItem per such event, once per job). Without the
TTL setting nothing expires, like the jobs.
"""

import attr

from nommer.core.aws.dynamodb import CONDITION_FAILED, DynamoDBTable, TableSetupError, dump_item, load_item
from nommer.core.aws.pool import condition_held
from nommer.core.deferreds import deferred
from nommer.core.events import JobEvent, keeps
from nommer.core.states import FINAL_STATES
from nommer.core.store.base import event_limit
from nommer.core.store.versioned import MAX_WRITE_ATTEMPTS, StoreConflict

TTL_ATTRIBUTE = "expires_at"
_FINAL = frozenset(s.value for s in FINAL_STATES)
_FLOAT_FIELDS = ("at", "progress")
#: The key attributes and their types.
_KEY_TYPES = {"job_id": "S", "seq": "N"}


def events_table_name(settings):
    """DYNAMODB_EVENTS_TABLE, or DYNAMODB_JOB_TABLE + ``"_events"``."""
    return getattr(settings, "DYNAMODB_EVENTS_TABLE", None) or settings.DYNAMODB_JOB_TABLE + "_events"


async def ensure_ttl(aws, table, setting="DYNAMODB_JOB_TTL_S"):
    """Enable TTL on ``expires_at`` of ``table`` unless it is on; a line
    for a person, or None when nothing was done. TableSetupError when TTL
    is on another attribute."""
    result = await aws.call("dynamodb", "describe_time_to_live", TableName=table)
    ttl = result.get("TimeToLiveDescription", {})
    status, attribute = ttl.get("TimeToLiveStatus"), ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING"):
        if attribute != TTL_ATTRIBUTE:
            raise TableSetupError(f"DynamoDB table {table} has TTL on {attribute!r}, "
                                  f"not {TTL_ATTRIBUTE!r}: {setting} cannot work")
        return None
    await aws.call("dynamodb", "update_time_to_live", TableName=table,
                   TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    return f"enabled TTL on {TTL_ATTRIBUTE} of DynamoDB table {table}"


class DynamoDBEventLog(DynamoDBTable):
    """The event table (see the module docstring), its calls made in
    ``pool`` (the job store's). ``max_events`` bounds a job's log;
    ``ttl_s`` is DYNAMODB_JOB_TTL_S (None: nothing expires)."""

    what = "nommer's job events"
    setting = "DYNAMODB_EVENTS_TABLE"
    key = "job_id"

    def __init__(self, settings, reactor, pool=None, max_events=500, ttl_s=None):
        self._open(settings, reactor, events_table_name(settings), "dynamodb-events", pool)
        self.max_events = max_events
        self.ttl_s = ttl_s

    def _table_spec(self):
        return dict(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in _KEY_TYPES.items()],
                    KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"},
                               {"AttributeName": "seq", "KeyType": "RANGE"}])

    def _problems(self, table):
        """What keeps an existing table from being keyed job_id (S) + seq (N)."""
        types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
        keys = [(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])]
        if keys != [("job_id", "HASH"), ("seq", "RANGE")] or any(types.get(n) != t for n, t in _KEY_TYPES.items()):
            return [f"its key is {keys}, not job_id (HASH, type S), seq (RANGE, type N)"]
        return []

    async def ensure_resources(self):
        """Create the table if missing (waiting until ACTIVE) or check its
        key; enable TTL when ``ttl_s`` is set. Lines for a person."""
        lines = await self._ensure_table()
        if self.ttl_s is not None:
            line = await ensure_ttl(self.aws, self.table)
            if line:
                lines.append(line)
        self._resources_ok = True
        return lines

    def _expires_at(self, at):
        return int(at + self.ttl_s)

    async def _last_seq(self, job_id):
        result = await self._call("query", TableName=self.table, KeyConditionExpression="job_id = :j",
                                  ExpressionAttributeValues={":j": {"S": job_id}}, ScanIndexForward=False,
                                  Limit=1, ConsistentRead=True, ProjectionExpression="seq")
        items = result.get("Items", [])
        return int(items[0]["seq"]["N"]) if items else 0

    @deferred
    async def append(self, event):
        """Deferred[JobEvent|None]: ``event`` stored at the next ``seq`` of
        its job's log, or None when the bound drops it. StoreConflict after
        MAX_WRITE_ATTEMPTS lost races."""
        final = self.ttl_s is not None and event.state in _FINAL
        for _ in range(MAX_WRITE_ATTEMPTS):
            count = await self._last_seq(event.job_id)
            if not keeps(event.kind, count, self.max_events):
                return None
            stored = attr.evolve(event, seq=count + 1)
            doc = stored.to_dict()
            if final:
                doc[TTL_ATTRIBUTE] = self._expires_at(stored.at)
            if await condition_held(self._call("put_item", TableName=self.table, Item=dump_item(doc),
                                               ConditionExpression="attribute_not_exists(seq)"), CONDITION_FAILED):
                break
            self.log.debug("job {job_id}: event seq {seq} taken meanwhile, reading again",
                           job_id=event.job_id, seq=count + 1)
        else:
            raise StoreConflict(event.job_id, MAX_WRITE_ATTEMPTS)
        if final:
            await self._stamp_expiry(event.job_id, self._expires_at(stored.at))
        return stored

    async def _stamp_expiry(self, job_id, expires_at):
        """Give the job's events without ``expires_at`` this one."""
        items = await self._items("query", KeyConditionExpression="job_id = :j",
                                  FilterExpression="attribute_not_exists(#e)",
                                  ExpressionAttributeNames={"#e": TTL_ATTRIBUTE},
                                  ExpressionAttributeValues={":j": {"S": job_id}},
                                  ProjectionExpression="job_id, seq", ConsistentRead=True)
        for item in items:
            await self._call("update_item", TableName=self.table, Key={"job_id": item["job_id"], "seq": item["seq"]},
                             UpdateExpression="SET #e = :e", ExpressionAttributeNames={"#e": TTL_ATTRIBUTE},
                             ExpressionAttributeValues={":e": {"N": str(expires_at)}})

    @deferred
    async def list(self, job_id, after_seq=0, limit=500):
        """Deferred[list[JobEvent]]: the job's events after ``after_seq``,
        ascending, at most ``limit`` (a consistent Query)."""
        after_seq, limit = event_limit(after_seq, limit)
        kwargs = dict(TableName=self.table, KeyConditionExpression="job_id = :j AND seq > :s",
                      ExpressionAttributeValues={":j": {"S": job_id}, ":s": {"N": str(after_seq)}},
                      ScanIndexForward=True, ConsistentRead=True)
        items = []
        while len(items) < limit:
            result = await self._call("query", Limit=limit - len(items), **kwargs)
            items.extend(result.get("Items", []))
            if "LastEvaluatedKey" not in result:
                break
            kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        events = []
        for item in items[:limit]:
            doc = load_item(item, floats=_FLOAT_FIELDS)
            doc.pop(TTL_ATTRIBUTE, None)
            events.append(JobEvent.from_dict(doc))
        return events
