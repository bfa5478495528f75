"""``setup_resources`` (``nommer aws setup``) for the job store and worker registry, against moto.
The SQS and S3 part is covered end to end in tests/e2e/test_e2e_aws.py."""

import boto3
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.aws_setup import setup_resources
from nommer.core.aws.dynamodb import TableSetupError
from tests.aws_server import aws_settings, moto_endpoint, reset_moto
from tests.helpers import ensure


def client(service):
    return boto3.client(service, endpoint_url=moto_endpoint(), region_name="us-east-1")


class SetupResourcesTests(TestCase):
    def setUp(self):
        reset_moto()

    @ensure
    async def test_dynamodb_creates_job_worker_and_key_tables_then_checks_them(self):
        """The three tables (and the jobs' event table) are created, then found; nothing else is
        touched with the local queue."""
        settings, _ = aws_settings(self, JOB_STORE_BACKEND="dynamodb", DYNAMODB_JOB_TABLE="jobs_t",
                                   DYNAMODB_WORKER_TABLE="workers_t", DYNAMODB_KEY_TABLE="keys_t")
        self.assertEqual(await setup_resources(settings, reactor),
                         ["created DynamoDB table jobs_t", "created DynamoDB table jobs_t_events",
                          "created DynamoDB table workers_t", "created DynamoDB table keys_t"])
        self.assertEqual(await setup_resources(settings, reactor),
                         ["DynamoDB table jobs_t exists", "DynamoDB table jobs_t_events exists",
                          "DynamoDB table workers_t exists", "DynamoDB table keys_t exists"])
        table = client("dynamodb").describe_table(TableName="jobs_t_events")["Table"]
        self.assertEqual(table["KeySchema"], [{"AttributeName": "job_id", "KeyType": "HASH"},
                                              {"AttributeName": "seq", "KeyType": "RANGE"}])
        table = client("dynamodb").describe_table(TableName="workers_t")["Table"]
        self.assertEqual(table["KeySchema"], [{"AttributeName": "worker_id", "KeyType": "HASH"}])
        table = client("dynamodb").describe_table(TableName="keys_t")["Table"]
        self.assertEqual(table["KeySchema"], [{"AttributeName": "key_id", "KeyType": "HASH"}])
        self.assertEqual(table["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST")

    @ensure
    async def test_dynamodb_key_table_of_another_shape_is_an_error(self):
        """An existing key table keyed otherwise fails the setup, naming DYNAMODB_KEY_TABLE."""
        settings, _ = aws_settings(self, JOB_STORE_BACKEND="dynamodb", DYNAMODB_KEY_TABLE="taken_keys")
        client("dynamodb").create_table(TableName="taken_keys", BillingMode="PAY_PER_REQUEST",
                                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await setup_resources(settings, reactor)
        self.assertIn("DYNAMODB_KEY_TABLE", str(raised.exception))

    @ensure
    async def test_dynamodb_worker_table_of_another_shape_is_an_error(self):
        """An existing worker table keyed otherwise fails the setup, naming the setting."""
        settings, _ = aws_settings(self, JOB_STORE_BACKEND="dynamodb", DYNAMODB_WORKER_TABLE="taken")
        client("dynamodb").create_table(TableName="taken", BillingMode="PAY_PER_REQUEST",
                                        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                                        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
        with self.assertRaises(TableSetupError) as raised:
            await setup_resources(settings, reactor)
        self.assertIn("DYNAMODB_WORKER_TABLE", str(raised.exception))

    @ensure
    async def test_simpledb_creates_the_three_domains(self):
        """The job domain (and its events' domain), the original's worker-state domain and the key
        domain are created (idempotently)."""
        settings, _ = aws_settings(self, JOB_STORE_BACKEND="simpledb")
        expected = ["SimpleDB domain media_nommer ready", "SimpleDB domain media_nommer_events ready",
                    "SimpleDB domain media_nommer_ec2nommer_state ready", "SimpleDB domain nommer_api_keys ready"]
        self.assertEqual(await setup_resources(settings, reactor), expected)
        self.assertEqual(await setup_resources(settings, reactor), expected)
        self.assertEqual(sorted(client("sdb").list_domains()["DomainNames"]),
                         ["media_nommer", "media_nommer_ec2nommer_state", "media_nommer_events",
                          "nommer_api_keys"])

    @ensure
    async def test_sqlite_needs_nothing(self):
        """With the SQLite store and the local queue there is nothing to set up on AWS."""
        settings, _ = aws_settings(self)
        self.assertEqual(await setup_resources(settings, reactor),
                         ["nothing to do: this configuration uses no AWS backend"])
