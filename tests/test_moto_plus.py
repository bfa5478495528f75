"""The SimpleDB that tests/moto_plus.py adds to moto, through the real boto3 ``sdb`` client."""

import boto3
import botocore.config
from botocore.exceptions import ClientError
from twisted.trial.unittest import TestCase

from tests.aws_server import moto_endpoint, reset_moto

D = "things"


def client(validate=True):
    """A boto3 SimpleDB client on the test server. ``validate=False`` lets
    requests the botocore model forbids through (DeleteAttributes by name
    only, which SimpleDB accepts)."""
    config = botocore.config.Config(parameter_validation=validate, retries={"max_attempts": 1})
    return boto3.client("sdb", endpoint_url=moto_endpoint(), region_name="us-east-1", config=config)


class MotoPlusCase(TestCase):
    def setUp(self):
        reset_moto()
        self.sdb = client()
        self.sdb.create_domain(DomainName=D)

    def put(self, item, replace=True, **attrs):
        self.sdb.put_attributes(DomainName=D, ItemName=item, Attributes=[
            {"Name": n, "Value": v, "Replace": replace} for n, v in attrs.items()])

    def attrs(self, item):
        """The item's attributes as sorted (name, value) pairs."""
        got = self.sdb.get_attributes(DomainName=D, ItemName=item, ConsistentRead=True)
        return sorted((a["Name"], a["Value"]) for a in got.get("Attributes", []))

    def names(self, expression, **kw):
        return [i["Name"] for i in self.sdb.select(SelectExpression=expression, **kw).get("Items", [])]

    def error(self, call, **kw):
        """(code, HTTP status) of the ClientError ``call(**kw)`` raises."""
        with self.assertRaises(ClientError) as caught:
            call(**kw)
        response = caught.exception.response
        return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


