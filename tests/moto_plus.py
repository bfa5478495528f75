"""moto's server with the SimpleDB it lacks: test-only.

moto (5.x) serves SimpleDB only in part: CreateDomain, DeleteDomain,
ListDomains, GetAttributes and PutAttributes, with ``Expected`` ignored. No
offline SimpleDB exists, so this module patches moto's SimpleDB backend and
response classes, then runs moto's ordinary server; every other service is
untouched::

    python -m tests.moto_plus -H 127.0.0.1 -p 5000      # same options as moto.server

Added or replaced (the real boto3 ``sdb`` client parses every answer):

- ``CreateDomain`` (replaces moto's, which emptied an existing domain):
  idempotent.
- ``PutAttributes`` (replaces moto's): ``Replace``, duplicate name/value pairs
  stored once, ``Expected`` (conditional put), SimpleDB's limits: names and
  values at most 1024 bytes, at most 256 pairs per call and per item.
- ``GetAttributes`` (replaces moto's, which created an empty item on every
  read of an unknown name).
- ``DeleteAttributes``: whole item, named attributes, or one name/value pair;
  ``Expected``.
- ``BatchPutAttributes``, ``BatchDeleteAttributes``: at most 25 items, no
  item twice (``DuplicateItemName``).
- ``Select``: ``select * | itemName() | count(*) | a, b, ...
  from `domain` [where ...] [order by attr|itemName() [asc|desc]] [limit n]``.
  Predicates: ``= != <> > >= < <=``, ``[not] like`` (``%`` at either end,
  ``\\%`` a literal percent), ``[not] between .. and ..``, ``[not] in (...)``,
  ``is [not] null``, ``every(attr)``, ``itemName()``; combined with ``and``,
  ``or``, ``not`` and parentheses. Comparisons are lexicographic on text; on
  a multi-valued attribute a predicate holds when any value satisfies it
  (all values under ``every()``). Keywords are case-insensitive; names that
  are not plain identifiers are quoted with backticks, strings with ' or "
  (the quote doubled inside). The sort attribute must appear in a predicate
  that is not ``is null`` (``InvalidQueryExpression`` otherwise, as
  SimpleDB). ``limit`` defaults to 100, at most 2500; a page also ends near
  1 MB. ``NextToken`` resumes after the last item returned (a token from
  another query is ``InvalidNextToken``). With an attribute list every
  matching item comes back with those of the attributes it has (maybe
  none). ``count(*)`` answers one item ``Domain`` with attribute ``Count``;
  it counts every match unless a limit is given.

``Expected`` (one condition, as SimpleDB): ``{Name, Value}`` (``Exists``
true or absent) requires the attribute to hold exactly that single value:
missing -> ``AttributeDoesNotExist`` (HTTP 404), several values ->
``MultiValuedAttribute`` (409), another value -> ``ConditionalCheckFailed``
(409). ``{Name, Exists: false}`` requires it absent, else
``ConditionalCheckFailed`` (409). ``Exists`` false with a ``Value`` is
``ExistsAndExpectedValue`` (400); ``Exists`` true without one is
``IncompleteExpectedExpression`` (400). Errors use SimpleDB's own XML shape
(``<Response><Errors><Error><Code>...``).

Not implemented: ``intersection``, ``DomainMetadata``, domain-wide quotas
(item count, bytes), eventual consistency (every read is consistent; the
``ConsistentRead`` flag is accepted and ignored), ``BoxUsage`` accounting,
base64 ``AlternateValueEncoding`` of values that are not valid XML, the
5-second query timeout.
"""

import base64
import functools
import hashlib
import json
import re
import sys
import threading
import uuid
from xml.sax.saxutils import escape

from moto.core.responses import ActionResult, EmptyResult
from moto.sdb import models, responses
from moto.sdb.exceptions import SDBError

MAX_BYTES = 1024              # a name or a value
MAX_PAIRS_PER_ITEM = 256      # name/value pairs, per item and per call
MAX_BATCH_ITEMS = 25
DEFAULT_LIMIT, MAX_LIMIT = 100, 2500
MAX_PAGE_BYTES = 1024 * 1024
MAX_PREDICATES = 20           # comparisons in one select expression
MAX_VALUE_TESTS = 20          # values in one in (...)

