"""WorkerRegistry on a DynamoDB table of its own, DYNAMODB_WORKER_TABLE
(default ``nommer_workers``): PAY_PER_REQUEST, key ``worker_id`` (S), one
item per worker holding ``WorkerRecord.to_dict()`` (floats as Decimal, None
as NULL, ``jobs`` as a list; no index).

``list`` and ``forget_older_than`` Scan the table: it holds one small item
per worker (tens, at most a few hundred), so a Scan is a page or two and
cheaper than keeping an index. Reads are consistent.
"""

from nommer.core.aws.dynamodb import CONDITION_FAILED, DynamoDBTable, dump_item, dynamo_number, load_item
from nommer.core.aws.pool import condition_held
from nommer.core.deferreds import deferred
from nommer.core.worker_registry.base import WorkerRecord, WorkerRegistry

_FLOAT_FIELDS = ("started_at", "last_seen", "encode_seconds_total", "media_seconds_total", "last_encode_speed")


def to_item(record):
    """The DynamoDB item (attribute-value map) of a WorkerRecord."""
    return dump_item(record.to_dict())


def from_item(item):
    """The WorkerRecord of a DynamoDB item (times, seconds and speeds back as
    float, ``recent_encodes`` too: DynamoDB keeps ``2.0`` as ``2``)."""
    doc = load_item(item, floats=_FLOAT_FIELDS)
    if isinstance(doc.get("recent_encodes"), list):
        doc["recent_encodes"] = [[None if v is None else float(v) for v in entry]
                                 for entry in doc["recent_encodes"]]
    return WorkerRecord.from_dict(doc)


class DynamoDBWorkerRegistry(DynamoDBTable, WorkerRegistry):
    """Worker records in ``settings.DYNAMODB_WORKER_TABLE`` (see the module
    docstring). Its own boto3 thread pool; with AWS_CREATE_RESOURCES the
    table is created on first use. Every method returns a Deferred (see
    ``WorkerRegistry``); a missing table is ``TableSetupError``, other AWS
    errors ``botocore.exceptions.ClientError``. ``list`` orders ties of
    ``last_seen`` by worker_id."""

    what = "the worker registry"
    setting = "DYNAMODB_WORKER_TABLE"
    key = "worker_id"

    def __init__(self, settings, reactor):
        self._open(settings, reactor, settings.DYNAMODB_WORKER_TABLE, "dynamodb-registry")

    async def _scan(self, **kwargs):
        """Every item of a consistent Scan."""
        return await self._items("scan", ConsistentRead=True, **kwargs)

    @deferred
    async def heartbeat(self, record):
        await self._call("put_item", TableName=self.table, Item=to_item(record))

    @deferred
    async def get(self, worker_id):
        result = await self._call("get_item", TableName=self.table, Key=self._key(worker_id), ConsistentRead=True)
        if "Item" not in result:
            raise KeyError(worker_id)
        return from_item(result["Item"])

    @deferred
    async def list(self):
        records = [from_item(item) for item in await self._scan()]
        return sorted(records, key=lambda r: (-r.last_seen, r.worker_id))

    @deferred
    async def remove(self, worker_id):
        await self._call("delete_item", TableName=self.table, Key=self._key(worker_id))

    @deferred
    async def forget_older_than(self, t):
        """Scan for records seen before ``t``, then delete each on the
        condition that it still is (a worker that heartbeated meanwhile
        stays). Deferred[int]: how many were deleted."""
        t = float(t)
        deleted = 0
        for key in await self._older_than(t):
            if await condition_held(self._call("delete_item", TableName=self.table, Key=key,
                                               ConditionExpression="last_seen < :t",
                                               ExpressionAttributeValues={":t": dynamo_number(t)}), CONDITION_FAILED):
                deleted += 1
        return deleted

    async def _older_than(self, t):
        """The keys of the records seen before ``t``: what ``forget_older_than`` deletes if they still are."""
        return await self._scan(FilterExpression="last_seen < :t", ProjectionExpression="worker_id",
                                ExpressionAttributeValues={":t": dynamo_number(t)})
