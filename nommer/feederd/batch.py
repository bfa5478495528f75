"""``POST /jobs/batch``: many jobs in one request, each with its own result.

A batch body is one of two forms (nothing else beside them):

* ``{"common": {body fields}, "sources": [{"source_path", "dest_path",
  ...}, ...]}`` (ElasticRecode's ``batchInputs``): each source is a job
  body made of ``common`` with the source's fields over it; an item's
  ``overrides`` (with a preset) are merged field by field over
  ``common``'s, every other field of the item replaces ``common``'s;
* ``{"jobs": [body, ...]}``: full job bodies, as ``POST /job/submit`` takes.

Each item is validated and submitted on its own, in order, as a submit
would be (same checks, same defaults, the caller's owner); one bad item
does not sink the others. The answer is ``200`` with one result per item,
in order: ``{"index": i, "success": true, "job_id": ...}`` or ``{"index": i,
"success": false, "error_code": "BADINPUT" | "QUOTA" | ..., "message": ...,
"field": the body field at fault or null}``, plus ``submitted`` and
``failed`` counts. (200, not 207 Multi-Status: 207 is WebDAV's, with an XML
body; here the request itself succeeded and each item says how it went.)

Limits: at most MAX_BATCH_JOBS items (a larger or empty batch is refused
whole, 400 ``BADINPUT``), the request body under MAX_REQUEST_BODY_BYTES,
and the key's quota of unfinished jobs per item (``BatchQuota``: counted
once, then each accepted item takes one; items past it fail with
``QUOTA``, the others still go).
"""

import copy

from twisted.logger import Logger

from nommer.core.errors import InvalidJobSpec
from nommer.feederd.quota import QuotaExceeded

log = Logger()

FORMS = ({"common", "sources"}, {"jobs"})


def batch_items(body, max_jobs):
    """The job bodies of a batch body (a list; an item that is not a JSON
    object is kept as it is, to fail on its own). Raises InvalidJobSpec
    (the whole batch refused) when the body is not one of the two forms,
    or has no item, or more than ``max_jobs``."""
    if not isinstance(body, dict) or set(body) not in FORMS:
        keys = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
        raise InvalidJobSpec(None, 'a batch is {"common": {...}, "sources": [...]} or {"jobs": [...]}, '
                                   f"and nothing else (got: {keys})")
    if "jobs" in body:
        items, field = body["jobs"], "jobs"
    else:
        items, field = body["sources"], "sources"
        if not isinstance(body["common"], dict):
            raise InvalidJobSpec("common", "must be an object: the fields every job of the batch shares")
    if not isinstance(items, list) or not items:
        raise InvalidJobSpec(field, "must be a non-empty list")
    if len(items) > max_jobs:
        raise InvalidJobSpec(field, f"holds {len(items)} jobs; a batch holds at most {max_jobs} "
                                    f"(MAX_BATCH_JOBS): split it")
    if "jobs" in body:
        return list(items)
    return [_merged(body["common"], item) for item in items]


def _merged(common, item):
    if not isinstance(item, dict):
        return item
    body = copy.deepcopy(common)
    for key, value in item.items():
        if key == "overrides" and isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(copy.deepcopy(value))
        else:
            body[key] = copy.deepcopy(value)
    return body


class BatchQuota:
    """The unfinished-job quota of one caller over a batch: counted once
    (``start``), then each accepted item takes one (``take``, which raises
    QuotaExceeded at the maximum) and a failed submit gives it back. The
    anonymous caller has no quota."""

    def __init__(self, store, caller, maximum):
        self.store, self.caller, self.maximum = store, caller, maximum
        self.count = 0

    async def start(self):
        if not self.caller.anonymous:
            self.count = await self.store.count_unfinished(self.caller.key_id)

    def take(self):
        if self.caller.anonymous:
            return
        if self.count >= self.maximum:
            raise QuotaExceeded(f"API key {self.caller.key_id} has {self.count} unfinished jobs, the most "
                                f"allowed (MAX_UNFINISHED_JOBS_PER_KEY = {self.maximum}); submit again when "
                                f"some have finished")
        self.count += 1

    def give_back(self):
        if not self.caller.anonymous:
            self.count -= 1


async def submit_batch(items, submit_one, answer):
    """Submit each of ``items`` (job bodies) with ``submit_one(item) ->
    Job`` (a coroutine function), in order. ``answer(exc)``: ``(status,
    error_code)`` of an error the API knows, or None (then the item's
    error is ``INTERNAL``, logged). Returns the list of results (see the
    module docstring)."""
    results = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise InvalidJobSpec(None, f"a job must be a JSON object, not {type(item).__name__}")
            job = await submit_one(item)
        except Exception as exc:
            known = answer(exc)
            if known is None or known[0] >= 500:
                log.failure("batch item {index} failed", index=index)
                code = "INTERNAL" if known is None else known[1]
                message = "internal error; the server log has the details"
            else:
                code, message = known[1], getattr(exc, "message", None) or str(exc)
            results.append({"index": index, "success": False, "error_code": code, "message": message,
                            "field": getattr(exc, "field", None)})
        else:
            results.append({"index": index, "success": True, "job_id": job.job_id})
    return results
