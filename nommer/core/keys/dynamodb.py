"""KeyStore on a DynamoDB table of its own, DYNAMODB_KEY_TABLE (default
``nommer_api_keys``): PAY_PER_REQUEST, key ``key_id`` (S). One item per key::

    key_id       S   "3f9c0a1b2c3d4e5f"
    secret_hash  S   SHA-256 hex of the secret (the secret is never written)
    name         S
    scopes       SS  {"read", "submit"}
    created_at   N   epoch seconds
    revoked_at   N   epoch seconds; absent while the key is active

``create`` is a conditional PutItem (a key_id drawn twice is drawn again);
``revoke`` an UpdateItem ``SET revoked_at = if_not_exists(revoked_at, :now)``
on the condition the item exists; ``list`` a consistent Scan (a table of tens
of keys: a page), ``any_active`` one that stops at the first active key. ``authenticate`` is a consistent
GetItem, its answers cached CACHE_TTL_S (5 s, see ``nommer.core.keys.cache``).
"""

from nommer.core.aws.dynamodb import CONDITION_FAILED, DynamoDBTable
from nommer.core.aws.pool import condition_held, error_code
from nommer.core.deferreds import deferred
from nommer.core.keys.base import ApiKey, KeyStore, NoSuchKey
from nommer.core.keys.cache import CACHE_TTL_S, AuthCache


def _number(value):
    return {"N": repr(float(value))}


def to_item(key, secret_hash):
    """The DynamoDB item of ``key`` (its secret's hash beside it)."""
    item = {"key_id": {"S": key.key_id}, "secret_hash": {"S": secret_hash}, "name": {"S": key.name},
            "scopes": {"SS": sorted(key.scopes)}, "created_at": _number(key.created_at)}
    if key.revoked_at is not None:
        item["revoked_at"] = _number(key.revoked_at)
    return item


def from_item(item):
    """The ApiKey of an item (its hash left out)."""
    revoked = item.get("revoked_at")
    return ApiKey(key_id=item["key_id"]["S"], name=item["name"]["S"], scopes=frozenset(item["scopes"]["SS"]),
                  created_at=float(item["created_at"]["N"]),
                  revoked_at=float(revoked["N"]) if revoked and "N" in revoked else None)


class DynamoDBKeyStore(DynamoDBTable, KeyStore):
    """API keys in ``settings.DYNAMODB_KEY_TABLE`` (see the module docstring).

    boto3 calls run in ``pool`` (an ``AWS``, left open by ``close``) or in
    this store's own pool; with AWS_CREATE_RESOURCES the table is created on
    first use. ``clock.seconds()`` (default ``reactor``) stamps the times and
    ages the cache. Every method returns a Deferred (see ``KeyStore``); a
    missing table is ``TableSetupError``, other AWS errors
    ``botocore.exceptions.ClientError``."""

    what = "the API keys"
    setting = "DYNAMODB_KEY_TABLE"
    key = "key_id"

    def __init__(self, settings, reactor, pool=None, clock=None, cache_ttl_s=CACHE_TTL_S):
        self._open(settings, reactor, settings.DYNAMODB_KEY_TABLE, "dynamodb-keys", pool=pool)
        self._clock = clock or reactor
        self._cache = AuthCache(self._clock, ttl_s=cache_ttl_s)

    async def _scan(self, first_only=False, **kwargs):
        """Items of a consistent Scan (only until a page holds some with ``first_only``)."""
        return await self._items("scan", first_only, ConsistentRead=True, **kwargs)

    # --- KeyStore ----------------------------------------------------------------------------

    async def _insert(self, key, secret_hash):
        return await condition_held(self._call("put_item", TableName=self.table, Item=to_item(key, secret_hash),
                                               ConditionExpression="attribute_not_exists(key_id)"), CONDITION_FAILED)

    async def _fetch(self, key_id):
        result = await self._call("get_item", TableName=self.table, Key=self._key(key_id), ConsistentRead=True)
        item = result.get("Item")
        return None if item is None else (from_item(item), item["secret_hash"]["S"])

    @deferred
    async def list(self):
        keys = [from_item(item) for item in await self._scan()]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    @deferred
    async def revoke(self, key_id):
        try:
            result = await self._call(
                "update_item", TableName=self.table, Key=self._key(key_id),
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="attribute_exists(key_id)",
                ExpressionAttributeValues={":now": _number(self._clock.seconds())}, ReturnValues="ALL_NEW")
        except Exception as exc:
            if error_code(exc) in CONDITION_FAILED:
                raise NoSuchKey(key_id) from None
            raise
        self._cache.forget_key(str(key_id))
        return from_item(result["Attributes"])

    @deferred
    async def any_active(self):
        # feederd asks this of anonymous requests while no key exists: stop at the first active key.
        return bool(await self._scan(first_only=True, FilterExpression="attribute_not_exists(revoked_at)",
                                     ProjectionExpression="key_id"))
