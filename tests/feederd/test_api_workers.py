"""GET /workers: the worker registry through the API (StubTreq in memory, and once over a real
socket with the client library), real SQLite store, queue and registry."""

import json

import jsonschema
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from nommer.client.api import APIError, NommerClient
from nommer.core.job import Job, new_job_id
from nommer.core.ledger import JobLedger
from nommer.core.worker_registry import make_registry
from nommer.core.worker_registry.base import DRAINING, EXITED, RUNNING, WorkerRecord
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd.api import JobAPI, openapi_document
from tests.helpers import ensure, pumped, temp_settings

NOW = 1_700_000_000.0


def openapi_schema(name):
    """A schema of nommer/feederd/openapi.json as JSON Schema (OpenAPI 3.0's ``nullable`` as a null
    type), references resolved against the document."""
    def convert(node):
        if isinstance(node, dict):
            node = {k: convert(v) for k, v in node.items()}
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"]
            return node
        return [convert(v) for v in node] if isinstance(node, list) else node
    document = convert(json.loads(openapi_document()))
    return dict(document["components"]["schemas"][name], components=document["components"])


def open_backends(test, **overrides):
    """Real SQLite backends in a temporary directory, set on the trial ``test``: ``test.settings`` and
    ``test.root`` (``temp_settings`` with ``overrides``), ``test.store``, ``test.queue`` and
    ``test.registry`` (each closed at the test's cleanup) and ``test.ledger`` over them."""
    test.settings, test.root = temp_settings(test, **overrides)
    test.store = make_store(test.settings, reactor)
    test.queue = make_queue(test.settings, reactor)
    test.registry = make_registry(test.settings, reactor)
    for closable in (test.store, test.queue, test.registry):
        test.addCleanup(closable.close)
    test.ledger = JobLedger(test.store, test.queue, test.settings)


