"""The client library sends the API key (Authorization: Bearer) and turns 401/403/429 into clear errors."""

import email.utils
import time

import pytest

import nommer.client
from nommer.client.api import (
    APIError,
    Forbidden,
    InvalidInputError,
    NommerClient,
    RateLimited,
    Unauthorized,
    WaitTimeout,
    connect,
    retry_after_seconds,
)

KEY = "nmk_0123456789abcdef_" + "Ab-_" * 10 + "xyz"


def auth_headers(feederd):
    return [headers.get("Authorization") for _, _, headers, _ in feederd.requests]


def json_error(status, code, message, headers=None):
    import json
    return (status, "application/json", json.dumps({"success": False, "error_code": code, "message": message})
            .encode(), headers or {})


def test_every_call_carries_the_bearer_key(feederd, web640):
    """submit, get, list, iter_jobs, cancel, health, workers and wait all send Authorization: Bearer KEY."""
    feederd.api_key = KEY
    client = NommerClient(feederd.url, timeout_s=5, api_key=KEY)
    job_id = client.submit("file:///a.mov", "file:///b.mp4", web640)
    client.get(job_id)
    client.list()
    list(client.iter_jobs())
    client.health()
    client.workers()
    client.wait(job_id, poll_interval_s=0)
    client.cancel(feederd.add_job())
    assert len(feederd.requests) >= 9
    assert auth_headers(feederd) == [f"Bearer {KEY}"] * len(feederd.requests)


def test_the_key_comes_from_NOMMER_API_KEY_by_default(feederd, monkeypatch):
    """Without api_key= the environment's NOMMER_API_KEY is sent (blanks around it dropped); "" sends none."""
    monkeypatch.setenv("NOMMER_API_KEY", f" {KEY}\n")
    NommerClient(feederd.url, timeout_s=5).health()
    NommerClient(feederd.url, timeout_s=5, api_key="").health()
    NommerClient(feederd.url, timeout_s=5, api_key="nmk_other").health()
    assert auth_headers(feederd) == [f"Bearer {KEY}", None, "Bearer nmk_other"]


def test_no_key_no_header(feederd):
    """Without a key (and no NOMMER_API_KEY) no Authorization header is sent at all."""
    client = NommerClient(feederd.url, timeout_s=5)
    client.health()
    assert auth_headers(feederd) == [None]
    assert not client.has_api_key


def test_the_key_is_not_shown(feederd):
    """repr() of the client and the 401 error say nothing of the key."""
    feederd.api_key = "nmk_the_right_one"
    client = NommerClient(feederd.url, timeout_s=5, api_key=KEY)
    assert KEY not in repr(client) and "with an API key" in repr(client)
    with pytest.raises(Unauthorized) as info:
        client.health()
    assert KEY not in str(info.value) and KEY not in repr(info.value.args)


def test_a_malformed_key_is_refused_without_repeating_it():
    """A key with a line break or blank inside (a header injection, a pasted mess) is refused before sending."""
    for bad in ["nmk_a\r\nX-Evil: 1", "nmk_a b", "nmk_é", "nmk_\x00"]:
        with pytest.raises(InvalidInputError) as info:
            NommerClient("http://127.0.0.1:1", api_key=bad)
        assert bad.strip() not in str(info.value)


def test_401_is_Unauthorized_with_what_to_do(feederd):
    """401 UNAUTHORIZED becomes Unauthorized naming --api-key, NOMMER_API_KEY and `nommer keys create`."""
    feederd.api_key = KEY
    with pytest.raises(Unauthorized) as info:
        NommerClient(feederd.url, timeout_s=5).health()
    err = info.value
    assert (err.status, err.error_code, err.message) == (401, "UNAUTHORIZED", "missing or invalid API key")
    assert isinstance(err, APIError)
    for words in ("--api-key", "NOMMER_API_KEY", "nommer keys create"):
        assert words in str(err)


def test_403_is_Forbidden(feederd):
    """403 FORBIDDEN (a key without the scope) becomes Forbidden pointing at the key's scopes."""
    feederd.next_error = json_error(403, "FORBIDDEN", "this key may not submit (scope submit)")
    with pytest.raises(Forbidden) as info:
        NommerClient(feederd.url, timeout_s=5, api_key=KEY).get("a" * 50)
    assert (info.value.status, info.value.message) == (403, "this key may not submit (scope submit)")
    assert "scope" in info.value.hint


