"""A worker's life on EC2: IMDSv2 against a fake IMDS process, the spot
watcher, self-termination against moto, and the worker's spot interruption,
drain and idle exit with a real SQLite store and local queue."""

import socket
import time
import urllib.error
import urllib.request

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from nommer.core import aws as aws_module
from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.registry import base as registry
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.workerd import worker as worker_module
from nommer.workerd.ec2 import (InstanceMetadata, MetadataUnavailable, SpotWatcher, exit_on_ec2,
                                region_from_az, terminate_self)
from nommer.workerd.worker import Worker
from tests.aws_server import aws_settings, reset_moto
from tests.fake_imds import FakeIMDS
from tests.helpers import ensure, eventually, temp_settings
from tests.workerd import media, scripted_nommer
from tests.workerd.worker_harness import FAST, NOMMER, WorkerHarness

FFMPEG_NOMMER = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"

_SHARED = {}


def shared_imds():
    """One fake IMDS process for the tests that only read it (notices are
    cleared by each test that raises one)."""
    if "fake" not in _SHARED:
        import atexit
        fake = _SHARED["fake"] = FakeIMDS(instance_id="i-0abc", instance_type="c7i.large", az="us-east-1a",
                                          life_cycle="spot", user_data=b"#cloud-config\n").start()
        atexit.register(fake.stop)
    return _SHARED["fake"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw(url, method="GET", headers=None):
    """(status, body) of a plain urllib request (the fake runs in another process)."""
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class MetadataTests(TestCase):

    def setUp(self):
        self.fake = shared_imds()
        self.fake.clear()
        self.addCleanup(self.fake.clear)

    def metadata(self, **kwargs):
        return InstanceMetadata(self.fake.url, reactor, **kwargs)

    def test_fake_enforces_imdsv2(self):
        """The fake refuses what IMDS refuses with HttpTokens=required: a GET
        without a token (401), a PUT without a TTL (400), a made-up token (401)."""
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id")[0], 401)
        self.assertEqual(raw(f"{self.fake.url}/latest/api/token", "PUT")[0], 400)
        self.assertEqual(raw(f"{self.fake.url}/latest/api/token", "PUT",
                             {"X-aws-ec2-metadata-token-ttl-seconds": "21601"})[0], 400)
        status, token = raw(f"{self.fake.url}/latest/api/token", "PUT",
                            {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        self.assertEqual(status, 200)
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id",
                             headers={"X-aws-ec2-metadata-token": "forged"})[0], 401)
        self.assertEqual(raw(f"{self.fake.url}/latest/meta-data/instance-id",
                             headers={"X-aws-ec2-metadata-token": token.decode()}), (200, b"i-0abc"))

    @ensure
    async def test_identity_with_one_token(self):
        """identity() reads id, type, zone, market and region, all with one session token."""
        before = self.fake.stats()
        identity = await self.metadata().identity()
        self.assertEqual(identity, {"instance_id": "i-0abc", "instance_type": "c7i.large",
                                    "availability_zone": "us-east-1a", "market": "spot",
                                    "region": "us-east-1"})
        after = self.fake.stats()
        self.assertEqual(after["token_puts"] - before["token_puts"], 1)
        self.assertEqual(after["unauthorized"], before["unauthorized"])

    @ensure
    async def test_on_demand_region_from_document_and_no_user_data(self):
        """An on-demand instance is "on-demand"; the region comes from the
        identity document (right for a Local Zone, which the AZ name is not);
        no user data is None."""
        fake = FakeIMDS(instance_id="i-0def", az="us-west-2-lax-1a", region="us-west-2",
                        life_cycle="on-demand").start()
        self.addCleanup(fake.stop)
        metadata = InstanceMetadata(fake.url, reactor)
        identity = await metadata.identity()
        self.assertEqual((identity["market"], identity["region"], identity["availability_zone"]),
                         ("on-demand", "us-west-2", "us-west-2-lax-1a"))
        self.assertIsNone(await metadata.user_data())

    def test_region_from_az(self):
        self.assertEqual(region_from_az("eu-west-3b"), "eu-west-3")
        self.assertEqual(region_from_az("us-gov-west-1a"), "us-gov-west-1")
        self.assertEqual(region_from_az("us-west-2-lax-1a"), "us-west-2")
        self.assertIsNone(region_from_az("nowhere"))

    @ensure
    async def test_user_data(self):
        self.assertEqual(await self.metadata().user_data(), b"#cloud-config\n")

    @ensure
    async def test_notices(self):
        """No notice is None (IMDS answers 404); a raised one is its documented dict."""
        metadata = self.metadata()
        self.assertIsNone(await metadata.spot_notice())
        self.assertIsNone(await metadata.rebalance_recommendation())
        self.fake.spot_notice("stop", "2026-11-22T06:02:00Z")
        self.fake.rebalance("2026-11-22T06:00:00Z")
        self.assertEqual(await metadata.spot_notice(), {"action": "stop", "time": "2026-11-22T06:02:00Z"})
        self.assertEqual(await metadata.rebalance_recommendation(), {"noticeTime": "2026-11-22T06:00:00Z"})
        self.fake.clear()
        self.assertIsNone(await metadata.spot_notice())

    @ensure
    async def test_refused_token_is_replaced(self):
        """A 401 (token expired or revoked) fetches a new token and retries once."""
        metadata = self.metadata()
        await metadata.identity()
        self.fake.expire_tokens()
        before = self.fake.stats()
        self.assertIsNone(await metadata.spot_notice())
        after = self.fake.stats()
        self.assertEqual(after["unauthorized"] - before["unauthorized"], 1)
        self.assertEqual(after["token_puts"] - before["token_puts"], 1)
        self.assertIsNone(await metadata.spot_notice())
        self.assertEqual(self.fake.stats()["token_puts"], after["token_puts"])

    @ensure
    async def test_token_renewed_before_it_expires(self):
        """A token is reused until near the end of its TTL, then replaced
        before IMDS would refuse it (the clock drives its age)."""
        clock = task.Clock()
        metadata = self.metadata(token_ttl_s=600, clock=clock)
        start = self.fake.stats()["token_puts"]
        await metadata.spot_notice()
        clock.advance(500)
        await metadata.spot_notice()
        self.assertEqual(self.fake.stats()["token_puts"] - start, 1)
        clock.advance(50)   # 550 s: within the last 60 s of 600
        await metadata.spot_notice()
        self.assertEqual(self.fake.stats()["token_puts"] - start, 2)

    @ensure
    async def test_concurrent_requests_share_a_token_fetch(self):
        metadata = self.metadata()
        start = self.fake.stats()["token_puts"]
        await defer.gatherResults([metadata.spot_notice(), metadata.rebalance_recommendation(),
                                   metadata.user_data()])
        self.assertEqual(self.fake.stats()["token_puts"] - start, 1)

    @ensure
    async def test_unreachable_names_the_url(self):
        """Nothing listening: MetadataUnavailable naming the URL."""
        url = f"http://127.0.0.1:{free_port()}"
        metadata = InstanceMetadata(url, reactor)
        with self.assertRaises(MetadataUnavailable) as caught:
            await metadata.identity()
        self.assertIn(f"{url}/latest/api/token", str(caught.exception))
        self.assertEqual(caught.exception.url, f"{url}/latest/api/token")

    @ensure
    async def test_silent_endpoint_times_out(self):
        """A server that accepts and never answers: MetadataUnavailable once
        timeout_s passes on the clock."""
        silent = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        clock = task.Clock()
        metadata = InstanceMetadata(f"http://127.0.0.1:{silent.getHost().port}", reactor, timeout_s=2,
                                    clock=clock)
        d = metadata.spot_notice()
        await task.deferLater(reactor, 0.05, lambda: None)  # let it connect and send
        self.assertFalse(d.called)
        clock.advance(2)
        with self.assertRaises(MetadataUnavailable) as caught:
            await d
        self.assertIn("no answer within 2 s", str(caught.exception))

    def test_token_ttl_checked(self):
        self.assertRaises(ValueError, InstanceMetadata, "http://x", reactor, token_ttl_s=0)
        self.assertRaises(ValueError, InstanceMetadata, "http://x", reactor, token_ttl_s=21601)


class RecordingWorker:
    """What SpotWatcher uses of a Worker, recording the calls."""

    worker_id = "w-test"

    def __init__(self):
        self.calls = []

    def interrupt(self, reason):
        self.calls.append(("interrupt", reason))

    def drain(self, reason):
        self.calls.append(("drain", reason))


class ScriptedMetadata:
    """spot_notice() answers from a list (an Exception is raised); then None."""

    def __init__(self, notices):
        self.notices = list(notices)
        self.polls = 0

    def spot_notice(self):
        self.polls += 1
        answer = self.notices.pop(0) if self.notices else None
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)

    def rebalance_recommendation(self):
        return defer.succeed(None)


