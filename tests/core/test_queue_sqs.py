"""SQSWorkQueue: the WorkQueue contract and SQS-specific behaviour, against a
moto server (real HTTP, real boto3). SQS keeps real time, so waits are real
and kept to a second or two; queues stay shallow (moto's receive slows with
depth)."""

import json
import time

from botocore.exceptions import ClientError
from botocore.stub import Stubber
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.workqueue import ReceiptHandleInvalid, dead_letter_name
from nommer.core.workqueue.sqs import (
    DEAD_LETTER_RETENTION_S, QueueSetupError, SQSWorkQueue, is_receipt_invalid)
from tests.aws_server import aws_settings, reset_moto
from tests.core.queue_contract import WorkQueueContract
from tests.helpers import ensure, eventually


class SQSWorkQueueTests(WorkQueueContract, TestCase):
    dead_letter_keeps_receive_count = True

    def setUp(self):
        reset_moto()
        self.settings, _ = aws_settings(self)
        super().setUp()

    def make_queue(self, clock, redrive):
        # SQS keeps real time: the test Clock cannot drive it (see advance).
        return SQSWorkQueue(self.settings, reactor, redrive=redrive)

    def advance(self, seconds):
        return task.deferLater(reactor, seconds, lambda: None)


class SQSOnlyTests(TestCase):

    def setUp(self):
        reset_moto()

    def make(self, **overrides):
        settings, _ = aws_settings(self, **overrides)
        queue = SQSWorkQueue.from_settings(settings, reactor)
        self.addCleanup(queue.close)
        return settings, queue

    async def attributes(self, queue, name, *names):
        url = (await queue.aws.call("sqs", "get_queue_url", QueueName=name))["QueueUrl"]
        return (await queue.aws.call("sqs", "get_queue_attributes", QueueUrl=url,
                                     AttributeNames=list(names)))["Attributes"]

    @ensure
    async def test_redrive_after_max_job_attempts(self):
        """A new-job message received MAX_JOB_ATTEMPTS times lands in the created DLQ on the next receive."""
        s, queue = self.make(MAX_JOB_ATTEMPTS=2)
        await queue.send(s.NEW_JOB_QUEUE_NAME, "job-1")
        for attempt in (1, 2):
            [m] = await queue.receive(s.NEW_JOB_QUEUE_NAME, visibility_timeout_s=1)
            self.assertEqual(m.receive_count, attempt)
            await task.deferLater(reactor, 1, lambda: None)
        self.assertEqual(await queue.receive(s.NEW_JOB_QUEUE_NAME), [])
        [dead] = await queue.receive(dead_letter_name(s.NEW_JOB_QUEUE_NAME))
        self.assertEqual(dead.body, "job-1")
        policy = json.loads((await self.attributes(queue, s.NEW_JOB_QUEUE_NAME, "RedrivePolicy"))["RedrivePolicy"])
        self.assertEqual(int(policy["maxReceiveCount"]), 2)
        self.assertTrue(policy["deadLetterTargetArn"].endswith(":" + dead_letter_name(s.NEW_JOB_QUEUE_NAME)))
        dlq = await self.attributes(queue, dead_letter_name(s.NEW_JOB_QUEUE_NAME), "MessageRetentionPeriod")
        self.assertEqual(int(dlq["MessageRetentionPeriod"]), DEAD_LETTER_RETENTION_S)

    @ensure
    async def test_long_poll_returns_as_soon_as_a_message_is_sent(self):
        """A receive long-polling 20 s returns within a moment of a send."""
        s, queue = self.make()
        q = s.STATE_CHANGE_QUEUE_NAME
        await queue.depth(q)  # the queue exists before the wait starts
        started = time.monotonic()
        waiting = defer.Deferred.fromCoroutine(queue.receive(q, max_messages=10, wait_time_s=20))
        await task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(waiting.called)
        await queue.send(q, "hello")
        got = await waiting
        self.assertEqual([m.body for m in got], ["hello"])
        self.assertLess(time.monotonic() - started, 3.0)

    @ensure
    async def test_cancel_waiting_receive_is_prompt_and_loses_nothing(self):
        """Cancelling a waiting receive fails it at once; a message the abandoned poll still takes is released."""
        s, queue = self.make()
        q = s.NEW_JOB_QUEUE_NAME
        await queue.depth(q)
        waiting = defer.Deferred.fromCoroutine(queue.receive(q, visibility_timeout_s=60, wait_time_s=20))
        await task.deferLater(reactor, 0.3, lambda: None)
        started = time.monotonic()
        waiting.cancel()
        with self.assertRaises(defer.CancelledError):
            await waiting
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(queue.calls_in_flight, 1)   # the abandoned long poll runs on
        await queue.send(q, "late")
        await eventually(lambda: queue.calls_in_flight == 0, timeout_s=10, what="the abandoned poll to end")
        [m] = await queue.receive(q)
        self.assertEqual(m.body, "late")
        self.assertEqual(m.receive_count, 2)  # the abandoned poll received it once, then let it go

    @ensure
    async def test_close_does_not_wait_for_an_abandoned_poll(self):
        """close() returns at once while a cancelled long poll still runs in its thread."""
        s, queue = self.make()
        q = s.STATE_CHANGE_QUEUE_NAME
        await queue.depth(q)
        waiting = defer.Deferred.fromCoroutine(queue.receive(q, wait_time_s=2))
        await task.deferLater(reactor, 0.2, lambda: None)
        waiting.cancel()
        with self.assertRaises(defer.CancelledError):
            await waiting
        started = time.monotonic()
        queue.close()
        self.assertLess(time.monotonic() - started, 0.2)
        with self.assertRaises(RuntimeError):
            await queue.send(q, "after close")

    @ensure
    async def test_invalid_and_deleted_receipt_handles(self):
        """Handles SQS never issued, or of a deleted message, raise ReceiptHandleInvalid."""
        s, queue = self.make()
        q = s.STATE_CHANGE_QUEUE_NAME
        with self.assertRaises(ReceiptHandleInvalid):
            await queue.delete(q, "not-a-receipt-handle")
        with self.assertRaises(ReceiptHandleInvalid):
            await queue.change_visibility(q, "not-a-receipt-handle", 10)
        await queue.send(q, "x")
        [m] = await queue.receive(q)
        await queue.delete(q, m.receipt_handle)
        with self.assertRaises(ReceiptHandleInvalid):
            await queue.change_visibility(q, m.receipt_handle, 10)   # moto: ReceiptHandleIsInvalid
        with self.assertRaises(ReceiptHandleInvalid):
            await queue.delete(q, m.receipt_handle)                  # moto accepts it; we know better

    def test_error_mapping(self):
        """SQS's ways of saying "stale receipt handle" map to ReceiptHandleInvalid; other errors do not."""
        self.assertTrue(is_receipt_invalid("ReceiptHandleIsInvalid"))
        self.assertTrue(is_receipt_invalid("AWS.SimpleQueueService.MessageNotInflight"))
        self.assertTrue(is_receipt_invalid(
            "InvalidParameterValue",
            "Value AQEB... for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."))
        self.assertTrue(is_receipt_invalid(
            "InvalidParameterValue", "Message does not exist or is not available for visibility timeout change."))
        self.assertFalse(is_receipt_invalid(
            "InvalidParameterValue", "Value 50000 for parameter VisibilityTimeout is invalid. Reason: Total "
            "VisibilityTimeout for the message is beyond the limit [43200 seconds]"))
        self.assertFalse(is_receipt_invalid("AWS.SimpleQueueService.NonExistentQueue", "receipt handle"))

    @ensure
    async def test_ensure_resources_creates_then_only_checks(self):
        """ensure_resources creates the DLQ, the job queue with its two other priority bands
        (_high, _low), the state-change queue and the redrives; a second run changes nothing."""
        s, queue = self.make()
        first = await queue.ensure_resources()
        created = [line for line in first if line.startswith("created")]
        self.assertEqual(len(created), 5, first)
        self.assertIn(dead_letter_name(s.NEW_JOB_QUEUE_NAME), created[0])   # the DLQ first
        for band in ("media_nommer_high", "media_nommer", "media_nommer_low"):
            self.assertIn(f"SQS queue {band} dead-letters to {dead_letter_name(s.NEW_JOB_QUEUE_NAME)} after 3 receives",
                          first)
        _, again = self.make()
        second = await again.ensure_resources()
        self.assertFalse([line for line in second if line.startswith("created")], second)
        self.assertEqual(len([line for line in second if line.startswith("checked")]), 5, second)

    @ensure
    async def test_ensure_resources_reports_a_missing_or_wrong_redrive(self):
        """An existing new-job queue without the redrive policy, or with another count, is a clear error."""
        s, queue = self.make()
        await queue.aws.call("sqs", "create_queue", QueueName=s.NEW_JOB_QUEUE_NAME)
        with self.assertRaises(QueueSetupError) as caught:
            await queue.ensure_resources()
        self.assertIn(f"SQS queue {s.NEW_JOB_QUEUE_NAME} has no redrive policy", str(caught.exception))
        self.assertIn("maxReceiveCount=3", str(caught.exception))
        _, five = self.make(MAX_JOB_ATTEMPTS=5)
        url = (await queue.aws.call("sqs", "get_queue_url", QueueName=s.NEW_JOB_QUEUE_NAME))["QueueUrl"]
        dlq = await self.attributes(queue, dead_letter_name(s.NEW_JOB_QUEUE_NAME), "QueueArn")
        await queue.aws.call("sqs", "set_queue_attributes", QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 3})})
        self.assertTrue(await queue.ensure_resources())
        with self.assertRaises(QueueSetupError) as caught:
            await five.ensure_resources()
        self.assertIn("after 3 receives, not 5", str(caught.exception))

    @ensure
    async def test_missing_queue_without_create_resources(self):
        """With AWS_CREATE_RESOURCES off a missing queue is a QueueSetupError naming it, and nothing is created."""
        s, queue = self.make(AWS_CREATE_RESOURCES=False)
        with self.assertRaises(QueueSetupError) as caught:
            await queue.send(s.NEW_JOB_QUEUE_NAME, "x")
        self.assertIn(f"SQS queue {s.NEW_JOB_QUEUE_NAME} does not exist", str(caught.exception))
        with self.assertRaises(ClientError):
            await queue.aws.call("sqs", "get_queue_url", QueueName=s.NEW_JOB_QUEUE_NAME)

    @ensure
    async def test_queue_deleted_under_us(self):
        """A queue deleted after its URL was cached fails once with QueueSetupError, then is created again."""
        s, queue = self.make()
        q = s.STATE_CHANGE_QUEUE_NAME
        await queue.send(q, "before")
        url = (await queue.aws.call("sqs", "get_queue_url", QueueName=q))["QueueUrl"]
        await queue.aws.call("sqs", "delete_queue", QueueUrl=url)
        with self.assertRaises(QueueSetupError):
            await queue.send(q, "lost")
        await queue.send(q, "after")
        self.assertEqual([m.body for m in await queue.receive(q, max_messages=10)], ["after"])

    @ensure
    async def test_batch_send_and_delete(self):
        """send_batch sends 23 bodies in chunks of 10; delete_batch deletes them and returns stale handles."""
        s, queue = self.make()
        q = s.STATE_CHANGE_QUEUE_NAME
        bodies = [f"m{i}" for i in range(23)]
        ids = await queue.send_batch(q, bodies)
        self.assertEqual(len(set(ids)), 23)
        got = []
        while len(got) < 23:
            batch = await queue.receive(q, max_messages=25, visibility_timeout_s=30)
            self.assertTrue(batch)
            self.assertLessEqual(len(batch), 10)
            got += batch
        self.assertEqual(sorted(m.body for m in got), sorted(bodies))
        self.assertEqual({m.message_id for m in got}, set(ids))
        stale = await queue.delete_batch(q, [m.receipt_handle for m in got] + ["bogus"])
        self.assertEqual(stale, ["bogus"])
        self.assertEqual(await queue.depth(q), {"visible": 0, "in_flight": 0, "delayed": 0})
        self.assertEqual(await queue.delete_batch(q, [got[0].receipt_handle]), [got[0].receipt_handle])

    @ensure
    async def test_sqs_limits_in_requests(self):
        """Requests respect SQS limits: 10 messages, 43200 s leases, 20 s polls, whole seconds rounded up."""
        s, queue = self.make()
        client = queue.aws.client("sqs")
        url = "https://sqs.us-east-1.amazonaws.com/123456789012/media_nommer_jstate"
        with Stubber(client) as stub:
            stub.add_response("get_queue_url", {"QueueUrl": url}, {"QueueName": s.STATE_CHANGE_QUEUE_NAME})
            stub.add_response("receive_message", {"Messages": []}, {
                "QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 43200, "WaitTimeSeconds": 1,
                "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"]})
            stub.add_response("change_message_visibility", {},
                              {"QueueUrl": url, "ReceiptHandle": "h", "VisibilityTimeout": 0})
            stub.add_response("change_message_visibility", {},
                              {"QueueUrl": url, "ReceiptHandle": "h", "VisibilityTimeout": 2})
            stub.add_response("send_message", {"MessageId": "id-1"},
                              {"QueueUrl": url, "MessageBody": "b", "DelaySeconds": 900})
            self.assertEqual(await queue.receive(s.STATE_CHANGE_QUEUE_NAME, max_messages=50,
                                                 visibility_timeout_s=99999, wait_time_s=0.4), [])
            await queue.change_visibility(s.STATE_CHANGE_QUEUE_NAME, "h", -5)
            await queue.change_visibility(s.STATE_CHANGE_QUEUE_NAME, "h", 1.2)
            self.assertEqual(await queue.send(s.STATE_CHANGE_QUEUE_NAME, "b", delay_s=900), "id-1")
            stub.assert_no_pending_responses()
        with self.assertRaises(ValueError):
            await queue.send(s.STATE_CHANGE_QUEUE_NAME, "b", delay_s=901)
