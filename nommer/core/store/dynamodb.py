"""JobStore on one DynamoDB table: every job an item, listed through two GSIs.

Table ``DYNAMODB_JOB_TABLE`` (default ``nommer_jobs``), PAY_PER_REQUEST:

======================  ====  ==================================================
attribute               type  what
======================  ====  ==================================================
``job_id``              S     partition key (the table's only key)
job fields              any   ``Job.to_dict()``: strings, numbers (floats stored
                              as Decimal), NULL, lists and maps; ``job_state`` S
``owner``               S     the submitting API key's key_id; absent on a job
                              without owner (anonymous), so ``by_owner`` is sparse
``version``             N     1 on create, +1 on each write (optimistic locking)
``gsi_all``             S     always ``"job"``: the one partition of ``by_time``
``created_key``         S     ``created_at`` as ``%020.6f`` + ``#`` + ``job_id``:
                              sorts like (created_at, job_id)
``expires_at``          N     epoch s, only on final jobs when DYNAMODB_JOB_TTL_S
                              is set (finished_at + TTL); the table's TTL attribute
======================  ====  ==================================================

Global secondary indexes (projection ALL, so a listing needs no extra reads):

- ``by_time``: ``gsi_all`` (HASH) + ``created_key`` (RANGE): ``list()`` of
  every job, newest first, from a Query with ``ScanIndexForward=False``.
- ``by_state``: ``job_state`` (HASH) + ``created_key`` (RANGE): ``list(state=)``,
  ``list_unfinished()`` (one Query per unfinished state, merged),
  ``count_by_state()`` (``Select=COUNT`` per state) and
  ``count_unfinished(owner)`` (``Select=COUNT`` per unfinished state, filtered
  on ``owner``: it reads every unfinished job, a set the per-key quota keeps
  small, rather than the key's whole history). Nothing ever Scans.
- ``by_owner``: ``owner`` (HASH) + ``created_key`` (RANGE): ``list(owner=)``
  (with ``state=`` too: filtered on ``job_state``). A table made before
  ``owner`` existed gets this index added (UpdateTable) by
  ``ensure_resources()``: with AWS_CREATE_RESOURCES on first use, otherwise
  by ``nommer aws setup``.

``by_time`` keeps every job under one GSI partition key, which caps the
table's write rate at what one GSI partition takes (about 1,000 writes/s):
far above what an encoding farm writes. GSI reads are eventually
consistent: on real AWS a listing may lag a write by a moment; ``get`` and
``modify`` read consistently.

``modify`` is the optimistic write of ``nommer.core.store.versioned``: a
PutItem on the condition ``version = <read version>``; another writer's
win is ConditionalCheckFailedException, and the job is read again.

The jobs' event logs (``append_event``, ``list_events``) live in a second
table, DYNAMODB_EVENTS_TABLE (``nommer.core.store.dynamodb_events``),
created and checked with the job table (``ensure_resources``, so by
``nommer aws setup`` too) and expiring with the jobs under
DYNAMODB_JOB_TTL_S.

Numbers: DynamoDB keeps a number's value, not its spelling (``2.0`` is
stored as ``2``): the job's time fields and ``progress`` read back as float,
``attempts`` as int, and numbers inside ``job_options`` / ``output`` as int
when integral, else float.
"""

from nommer.core.aws.dynamodb import CONDITION_FAILED, DynamoDBTable, dump_item, load_item
from nommer.core.aws.pool import condition_held, error_code
from nommer.core.deferreds import deferred, gather
from nommer.core.errors import NoSuchJob
from nommer.core.job import Job
from nommer.core.states import FINAL_STATES, JobState
from nommer.core.store.base import decode_cursor, encode_cursor, page_limit
from nommer.core.store.dynamodb_events import DynamoDBEventLog, ensure_ttl
from nommer.core.store.event_log import SeparateEventLog
from nommer.core.store.versioned import VersionedJobStore

GSI_BY_TIME = "by_time"
GSI_BY_STATE = "by_state"
GSI_BY_OWNER = "by_owner"
GSI_ALL_VALUE = "job"
TTL_ATTRIBUTE = "expires_at"
#: Attributes the store adds to a job's own fields.
INTERNAL_ATTRIBUTES = ("version", "gsi_all", "created_key", TTL_ATTRIBUTE)
_FLOAT_FIELDS = ("created_at", "updated_at", "started_at", "finished_at", "heartbeat_at", "progress")
_UNFINISHED = tuple(s for s in JobState if s not in FINAL_STATES)


def created_key(created_at, job_id):
    """Sort key of both GSIs: ``"0000001700000000.000000#<job_id>"``.

    Fixed width, so string order is (created_at, job_id) order for any
    created_at from 0 to 10**13 s."""
    return f"{float(created_at):020.6f}#{job_id}"