class WorkersAPITests(TestCase):
    timeout = 20

    def setUp(self):
        open_backends(self, WORKER_HEARTBEAT_TIMEOUT_S=180.0)
        self.clock = task.Clock()
        self.clock.advance(NOW)

    def api(self, **kwargs):
        kwargs.setdefault("registry", self.registry)
        return JobAPI(self.ledger, self.settings, clock=self.clock, **kwargs)

    async def get(self, api, path="/workers"):
        stub = StubTreq(api.resource())
        response = await pumped(stub, stub.get("http://127.0.0.1:8001" + path))
        content = await pumped(stub, stub.content(response))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        return response.code, json.loads(content)

    async def running_job(self, progress):
        job = await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in", dest_path="file:///out",
                                           nommer="n", job_options=[]))
        await self.ledger.set_state(job.job_id, JobState.DOWNLOADING)
        await self.ledger.set_state(job.job_id, JobState.ENCODING, progress=progress)
        return job.job_id

    @ensure
    async def test_without_registry_is_503_json(self):
        """A feederd built without a registry answers the API's JSON error, 503 NOREGISTRY."""
        code, payload = await self.get(self.api(registry=None))
        self.assertEqual(code, 503)
        self.assertEqual((payload["success"], payload["error_code"]), (False, "NOREGISTRY"))
        self.assertIn("registry", payload["message"])
        jsonschema.validate(payload, openapi_schema("Error"))

    @ensure
    async def test_workers_with_current_jobs_age_and_liveness(self):
        """Each worker: its record, its jobs still stored (with state and progress), how long ago it
        was seen by the server clock and whether it counts as alive; most recently seen first."""
        running = await self.running_job(42.46)
        vanished = "f" * 50
        busy = WorkerRecord(worker_id="host-1-w0", jobs=[running, vanished], capacity=2, jobs_done=4,
                            host="host-1", version="0.1.0", started_at=NOW - 600, last_seen=NOW - 2.5)
        await self.registry.heartbeat(busy)
        await self.registry.heartbeat(WorkerRecord(worker_id="silent", state=DRAINING, last_seen=NOW - 180.5))
        await self.registry.heartbeat(WorkerRecord(worker_id="edge", last_seen=NOW - 180))
        await self.registry.heartbeat(WorkerRecord(worker_id="gone", state=EXITED, last_seen=NOW - 1))
        code, payload = await self.get(self.api())
        self.assertEqual(code, 200, payload)
        self.assertIs(payload["success"], True)
        self.assertNotIn("instances", payload)
        workers = payload["workers"]
        self.assertEqual([w["worker_id"] for w in workers], ["gone", "host-1-w0", "edge", "silent"])
        first = workers[1]
        self.assertEqual({k: first[k] for k in busy.to_dict()}, busy.to_dict())
        self.assertEqual(first["current_jobs"], [{"job_id": running, "job_state": "ENCODING", "progress": 42.5}])
        self.assertEqual(first["seen_s_ago"], 2.5)
        self.assertNotIn("instance", first)
        self.assertEqual({w["worker_id"]: w["alive"] for w in workers},
                         {"gone": False, "host-1-w0": True, "edge": True, "silent": False})
        self.assertEqual(workers[3]["current_jobs"], [])
        jsonschema.validate(payload, openapi_schema("WorkerList"))

    @ensure
    async def test_fleet_view_joins_instances(self):
        """With a fleet view (here a Deferred), a worker gets its instance by instance_id and the
        answer lists every instance, including one with no worker yet."""
        instances = [{"instance_id": "i-1", "instance_type": "c7i.large", "uptime_s": 3600.0, "cost_usd": 0.04,
                      "state": "running"},
                     {"instance_id": "i-booting", "instance_type": "c7i.large", "uptime_s": 30.0, "cost_usd": 0.0,
                      "state": "pending"}]
        await self.registry.heartbeat(WorkerRecord(worker_id="i-1", instance_id="i-1", instance_type="c7i.large",
                                                   market="spot", last_seen=NOW))
        await self.registry.heartbeat(WorkerRecord(worker_id="local", state=RUNNING, last_seen=NOW - 1))
        code, payload = await self.get(self.api(fleet_view=lambda: defer.succeed(instances)))
        self.assertEqual(code, 200, payload)
        self.assertEqual(payload["instances"], instances)
        self.assertEqual([(w["worker_id"], w["instance"]) for w in payload["workers"]],
                         [("i-1", instances[0]), ("local", None)])
        jsonschema.validate(payload, openapi_schema("WorkerList"))

    @ensure
    async def test_fleet_view_failure_still_lists_workers(self):
        """A fleet that does not answer is logged; the workers are listed with fleet_error."""
        await self.registry.heartbeat(WorkerRecord(worker_id="w", last_seen=NOW))

        def broken():
            raise RuntimeError("EC2 unreachable")
        code, payload = await self.get(self.api(fleet_view=broken))
        self.assertEqual(code, 200, payload)
        self.assertEqual([w["worker_id"] for w in payload["workers"]], ["w"])
        self.assertIn("fleet", payload["fleet_error"])
        self.assertNotIn("EC2 unreachable", json.dumps(payload))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        jsonschema.validate(payload, openapi_schema("WorkerList"))

    @ensure
    async def test_empty_registry_and_trailing_slash(self):
        """No worker yet: an empty list; /workers/ is the same route."""
        self.assertEqual(await self.get(self.api(), "/workers/"), (200, {"success": True, "workers": []}))

    @ensure
    async def test_client_over_a_real_socket(self):
        """NommerClient.workers() over real HTTP gets the list; without a registry, an APIError."""
        job_id = await self.running_job(10.0)
        await self.registry.heartbeat(WorkerRecord(worker_id="w0", jobs=[job_id], last_seen=NOW - 1))
        sites = []
        for api in (self.api(), self.api(registry=None)):
            port = reactor.listenTCP(0, Site(api.resource()), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            sites.append(NommerClient(f"http://127.0.0.1:{port.getHost().port}", timeout_s=5))
        workers = await threads.deferToThread(sites[0].workers)
        self.assertEqual([(w["worker_id"], w["alive"], w["current_jobs"]) for w in workers],
                         [("w0", True, [{"job_id": job_id, "job_state": "ENCODING", "progress": 10.0}])])
        with self.assertRaises(APIError) as raised:
            await threads.deferToThread(sites[1].workers)
        self.assertEqual((raised.exception.status, raised.exception.error_code), (503, "NOREGISTRY"))
