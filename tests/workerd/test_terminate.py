"""A worker's end on EC2: self-termination against moto, and the idle exit
through exit_on_ec2 with a real SQLite store and local queue."""

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core import aws as aws_module
from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.worker_registry import base as registry
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.workerd.terminate import exit_on_ec2, terminate_self
from nommer.workerd.worker import Worker
from tests.aws_server import aws_settings, reset_moto
from tests.helpers import ensure, eventually
from tests.workerd.worker_harness import NOMMER


class TerminateTests(TestCase):

    def setUp(self):
        self.settings, _ = aws_settings(self)
        reset_moto()
        self.aws = aws_module.AWS(self.settings, reactor, "test-ec2")
        self.addCleanup(self.aws.close)

    async def launch(self):
        answer = await self.aws.call(
            "ec2", "run_instances", ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="c7i.large",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "nommer:role", "Value": "worker"}]}])
        return answer["Instances"][0]["InstanceId"]

    async def instance_state(self, instance_id):
        answer = await self.aws.call("ec2", "describe_instances", InstanceIds=[instance_id])
        return answer["Reservations"][0]["Instances"][0]["State"]["Name"]

    @ensure
    async def test_terminate_self(self):
        instance_id = await self.launch()
        self.assertTrue(await terminate_self(self.aws, instance_id))
        self.assertIn(await self.instance_state(instance_id), ("shutting-down", "terminated"))

    @ensure
    async def test_refused_terminate_is_logged_not_raised(self):
        self.assertFalse(await terminate_self(self.aws, "i-0000000000000dead"))


class StopRecordingReactor:
    """The real reactor, except that stop() is recorded (the test keeps running)."""

    def __init__(self):
        self.stops = 0

    def stop(self):
        self.stops += 1

    def __getattr__(self, name):
        return getattr(reactor, name)


class IdleExitOnEC2Tests(TestCase):
    """Idle exit on EC2: exit_on_ec2 terminates the instance (moto); nothing
    is taken once the exit began."""

    def setUp(self):
        self.settings, self.root = aws_settings(
            self, ALLOWED_NOMMERS=[NOMMER], WORKER_MAX_IDLE_S=0.3, QUEUE_WAIT_TIME_S=0.5,
            HEARTBEAT_INTERVAL_S=0.1, JOB_LEASE_S=5.0, MAX_ENCODING_JOBS_PER_WORKER=2)
        reset_moto()
        # The embedded store and queue; only EC2 is on moto.
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.aws = aws_module.AWS(self.settings, reactor, "test-ec2")
        self.addCleanup(self.aws.close)

    @ensure
    async def test_idle_worker_terminates_its_instance(self):
        answer = await self.aws.call("ec2", "run_instances", ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                                     InstanceType="c7i.large")
        instance_id = answer["Instances"][0]["InstanceId"]
        fake_reactor = StopRecordingReactor()
        seen = []
        sent = []

        async def before_terminate():
            # The registry beat; meanwhile a job arrives: it must stay queued.
            seen.append(worker.state)
            sent.append(await self.ledger.submit(Job(
                job_id=new_job_id(), source_path=f"file://{self.root}/in", dest_path=f"file://{self.root}/out",
                nommer=NOMMER, job_options={"script": "succeed"})))
            await task.deferLater(reactor, 0.3, lambda: None)   # ~15 local-queue polls

        results = []

        def on_exit(reason):
            d = defer.Deferred.fromCoroutine(exit_on_ec2(worker, self.aws, instance_id, reason, fake_reactor,
                                                         before_terminate=before_terminate))
            d.addCallback(results.append)
            return d
        states = []
        worker = Worker(self.ledger, self.settings, reactor, worker_id=instance_id, on_exit=on_exit,
                        install_signals=False, on_state_change=lambda: states.append(worker.state))
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        await eventually(lambda: results, what="terminated")
        self.assertEqual(results, [True])
        self.assertEqual(fake_reactor.stops, 1)
        self.assertEqual(seen, [registry.TERMINATING])
        self.assertEqual(states, [registry.EXITED])
        self.assertEqual(worker.state, registry.TERMINATING)
        described = await self.aws.call("ec2", "describe_instances", InstanceIds=[instance_id])
        self.assertIn(described["Reservations"][0]["Instances"][0]["State"]["Name"],
                      ("shutting-down", "terminated"))
        stored = await self.store.get(sent[0].job_id)
        self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        depth = await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)
        self.assertEqual(depth["visible"], 1)

    @ensure
    async def test_failed_terminate_still_stops(self):
        """TerminateInstances refused: logged, the reactor is stopped all the same."""
        fake_reactor = StopRecordingReactor()
        results = []
        worker = Worker(self.ledger, self.settings, reactor, worker_id="w", install_signals=False,
                        on_exit=lambda reason: exit_on_ec2(worker, self.aws, "i-0000000000000dead", reason,
                                                           fake_reactor))
        worker.on_state_change = lambda: results.append(worker.state)
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        await eventually(lambda: fake_reactor.stops, what="reactor stopped")
        self.assertEqual(worker.state, registry.TERMINATING)
