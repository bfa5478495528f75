"""SimpleDB for the job store, the worker registry and the API key store:
one domain used through an ``AWS`` pool (``SimpleDBDomain``) and the way
values are written there.

Every attribute value is text of at most MAX_VALUE_BYTES (1024) bytes:

- times: ``time_text``, ``"2023-11-14T22:13:20.000000Z 1700000000.0"``,
  fixed-width UTC ISO 8601 (text order is time order, so Select compares
  them) then the exact epoch seconds; ``"null"`` for None.
- longer texts: ``chunked`` splits them over ``<name>.0`` .. ``<name>.<n-1>``
  and lists them in the ``chunks`` attribute (``"job_options=3 output=2"``);
  ``unchunked`` joins them again, ignoring chunks ``chunks`` does not name
  (stale ones of a longer earlier version).

Select expressions quote with ``quote`` (values) and ``quote_name``
(domains, attributes); ``select`` follows NextToken. SimpleDB answers a
conditional write that finds another value or no value with one of
CONFLICT_CODES.
"""

import datetime

from nommer.core.aws.resource import AWSResource

#: SimpleDB's limit on one attribute value (and name), bytes.
MAX_VALUE_BYTES = 1024
#: Most attributes one item of nommer's may use. An item holds 256
#: name/value pairs; a write must fit beside the previous version's
#: attributes until they are cleaned up, so one version gets under half.
MAX_ITEM_ATTRIBUTES = 120
#: Largest page SimpleDB's Select returns.
MAX_SELECT_LIMIT = 2500
#: Error codes of a conditional write (Expected) that did not hold: another
#: value is there, or none.
CONFLICT_CODES = ("ConditionalCheckFailed", "AttributeDoesNotExist")


def iso_fixed(epoch_s):
    """Epoch seconds -> ``"2023-11-14T22:13:20.000000Z"`` (UTC, microseconds,
    always 27 characters for years 1000-9999, so text order = time order)."""
    dt = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc)
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
            f"{dt.second:02d}.{dt.microsecond:06d}Z")


def time_text(epoch_s):
    """Epoch seconds (or None) as text whose order is time order:
    ``"2023-11-14T22:13:20.000000Z 1700000000.0"`` (``iso_fixed``, a space,
    the exact epoch seconds), or ``"null"``."""
    return "null" if epoch_s is None else f"{iso_fixed(epoch_s)} {float(epoch_s)!r}"


def time_value(text):
    """Inverse of ``time_text``: float epoch seconds or None."""
    return None if text == "null" else float(text.rsplit(" ", 1)[1])


def chunked(texts):
    """Attributes (dict name -> text, each at most MAX_VALUE_BYTES) holding
    ``texts`` (dict name -> ASCII text): a text longer than MAX_VALUE_BYTES
    is split over ``<name>.0`` .. ``<name>.<n-1>`` instead of ``<name>``, and
    the ``chunks`` attribute lists those (``"job_options=3 output=2"``, or "")."""
    attrs, split = {}, []
    for name, text in texts.items():
        if len(text) <= MAX_VALUE_BYTES:
            attrs[name] = text
            continue
        pieces = [text[i:i + MAX_VALUE_BYTES] for i in range(0, len(text), MAX_VALUE_BYTES)]
        attrs.update((f"{name}.{i}", piece) for i, piece in enumerate(pieces))
        split.append(f"{name}={len(pieces)}")
    attrs["chunks"] = " ".join(split)
    return attrs


def unchunked(attrs, names):
    """Inverse of ``chunked``: dict name -> text of those ``names`` that
    ``attrs`` holds (whole or in chunks); attributes ``chunks`` does not
    name (stale chunks of a longer earlier version) are ignored."""
    counts = dict(entry.split("=") for entry in attrs.get("chunks", "").split())
    texts = {}
    for name in names:
        if name in counts:
            texts[name] = "".join(attrs[f"{name}.{i}"] for i in range(int(counts[name])))
        elif name in attrs:
            texts[name] = attrs[name]
    return texts


def quote(value):
    """A SimpleDB Select string literal."""
    return "'" + value.replace("'", "''") + "'"


def quote_name(name):
    """A SimpleDB Select domain (or attribute) name."""
    return "`" + name.replace("`", "``") + "`"


def attributes_of(result):
    """The attributes of a GetAttributes result (or a Select item) as a dict name -> text."""
    return {a["Name"]: a["Value"] for a in result.get("Attributes", [])}


def replacing(attrs):
    """PutAttributes' ``Attributes`` putting each of ``attrs`` (dict name -> text) with Replace."""
    return [{"Name": n, "Value": v, "Replace": True} for n, v in attrs.items()]


def left_over(old, new):
    """DeleteAttributes' ``Attributes`` deleting those of ``old`` (dict name
    -> text, what an item held) that ``new`` (what replaced it) does not use."""
    return [{"Name": n, "Value": v} for n, v in old.items() if n not in new]


async def select(aws, expression, limit=None):
    """Items (list of (name, attrs dict)) of a consistent Select through
    ``aws`` (an ``AWS``), following NextToken until ``limit`` items (or all
    when None)."""
    items, token = [], None
    while True:
        kwargs = {"NextToken": token} if token else {}
        page = await aws.call("sdb", "select", SelectExpression=expression, ConsistentRead=True, **kwargs)
        items += [(i["Name"], attributes_of(i)) for i in page.get("Items", [])]
        token = page.get("NextToken")
        if not token or (limit is not None and len(items) >= limit):
            return items


class SimpleDBDomain(AWSResource):
    """One SimpleDB domain used through an ``AWS`` pool. A subclass calls
    ``_open_domain(settings, reactor, domain, name, pool=None)`` (see
    ``AWSResource`` for the pool and the lazy set-up: here, CreateDomain)."""

    def _open_domain(self, settings, reactor, domain, name, pool=None):
        self._open_pool(settings, reactor, name, pool)
        self._domain = domain

    async def ensure_resources(self):
        """Create the domain (CreateDomain is idempotent). Returns what was done,
        one line each: ``["SimpleDB domain media_nommer ready"]``."""
        await self.aws.call("sdb", "create_domain", DomainName=self._domain)
        self._resources_ok = True
        return [f"SimpleDB domain {self._domain} ready"]

    async def _call(self, method, **kwargs):
        """One SimpleDB call on the domain, after the lazy set-up."""
        await self._ready()
        return await self.aws.call("sdb", method, DomainName=self._domain, **kwargs)

    async def _read(self, item_name):
        """The item's attributes (dict name -> text, consistent read); {} if none."""
        return attributes_of(await self._call("get_attributes", ItemName=str(item_name), ConsistentRead=True))

    async def _select(self, what, where, order_by=None, limit=None, page_size=None):
        """Items (list of (name, attrs dict)) of ``select <what> from <the
        domain> where <where> [order by <order_by>]``, consistent: every
        one, or the first ``limit``. Pages hold ``page_size`` items (default:
        ``limit`` up to MAX_SELECT_LIMIT, else SimpleDB's 100)."""
        await self._ready()
        expression = f"select {what} from {quote_name(self._domain)} where {where}"
        if order_by is not None:
            expression += f" order by {order_by}"
        if page_size is None and limit is not None:
            page_size = min(int(limit), MAX_SELECT_LIMIT)
        if page_size is not None:
            expression += f" limit {page_size}"
        return await select(self.aws, expression, limit=limit)
