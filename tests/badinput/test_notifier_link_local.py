"""The notifier never POSTs to a link-local notify_url, even one stored before
submit refused them (a job written by an older feederd)."""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.notifier import Notifier
from tests.feederd.test_notifier import Recorder
from tests.helpers import ensure, eventually, temp_settings


class StoredLinkLocalNotifyURL(TestCase):

    def setUp(self):
        self.settings, _ = temp_settings(self, QUEUE_WAIT_TIME_S=0.2)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.post = Recorder()
        notifier = Notifier(self.ledger, self.settings, reactor, post=self.post)
        notifier.startService()
        self.addCleanup(notifier.stopService)

    async def drained(self):
        d = await self.queue.depth(self.settings.STATE_CHANGE_QUEUE_NAME)
        return d["visible"] + d["in_flight"] == 0

    @ensure
    async def test_link_local_hook_skipped_other_hook_sent(self):
        """State changes of a job whose stored notify_url is 0xa9fea9fe are not POSTed; a normal job's are."""
        bad = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                                           nommer="x", job_options=[], notify_url="http://0xa9fea9fe/hook"))
        good = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///a", dest_path="file:///b",
                                            nommer="x", job_options=[], notify_url="http://hooks.example/h"))
        for job in (bad, good):
            await self.ledger.set_state(job.job_id, JobState.CANCELED, "canceled")
        await eventually(lambda: len(self.post.calls) == 1, what="the normal webhook")
        await eventually(self.drained, what="both state changes handled")
        self.assertEqual([url for url, _ in self.post.calls], ["http://hooks.example/h"])