#: One lock for all SimpleDB state: a conditional put reads and writes atomically.
_LOCK = threading.RLock()


class SimpleDBError(Exception):
    """An error answered in SimpleDB's XML shape with its HTTP status."""

    def __init__(self, code, message, status=400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _error_response(code, message, status):
    body = ('<?xml version="1.0"?>\n<Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            "<BoxUsage>0.0000219907</BoxUsage></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>")
    return body, {"status": status, "Content-Type": "text/xml"}


def _answers_errors(method):
    """Response-method decorator: SimpleDB errors (ours and moto's) in SimpleDB's shape."""
    @functools.wraps(method)
    def wrapper(self):
        try:
            return method(self)
        except SimpleDBError as e:
            return _error_response(e.code, e.message, e.status)
        except SDBError as e:
            return _error_response(e.code, e.message, 400)
    return wrapper


# --- the data: moto's FakeDomain.items (name -> FakeItem with .attributes) -----------------


def _pairs(item):
    """(name, value) pairs of a FakeItem, in stored order."""
    return [(a["Name"], a["Value"]) for a in item.attributes]


def _values(item, name):
    return [v for n, v in _pairs(item) if n == name]


def _check_size(what, text):
    if len(text.encode("utf-8")) > MAX_BYTES:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise SimpleDBError("InvalidParameterValue",
                            f"Value ({shown}) for parameter {what} is invalid. "
                            f"Value exceeds maximum length of {MAX_BYTES}.")


def _check_expected(item, expected):
    """Raise as SimpleDB does unless ``item`` (a FakeItem or None) meets ``expected``."""
    if not expected:
        return
    name = expected.get("Name")
    if name is None:
        raise SimpleDBError("MissingParameter", "The request must contain the parameter Expected.Name.")
    exists = expected.get("Exists")
    if isinstance(exists, str):
        exists = exists.lower() == "true"
    value = expected.get("Value")
    if exists is False and value is not None:
        raise SimpleDBError("ExistsAndExpectedValue",
                            "Expected.Exists=false and Expected.Value cannot be specified together")
    if exists is not False and value is None:
        raise SimpleDBError("IncompleteExpectedExpression",
                            "If Expected.Exists=true or unspecified, then Expected.Value has to be specified")
    actual = _values(item, name) if item is not None else []
    if exists is False:
        if actual:
            raise SimpleDBError("ConditionalCheckFailed",
                                f"Conditional check failed. Attribute ({name}) value exists", 409)
        return
    if not actual:
        raise SimpleDBError("AttributeDoesNotExist", f"Attribute ({name}) does not exist", 404)
    if len(actual) > 1:
        raise SimpleDBError("MultiValuedAttribute",
                            f"Attribute ({name}) is multi-valued. Conditional check can only be "
                            "performed on a single-valued attribute", 409)
    if actual[0] != value:
        raise SimpleDBError("ConditionalCheckFailed",
                            f"Conditional check failed. Attribute ({name}) value is ({actual[0]}) "
                            f"but was expected ({value})", 409)


def _check_put(item_name, attributes):
    if not item_name:
        raise SimpleDBError("MissingParameter", "The request must contain the parameter ItemName.")
    _check_size("ItemName", item_name)
    if len(attributes) > MAX_PAIRS_PER_ITEM:
        raise SimpleDBError("NumberSubmittedAttributesExceeded",
                            f"Too many attributes for item {item_name} in a single call. "
                            f"Up to {MAX_PAIRS_PER_ITEM} attributes per call allowed.", 409)
    for attr in attributes:
        _check_size("Name", attr["Name"])
        _check_size("Value", attr["Value"])


def _apply_put(domain, item_name, attributes):
    """Store ``attributes`` (dicts Name/Value/Replace) on an item, atomically (caller locks)."""
    existing = domain.items.get(item_name)
    pairs = _pairs(existing) if existing is not None else []
    replaced = {a["Name"] for a in attributes if a.get("Replace")}
    pairs = [(n, v) for n, v in pairs if n not in replaced]
    for attr in attributes:
        pair = (attr["Name"], attr["Value"])
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > MAX_PAIRS_PER_ITEM:
        raise SimpleDBError("NumberItemAttributesExceeded",
                            f"Too many attributes in this item: {item_name}. "
                            f"Up to {MAX_PAIRS_PER_ITEM} name/value pairs allowed.", 409)
    item = models.FakeItem()
    item.attributes = [{"Name": n, "Value": v} for n, v in pairs]
    domain.items[item_name] = item


def _apply_delete(domain, item_name, attributes):
    """Delete named attributes (every value, or one pair when Value is given)
    or, with no attributes, the whole item. Deleting what is not there is no error."""
    existing = domain.items.get(item_name)
    if existing is None:
        return
    if not attributes:
        del domain.items[item_name]
        return
    whole = {a["Name"] for a in attributes if a.get("Value") is None}
    pairs = {(a["Name"], a["Value"]) for a in attributes if a.get("Value") is not None}
    kept = [(n, v) for n, v in _pairs(existing) if n not in whole and (n, v) not in pairs]
    if kept:
        existing.attributes = [{"Name": n, "Value": v} for n, v in kept]
    else:
        del domain.items[item_name]


def _check_batch(items):
    if len(items) > MAX_BATCH_ITEMS:
        raise SimpleDBError("NumberSubmittedItemsExceeded",
                            f"Too many items in a single call. Up to {MAX_BATCH_ITEMS} items per call allowed.",
                            409)
    seen = set()
    for item in items:
        name = item.get("Name")
        if name in seen:
            raise SimpleDBError("DuplicateItemName", f"Item {name} was specified more than once.")
        seen.add(name)


# --- backend methods (patched onto moto's SimpleDBBackend) -----------------------------------


def create_domain(self, domain_name):
    """Idempotent, as SimpleDB: an existing domain keeps its items (moto's replaced them)."""
    with _LOCK:
        self._validate_domain_name(domain_name)
        self.domains.setdefault(domain_name, models.FakeDomain(name=domain_name))


def get_attributes(self, domain_name, item_name, attribute_names):
    with _LOCK:
        self._validate_domain_name(domain_name)
        item = self._get_domain(domain_name).items.get(item_name)
        if item is None:
            return []
        return [dict(a) for a in item.get_attributes(attribute_names)]


def put_attributes(self, domain_name, item_name, attributes, expected=None):
    with _LOCK:
        self._validate_domain_name(domain_name)
        domain = self._get_domain(domain_name)
        _check_put(item_name, attributes)
        _check_expected(domain.items.get(item_name), expected)
        _apply_put(domain, item_name, attributes)


def delete_attributes(self, domain_name, item_name, attributes, expected=None):
    with _LOCK:
        self._validate_domain_name(domain_name)
        domain = self._get_domain(domain_name)
        _check_expected(domain.items.get(item_name), expected)
        _apply_delete(domain, item_name, attributes)


def batch_put_attributes(self, domain_name, items):
    with _LOCK:
        self._validate_domain_name(domain_name)
        domain = self._get_domain(domain_name)
        _check_batch(items)
        for item in items:
            _check_put(item.get("Name"), item.get("Attributes") or [])
        for item in items:
            _apply_put(domain, item["Name"], item.get("Attributes") or [])


def batch_delete_attributes(self, domain_name, items):
    with _LOCK:
        self._validate_domain_name(domain_name)
        domain = self._get_domain(domain_name)
        _check_batch(items)
        for item in items:
            _apply_delete(domain, item["Name"], item.get("Attributes") or [])


def select(self, expression, next_token=None):
    """(items as [{Name, Attributes}], next token or None) for a select expression."""
    query = parse_select(expression)
    with _LOCK:
        domain = self._get_domain(query.domain)
        snapshot = [(name, _pairs(item)) for name, item in domain.items.items() if item.attributes]
    return query.run(snapshot, next_token)


# --- Select: tokens, parser, evaluation ------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<name>`(?:[^`]|``)*`)
  | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
  | (?P<op>!=|<>|>=|<=|=|>|<|\(|\)|,|\*)
  | (?P<number>\d+(?![A-Za-z_$]))
  | (?P<word>[A-Za-z_$][A-Za-z0-9_$]*)
""", re.VERBOSE)

_KEYWORDS = {"select", "from", "where", "and", "or", "not", "like", "between", "in", "is", "null",
             "order", "by", "asc", "desc", "limit", "every", "intersection", "itemname", "count"}


def _invalid(message="The specified query expression syntax is not valid."):
    return SimpleDBError("InvalidQueryExpression", message)


def _tokens(expression):
    out, pos = [], 0
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if not m:
            raise _invalid(f"Invalid query expression near: {expression[pos:pos + 20]!r}")
        pos = m.end()
        kind, text = m.lastgroup, m.group()
        if kind == "space":
            continue
        if kind == "name":
            out.append(("name", text[1:-1].replace("``", "`")))
        elif kind == "string":
            q = text[0]
            out.append(("string", text[1:-1].replace(q + q, q)))
        elif kind == "word" and text.lower() in _KEYWORDS:
            out.append(("kw", text.lower()))
        elif kind == "word":
            out.append(("name", text))
        else:
            out.append((kind, text))
    out.append(("end", ""))
    return out


ITEM_NAME = ("itemName()",)   # the attribute reference to an item's name


class _Parser:
    def __init__(self, expression):
        self.toks = _tokens(expression)
        self.i = 0
        self.predicates = 0
        self.sortable = set()   # attributes in a predicate other than "is null"

    def peek(self, kind, text=None):
        k, t = self.toks[self.i]
        return k == kind and (text is None or t == text)

    def take(self, kind, text=None):
        if not self.peek(kind, text):
            k, t = self.toks[self.i]
            raise _invalid(f"Invalid query expression: expected {text or kind}, found {t or k!r}")
        tok = self.toks[self.i]
        self.i += 1
        return tok[1]

    def accept(self, kind, text=None):
        if self.peek(kind, text):
            self.i += 1
            return True
        return False

    def parse(self):
        q = Query()
        self.take("kw", "select")
        q.output = self.output()
        self.take("kw", "from")
        q.domain = self.take("name")
        if self.accept("kw", "where"):
            q.where = self.expr()
        if self.accept("kw", "order"):
            self.take("kw", "by")
            q.order = self.attribute()
            if self.accept("kw", "desc"):
                q.descending = True
            else:
                self.accept("kw", "asc")
            if q.order != ITEM_NAME and q.order not in self.sortable:
                raise _invalid("Invalid sort expression. The sort attribute must be present in at least "
                               "one of the predicates, and the predicate cannot contain the is null modifier.")
        if self.accept("kw", "limit"):
            q.limit = int(self.take("number"))
            if not 1 <= q.limit <= MAX_LIMIT:
                raise SimpleDBError("InvalidParameterValue",
                                    f"Value ({q.limit}) for parameter Limit is invalid. "
                                    f"Must be between 1 and {MAX_LIMIT}.")
            q.explicit_limit = True
        self.take("end")
        if self.predicates > MAX_PREDICATES:
            raise SimpleDBError("InvalidNumberPredicates", "Too many predicates in the query expression.")
        return q

    def output(self):
        if self.accept("op", "*"):
            return "*"
        if self.accept("kw", "count"):
            self.take("op", "(")
            self.take("op", "*")
            self.take("op", ")")
            return "count"
        if self.peek("kw", "itemname"):
            return self.attribute()
        names = [self.take("name")]
        while self.accept("op", ","):
            names.append(self.take("name"))
        return tuple(names)

    def attribute(self):
        if self.accept("kw", "itemname"):
            self.take("op", "(")
            self.take("op", ")")
            return ITEM_NAME
        return self.take("name")

    def expr(self):
        node = self.term()
        while self.accept("kw", "or"):
            node = ("or", node, self.term())
        return node

    def term(self):
        node = self.factor()
        while True:
            if self.accept("kw", "and"):
                node = ("and", node, self.factor())
            elif self.peek("kw", "intersection"):
                raise _invalid("intersection is not supported by moto_plus")
            else:
                return node

    def factor(self):
        if self.accept("kw", "not"):
            return ("not", self.factor())
        if self.accept("op", "("):
            node = self.expr()
            self.take("op", ")")
            return node
        return self.predicate()

    def value(self):
        return self.take("string")

    def predicate(self):
        self.predicates += 1
        every = self.accept("kw", "every")
        if every:
            self.take("op", "(")
            attr = self.take("name")
            self.take("op", ")")
        else:
            attr = self.attribute()
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.take("kw", "null")
            if negate:
                self.sortable.add(attr)
            return ("null", attr, not negate)
        self.sortable.add(attr)
        negate = self.accept("kw", "not")
        if self.accept("kw", "like"):
            test = ("like", _like_regex(self.value()))
        elif self.accept("kw", "between"):
            low = self.value()
            self.take("kw", "and")
            test = ("between", low, self.value())
        elif self.accept("kw", "in"):
            self.take("op", "(")
            values = [self.value()]
            while self.accept("op", ","):
                values.append(self.value())
            self.take("op", ")")
            if len(values) > MAX_VALUE_TESTS:
                raise SimpleDBError("InvalidNumberValueTests", "Too many value tests in one predicate.")
            test = ("in", frozenset(values))
        elif negate:
            raise _invalid("Invalid query expression: 'not' must precede like, between or in")
        else:
            op = self.take("op")
            if op not in ("=", "!=", "<>", ">", ">=", "<", "<="):
                raise _invalid(f"Invalid comparison operator {op!r}")
            test = ("cmp", "!=" if op == "<>" else op, self.value())
        return ("test", attr, every, negate, test)


def _like_regex(pattern):
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("\\%", i):
            parts.append(re.escape("%"))
            i += 2
        elif pattern[i] == "%":
            parts.append(".*")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts), re.DOTALL)


_CMP = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


def _value_passes(value, test):
    kind = test[0]
    if kind == "cmp":
        return _CMP[test[1]](value, test[2])
    if kind == "like":
        return test[1].fullmatch(value) is not None
    if kind == "between":
        return test[1] <= value <= test[2]
    return value in test[1]          # in


def _attr_values(name, pairs, attr):
    if attr == ITEM_NAME:
        return [name]
    return [v for n, v in pairs if n == attr]


def _matches(node, name, pairs):
    kind = node[0]
    if kind == "and":
        return _matches(node[1], name, pairs) and _matches(node[2], name, pairs)
    if kind == "or":
        return _matches(node[1], name, pairs) or _matches(node[2], name, pairs)
    if kind == "not":
        return not _matches(node[1], name, pairs)
    if kind == "null":
        return (not _attr_values(name, pairs, node[1])) == node[2]
    _, attr, every, negate, test = node
    values = _attr_values(name, pairs, attr)
    results = [_value_passes(v, test) != negate for v in values]
    return bool(results) and (all(results) if every else any(results))


class Query:
    """A parsed select expression; ``run`` evaluates it on a snapshot of a domain."""

    def __init__(self):
        self.output, self.domain, self.where = "*", None, None
        self.order, self.descending = None, False
        self.limit, self.explicit_limit = DEFAULT_LIMIT, False

    def fingerprint(self):
        """Identifies the query, limit aside, so a NextToken cannot resume another one."""
        shape = repr((self.output, self.domain, self.where, self.order, self.descending))
        return hashlib.sha256(shape.encode()).hexdigest()[:16]

    def _position(self, name, pairs):
        """Sort position of an item, or None when it lacks the sort attribute."""
        if self.order is None:
            return (name, name)
        values = _attr_values(name, pairs, self.order)
        if not values:
            return None
        return (max(values) if self.descending else min(values), name)

    def _token_position(self, token):
        try:
            data = json.loads(base64.b64decode(token.encode(), validate=True))
            if data["q"] != self.fingerprint():
                raise ValueError("another query")
            return tuple(data["after"])
        except Exception:
            raise SimpleDBError("InvalidNextToken", "The specified next token is not valid.") from None

    def run(self, snapshot, next_token=None):
        rows = []
        for name, pairs in snapshot:
            if self.where is not None and not _matches(self.where, name, pairs):
                continue
            position = self._position(name, pairs)
            if position is not None:
                rows.append((position, name, pairs))
        rows.sort(key=lambda r: r[0], reverse=self.descending)
        if next_token:
            after = self._token_position(next_token)
            if self.descending:
                rows = [r for r in rows if r[0] < after]
            else:
                rows = [r for r in rows if r[0] > after]
        if self.output == "count":
            counted = rows[:self.limit] if self.explicit_limit else rows
            token = self._token(counted[-1][0]) if len(counted) < len(rows) else None
            return [{"Name": "Domain", "Attributes": [{"Name": "Count", "Value": str(len(counted))}]}], token
        page, size = [], 0
        for position, name, pairs in rows:
            if len(page) == self.limit or (page and size > MAX_PAGE_BYTES):
                break
            if self.output == "*":
                shown = pairs
            elif self.output == ITEM_NAME:
                shown = []
            else:
                shown = [(n, v) for n, v in pairs if n in self.output]
            page.append((position, {"Name": name, "Attributes": [{"Name": n, "Value": v} for n, v in shown]}))
            size += len(name.encode()) + sum(len(n.encode()) + len(v.encode()) for n, v in shown)
        token = self._token(page[-1][0]) if len(page) < len(rows) else None
        return [item for _, item in page], token

    def _token(self, position):
        raw = json.dumps({"q": self.fingerprint(), "after": list(position)})
        return base64.b64encode(raw.encode()).decode()


def parse_select(expression):
    """A ``Query`` for a SimpleDB select expression; raises SimpleDBError."""
    if not expression:
        raise SimpleDBError("MissingParameter", "The request must contain the parameter SelectExpression.")
    return _Parser(expression).parse()


# --- response methods (patched onto moto's SimpleDBResponse) ---------------------------------


def _r_get_attributes(self):
    attributes = self.sdb_backend.get_attributes(
        domain_name=self._get_param("DomainName"), item_name=self._get_param("ItemName"),
        attribute_names=self._get_param("AttributeNames"))
    return ActionResult({"Attributes": attributes})


def _r_put_attributes(self):
    self.sdb_backend.put_attributes(
        domain_name=self._get_param("DomainName"), item_name=self._get_param("ItemName"),
        attributes=self._get_param("Attributes") or [], expected=self._get_param("Expected"))
    return EmptyResult()


def _r_delete_attributes(self):
    self.sdb_backend.delete_attributes(
        domain_name=self._get_param("DomainName"), item_name=self._get_param("ItemName"),
        attributes=self._get_param("Attributes") or [], expected=self._get_param("Expected"))
    return EmptyResult()


def _r_batch_put_attributes(self):
    self.sdb_backend.batch_put_attributes(domain_name=self._get_param("DomainName"),
                                          items=self._get_param("Items") or [])
    return EmptyResult()


def _r_batch_delete_attributes(self):
    self.sdb_backend.batch_delete_attributes(domain_name=self._get_param("DomainName"),
                                             items=self._get_param("Items") or [])
    return EmptyResult()


def _r_select(self):
    items, token = self.sdb_backend.select(self._get_param("SelectExpression"),
                                           next_token=self._get_param("NextToken"))
    result = {"Items": items}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


_BACKEND_METHODS = {
    "create_domain": create_domain, "get_attributes": get_attributes, "put_attributes": put_attributes,
    "delete_attributes": delete_attributes, "batch_put_attributes": batch_put_attributes,
    "batch_delete_attributes": batch_delete_attributes, "select": select,
}
_RESPONSE_METHODS = {
    "get_attributes": _r_get_attributes, "put_attributes": _r_put_attributes,
    "delete_attributes": _r_delete_attributes, "batch_put_attributes": _r_batch_put_attributes,
    "batch_delete_attributes": _r_batch_delete_attributes, "select": _r_select,
}


def install():
    """Patch moto's SimpleDB classes in this process (idempotent)."""
    for name, fn in _BACKEND_METHODS.items():
        setattr(models.SimpleDBBackend, name, fn)
    for name, fn in _RESPONSE_METHODS.items():
        setattr(responses.SimpleDBResponse, name, _answers_errors(fn))
    for name in ("create_domain", "delete_domain", "list_domains"):
        original = getattr(responses.SimpleDBResponse, name)
        if not getattr(original, "_moto_plus", False):
            wrapped = _answers_errors(original)
            wrapped._moto_plus = True
            setattr(responses.SimpleDBResponse, name, wrapped)


def main(argv=None):
    install()
    from moto import server
    server.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
