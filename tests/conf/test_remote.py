"""The workers' configuration in S3 (moto): no secret uploaded, loads back equal."""

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.conf.remote import render_nomconf, upload_nomconf, load_remote_settings
from nommer.core.aws import AWS
from tests.aws_server import aws_settings, moto_endpoint, reset_moto
from tests.helpers import ensure


class RemoteConfigTests(TestCase):

    def setUp(self):
        reset_moto()
        self.settings, self.root = aws_settings(
            self, AWS_ACCESS_KEY_ID="AKIAFEEDERD", AWS_SECRET_ACCESS_KEY="sekrit/feederd+key",
            MAX_ENCODING_JOBS_PER_WORKER=3, WORK_QUEUE_BACKEND="sqs", CONFIG_S3_BUCKET="nommer-config-test")

    def test_render_leaves_out_credentials_and_local_paths(self):
        """The rendered nomconf has the settings workers need and no credential or local path."""
        text = render_nomconf(self.settings)
        self.assertIn("MAX_ENCODING_JOBS_PER_WORKER = 3", text)
        self.assertIn("WORK_QUEUE_BACKEND = 'sqs'", text)
        for absent in ("AKIAFEEDERD", "sekrit", "AWS_SECRET_ACCESS_KEY", "DATA_DIR", self.root):
            self.assertNotIn(absent, text)

    @ensure
    async def test_upload_then_load_on_a_worker(self):
        """What feederd publishes, a worker loads back with the same values."""
        aws = AWS(self.settings, reactor, name="test")
        self.addCleanup(aws.close)
        uri = await upload_nomconf(aws, self.settings)
        self.assertEqual(uri, "s3://nommer-config-test/nomconf.py")
        old = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = moto_endpoint()
        self.addCleanup(lambda: os.environ.__setitem__("AWS_ENDPOINT_URL", old) if old
                        else os.environ.pop("AWS_ENDPOINT_URL", None))
        loaded = load_remote_settings(uri, cwd=self.root)
        self.assertEqual(loaded.MAX_ENCODING_JOBS_PER_WORKER, 3)
        self.assertEqual(loaded.WORK_QUEUE_BACKEND, "sqs")
        self.assertIsNone(loaded.AWS_SECRET_ACCESS_KEY)
        body = aws.client("s3").get_object(Bucket="nommer-config-test", Key="nomconf.py")["Body"].read()
        self.assertNotIn(b"sekrit", body)
