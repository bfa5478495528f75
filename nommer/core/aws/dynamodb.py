"""DynamoDB for the job store, the worker registry and the API key store:
one table used through an ``AWS`` pool (``DynamoDBTable``) and the
conversion of JSON-able documents to items and back.

``DynamoDBTable`` creates its table when missing (``_table_spec()``, waiting
on reactor timers until it and its indexes are ACTIVE), refuses an existing
table of another shape naming every problem and the setting to change
(``TableSetupError``), turns a table that vanished into ``TableSetupError``
too, and follows LastEvaluatedKey through Scans and Queries.

Numbers: DynamoDB keeps a number's value, not its spelling (``2.0`` is
stored as ``2``): ``load_item`` gives ints for integral numbers, floats for
the others and for the fields it is told hold floats.
"""

import decimal
import math

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from nommer.core.aws.pool import error_code
from nommer.core.aws.resource import AWSResource
from nommer.core.retry import retry

#: Polling of DescribeTable while a table or index is being created: first
#: delay, largest delay and give-up time, seconds.
WAIT_FIRST_S = 0.5
WAIT_MAX_S = 5.0
WAIT_TIMEOUT_S = 600.0

#: The error code of a write whose ConditionExpression did not hold (a tuple, as ``condition_held`` takes codes).
CONDITION_FAILED = ("ConditionalCheckFailedException",)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class TableSetupError(Exception):
    """A table is missing (and AWS_CREATE_RESOURCES is off), does not have
    the shape its store needs, or did not become ACTIVE in time."""


class _NotActive(Exception):
    """The table is not ACTIVE yet (``status``: its TableStatus, or
    "missing"): polled again by ``_wait_active``."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def to_dynamo(value):
    """A JSON-able value as boto3's TypeSerializer takes it: floats become
    Decimal (their shortest repr, exact on the way back); NaN and infinities,
    which DynamoDB cannot hold, raise ValueError."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store the number {value!r}")
        return decimal.Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value):
    """Inverse of ``to_dynamo`` on a deserialized value: Decimal -> int when
    integral, else float."""
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


def dump_item(doc):
    """The DynamoDB item (attribute-value map) of a JSON-able dict (``to_dynamo`` on each value)."""
    return {k: _serializer.serialize(to_dynamo(v)) for k, v in doc.items()}


def load_item(item, floats=()):
    """Inverse of ``dump_item``: the dict an item holds (``from_dynamo``),
    with the fields named in ``floats`` as float when not None."""
    doc = from_dynamo({k: _deserializer.deserialize(v) for k, v in item.items()})
    for name in floats:
        if doc.get(name) is not None:
            doc[name] = float(doc[name])
    return doc


def dynamo_number(value):
    """A number as a DynamoDB attribute value (``{"N": ...}``), for expressions."""
    return _serializer.serialize(to_dynamo(value))


