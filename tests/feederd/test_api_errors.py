"""The API's one error table (``EDGE_ERRORS`` in nommer.feederd.api): the HTTP
status and error_code of an answer are decided at the edge, along the
exception's MRO, never read from the exception."""

import json

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from werkzeug.exceptions import MethodNotAllowed, NotFound

from nommer.core import errors
from nommer.core.keys import InvalidKeySpec, NoSuchKey
from nommer.core.ledger import JobLedger
from nommer.core.secrets import SealedCredentialsError
from nommer.core.states import IllegalTransition
from nommer.core.store import make_store
from nommer.core.uri import InvalidURI
from nommer.core.workqueue import make_queue
from nommer.feederd.api import EDGE_ERRORS, BodyTooLarge, JobAPI, WrongMethod, error_answer
from nommer.feederd.auth import Forbidden, Unauthorized
from nommer.feederd.quota import QuotaExceeded
from nommer.feederd.ratelimit import RateLimited
from tests.helpers import ensure, pumped, temp_settings

JOB_ID = "a" * 50


class ErrorTableTests(TestCase):

    def test_answers(self):
        """Each error, and a subclass of one, gets its (status, error_code); anything else none."""
        cases = [
            (errors.InvalidJobSpec("f", "bad"), (400, "BADINPUT")),
            (InvalidURI("bad uri", "source_path"), (400, "BADINPUT")),
            (InvalidKeySpec("scopes", "bad"), (400, "BADINPUT")),
            (Unauthorized("who?"), (401, "UNAUTHORIZED")),
            (Forbidden("no"), (403, "FORBIDDEN")),
            (errors.NoSuchJob(JOB_ID), (404, "NOSUCHJOB")),
            (NoSuchKey("k"), (404, "NOSUCHKEY")),
            (NotFound(), (404, "NOTFOUND")),
            (MethodNotAllowed(["GET"]), (405, "METHODNOTALLOWED")),
            (WrongMethod("use POST"), (405, "METHODNOTALLOWED")),
            (IllegalTransition(JOB_ID, "FINISHED", "CANCELED"), (409, "CONFLICT")),
            (errors.JobCanceled("gone"), (409, "CANCELED")),
            (BodyTooLarge("too big"), (413, "BADINPUT")),
            (RateLimited("slow down", 3), (429, "RATELIMITED")),
            (QuotaExceeded("too many"), (429, "QUOTA")),
            (errors.NommerError("ours"), (500, "ERROR")),
            (errors.PermanentJobError("p"), (500, "ERROR")),
            (errors.TransientJobError("t"), (500, "ERROR")),
            (errors.SourceNotFound("s"), (500, "ERROR")),
            (SealedCredentialsError("sealed"), (500, "ERROR")),
            (ValueError("not ours"), None),
            (KeyError("not ours"), None),
        ]
        for exc, expected in cases:
            self.assertEqual(error_answer(exc), expected, repr(exc))

    def test_nearest_class_wins(self):
        """A subclass of two listed classes takes the entry of the one nearer in its MRO."""
        class Both(errors.NoSuchJob, errors.InvalidJobSpec):
            pass

        class Reversed(errors.InvalidJobSpec, errors.NoSuchJob):
            pass
        self.assertEqual(error_answer(Both.__new__(Both)), (404, "NOSUCHJOB"))
        self.assertEqual(error_answer(Reversed.__new__(Reversed)), (400, "BADINPUT"))

    def test_core_errors_carry_no_http_status(self):
        """The core exceptions have no http_status; only InvalidJobSpec keeps an error_code
        (read by tests outside the API), which agrees with the table."""
        for cls in (errors.NommerError, errors.InvalidJobSpec, errors.NoSuchJob, errors.JobError,
                    errors.PermanentJobError, errors.TransientJobError, errors.SourceNotFound,
                    errors.JobCanceled):
            self.assertFalse(hasattr(cls, "http_status"), cls)
            if cls is not errors.InvalidJobSpec:
                self.assertFalse(hasattr(cls, "error_code"), cls)
        self.assertEqual(EDGE_ERRORS[errors.InvalidJobSpec][1], errors.InvalidJobSpec.error_code)


class _Raising:
    """A job store whose ``get`` raises ``exc``; the rest is the real store."""

    def __init__(self, store, exc):
        self._store, self.exc = store, exc

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def get(self, job_id):
        raise self.exc


class ErrorAnswerTests(TestCase):
    """What GET /job/<id> answers when the store raises."""

    timeout = 10

    def setUp(self):
        self.settings, _ = temp_settings(self)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.addCleanup(self.store.close)
        self.addCleanup(self.queue.close)

    async def answer(self, exc):
        ledger = JobLedger(_Raising(self.store, exc), self.queue, self.settings)
        stub = StubTreq(JobAPI(ledger, self.settings).resource())
        response = await pumped(stub, stub.get(f"http://127.0.0.1:8001/job/{JOB_ID}"))
        body = await pumped(stub, stub.content(response))
        return response.code, json.loads(body)

    @ensure
    async def test_attributes_of_the_exception_are_not_read(self):
        """A core error whose class claims another status and code is answered from the table."""
        class Claims(errors.NoSuchJob):
            http_status = 418
            error_code = "TEAPOT"
        self.assertEqual(await self.answer(Claims(JOB_ID)),
                         (404, {"success": False, "error_code": "NOSUCHJOB",
                                "message": f"no job with id {JOB_ID!r}"}))

    @ensure
    async def test_unlisted_core_error_is_a_logged_500(self):
        """A core error with no entry nearer than NommerError is 500 ERROR with its message, logged."""
        self.assertEqual(await self.answer(errors.PermanentJobError("broken")),
                         (500, {"success": False, "error_code": "ERROR", "message": "broken"}))
        self.assertEqual(len(self.flushLoggedErrors(errors.PermanentJobError)), 1)

    @ensure
    async def test_listed_4xx_is_not_logged(self):
        """A 4xx from the table (409 CANCELED) answers the error's message and logs nothing."""
        self.assertEqual(await self.answer(errors.JobCanceled("job x is FINISHED")),
                         (409, {"success": False, "error_code": "CANCELED", "message": "job x is FINISHED"}))
        self.assertEqual(self.flushLoggedErrors(), [])

    @ensure
    async def test_anything_else_is_internal(self):
        """An exception the table does not know is 500 INTERNAL, its text not shown, logged."""
        self.assertEqual(await self.answer(ValueError("secret detail")),
                         (500, {"success": False, "error_code": "INTERNAL",
                                "message": "internal error; the server log has the details"}))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