class SelectTests(MotoPlusCase):
    def setUp(self):
        super().setUp()
        self.sdb.batch_put_attributes(DomainName=D, Items=[
            {"Name": "a", "Attributes": [{"Name": "n", "Value": "01"}, {"Name": "color", "Value": "red"},
                                         {"Name": "tag", "Value": "x"}, {"Name": "tag", "Value": "y"}]},
            {"Name": "b", "Attributes": [{"Name": "n", "Value": "02"}, {"Name": "color", "Value": "blue"},
                                         {"Name": "tag", "Value": "y"}]},
            {"Name": "c", "Attributes": [{"Name": "n", "Value": "03"}, {"Name": "color", "Value": "it's red"}]},
            {"Name": "d", "Attributes": [{"Name": "n", "Value": "10"}, {"Name": "odd.name", "Value": "50%"}]},
        ])

    def test_comparisons(self):
        """= != <> > >= < <= compare text lexicographically."""
        self.assertEqual(self.names(f"select * from {D} where n = '02'"), ["b"])
        self.assertEqual(self.names(f"select * from {D} where n != '02'"), ["a", "c", "d"])
        self.assertEqual(self.names(f"select * from {D} where n <> '02'"), ["a", "c", "d"])
        self.assertEqual(self.names(f"select * from {D} where n > '02'"), ["c", "d"])
        self.assertEqual(self.names(f"select * from {D} where n >= '02'"), ["b", "c", "d"])
        self.assertEqual(self.names(f"select * from {D} where n < '03'"), ["a", "b"])
        self.assertEqual(self.names(f"select * from {D} where n <= '03'"), ["a", "b", "c"])
        self.assertEqual(self.names(f"select * from {D} where n > '1'"), ["d"])

    def test_like_between_in_null(self):
        """like (% either end, \\% literal), between, in, is [not] null, and their negations."""
        self.assertEqual(self.names(f"select * from {D} where color like 'r%'"), ["a"])
        self.assertEqual(self.names(f"select * from {D} where color like '%red'"), ["a", "c"])
        self.assertEqual(self.names(f"select * from {D} where color like '%u%'"), ["b"])
        self.assertEqual(self.names(f"select * from {D} where color not like '%red'"), ["b"])
        self.assertEqual(self.names(f"select * from {D} where `odd.name` like '50\\%'"), ["d"])
        self.assertEqual(self.names(f"select * from {D} where n between '02' and '03'"), ["b", "c"])
        self.assertEqual(self.names(f"select * from {D} where n not between '02' and '03'"), ["a", "d"])
        self.assertEqual(self.names(f"select * from {D} where n in ('01', '10', '99')"), ["a", "d"])
        self.assertEqual(self.names(f"select * from {D} where color is null"), ["d"])
        self.assertEqual(self.names(f"select * from {D} where tag is not null"), ["a", "b"])

    def test_boolean_logic_and_quoting(self):
        """and binds tighter than or; not and parentheses; quotes doubled; keywords any case."""
        self.assertEqual(self.names(f"select * from {D} where n = '01' or n = '02' and color = 'red'"), ["a"])
        self.assertEqual(self.names(f"select * from {D} where (n = '01' or n = '02') and color = 'blue'"), ["b"])
        self.assertEqual(self.names(f"select * from {D} where not color = 'red' and n < '10'"), ["b", "c"])
        self.assertEqual(self.names(f"select * from {D} where color = 'it''s red'"), ["c"])
        self.assertEqual(self.names(f'SELECT * FROM `{D}` WHERE color = "it\'s red"'), ["c"])

    def test_multi_valued_attributes_and_every(self):
        """A predicate holds if any value does; every() needs all of them."""
        self.assertEqual(self.names(f"select * from {D} where tag = 'x'"), ["a"])
        self.assertEqual(self.names(f"select * from {D} where tag != 'x'"), ["a", "b"])
        self.assertEqual(self.names(f"select * from {D} where every(tag) = 'y'"), ["b"])

    def test_item_name_and_outputs(self):
        """itemName() in predicates and output; attribute lists; count(*)."""
        self.assertEqual(self.names(f"select * from {D} where itemName() in ('b', 'c')"), ["b", "c"])
        items = self.sdb.select(SelectExpression=f"select itemName() from {D} where n > '02'")["Items"]
        self.assertEqual(items, [{"Name": "c"}, {"Name": "d"}])
        items = self.sdb.select(SelectExpression=f"select color, `odd.name` from {D} where n >= '03'")["Items"]
        self.assertEqual([(i["Name"], i["Attributes"]) for i in items],
                         [("c", [{"Name": "color", "Value": "it's red"}]),
                          ("d", [{"Name": "odd.name", "Value": "50%"}])])
        count = self.sdb.select(SelectExpression=f"select count(*) from {D} where tag is not null")["Items"]
        self.assertEqual(count, [{"Name": "Domain", "Attributes": [{"Name": "Count", "Value": "2"}]}])

    def test_order_by(self):
        """order by asc/desc on an attribute in a predicate, or on itemName()."""
        self.assertEqual(self.names(f"select * from {D} where n > '' order by n desc"), ["d", "c", "b", "a"])
        self.assertEqual(self.names(f"select * from {D} where n is not null order by n asc"), ["a", "b", "c", "d"])
        self.assertEqual(self.names(f"select * from {D} where color > '' order by color"), ["b", "c", "a"])
        self.assertEqual(self.names(f"select * from {D} order by itemName() desc"), ["d", "c", "b", "a"])

    def test_order_by_needs_a_predicate(self):
        """Sorting on an attribute no predicate names (or only 'is null') is refused, as SimpleDB does."""
        for expression in (f"select * from {D} order by n",
                           f"select * from {D} where color = 'red' order by n",
                           f"select * from {D} where n is null order by n"):
            self.assertEqual(self.error(self.sdb.select, SelectExpression=expression),
                             ("InvalidQueryExpression", 400))

    def test_bad_expressions(self):
        """Syntax errors, unknown domains and out-of-range limits are SimpleDB's errors."""
        cases = {f"select * from {D} where": "InvalidQueryExpression",
                 f"select * {D}": "InvalidQueryExpression",
                 f"select * from {D} where n = 02": "InvalidQueryExpression",
                 f"select * from {D} where n = '1' intersection n = '2'": "InvalidQueryExpression",
                 "select * from missing": "NoSuchDomain",
                 f"select * from {D} limit 2501": "InvalidParameterValue",
                 f"select * from {D} where n in ({', '.join(repr(str(i)) for i in range(21))})":
                     "InvalidNumberValueTests",
                 f"select * from {D} where " + " or ".join(f"n = '{i}'" for i in range(21)):
                     "InvalidNumberPredicates"}
        for expression, code in cases.items():
            self.assertEqual(self.error(self.sdb.select, SelectExpression=expression)[0], code, expression)


