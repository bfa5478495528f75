"""outcome.decide: what follows an attempt, one row per case (plain values, no reactor)."""

from twisted.trial.unittest import SynchronousTestCase

from nommer.workerd.context import CANCELED, LEASE_LOST, SHUTDOWN, SPOT_INTERRUPTION
from nommer.workerd.outcome import (
    Attempt, DeleteMessage, Ended, Fail, Finish, Leave, Release, decide, keeps_progress, retry_delay_s)

W = "w-1"
MAX_ATTEMPTS = 3
BACKOFF_S = 5.0
OUT = {"size_bytes": 123}
NO_ROOM = "1000 bytes free, 2500000 needed (SCRATCH_MIN_FREE_BYTES 1000000 + the source's 1500000)"
ENOSPC = "[Errno 28] No space left on device"

#: (name, Attempt fields besides worker_id, expected decision)
ROWS = [
    # Finished.
    ("succeeded", dict(ended=Ended.SUCCEEDED, attempts=1, output=OUT), Finish(OUT)),
    # A chunked job planned: its chunk tasks carry it on; the job's message goes.
    ("chunks queued", dict(ended=Ended.HANDED_OFF, attempts=1), DeleteMessage()),
    # Stopped from outside: the stop reason decides, whatever the nommer did.
    ("canceled", dict(ended=Ended.STOPPED, attempts=1, stop_reason=CANCELED), DeleteMessage()),
    ("JobCanceled with no reason recorded", dict(ended=Ended.STOPPED, attempts=1), DeleteMessage()),
    ("succeeded but canceled meanwhile", dict(ended=Ended.SUCCEEDED, attempts=1, output=OUT, stop_reason=CANCELED),
     DeleteMessage()),
    ("lease lost", dict(ended=Ended.STOPPED, attempts=2, stop_reason=LEASE_LOST), Leave()),
    ("permanent error after the lease was lost", dict(ended=Ended.PERMANENT, attempts=1, reason="bad",
                                                     stop_reason=LEASE_LOST), Leave()),
    ("cold shutdown", dict(ended=Ended.STOPPED, attempts=1, stop_reason=SHUTDOWN),
     Release(details=f"released by worker {W} shutting down", visibility_s=0)),
    ("transient error during a cold shutdown", dict(ended=Ended.TRANSIENT, attempts=1, reason="timeout",
                                                    stop_reason=SHUTDOWN),
     Release(details=f"released by worker {W} shutting down", visibility_s=0)),
    ("spot interruption, progress kept", dict(ended=Ended.STOPPED, attempts=1, stop_reason=SPOT_INTERRUPTION,
                                              progress=49.6),
     Release(details=f"released: spot interruption notice on {W} (50% done)", visibility_s=0, progress=49.6)),
    ("spot interruption before any progress", dict(ended=Ended.STOPPED, attempts=1, stop_reason=SPOT_INTERRUPTION),
     Release(details=f"released: spot interruption notice on {W}", visibility_s=0)),
    ("crash during a spot interruption", dict(ended=Ended.CRASHED, attempts=1, reason="KeyError('x')",
                                              stop_reason=SPOT_INTERRUPTION, progress=10.0),
     Release(details=f"released: spot interruption notice on {W} (10% done)", visibility_s=0, progress=10.0)),
    ("out of space during a spot interruption", dict(ended=Ended.NO_SCRATCH_SPACE, attempts=1, reason=ENOSPC,
                                                     stop_reason=SPOT_INTERRUPTION, free_bytes=0),
     Release(details=f"released: spot interruption notice on {W}", visibility_s=0)),
    # Scratch space: released to another worker at once, not a failure.
    ("source does not fit (pre-start check)", dict(ended=Ended.NO_SCRATCH_SPACE, attempts=1, reason=NO_ROOM,
                                                    free_bytes=1000),
     Release(details=f"released: scratch space low on {W}: {NO_ROOM}", visibility_s=0, log_warning=True)),
    ("ENOSPC while encoding", dict(ended=Ended.NO_SCRATCH_SPACE, attempts=2, reason=ENOSPC, free_bytes=4096),
     Release(details=f"released: scratch space low on {W}: 4096 bytes free; {ENOSPC}", visibility_s=0,
             log_warning=True)),
    ("ENOSPC, free space unknown", dict(ended=Ended.NO_SCRATCH_SPACE, attempts=3, reason=ENOSPC),
     Release(details=f"released: scratch space low on {W}: None bytes free; {ENOSPC}", visibility_s=0,
             log_warning=True)),
    # Transient: retried later, backing off, until MAX_JOB_ATTEMPTS.
    ("transient, first attempt", dict(ended=Ended.TRANSIENT, attempts=1, reason="download timed out"),
     Release(details="attempt 1 failed, retrying in 5 s: download timed out", visibility_s=5.0,
             doing="sending it back to the queue")),
    ("transient, second attempt", dict(ended=Ended.TRANSIENT, attempts=2, reason="download timed out"),
     Release(details="attempt 2 failed, retrying in 10 s: download timed out", visibility_s=10.0,
             doing="sending it back to the queue")),
    ("transient, last attempt", dict(ended=Ended.TRANSIENT, attempts=3, reason="download timed out"),
     Fail("gave up after 3 attempts: download timed out")),
    ("transient, past the limit (MAX_JOB_ATTEMPTS lowered)", dict(ended=Ended.TRANSIENT, attempts=4, reason="x"),
     Fail("gave up after 4 attempts: x")),
    # Permanent: ERROR at once.
    ("permanent", dict(ended=Ended.PERMANENT, attempts=1, reason="Unknown encoder 'libfoo'"),
     Fail("Unknown encoder 'libfoo'")),
    ("crashed", dict(ended=Ended.CRASHED, attempts=1, reason="ValueError('boom')",
                     nommer="tests.workerd.scripted_nommer.ScriptedNommer"),
     Fail("internal error in tests.workerd.scripted_nommer.ScriptedNommer: ValueError('boom')")),
]


class DecideTests(SynchronousTestCase):

    def test_table(self):
        """Each row's attempt gets the row's decision (see outcome's docstring)."""
        for name, fields, expected in ROWS:
            got = decide(Attempt(worker_id=W, **fields), MAX_ATTEMPTS, BACKOFF_S)
            self.assertEqual(got, expected, name)

    def test_every_ending_has_a_row(self):
        """The table covers each way an attempt ends, stopped or not."""
        endings = {(fields["ended"], "stop_reason" in fields) for _, fields, _ in ROWS}
        for ended in Ended:
            self.assertIn((ended, False), endings, ended)
        self.assertEqual({f.get("stop_reason") for _, f, _ in ROWS} - {None},
                         {CANCELED, LEASE_LOST, SHUTDOWN, SPOT_INTERRUPTION})

    def test_unknown_ending_refused(self):
        """Something that is not an Ended gets no decision."""
        with self.assertRaises(ValueError):
            decide(Attempt(worker_id=W, ended="vanished", attempts=1), MAX_ATTEMPTS, BACKOFF_S)

    def test_only_a_spot_release_keeps_progress(self):
        """The worker waits for the last progress write only when it keeps the progress."""
        reasons = (None, CANCELED, LEASE_LOST, SHUTDOWN, SPOT_INTERRUPTION)
        self.assertEqual([r for r in reasons if keeps_progress(r)], [SPOT_INTERRUPTION])

    def test_retry_delay_with_its_base(self):
        """The retry delay follows RETRY_BACKOFF_S."""
        self.assertEqual([retry_delay_s(a, 0.05) for a in (1, 2, 3)], [0.05, 0.1, 0.2])
