"""API keys, tenants, scopes, the anonymous rule, rate limit, quota and the
cross-site checks, in memory: StubTreq over the Klein resource, real SQLite
job store, queue and key store, a ``task.Clock`` for the API's time."""

import json

from treq.testing import StubTreq
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from nommer.core.job import Job, new_job_id
from nommer.core.keys import open_key_store
from nommer.core.ledger import JobLedger
from nommer.core.worker_registry import make_registry
from nommer.core.states import JobState
from nommer.core.store import make_store
from nommer.core.workqueue import make_queue
from nommer.feederd import auth
from nommer.feederd.api import JobAPI
from tests.helpers import doc_two_pass, ensure, pumped, temp_settings

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
URL = "http://127.0.0.1:8001"
NOW = 1_700_000_000.0


class AuthAPITestBase(TestCase):
    timeout = 15

    def build(self, **overrides):
        self.settings, self.root = temp_settings(self, **overrides)
        self.store = make_store(self.settings, reactor)
        self.queue = make_queue(self.settings, reactor)
        self.registry = make_registry(self.settings, reactor)
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.keys = open_key_store(self.settings, reactor=reactor, clock=self.clock)
        for closable in (self.store, self.queue, self.registry, self.keys):
            self.addCleanup(closable.close)
        self.ledger = JobLedger(self.store, self.queue, self.settings)
        self.api = JobAPI(self.ledger, self.settings, registry=self.registry, clock=self.clock, keys=self.keys)
        self.stub = StubTreq(self.api.resource())

    async def request(self, method, path, body=None, key=None, headers=None, url=URL):
        """(status, JSON payload, response headers)."""
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        kwargs = {"headers": headers}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await pumped(self.stub, self.stub.request(method, url + path, **kwargs))
        content = await pumped(self.stub, self.stub.content(response))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"],
                         f"not JSON: {content[:200]!r}")
        return response.code, json.loads(content), response.headers

    def body(self, name="out.mp4"):
        return {"source_path": f"file://{self.root}/in.mp4", "dest_path": f"file://{self.root}/{name}",
                "notify_url": None, "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}

    async def submit(self, key=None, headers=None):
        return await self.request("POST", "/job/submit", self.body(), key=key, headers=headers)

    async def submitted(self, key=None):
        code, payload, _ = await self.submit(key)
        self.assertEqual(code, 200, payload)
        return payload["job_id"]

    async def key(self, name, *scopes):
        """(key_id, secret) of a new key."""
        key, secret = await self.keys.create(name, scopes or ("submit", "read", "cancel"))
        return key.key_id, secret

    def assertError(self, answer, status, code, *words):
        got_status, payload, _ = answer
        self.assertEqual((got_status, payload.get("error_code")), (status, code), payload)
        self.assertIs(payload["success"], False)
        for word in words:
            self.assertIn(word, payload["message"])
        return payload


class AnonymousRuleTests(AuthAPITestBase):
    """Loopback (the default 127.0.0.1): anonymous while no key is active."""

    def setUp(self):
        self.build()

    @ensure
    async def test_anonymous_served_on_loopback_while_no_key_exists(self):
        """No key at all: anonymous callers may do everything; their jobs have no owner."""
        job_id = await self.submitted()
        code, payload, _ = await self.request("GET", f"/job/{job_id}")
        self.assertEqual(code, 200, payload)
        self.assertIsNone(payload["job"]["owner"])
        self.assertIsNone((await self.store.get(job_id)).owner)
        self.assertEqual((await self.request("GET", "/jobs"))[0], 200)
        self.assertEqual((await self.request("GET", "/workers"))[0], 200)
        self.assertEqual((await self.request("POST", f"/job/{job_id}/cancel"))[0], 200)

    @ensure
    async def test_first_key_ends_anonymous_access_at_once(self):
        """The moment a key exists, anonymous requests get 401 (with WWW-Authenticate: Bearer),
        /health and /openapi.json stay open; revoking every key opens anonymous access again."""
        job_id = await self.submitted()
        key_id, secret = await self.key("first", "admin")
        for method, path in (("POST", "/job/submit"), ("GET", f"/job/{job_id}"), ("GET", "/jobs"),
                             ("POST", f"/job/{job_id}/cancel"), ("GET", "/workers")):
            answer = await self.request(method, path, self.body() if path == "/job/submit" else None)
            self.assertError(answer, 401, "UNAUTHORIZED", "API key")
            self.assertEqual(answer[2].getRawHeaders("www-authenticate"), ['Bearer realm="nommer"'])
        self.assertEqual((await self.request("GET", "/health"))[0], 200)
        response = await pumped(self.stub, self.stub.get(URL + "/openapi.json"))
        self.assertEqual(response.code, 200)
        self.assertEqual((await self.store.count_by_state()), {"PENDING": 1})  # no anonymous job slipped in
        await self.keys.revoke(key_id)
        self.assertError(await self.submit(), 401, "UNAUTHORIZED")  # "some key is active" is remembered a while
        self.clock.advance(auth.ACTIVE_CACHE_S)
        self.assertEqual((await self.submit())[0], 200)

    @ensure
    async def test_proxied_requests_are_never_anonymous(self):
        """A request through a local reverse proxy (Forwarded, X-Forwarded-For, X-Real-IP) may come
        from anywhere: it needs a key even while anonymous callers are served."""
        for header in ("Forwarded", "X-Forwarded-For", "X-Real-IP"):
            answer = await self.submit(headers={header: "203.0.113.9"})
            self.assertError(answer, 401, "UNAUTHORIZED", "proxy")
        self.assertEqual(await self.store.count_by_state(), {})
        self.assertEqual((await self.submit())[0], 200)

    @ensure
    async def test_a_sent_key_must_be_good_even_when_anonymous_is_allowed(self):
        """With no key in the store, a request that sends a key is judged by it: 401."""
        self.assertError(await self.submit(key="nmk_0123456789abcdef_" + "A" * 43), 401, "UNAUTHORIZED")


class KeyTests(AuthAPITestBase):
    """Keys, tenants and scopes; the API on every interface (no anonymous access)."""

    def setUp(self):
        self.build(API_INTERFACE="0.0.0.0")

    @ensure
    async def test_no_key_wrong_key_revoked_key(self):
        """No key, a malformed header, an unknown key and a revoked key: each 401 UNAUTHORIZED."""
        key_id, secret = await self.key("ci")
        self.assertEqual((await self.submit(secret))[0], 200)
        answer = await self.submit()
        self.assertError(answer, 401, "UNAUTHORIZED", "Authorization: Bearer")
        self.assertEqual(answer[2].getRawHeaders("www-authenticate"), ['Bearer realm="nommer"'])
        bad = [{"Authorization": f"Basic {secret}"}, {"Authorization": "Bearer"},
               {"Authorization": f"Bearer {secret[:-1]}x"}, {"Authorization": f"Bearer {secret} extra"},
               {"Authorization": "Bearer nmk_0123456789abcdef_" + "A" * 43}]
        for headers in bad:
            answer = await self.submit(headers=headers)
            self.assertError(answer, 401, "UNAUTHORIZED")
            self.assertEqual(answer[2].getRawHeaders("www-authenticate"),
                             ['Bearer realm="nommer", error="invalid_token"'])
        await self.keys.revoke(key_id)
        self.assertError(await self.submit(secret), 401, "UNAUTHORIZED", "revoked")
        self.assertError(await self.request("GET", "/jobs", key=secret), 401, "UNAUTHORIZED")
        self.assertEqual((await self.request("GET", "/health"))[0], 200)

    @ensure
    async def test_another_tenants_job_is_no_such_job(self):
        """A key sees, lists and cancels only its own jobs: another tenant's job id is the same
        404 NOSUCHJOB as a missing one, and is absent from /jobs; the job JSON shows its owner."""
        a_id, a = await self.key("tenant-a")
        b_id, b = await self.key("tenant-b")
        mine = [await self.submitted(a) for _ in range(3)]
        theirs = await self.submitted(b)
        anonymous = (await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in",
                                                  dest_path="file:///out.mp4", nommer=FFMPEG,
                                                  job_options=[]))).job_id
        code, payload, _ = await self.request("GET", f"/job/{mine[0]}", key=a)
        self.assertEqual((code, payload["job"]["owner"]), (200, a_id))
        missing = "0" * 50
        for job_id in (theirs, anonymous, missing):
            got = self.assertError(await self.request("GET", f"/job/{job_id}", key=a), 404, "NOSUCHJOB")
            self.assertEqual(got["message"], f"no job with id {job_id!r}")
            self.assertError(await self.request("POST", f"/job/{job_id}/cancel", key=a), 404, "NOSUCHJOB")
        self.assertEqual((await self.store.get(theirs)).job_state, JobState.PENDING)
        seen, cursor = [], None
        while True:
            path = "/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
            code, payload, _ = await self.request("GET", path, key=a)
            self.assertEqual(code, 200, payload)
            seen += [j["job_id"] for j in payload["jobs"]]
            cursor = payload["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(seen, mine[::-1])
        code, payload, _ = await self.request("GET", "/jobs", key=b)
        self.assertEqual([j["job_id"] for j in payload["jobs"]], [theirs])
        self.assertEqual((await self.request("POST", f"/job/{theirs}/cancel", key=b))[0], 200)

    @ensure
    async def test_admin_sees_every_job_and_workers(self):
        """admin reads and cancels any job (anonymous ones too), lists all, and reads /workers."""
        _, tenant = await self.key("tenant")
        _, admin = await self.key("ops", "admin")
        theirs = await self.submitted(tenant)
        anonymous = (await self.ledger.submit(Job(job_id=new_job_id(), source_path="file:///in",
                                                  dest_path="file:///out.mp4", nommer=FFMPEG,
                                                  job_options=[]))).job_id
        own = await self.submitted(admin)
        code, payload, _ = await self.request("GET", "/jobs", key=admin)
        self.assertEqual([j["job_id"] for j in payload["jobs"]], [own, anonymous, theirs])
        self.assertEqual((await self.request("GET", f"/job/{theirs}", key=admin))[0], 200)
        self.assertEqual((await self.request("GET", f"/job/{anonymous}", key=admin))[0], 200)
        self.assertEqual((await self.request("POST", f"/job/{theirs}/cancel", key=admin))[0], 200)
        code, payload, _ = await self.request("GET", "/workers", key=admin)
        self.assertEqual((code, payload["workers"]), (200, []))
        self.assertError(await self.request("GET", "/workers", key=tenant), 403, "FORBIDDEN", "admin")

    @ensure
    async def test_each_scope(self):
        """submit, read and cancel each open their routes only; a missing scope is 403 FORBIDDEN."""
        _, submit_only = await self.key("s", "submit")
        _, read_only = await self.key("r", "read")
        _, cancel_only = await self.key("c", "cancel")
        job_id = await self.submitted(submit_only)
        for path in (f"/job/{job_id}", "/jobs", "/workers"):
            self.assertError(await self.request("GET", path, key=submit_only), 403, "FORBIDDEN")
        self.assertError(await self.request("POST", f"/job/{job_id}/cancel", key=submit_only), 403,
                         "FORBIDDEN", "'cancel'")
        self.assertError(await self.submit(read_only), 403, "FORBIDDEN", "'submit'")
        self.assertError(await self.request("POST", f"/job/{job_id}/cancel", key=read_only), 403, "FORBIDDEN")
        self.assertEqual((await self.request("GET", "/jobs", key=read_only))[0], 200)
        self.assertError(await self.submit(cancel_only), 403, "FORBIDDEN")
        self.assertError(await self.request("GET", "/jobs", key=cancel_only), 403, "FORBIDDEN")
        # A key that may read sees only its own jobs: this one has none.
        self.assertError(await self.request("GET", f"/job/{job_id}", key=read_only), 404, "NOSUCHJOB")
        self.assertError(await self.request("POST", f"/job/{job_id}/cancel", key=cancel_only), 404, "NOSUCHJOB")
        self.assertEqual((await self.store.count_by_state()), {"PENDING": 1})

    @ensure
    async def test_off_loopback_host_and_origin_are_not_checked(self):
        """Off loopback every call carries a key, so the Host and Origin checks are off."""
        _, key = await self.key("k")
        code, payload, _ = await self.submit(key, headers={"Host": "encoder.example.com",
                                                          "Origin": "https://console.example.com"})
        self.assertEqual(code, 200, payload)


class CapsTests(AuthAPITestBase):
    """API_RATE_LIMIT_PER_MINUTE and MAX_UNFINISHED_JOBS_PER_KEY."""

    def setUp(self):
        self.build(API_INTERFACE="0.0.0.0", API_RATE_LIMIT_PER_MINUTE=3, MAX_UNFINISHED_JOBS_PER_KEY=2)

    @ensure
    async def test_rate_limit_per_key_with_retry_after(self):
        """Past its requests per minute a key gets 429 RATELIMITED with Retry-After (seconds until
        its next request); other keys are not affected; /health is not counted."""
        _, a = await self.key("a")
        _, b = await self.key("b")
        for _ in range(3):
            self.assertEqual((await self.request("GET", "/jobs", key=a))[0], 200)
            self.assertEqual((await self.request("GET", "/health", key=a))[0], 200)
        answer = await self.request("GET", "/jobs", key=a)
        self.assertError(answer, 429, "RATELIMITED", "3 requests a minute")
        self.assertEqual(answer[2].getRawHeaders("retry-after"), ["20"])  # 3/min: a token every 20 s
        self.assertEqual((await self.request("GET", "/jobs", key=b))[0], 200)
        self.clock.advance(19)
        answer = await self.request("GET", "/jobs", key=a)
        self.assertError(answer, 429, "RATELIMITED")
        self.assertEqual(answer[2].getRawHeaders("retry-after"), ["1"])
        self.clock.advance(1)
        self.assertEqual((await self.request("GET", "/jobs", key=a))[0], 200)
        self.assertError(await self.request("GET", "/jobs", key=a), 429, "RATELIMITED")

    @ensure
    async def test_wrong_keys_are_rate_limited_per_address(self):
        """Wrong keys count against the client address's own bucket: past the rate limit a key
        guesser gets 429 RATELIMITED (Retry-After), not another 401 and not another key lookup; a
        valid key from the same address is not affected; a token later a wrong key is 401 again."""
        _, a = await self.key("a")
        wrong = "nmk_0123456789abcdef_" + "x" * 43
        for _ in range(3):
            self.assertError(await self.request("GET", "/jobs", key=wrong), 401, "UNAUTHORIZED")
        answer = await self.request("GET", "/jobs", key=wrong)
        self.assertError(answer, 429, "RATELIMITED", "wrong API key")
        self.assertEqual(answer[2].getRawHeaders("retry-after"), ["20"])
        self.assertError(await self.request("GET", "/jobs", key="not-even-a-key"), 429, "RATELIMITED")
        self.assertEqual((await self.request("GET", "/jobs", key=a))[0], 200)
        self.clock.advance(20)
        self.assertError(await self.request("GET", "/jobs", key=wrong), 401, "UNAUTHORIZED")

    @ensure
    async def test_unfinished_jobs_quota_with_retry_after(self):
        """A key with MAX_UNFINISHED_JOBS_PER_KEY unfinished jobs gets 429 QUOTA (Retry-After) on
        submit, nothing stored; once one of its jobs ends it may submit again; others unaffected."""
        _, a = await self.key("a")
        _, b = await self.key("b")
        first = await self.submitted(a)
        await self.submitted(a)
        answer = await self.submit(a)
        self.assertError(answer, 429, "QUOTA", "2 unfinished jobs")
        self.assertEqual(answer[2].getRawHeaders("retry-after"), ["30"])
        self.assertEqual(await self.store.count_by_state(), {"PENDING": 2})
        self.assertEqual((await self.submit(b))[0], 200)
        self.clock.advance(60)  # rate limit: 3 a minute
        self.assertEqual((await self.request("POST", f"/job/{first}/cancel", key=a))[0], 200)
        self.assertEqual((await self.submit(a))[0], 200)


class AnonymousRateLimitTests(AuthAPITestBase):
    def setUp(self):
        self.build(API_RATE_LIMIT_PER_MINUTE=2)

    @ensure
    async def test_anonymous_callers_share_one_bucket(self):
        """Every anonymous request counts against one caller's rate limit."""
        self.assertEqual((await self.request("GET", "/jobs"))[0], 200)
        self.assertEqual((await self.request("GET", "/jobs", headers={"Host": "localhost:8001"}))[0], 200)
        answer = await self.request("GET", "/jobs")
        self.assertError(answer, 429, "RATELIMITED")
        self.assertEqual(answer[2].getRawHeaders("retry-after"), ["30"])


class CrossSiteTests(AuthAPITestBase):
    """On loopback: a foreign Origin is 403 FORBIDDEN, a non-loopback Host 421 BADHOST."""

    def setUp(self):
        self.build()

    @ensure
    async def test_foreign_origin_refused_before_the_body_is_used(self):
        """A cross-site submit (a web page's form or fetch) is refused and stores nothing."""
        for origin in ("http://evil.example", "https://127.0.0.1:8001", "http://127.0.0.1:9999",
                       "http://localhost", "null", "http://127.0.0.1:8001/x", "http://127.0.0.2:8001"):
            answer = await self.request("POST", "/job/submit", self.body(), headers={
                "Origin": origin, "Content-Type": "application/x-www-form-urlencoded"})
            self.assertError(answer, 403, "FORBIDDEN", "cross-site")
            self.assertError(await self.request("GET", "/jobs", headers={"Origin": origin}), 403, "FORBIDDEN")
        self.assertEqual(await self.store.count_by_state(), {})
        for origin in ("http://127.0.0.1:8001", "http://localhost:8001", "http://[::1]:8001"):
            code, payload, _ = await self.submit(headers={"Origin": origin})
            self.assertEqual(code, 200, (origin, payload))

    @ensure
    async def test_non_loopback_host_refused(self):
        """A request whose Host is not a loopback name (DNS rebinding) is 421 BADHOST, /health too."""
        for host in ("evil.example", "evil.example:8001", "127.0.0.1.evil.example", "", "0x7f000001",
                     "[::ffff:127.0.0.1]:8001", "192.168.1.10:8001"):
            self.assertError(await self.submit(headers={"Host": host}), 421, "BADHOST", "loopback")
            self.assertError(await self.request("GET", "/health", headers={"Host": host}), 421, "BADHOST")
        self.assertEqual(await self.store.count_by_state(), {})
        for host in ("localhost:8001", "LOCALHOST", "127.0.0.1", "127.3.2.1:8001", "[::1]:8001"):
            code, payload, _ = await self.submit(headers={"Host": host})
            self.assertEqual(code, 200, (host, payload))

    @ensure
    async def test_2011_client_shape_still_works(self):
        """JSON labelled as a form, no Origin: accepted as before."""
        code, payload, _ = await self.request("POST", "/job/submit", json.dumps(self.body()).encode(),
                                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(code, 200, payload)


class KeyRequirementTests(TestCase):
    """feederd's start check off loopback (the real twistd exit is in test_api_e2e)."""

    def setUp(self):
        self.clock = task.Clock()

    def requirement(self, interface, keys):
        settings, _ = temp_settings(self, API_INTERFACE=interface)
        refusals = []
        service = auth.KeyRequirement(keys(settings), settings, refusals.append)
        service.startService()
        return service, refusals

    def store(self, settings):
        keys = open_key_store(settings, reactor=reactor)
        self.addCleanup(keys.close)
        return keys

    @ensure
    async def test_refused_off_loopback_without_a_key(self):
        """On every interface ("", 0.0.0.0, ::, a LAN address) with no active key: refused,
        the message saying how to make one."""
        for interface in ("", "0.0.0.0", "::", "192.168.1.10", "eth0.example"):
            service, refusals = self.requirement(interface, self.store)
            await service.checked
            self.assertEqual(len(refusals), 1, interface)
            self.assertIn("nommer keys create NAME --scope admin", refusals[0])

    @ensure
    async def test_accepted_with_an_active_key_or_on_loopback(self):
        """An active key lets it start anywhere; on loopback no check runs at all."""
        settings, _ = temp_settings(self, API_INTERFACE="")
        keys = self.store(settings)
        await keys.create("ops", ["admin"])
        refusals = []
        service = auth.KeyRequirement(keys, settings, refusals.append)
        service.startService()
        await service.checked
        self.assertEqual(refusals, [])
        for interface in ("127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"):
            service, refusals = self.requirement(interface, lambda s: None)
            self.assertIsNone(service.checked)
            self.assertEqual(refusals, [])

    @ensure
    async def test_unreadable_key_store_refused(self):
        """If the keys cannot be read, feederd does not start off loopback either."""
        class Broken:
            async def any_active(self):
                raise RuntimeError("table gone")
        service, refusals = self.requirement("0.0.0.0", lambda s: Broken())
        await service.checked
        self.assertEqual(len(refusals), 1)
        self.assertIn("cannot be read", refusals[0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
