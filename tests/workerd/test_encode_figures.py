"""A worker's encode figures (``nommer.workerd.metrics``) and their way into its heartbeat record, on a
task.Clock and the real SQLite registry. Real encodes reaching feederd's /metrics:
tests/e2e/test_e2e_metrics.py."""

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.states import JobState
from nommer.core.worker_registry import make_registry
from nommer.workerd.heartbeat import RegistryHeartbeat
from nommer.workerd.metrics import RECENT_ENCODES, EncodeFigures, media_seconds
from tests.helpers import ensure, eventually, temp_settings
from tests.workerd.test_heartbeat import T0, FakeWorker
from tests.workerd.worker_harness import WorkerHarness


class MediaSecondsTests(TestCase):

    def test_declarative_job_reports_the_source(self):
        """A declarative job's output: the source's duration."""
        self.assertEqual(media_seconds({"outputs": [], "source": {"duration_s": 12.5}, "size_bytes": 9}), 12.5)

    def test_2011_job_reports_the_encoded_file(self):
        """The 2011 nommer's summary: the encoded file's duration."""
        self.assertEqual(media_seconds({"size_bytes": 100, "duration_s": 3}), 3.0)

    def test_unknown(self):
        """No positive number anywhere: None."""
        for output in (None, "x", {}, {"duration_s": None}, {"duration_s": 0}, {"duration_s": True},
                       {"source": "?", "duration_s": -1}):
            self.assertIsNone(media_seconds(output), output)


class EncodeFiguresTests(TestCase):

    def test_fields_after_some_encodes(self):
        """Counts, totals, last speed and the recent list (seconds rounded to the millisecond, speed to 4 places)."""
        figures = EncodeFigures()
        self.assertEqual(figures.fields(), {"jobs_finished": 0, "encode_seconds_total": 0.0,
                                            "media_seconds_total": 0.0, "last_encode_speed": None,
                                            "recent_encodes": []})
        figures.finished(2.00049, 10.0)
        figures.finished(4.0, None)
        self.assertEqual(figures.fields(), {"jobs_finished": 2, "encode_seconds_total": 6.0,
                                            "media_seconds_total": 10.0, "last_encode_speed": 4.9988,
                                            "recent_encodes": [[2.0, 10.0], [4.0, None]]})

    def test_recent_list_is_bounded(self):
        """Only the last RECENT_ENCODES encodes are listed; the totals keep everything."""
        figures = EncodeFigures()
        for i in range(RECENT_ENCODES + 5):
            figures.finished(float(i), 1.0)
        fields = figures.fields()
        self.assertEqual(len(fields["recent_encodes"]), RECENT_ENCODES)
        self.assertEqual(fields["recent_encodes"][0], [5.0, 1.0])
        self.assertEqual(fields["jobs_finished"], RECENT_ENCODES + 5)
        self.assertEqual(fields["media_seconds_total"], RECENT_ENCODES + 5.0)


class HeartbeatFiguresTests(TestCase):

    @ensure
    async def test_heartbeat_carries_the_figures(self):
        """Each record written carries the figures as they are when it is written."""
        settings, _ = temp_settings(self, HEARTBEAT_INTERVAL_S=10.0)
        registry = make_registry(settings, reactor)
        self.addCleanup(registry.close)
        clock = task.Clock()
        clock.advance(T0)
        figures = EncodeFigures()
        beat = RegistryHeartbeat(registry, FakeWorker(), settings, clock, figures=figures)
        beat.startService()
        self.addCleanup(lambda: beat.running and beat.stopService())
        await eventually(lambda: registry.list())
        self.assertEqual((await registry.get("fake-w0")).jobs_finished, 0)
        figures.finished(3.0, 6.0)
        self.assertTrue(await beat.beat_now())
        record = await registry.get("fake-w0")
        self.assertEqual((record.jobs_finished, record.encode_seconds_total, record.media_seconds_total,
                          record.last_encode_speed, record.recent_encodes), (1, 3.0, 6.0, 2.0, [[3.0, 6.0]]))
        self.assertEqual(record.jobs_done, 7)  # the worker's own status is still there


class WorkerCountsFinishedTests(WorkerHarness, TestCase):
    """The real worker loop (scripted nommer, SQLite store and queue) feeds the figures."""

    @ensure
    async def test_only_finished_attempts_count(self):
        """A job stored FINISHED counts, with its wall time from taking it to FINISHED; one ending in
        ERROR does not. The scripted nommer reports no duration: no media seconds, no speed."""
        worker = self.start_worker()
        figures = worker.attempts.figures
        ok = await self.submit("succeed")
        await eventually(lambda: self.in_state(ok.job_id, JobState.FINISHED), what="FINISHED")
        await eventually(lambda: figures.jobs_finished == 1, what="the encode counted")
        bad = await self.submit("permanent")
        await eventually(lambda: self.in_state(bad.job_id, JobState.ERROR), what="ERROR")
        await eventually(lambda: worker.jobs_done == 2, what="the second attempt over")
        stored = await self.store.get(ok.job_id)
        fields = figures.fields()
        self.assertEqual(fields["jobs_finished"], 1)
        self.assertTrue(0 < fields["encode_seconds_total"] <= stored.finished_at - stored.started_at + 0.5, fields)
        self.assertEqual((fields["media_seconds_total"], fields["last_encode_speed"]), (0.0, None))
        self.assertEqual(fields["recent_encodes"], [[fields["encode_seconds_total"], None]])