class PagingTests(MotoPlusCase):
    def setUp(self):
        super().setUp()
        for start in range(0, 60, 25):
            self.sdb.batch_put_attributes(DomainName=D, Items=[
                {"Name": f"i{k:02d}", "Attributes": [{"Name": "k", "Value": f"{k:02d}"}]}
                for k in range(start, min(start + 25, 60))])

    def test_next_token_pages_in_order(self):
        """limit pages through a sorted result; NextToken resumes after the last item."""
        expression = f"select * from {D} where k >= '10' order by k desc limit 15"
        seen, token = [], None
        while True:
            page = self.sdb.select(SelectExpression=expression, **({"NextToken": token} if token else {}))
            self.assertLessEqual(len(page.get("Items", [])), 15)
            seen += [i["Name"] for i in page.get("Items", [])]
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(seen, [f"i{k:02d}" for k in range(59, 9, -1)])

    def test_default_limit_is_100_and_tokens_are_per_query(self):
        """Without limit a page holds at most 100 items; a token only resumes its own query."""
        for k in range(60, 130, 25):
            self.sdb.batch_put_attributes(DomainName=D, Items=[
                {"Name": f"i{j:03d}", "Attributes": [{"Name": "k", "Value": f"{j:03d}"}]}
                for j in range(k, min(k + 25, 130))])
        page = self.sdb.select(SelectExpression=f"select itemName() from {D}")
        self.assertEqual(len(page["Items"]), 100)
        rest = self.sdb.select(SelectExpression=f"select itemName() from {D}", NextToken=page["NextToken"])
        self.assertEqual(len(rest["Items"]), 30)
        self.assertNotIn("NextToken", rest)
        self.assertEqual(self.error(self.sdb.select, SelectExpression=f"select * from {D} where k > '5'",
                                    NextToken=page["NextToken"]), ("InvalidNextToken", 400))
        self.assertEqual(self.error(self.sdb.select, SelectExpression=f"select * from {D}",
                                    NextToken="not-a-token"), ("InvalidNextToken", 400))

    def test_count_with_limit_pages(self):
        """count(*) counts every match; with a limit it counts in pages that add up."""
        expression = f"select count(*) from {D} where k < '50'"
        whole = self.sdb.select(SelectExpression=expression)
        self.assertEqual(whole["Items"][0]["Attributes"], [{"Name": "Count", "Value": "50"}])
        self.assertNotIn("NextToken", whole)
        first = self.sdb.select(SelectExpression=expression + " limit 20")
        self.assertEqual(first["Items"][0]["Attributes"][0]["Value"], "20")
        total, token = 20, first["NextToken"]
        while token:
            page = self.sdb.select(SelectExpression=expression + " limit 20", NextToken=token)
            total += int(page["Items"][0]["Attributes"][0]["Value"])
            token = page.get("NextToken")
        self.assertEqual(total, 50)