class DynamoDBTable(AWSResource):
    """One DynamoDB table used through an ``AWS`` pool. A subclass sets
    ``what`` (what the table holds, for messages), ``setting`` (the setting
    naming it) and ``key`` (the name of its partition key, type S), and calls
    ``_open(settings, reactor, table, name, pool=None)`` (see
    ``AWSResource`` for the pool and the lazy set-up). The table by default
    is PAY_PER_REQUEST with only that key; a subclass that needs more
    overrides ``_table_spec()`` and ``ensure_resources()``.
    """

    what = "nommer's data"
    setting = None
    key = None

    def _open(self, settings, reactor, table, name, pool=None):
        self._open_pool(settings, reactor, name, pool)
        self.table = table

    def _key(self, value):
        """The Key of the item whose partition key is ``value``."""
        return {self.key: {"S": str(value)}}

    def _table_spec(self):
        """CreateTable arguments: on-demand billing, the key ``self.key`` (S)."""
        return dict(TableName=self.table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": self.key, "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": self.key, "KeyType": "HASH"}])

    async def ensure_resources(self):
        """Create the table if missing (and wait until ACTIVE) or check the
        key of an existing one. Returns lines for a person, e.g.
        ``["created DynamoDB table nommer_workers"]``; TableSetupError when
        an existing table has another key."""
        lines = await self._ensure_table()
        self._resources_ok = True
        return lines

    async def _call(self, method, **kwargs):
        """One DynamoDB call in the pool, after the lazy set-up; a missing
        table becomes ``TableSetupError``."""
        await self._ready()
        try:
            return await self.aws.call("dynamodb", method, **kwargs)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise TableSetupError(
                    f"DynamoDB table {self.table} does not exist: run `nommer aws setup` or set "
                    f"AWS_CREATE_RESOURCES = True") from exc
            raise

    async def _pages(self, method, enough=None, **kwargs):
        """The result pages of a Scan or Query (``method``) of this table,
        following LastEvaluatedKey to the end, or until ``enough(pages)``
        (the pages so far) is true."""
        pages = []
        while True:
            pages.append(await self._call(method, TableName=self.table, **kwargs))
            if "LastEvaluatedKey" not in pages[-1] or (enough is not None and enough(pages)):
                return pages
            kwargs["ExclusiveStartKey"] = pages[-1]["LastEvaluatedKey"]

    async def _items(self, method, first_only=False, **kwargs):
        """Every item a Scan or Query returns (only until a page holds some
        with ``first_only``)."""
        enough = (lambda pages: any(p.get("Items") for p in pages)) if first_only else None
        return [item for page in await self._pages(method, enough, **kwargs) for item in page.get("Items", [])]

    async def _describe(self):
        """The table's description, or None when it does not exist."""
        try:
            return (await self.aws.call("dynamodb", "describe_table", TableName=self.table))["Table"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise

    def _problems(self, table):
        """What keeps an existing table from having ``_table_spec()``'s key
        and global secondary indexes (list of str)."""
        spec = self._table_spec()
        types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
        problems = []

        def keys(schema):
            return [(k["AttributeName"], k["KeyType"]) for k in schema]

        def key_types_ok(schema):
            return all(types.get(k["AttributeName"]) == "S" for k in schema)

        if keys(table.get("KeySchema", [])) != keys(spec["KeySchema"]) or not key_types_ok(table["KeySchema"]):
            expected = ", ".join(f"{n} ({t}, type S)" for n, t in keys(spec["KeySchema"]))
            problems.append(f"its key is {keys(table.get('KeySchema', []))}, not {expected}")
        indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
        for want in spec.get("GlobalSecondaryIndexes", []):
            have = indexes.get(want["IndexName"])
            expected = ", ".join(f"{n} ({t}, type S)" for n, t in keys(want["KeySchema"]))
            if have is None:
                problems.append(f"it has no global secondary index {want['IndexName']} on {expected}")
            elif keys(have["KeySchema"]) != keys(want["KeySchema"]) or not key_types_ok(have["KeySchema"]):
                problems.append(f"its index {want['IndexName']} is keyed {keys(have['KeySchema'])}, "
                                f"not {expected}")
            elif have.get("Projection", {}).get("ProjectionType") != "ALL":
                problems.append(f"its index {want['IndexName']} does not project ALL attributes")
        return problems

    async def _wait_active(self):
        """Poll DescribeTable (reactor timers between polls, growing from
        WAIT_FIRST_S to WAIT_MAX_S) until the table and its indexes are
        ACTIVE; TableSetupError after WAIT_TIMEOUT_S. Returns the description."""
        async def active():
            table = await self._describe()
            if table is not None and table.get("TableStatus") == "ACTIVE" and all(
                    i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in table.get("GlobalSecondaryIndexes", [])):
                return table
            raise _NotActive(table.get("TableStatus") if table else "missing")

        try:
            return await retry(active, clock=self.reactor, backoff_s=WAIT_FIRST_S, max_backoff_s=WAIT_MAX_S,
                               deadline_s=WAIT_TIMEOUT_S, retry_on=_NotActive)
        except _NotActive as e:
            raise TableSetupError(f"DynamoDB table {self.table} not ACTIVE after {WAIT_TIMEOUT_S:.0f} s "
                                  f"(status {e.status})") from None

    async def _ensure_table(self):
        """Create the table (``_table_spec()``) if missing and wait until it
        is ACTIVE; check an existing table's key and indexes. Returns lines
        for a person (``["created DynamoDB table nommer_jobs"]`` or ``[...
        exists]``). Raises TableSetupError when an existing table has another
        shape (every problem named)."""
        table = await self._describe()
        line = f"DynamoDB table {self.table} exists"
        if table is None:
            try:
                await self.aws.call("dynamodb", "create_table", **self._table_spec())
                line = f"created DynamoDB table {self.table}"
            except Exception as exc:
                if error_code(exc) != "ResourceInUseException":  # created meanwhile by another process
                    raise
        table = await self._wait_active()
        problems = self._problems(table)
        if problems:
            raise TableSetupError(f"DynamoDB table {self.table} cannot hold {self.what}: " + "; ".join(problems)
                                  + f". Delete it or set {self.setting} to another name.")
        return [line]
