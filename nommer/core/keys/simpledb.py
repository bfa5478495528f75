"""KeyStore on a SimpleDB domain of its own, SIMPLEDB_KEY_DOMAIN (default
``nommer_api_keys``). One item per key, item name = key_id::

    secret_hash  SHA-256 hex of the secret (the secret is never written)
    name         the name as is (at most 200 characters: under SimpleDB's 1024 bytes)
    scopes       "cancel,read,submit" (sorted)
    created_at   "2023-11-14T22:13:20.000000Z 1700000000.0" (see ``time_text``:
                 text order = time order, then the exact epoch seconds)
    revoked_at   the same, absent while the key is active

``create`` is a PutAttributes on the condition that ``secret_hash`` is
absent (a key_id drawn twice is drawn again); ``revoke`` puts ``revoked_at``
on the condition that it is absent (the first revocation's time stays).
Reads are consistent. ``authenticate`` answers are cached CACHE_TTL_S (5 s,
see ``nommer.core.keys.cache``).
"""

from nommer.core.aws.pool import condition_held
from nommer.core.aws.simpledb import CONFLICT_CODES, SimpleDBDomain, replacing, time_text, time_value
from nommer.core.deferreds import deferred
from nommer.core.keys.base import ApiKey, KeyStore
from nommer.core.keys.cache import CACHE_TTL_S, AuthCache


def encode_key(key, secret_hash):
    """The attributes (dict name -> text) storing ``key`` and its secret's hash."""
    attrs = {"secret_hash": secret_hash, "name": key.name, "scopes": ",".join(sorted(key.scopes)),
             "created_at": time_text(key.created_at)}
    if key.revoked_at is not None:
        attrs["revoked_at"] = time_text(key.revoked_at)
    return attrs


def decode_key(key_id, attrs):
    """The ApiKey an item's attributes hold (its hash left out)."""
    revoked = attrs.get("revoked_at")
    return ApiKey(key_id=key_id, name=attrs["name"], scopes=frozenset(attrs["scopes"].split(",")),
                  created_at=time_value(attrs["created_at"]),
                  revoked_at=time_value(revoked) if revoked else None)


class SimpleDBKeyStore(SimpleDBDomain, KeyStore):
    """API keys in ``settings.SIMPLEDB_KEY_DOMAIN`` (see the module docstring).

    boto3 calls run in ``pool`` (an ``AWS``, left open by ``close``) or in
    this store's own pool; with AWS_CREATE_RESOURCES the domain is created on
    first use. ``clock.seconds()`` (default ``reactor``) stamps the times and
    ages the cache. Every method returns a Deferred (see ``KeyStore``); AWS
    failures are ``botocore.exceptions.ClientError`` (``NoSuchDomain`` for a
    missing domain)."""

    def __init__(self, settings, reactor, pool=None, clock=None, cache_ttl_s=CACHE_TTL_S):
        self._open_domain(settings, reactor, settings.SIMPLEDB_KEY_DOMAIN, "simpledb-keys", pool=pool)
        self._clock = clock or reactor
        self._cache = AuthCache(self._clock, ttl_s=cache_ttl_s)

    # --- KeyStore ----------------------------------------------------------------------------

    async def _insert(self, key, secret_hash):
        return await condition_held(self._call("put_attributes", ItemName=key.key_id,
                                               Attributes=replacing(encode_key(key, secret_hash)),
                                               Expected={"Name": "secret_hash", "Exists": False}), CONFLICT_CODES)

    async def _fetch(self, key_id):
        attrs = await self._read(key_id)
        if "secret_hash" not in attrs:
            return None
        return decode_key(str(key_id), attrs), attrs["secret_hash"]

    @deferred
    async def list(self):
        items = await self._select("*", "secret_hash is not null")
        keys = [decode_key(name, attrs) for name, attrs in items]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    @deferred
    async def revoke(self, key_id):
        key = await self.get(key_id)
        if key.active:
            # Revoked meanwhile (the condition fails): that time stays.
            await condition_held(self._call("put_attributes", ItemName=key.key_id,
                                            Attributes=replacing({"revoked_at": time_text(self._clock.seconds())}),
                                            Expected={"Name": "revoked_at", "Exists": False}), CONFLICT_CODES)
            key = await self.get(key_id)
        self._cache.forget_key(key.key_id)
        return key

    @deferred
    async def any_active(self):
        return bool(await self._select("itemName()", "secret_hash is not null and revoked_at is null", limit=1))