class SpotWatcherTests(TestCase):

    def setUp(self):
        self.fake = shared_imds()
        self.fake.clear()
        self.addCleanup(self.fake.clear)
        self.settings, _ = temp_settings(self, SPOT_INTERRUPTION_POLL_S=5.0)
        self.clock = task.Clock()
        self.worker = RecordingWorker()

    def watcher(self, metadata=None, **kwargs):
        metadata = metadata or InstanceMetadata(self.fake.url, reactor)
        watcher = SpotWatcher(metadata, self.worker, self.settings, self.clock, **kwargs)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        return watcher

    async def poll(self, watcher, n=1):
        """Advance the clock one poll interval, n times, waiting for each poll."""
        for _ in range(n):
            before = watcher.polls
            self.clock.advance(self.settings.SPOT_INTERRUPTION_POLL_S)
            await eventually(lambda: watcher.polls > before, what="a poll")

    @ensure
    async def test_notice_interrupts_once(self):
        """A spot notice calls worker.interrupt once, with action and time; polling then ends."""
        states = []
        watcher = self.watcher(on_state_change=lambda: states.append("beat"))
        await eventually(lambda: watcher.polls == 1, what="first poll at start")
        await self.poll(watcher, 2)
        self.assertEqual(self.worker.calls, [])
        self.fake.spot_notice("terminate", "2026-11-22T06:02:00Z")
        await self.poll(watcher)
        self.assertEqual(self.worker.calls,
                         [("interrupt", "spot interruption notice: terminate at 2026-11-22T06:02:00Z")])
        self.assertEqual(states, ["beat"])
        self.assertEqual(watcher.notice["action"], "terminate")
        self.clock.advance(60)
        self.assertEqual(len(self.worker.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @ensure
    async def test_rebalance_drains_then_notice_interrupts(self):
        """A rebalance recommendation drains the worker once; polling goes on,
        and a later notice interrupts it."""
        watcher = self.watcher()
        await eventually(lambda: watcher.polls == 1, what="first poll")
        self.fake.rebalance("2026-11-22T06:00:00Z")
        await self.poll(watcher, 3)
        self.assertEqual(self.worker.calls, [("drain", "rebalance recommendation at 2026-11-22T06:00:00Z")])
        self.fake.spot_notice()
        await self.poll(watcher)
        self.assertEqual([c[0] for c in self.worker.calls], ["drain", "interrupt"])

    @ensure
    async def test_failed_polls_are_retried(self):
        """IMDS failing does not stop the polling: the notice after the failures still interrupts."""
        metadata = ScriptedMetadata([MetadataUnavailable("http://imds/x", "refused"),
                                     MetadataUnavailable("http://imds/x", "refused"),
                                     None, {"action": "terminate", "time": "T"}])
        watcher = self.watcher(metadata)
        self.assertEqual(watcher.failures, 1)
        self.clock.advance(5)
        self.assertEqual(watcher.failures, 2)
        self.clock.advance(5)
        self.assertEqual((watcher.failures, self.worker.calls), (0, []))
        self.clock.advance(5)
        self.assertEqual(self.worker.calls, [("interrupt", "spot interruption notice: terminate at T")])
        self.assertEqual(metadata.polls, 4)
        self.assertEqual(self.flushLoggedErrors(), [])

    @ensure
    async def test_unreachable_imds_keeps_polling(self):
        """A watcher on an IMDS that is not there keeps polling, without raising."""
        watcher = self.watcher(InstanceMetadata(f"http://127.0.0.1:{free_port()}", reactor))
        await eventually(lambda: watcher.polls == 1, what="first poll")
        await self.poll(watcher, 2)
        self.assertEqual(watcher.failures, 3)
        self.assertTrue(watcher._loop.running)
        self.assertEqual(self.worker.calls, [])


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


class WorkerOnEC2Tests(WorkerHarness, TestCase):
    """Worker.interrupt / drain / idle exit with a real store and queue."""

    SETTINGS = dict(FAST, ALLOWED_NOMMERS=[NOMMER, FFMPEG_NOMMER], SPOT_INTERRUPTION_POLL_S=0.05)

    def hold_releases(self):
        """Make the ledger's PENDING writes (a job released) wait for the
        returned Deferred; the test fires it (or cleanup does, before the
        worker's stop)."""
        hold = defer.Deferred()
        self.addCleanup(lambda: hold.called or hold.callback(None))
        real_set_state = self.ledger.set_state

        async def held_release(job_id, state, *args, **kwargs):
            if state == JobState.PENDING:
                await hold
            return await real_set_state(job_id, state, *args, **kwargs)
        self.patch(self.ledger, "set_state", held_release)
        return hold

    async def encoding(self, job_id, progress=50.0):
        async def check():
            job = await self.store.get(job_id)
            return job.job_state == JobState.ENCODING and job.progress == progress
        await eventually(check, what=f"job {job_id} encoding at {progress}%")

    async def depth(self):
        return await self.queue.depth(self.settings.NEW_JOB_QUEUE_NAME)

    @ensure
    async def test_interrupt_releases_the_running_job_at_once(self):
        """A spot notice mid-job: the job is PENDING again with its progress
        and a reason, its message visible at once; the worker exits; another
        worker finishes the job."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.interrupt("spot interruption notice: terminate at 2026-11-22T06:02:00Z")
        self.assertEqual(worker.state, registry.INTERRUPTED)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["spot interruption"])
        self.assertEqual(self.states, [("test-worker", registry.INTERRUPTED), ("test-worker", registry.EXITED)])
        self.assertIn(job.job_id, scripted_nommer.CANCELED)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("released: spot interruption notice on test-worker", stored.job_state_details)
        self.assertIn("50% done", stored.job_state_details)
        self.assertEqual((stored.progress, stored.attempts), (50.0, 1))
        self.assertEqual((await self.depth())["visible"], 1)

        scripted_nommer.RELEASE.pop(job.job_id)
        self.start_worker("other-worker")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="taken again")
        scripted_nommer.RELEASE[job.job_id].callback(None)
        await eventually(lambda: self.in_state(job.job_id, JobState.FINISHED), what="finished")
        done = await self.store.get(job.job_id)
        self.assertEqual((done.worker_id, done.attempts), ("other-worker", 2))
        self.assertEqual(sum((await self.depth()).values()), 0)

    @ensure
    async def test_no_job_taken_after_interrupt(self):
        """After the notice no slot takes a job: one sent while the running
        job is being released, and one sent after the exit, stay queued."""
        worker = self.start_worker(MAX_ENCODING_JOBS_PER_WORKER=2)
        running = await self.submit("block")
        await self.encoding(running.job_id)
        hold = self.hold_releases()
        worker.interrupt("spot interruption notice")
        during = await self.submit("succeed")
        await task.deferLater(reactor, 0.3, lambda: None)   # ~15 local-queue polls
        hold.callback(None)
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        after = await self.submit("succeed")
        await task.deferLater(reactor, 0.2, lambda: None)
        for job in (during, after):
            stored = await self.store.get(job.job_id)
            self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        self.assertNotIn(during.job_id, scripted_nommer.RAN)
        self.assertEqual((await self.depth())["visible"], 3)

    @ensure
    async def test_message_in_hand_when_interrupted_is_not_taken(self):
        """A message received just before the notice (job not yet taken) goes
        back to the queue at once, the job untouched."""
        worker = self.start_worker()
        real_get = self.store.get
        interrupted = []

        async def get_then_interrupt(job_id):
            job = await real_get(job_id)
            if not interrupted:
                interrupted.append(job_id)
                worker.interrupt("spot interruption notice")
            return job
        self.patch(self.store, "get", get_then_interrupt)
        job = await self.submit("succeed")
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        stored = await real_get(job.job_id)
        self.assertEqual((stored.job_state, stored.attempts), (JobState.PENDING, 0))
        self.assertEqual((await self.depth())["visible"], 1)

    @ensure
    async def test_idle_exit_waits_for_a_message_in_hand(self):
        """A slot idle past WORKER_MAX_IDLE_S does not start the idle exit
        while another slot holds a message it has not started yet (else that
        job would be taken after the exit began)."""
        hold = defer.Deferred()
        real_get = self.store.get

        async def slow_get(job_id):
            await hold
            return await real_get(job_id)
        self.patch(self.store, "get", slow_get)
        job = await self.submit("succeed")   # queued first: the worker is never idle before it
        worker = self.start_worker(MAX_ENCODING_JOBS_PER_WORKER=2, WORKER_MAX_IDLE_S=0.2, QUEUE_WAIT_TIME_S=0.05)
        self.addCleanup(lambda: hold.called or hold.callback(None))   # before the worker's stop
        await eventually(lambda: worker._busy == 1, what="message in hand")
        await task.deferLater(reactor, 0.5, lambda: None)  # the other slot is idle past the limit
        second = await self.submit("succeed")   # still taken: the worker has not begun to exit
        await eventually(lambda: worker._busy == 2, what="second message in hand")
        hold.callback(None)
        for done in (job, second):
            await eventually(lambda: self.in_state(done.job_id, JobState.FINISHED), what="finished")
        await eventually(lambda: self.exits, what="idle exit")
        self.assertIn("idle", self.exits[0])

    @ensure
    async def test_interrupt_exits_by_the_deadline(self):
        """A job whose release hangs (store unreachable) does not keep the
        worker past SPOT_EXIT_DEADLINE_S."""
        self.patch(worker_module, "SPOT_EXIT_DEADLINE_S", 0.3)
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        hold = self.hold_releases()
        worker.interrupt("spot interruption notice")
        await eventually(lambda: self.exits, what="exit by deadline")
        self.assertEqual(self.exits, ["spot interruption (not every job released in time)"])
        hold.callback(None)
        await eventually(lambda: self.in_state(job.job_id, JobState.PENDING), what="released late")
        await defer.DeferredList(worker._loops)
        self.assertEqual(len(self.exits), 1)

    @ensure
    async def test_drain_finishes_the_running_job(self):
        """drain (rebalance recommendation): the running job finishes, none
        is taken, the worker exits with the reason."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.drain("rebalance recommendation at T")
        self.assertEqual(worker.state, registry.DRAINING)
        later = await self.submit("succeed")
        scripted_nommer.RELEASE[job.job_id].callback(None)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["rebalance recommendation at T"])
        self.assertEqual((await self.store.get(job.job_id)).job_state, JobState.FINISHED)
        self.assertEqual((await self.store.get(later.job_id)).attempts, 0)
        self.assertEqual([s for _, s in self.states], [registry.DRAINING, registry.EXITED])

    @ensure
    async def test_interrupt_while_draining_releases(self):
        """The notice after a rebalance: the draining job is released, the exit says spot interruption."""
        worker = self.start_worker()
        job = await self.submit("block")
        await self.encoding(job.job_id)
        worker.drain("rebalance recommendation at T")
        worker.drain("again")   # no-op
        worker.interrupt("spot interruption notice")
        worker.request_shutdown()   # SIGTERM from the instance shutting down: changes nothing
        self.assertEqual(worker.state, registry.INTERRUPTED)
        await eventually(lambda: self.exits, what="exit")
        self.assertEqual(self.exits, ["spot interruption"])
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("spot interruption", stored.job_state_details)

    @ensure
    async def test_notice_from_imds_releases_the_job(self):
        """The whole path: a notice raised on the fake IMDS reaches the worker
        through SpotWatcher and the job is released."""
        fake = shared_imds()
        self.addCleanup(fake.clear)
        worker = self.start_worker()
        watcher = SpotWatcher(InstanceMetadata(fake.url, reactor), worker, self.settings, reactor)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        job = await self.submit("block")
        await self.encoding(job.job_id)
        fake.spot_notice()
        await eventually(lambda: self.exits == ["spot interruption"], what="exit")
        self.assertIn("released: spot interruption notice on test-worker",
                      (await self.store.get(job.job_id)).job_state_details)

    @ensure
    async def test_interrupt_stops_ffmpeg_within_seconds(self):
        """With real ffmpeg: the encode is stopped (TERM) and the job released within seconds."""
        source = media.clip(seconds=3, size="1280x720")
        job = Job(job_id=new_job_id(), source_path=f"file://{source}", dest_path=f"file://{self.root}/out.mp4",
                  nommer=FFMPEG_NOMMER, job_options=[{"outfile_options": [
                      ["vcodec", "libx264"], ["preset", "veryslow"], ["s", "1920x1080"], ["f", "mp4"]]}])
        settings = self.settings_with(FILE_STORAGE_ROOTS=[self.root, media._dir()])
        worker = Worker(self.ledger, settings, reactor, worker_id="ffmpeg-worker", on_exit=self.exits.append,
                        install_signals=False)
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        await self.ledger.submit(job)
        async def ffmpeg_running():
            stored = await self.store.get(job.job_id)
            return stored.job_state == JobState.ENCODING and (stored.progress or 0) > 0
        await eventually(ffmpeg_running, what="ffmpeg reporting progress", timeout_s=30)
        started = time.monotonic()
        worker.interrupt("spot interruption notice")
        await eventually(lambda: self.exits, what="exit", timeout_s=30)
        self.assertLess(time.monotonic() - started, 10)
        stored = await self.store.get(job.job_id)
        self.assertEqual(stored.job_state, JobState.PENDING)
        self.assertIn("released: spot interruption notice on ffmpeg-worker", stored.job_state_details)
        self.assertGreater(stored.progress, 0)
        self.assertEqual((await self.depth())["visible"], 1)


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