class ConditionalWriteTests(MotoPlusCase):
    def test_expected_value(self):
        """Expected {Name, Value}: the put lands only when the attribute holds that value."""
        self.put("j", version="1", state="PENDING")
        self.sdb.put_attributes(DomainName=D, ItemName="j", Expected={"Name": "version", "Value": "1"},
                                Attributes=[{"Name": "version", "Value": "2", "Replace": True},
                                            {"Name": "state", "Value": "DONE", "Replace": True}])
        self.assertEqual(self.attrs("j"), [("state", "DONE"), ("version", "2")])
        stale = dict(DomainName=D, ItemName="j", Expected={"Name": "version", "Value": "1"},
                     Attributes=[{"Name": "state", "Value": "ENCODING", "Replace": True}])
        self.assertEqual(self.error(self.sdb.put_attributes, **stale), ("ConditionalCheckFailed", 409))
        self.assertEqual(self.attrs("j"), [("state", "DONE"), ("version", "2")])

    def test_expected_missing_attribute_or_item(self):
        """Expecting a value of an attribute (or item) that does not exist is AttributeDoesNotExist, 404."""
        self.put("j", state="PENDING")
        for item in ("j", "nothing-here"):
            self.assertEqual(self.error(self.sdb.put_attributes, DomainName=D, ItemName=item,
                                        Attributes=[{"Name": "a", "Value": "b"}],
                                        Expected={"Name": "version", "Value": "1"}),
                             ("AttributeDoesNotExist", 404))
        self.assertEqual(self.attrs("nothing-here"), [])

    def test_expected_not_exists(self):
        """Exists=false: creates once, then ConditionalCheckFailed."""
        create = dict(DomainName=D, ItemName="new", Attributes=[{"Name": "version", "Value": "1"}],
                      Expected={"Name": "version", "Exists": False})
        self.sdb.put_attributes(**create)
        self.assertEqual(self.error(self.sdb.put_attributes, **create), ("ConditionalCheckFailed", 409))
        self.assertEqual(self.attrs("new"), [("version", "1")])

    def test_expected_malformed_or_multi_valued(self):
        """Exists=false with a Value, Exists=true without one, and multi-valued attributes are refused."""
        self.put("j", replace=False, tag="x")
        self.put("j", replace=False, tag="y")
        put = dict(DomainName=D, ItemName="j", Attributes=[{"Name": "a", "Value": "b"}])
        self.assertEqual(self.error(self.sdb.put_attributes, Expected={"Name": "tag", "Value": "x", "Exists": False},
                                    **put), ("ExistsAndExpectedValue", 400))
        self.assertEqual(self.error(self.sdb.put_attributes, Expected={"Name": "tag", "Exists": True}, **put),
                         ("IncompleteExpectedExpression", 400))
        self.assertEqual(self.error(self.sdb.put_attributes, Expected={"Name": "tag", "Value": "x"}, **put),
                         ("MultiValuedAttribute", 409))
        self.assertEqual(self.attrs("j"), [("tag", "x"), ("tag", "y")])

    def test_conditional_delete(self):
        """DeleteAttributes honours Expected like PutAttributes."""
        self.put("j", version="2", state="DONE")
        delete = dict(DomainName=D, ItemName="j", Attributes=[{"Name": "state", "Value": "DONE"}])
        self.assertEqual(self.error(self.sdb.delete_attributes, Expected={"Name": "version", "Value": "1"},
                                    **delete), ("ConditionalCheckFailed", 409))
        self.sdb.delete_attributes(Expected={"Name": "version", "Value": "2"}, **delete)
        self.assertEqual(self.attrs("j"), [("version", "2")])


