"""In-process worker tests' common ground: a real SQLite store and local
queue in a temp dir, workers started with the scripted nommer, and the
exits and state changes they report."""

from twisted.internet import reactor

from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.workerd.worker import Worker
from tests.helpers import temp_settings

NOMMER = "tests.workerd.scripted_nommer.ScriptedNommer"

#: Short leases, beats and waits, so a test runs in well under a second.
FAST = dict(ALLOWED_NOMMERS=[NOMMER], JOB_LEASE_S=0.6, HEARTBEAT_INTERVAL_S=0.1, RETRY_BACKOFF_S=0.05,
            WORKER_MAX_IDLE_S=600.0, QUEUE_WAIT_TIME_S=0.5, PROGRESS_WRITE_INTERVAL_S=0.01)


class WorkerHarness:
    """Mixin for a ``TestCase``: ``SETTINGS`` (overrides, FAST by default);
    ``self.exits`` (reasons given to ``on_exit``) and ``self.states``
    (``(worker_id, state)`` at each state change) of the workers started."""

    SETTINGS = FAST

    def setUp(self):
        self.settings, self.root = temp_settings(self, **self.SETTINGS)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.exits = []
        self.states = []

    def settings_with(self, **changes):
        if not changes:
            return self.settings
        values = {k: v for k, v in self.settings.as_dict().items() if k.isupper()}
        values.update(changes)
        return type(self.settings).from_overrides(**values)

    def start_worker(self, worker_id="test-worker", on_exit=None, **settings_changes):
        worker = Worker(self.ledger, self.settings_with(**settings_changes), reactor, worker_id=worker_id,
                        on_exit=on_exit or self.exits.append, install_signals=False)
        worker.on_state_change = lambda: self.states.append((worker.worker_id, worker.state))
        worker.startService()
        self.addCleanup(lambda: worker.running and worker.stopService())
        return worker

    async def submit(self, script):
        job = Job(job_id=new_job_id(), source_path=f"file://{self.root}/in", dest_path=f"file://{self.root}/out",
                  nommer=NOMMER, job_options={"script": script})
        return await self.ledger.submit(job)

    async def in_state(self, job_id, state):
        return (await self.store.get(job_id)).job_state == state