class DynamoDBJobStore(SeparateEventLog, DynamoDBTable, VersionedJobStore):
    """Jobs in the DynamoDB table ``settings.DYNAMODB_JOB_TABLE`` (see the
    module docstring for its design).

    ``reactor`` runs the boto3 calls' thread pool and the waits between
    DescribeTable polls; ``clock`` (default: ``reactor``) provides
    ``seconds()`` for the jobs' times. With AWS_CREATE_RESOURCES the first
    operation runs ``ensure_resources()`` once (concurrent first operations
    wait for that one run). Every method returns a Deferred; AWS errors
    other than the ones named arrive as ``botocore.exceptions.ClientError``.
    """

    what = "nommer's jobs"
    setting = "DYNAMODB_JOB_TABLE"
    key = "job_id"

    def __init__(self, settings, reactor, clock=None):
        self._open(settings, reactor, settings.DYNAMODB_JOB_TABLE, "dynamodb-store")
        self.ttl_s = settings.DYNAMODB_JOB_TTL_S
        self._clock = clock or reactor
        #: The event logs' table, its calls made in this store's pool.
        self.events = DynamoDBEventLog(settings, reactor, pool=self.aws, max_events=settings.MAX_EVENTS_PER_JOB,
                                       ttl_s=self.ttl_s)

    # --- items ------------------------------------------------------------

    def _to_item(self, job, version):
        """The DynamoDB item (attribute-value map) for ``job`` at ``version``."""
        doc = job.to_dict()
        if doc.get("owner") is None:
            doc.pop("owner", None)  # a GSI key may not be NULL: no owner, no attribute
        doc.update(version=version, gsi_all=GSI_ALL_VALUE,
                   created_key=created_key(job.created_at, job.job_id))
        if self.ttl_s is not None and job.is_final and job.finished_at is not None:
            doc[TTL_ATTRIBUTE] = int(job.finished_at + self.ttl_s)
        return dump_item(doc)

    @staticmethod
    def _from_item(item):
        """(Job, version) of a DynamoDB item."""
        doc = load_item(item, floats=_FLOAT_FIELDS)
        version = int(doc.pop("version", 0))
        for name in INTERNAL_ATTRIBUTES:
            doc.pop(name, None)
        return Job.from_dict(doc), version

    # --- VersionedJobStore ------------------------------------------------

    async def _insert(self, job):
        return await condition_held(self._call("put_item", TableName=self.table, Item=self._to_item(job, 1),
                                               ConditionExpression="attribute_not_exists(job_id)"), CONDITION_FAILED)

    async def _fetch(self, job_id):
        result = await self._call("get_item", TableName=self.table, Key=self._key(job_id), ConsistentRead=True)
        if "Item" not in result:
            raise NoSuchJob(job_id)
        return self._from_item(result["Item"])

    async def _replace(self, job, version):
        return await condition_held(self._call(
            "put_item", TableName=self.table, Item=self._to_item(job, version + 1), ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"}, ExpressionAttributeValues={":v": {"N": str(version)}}),
            CONDITION_FAILED)

    # --- JobStore -----------------------------------------------------------

    @deferred
    async def list(self, state=None, limit=50, cursor=None, owner=None):
        """Deferred[(jobs, next_cursor)]: at most ``limit`` jobs newest first
        (all, or those in ``state``, of ``owner`` if given) after ``cursor``;
        ``next_cursor`` is None on the last page. A bad cursor (or limit < 1)
        raises ValueError."""
        limit = page_limit(limit)
        after = decode_cursor(cursor) if cursor is not None else None
        state = JobState(state) if state is not None else None
        extra = {}
        if owner is not None:
            index, names, values = GSI_BY_OWNER, {"#p": "owner"}, {":p": {"S": str(owner)}}
            if state is not None:
                names["#s"] = "job_state"
                values[":s"] = {"S": state.value}
                extra["FilterExpression"] = "#s = :s"
        elif state is None:
            index, names, values = GSI_BY_TIME, {"#p": "gsi_all"}, {":p": {"S": GSI_ALL_VALUE}}
        else:
            index, names, values = GSI_BY_STATE, {"#p": "job_state"}, {":p": {"S": state.value}}
        condition = "#p = :p"
        if after is not None:
            condition += " AND #k < :k"
            names["#k"] = "created_key"
            values[":k"] = {"S": created_key(*after)}
        kwargs = dict(IndexName=index, KeyConditionExpression=condition, ExpressionAttributeNames=names,
                      ExpressionAttributeValues=values, ScanIndexForward=False, **extra)
        items = []
        while len(items) <= limit:
            result = await self._call("query", TableName=self.table, Limit=limit + 1 - len(items), **kwargs)
            items.extend(result.get("Items", []))
            if "LastEvaluatedKey" not in result:
                break
            kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        jobs = [self._from_item(item)[0] for item in items[:limit + 1]]
        next_cursor = None
        if len(jobs) > limit:
            jobs = jobs[:limit]
            next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].job_id)
        return jobs, next_cursor

    @deferred
    async def list_unfinished(self):
        """Deferred[list[Job]]: every job not in a final state, oldest first
        (one ``by_state`` Query per unfinished state)."""
        await self._ready()
        per_state = await gather(
            self._items("query", IndexName=GSI_BY_STATE, KeyConditionExpression="job_state = :s",
                        ExpressionAttributeValues={":s": {"S": s.value}}) for s in _UNFINISHED)
        items = [item for items in per_state for item in items]
        items.sort(key=lambda item: item["created_key"]["S"])
        return [self._from_item(item)[0] for item in items]

    @deferred
    async def count_unfinished(self, owner):
        """Deferred[int]: jobs of ``owner`` (a key_id) not in a final state
        (a ``by_state`` ``Select=COUNT`` Query per unfinished state, filtered
        on ``owner``)."""
        await self._ready()
        return sum(await gather(self._count(s, owner) for s in _UNFINISHED))

    @deferred
    async def count_by_state(self):
        """Deferred[dict[str, int]]: state name -> number of jobs, states
        with no job left out (a ``Select=COUNT`` Query per state)."""
        await self._ready()
        counts = await gather(self._count(s) for s in JobState)
        return {s.value: n for s, n in zip(JobState, counts) if n}

    async def _count(self, state, owner=None):
        kwargs = dict(IndexName=GSI_BY_STATE, Select="COUNT",
                      KeyConditionExpression="job_state = :s", ExpressionAttributeValues={":s": {"S": state.value}})
        if owner is not None:
            kwargs["FilterExpression"] = "#o = :o"
            kwargs["ExpressionAttributeNames"] = {"#o": "owner"}
            kwargs["ExpressionAttributeValues"][":o"] = {"S": str(owner)}
        return sum(page.get("Count", 0) for page in await self._pages("query", **kwargs))

    # --- resources ----------------------------------------------------------

    @staticmethod
    def _gsi(name, partition):
        return {"IndexName": name,
                "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"},
                              {"AttributeName": "created_key", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}

    def _table_spec(self):
        """CreateTable arguments: the key, the three GSIs, on-demand billing."""
        return dict(
            TableName=self.table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                                  for n in ("job_id", "gsi_all", "job_state", "created_key", "owner")],
            KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[self._gsi(GSI_BY_TIME, "gsi_all"), self._gsi(GSI_BY_STATE, "job_state"),
                                    self._gsi(GSI_BY_OWNER, "owner")])

    async def _add_owner_index(self):
        """On a table made before ``owner`` existed (no ``by_owner`` index),
        add the index (UpdateTable; ``_ensure_table`` then waits until it is
        ACTIVE). Returns a line or None."""
        table = await self._describe()
        if table is None:
            return None
        if GSI_BY_OWNER in {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}:
            return None
        try:
            await self.aws.call("dynamodb", "update_table", TableName=self.table,
                                # Every key attribute, not only the new index's: moto replaces the list.
                                AttributeDefinitions=self._table_spec()["AttributeDefinitions"],
                                GlobalSecondaryIndexUpdates=[{"Create": self._gsi(GSI_BY_OWNER, "owner")}])
        except Exception as exc:
            # Another process added it meanwhile (or is adding it): fine if it is there now.
            if error_code(exc) not in ("ResourceInUseException", "ValidationException", "LimitExceededException"):
                raise
            table = await self._describe()
            if GSI_BY_OWNER not in {i["IndexName"] for i in (table or {}).get("GlobalSecondaryIndexes", [])}:
                raise
            return None
        return f"added index {GSI_BY_OWNER} to DynamoDB table {self.table}"

    async def ensure_resources(self):
        """Create the job table (with both GSIs) if missing and wait until
        it is ACTIVE; check an existing table's keys and indexes; enable TTL
        when DYNAMODB_JOB_TTL_S is set; add the ``by_owner`` index to a table
        made before it; then the same for the event table
        (``DynamoDBEventLog.ensure_resources``). Returns lines for a person,
        e.g. ``["created DynamoDB table nommer_jobs", "created DynamoDB
        table nommer_jobs_events"]``. Raises TableSetupError when an
        existing table has another shape (every problem named)."""
        added = await self._add_owner_index()
        lines = await self._ensure_table()
        if added:
            lines.insert(0, added)
        if self.ttl_s is not None:
            line = await ensure_ttl(self.aws, self.table)
            if line:
                lines.append(line)
        lines += await self.events.ensure_resources()
        self._resources_ok = True
        return lines