def test_status_alone_picks_the_class(feederd):
    """A 401/403/429 that is not the API's JSON still becomes the right class."""
    for status, cls in [(401, Unauthorized), (403, Forbidden), (429, RateLimited)]:
        feederd.next_error = (status, "text/plain", b"nope")
        with pytest.raises(cls) as info:
            NommerClient(feederd.url, timeout_s=5).health()
        assert info.value.error_code == f"HTTP_{status}"


def test_429_is_RateLimited_with_retry_after(feederd):
    """429 RATELIMITED becomes RateLimited with Retry-After in seconds (delta or HTTP date)."""
    feederd.next_error = json_error(429, "RATELIMITED", "too many requests", {"Retry-After": "7"})
    with pytest.raises(RateLimited) as info:
        NommerClient(feederd.url, timeout_s=5).health()
    assert (info.value.status, info.value.error_code, info.value.retry_after_s) == (429, "RATELIMITED", 7.0)
    assert "try again in 7 s" in str(info.value)
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    feederd.next_error = json_error(429, "RATELIMITED", "slow down", {"Retry-After": when})
    with pytest.raises(RateLimited) as info:
        NommerClient(feederd.url, timeout_s=5).health()
    assert 25 <= info.value.retry_after_s <= 31
    feederd.next_error = json_error(429, "RATELIMITED", "slow down")
    with pytest.raises(RateLimited) as info:
        NommerClient(feederd.url, timeout_s=5).health()
    assert info.value.retry_after_s is None


def test_retry_after_seconds():
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_wait_waits_out_a_429(feederd):
    """wait() meeting a 429 sleeps its Retry-After and polls on; a deadline still bounds it."""
    job_id = feederd.add_job(state="ENCODING", script=[("FINISHED", 100.0, None)])
    sleeps = []
    client = NommerClient(feederd.url, timeout_s=5, sleep=sleeps.append, clock=lambda: 0.0)
    feederd.next_error = json_error(429, "RATELIMITED", "too many requests", {"Retry-After": "3"})
    assert client.wait(job_id, poll_interval_s=0.5)["job_state"] == "FINISHED"
    assert sleeps == [3.0]

    now = [0.0]
    client = NommerClient(feederd.url, timeout_s=5, sleep=lambda s: now.__setitem__(0, now[0] + s),
                          clock=lambda: now[0])
    stuck = feederd.add_job(state="ENCODING")
    feederd.next_error = json_error(429, "RATELIMITED", "too many requests", {"Retry-After": "60"})
    with pytest.raises(WaitTimeout):
        client.wait(stuck, poll_interval_s=1, timeout_s=5)
    assert now[0] == 5.0


def test_the_key_does_not_follow_a_redirect(feederd, other_server):
    """A redirect to another server is followed without the Authorization header."""
    client = NommerClient(feederd.url, timeout_s=5, api_key=KEY)
    feederd.next_error = (302, "text/plain", b"", {"Location": other_server.url + "/health"})
    assert client.health()["status"] == "ok"
    assert auth_headers(feederd) == [f"Bearer {KEY}"]
    assert [(m, p) for m, p, _, _ in other_server.requests] == [("GET", "/health")]
    assert auth_headers(other_server) == [None]


def test_original_connect_sends_the_key(feederd, web640, monkeypatch):
    """connect(host, api_key=...) and the environment's key both reach job_submit's request."""
    response = connect(feederd.url, api_key=KEY).job_submit("file:///a", "file:///b", web640)
    assert response.is_success()
    monkeypatch.setenv("NOMMER_API_KEY", "nmk_env")
    connect(feederd.url).job_submit("file:///a", "file:///b", web640)
    assert auth_headers(feederd) == [f"Bearer {KEY}", "Bearer nmk_env"]


def test_errors_are_exported():
    for name in ("Unauthorized", "Forbidden", "RateLimited", "API_KEY_ENV"):
        assert hasattr(nommer.client, name)