class WriteTests(MotoPlusCase):
    def test_replace_and_multi_values(self):
        """Without Replace values accumulate (an identical pair once); Replace keeps one."""
        self.put("j", replace=False, tag="x")
        self.put("j", replace=False, tag="x")
        self.put("j", replace=False, tag="y")
        self.assertEqual(self.attrs("j"), [("tag", "x"), ("tag", "y")])
        self.put("j", tag="z")
        self.assertEqual(self.attrs("j"), [("tag", "z")])

    def test_delete_attributes(self):
        """Delete one pair, a whole attribute by name, or the whole item; absent things are no error."""
        self.put("j", replace=False, tag="x", a="1", b="2")
        self.put("j", replace=False, tag="y")
        self.sdb.delete_attributes(DomainName=D, ItemName="j", Attributes=[{"Name": "tag", "Value": "x"}])
        self.assertEqual(self.attrs("j"), [("a", "1"), ("b", "2"), ("tag", "y")])
        client(validate=False).delete_attributes(DomainName=D, ItemName="j", Attributes=[{"Name": "a"}])
        self.assertEqual(self.attrs("j"), [("b", "2"), ("tag", "y")])
        self.sdb.delete_attributes(DomainName=D, ItemName="j", Attributes=[{"Name": "zz", "Value": "0"}])
        self.sdb.delete_attributes(DomainName=D, ItemName="j")
        self.assertEqual(self.attrs("j"), [])
        self.assertEqual(self.names(f"select * from {D}"), [])
        self.sdb.delete_attributes(DomainName=D, ItemName="never-was")

    def test_item_without_attributes_is_gone(self):
        """Deleting an item's last attribute removes the item from Select."""
        self.put("j", a="1")
        self.sdb.delete_attributes(DomainName=D, ItemName="j", Attributes=[{"Name": "a", "Value": "1"}])
        self.assertEqual(self.names(f"select itemName() from {D}"), [])

    def test_batch_put_and_delete(self):
        """Batch calls write and delete several items; duplicates and more than 25 items are refused."""
        self.sdb.batch_put_attributes(DomainName=D, Items=[
            {"Name": f"i{k}", "Attributes": [{"Name": "k", "Value": str(k)}, {"Name": "x", "Value": "1"}]}
            for k in range(5)])
        self.assertEqual(self.names(f"select itemName() from {D}"), [f"i{k}" for k in range(5)])
        self.sdb.batch_delete_attributes(DomainName=D, Items=[
            {"Name": "i0"}, {"Name": "i1", "Attributes": [{"Name": "x", "Value": "1"}]}])
        self.assertEqual(self.names(f"select itemName() from {D}"), ["i1", "i2", "i3", "i4"])
        self.assertEqual(self.attrs("i1"), [("k", "1")])
        self.assertEqual(self.error(self.sdb.batch_put_attributes, DomainName=D, Items=[
            {"Name": "dup", "Attributes": [{"Name": "a", "Value": "1"}]},
            {"Name": "dup", "Attributes": [{"Name": "a", "Value": "2"}]}]), ("DuplicateItemName", 400))
        self.assertEqual(self.error(self.sdb.batch_put_attributes, DomainName=D, Items=[
            {"Name": f"m{k}", "Attributes": [{"Name": "a", "Value": "1"}]} for k in range(26)]),
            ("NumberSubmittedItemsExceeded", 409))
        self.assertEqual(self.names(f"select itemName() from {D} where itemName() like 'm%' or a > ''"), [])

    def test_simpledb_limits(self):
        """Values over 1024 bytes and more than 256 pairs (per call or per item) are refused."""
        self.assertEqual(self.error(self.sdb.put_attributes, DomainName=D, ItemName="j",
                                    Attributes=[{"Name": "a", "Value": "é" * 513}]),
                         ("InvalidParameterValue", 400))
        self.put("j", a="é" * 512)
        self.assertEqual(self.attrs("j"), [("a", "é" * 512)])
        too_many = [{"Name": f"a{k}", "Value": "v"} for k in range(257)]
        self.assertEqual(self.error(self.sdb.put_attributes, DomainName=D, ItemName="j", Attributes=too_many),
                         ("NumberSubmittedAttributesExceeded", 409))
        self.sdb.put_attributes(DomainName=D, ItemName="j", Attributes=too_many[:200])
        self.assertEqual(self.error(self.sdb.put_attributes, DomainName=D, ItemName="j",
                                    Attributes=too_many[200:]), ("NumberItemAttributesExceeded", 409))
        self.assertEqual(len(self.attrs("j")), 201)

    def test_create_domain_is_idempotent(self):
        """CreateDomain on an existing domain keeps its items (moto's own emptied it)."""
        self.put("j", a="1")
        self.sdb.create_domain(DomainName=D)
        self.assertEqual(self.attrs("j"), [("a", "1")])

    def test_other_services_untouched(self):
        """The same server still speaks SQS (moto's own)."""
        sqs = boto3.client("sqs", endpoint_url=moto_endpoint(), region_name="us-east-1")
        url = sqs.create_queue(QueueName="moto-plus-check")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        self.assertEqual(sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"], "hello")
