"""How many unfinished jobs one API key may have (MAX_UNFINISHED_JOBS_PER_KEY).

At submit, a key's jobs not yet in a final state (PENDING to UPLOADING) are
counted in the job store (``count_unfinished(key_id)``); at the maximum the
submit is refused with ``QuotaExceeded`` (the API: 429 ``QUOTA`` with
``Retry-After: RETRY_AFTER_S``: a job of the key has to finish first, and
how long that takes is not known). The count is read before the job is
stored, so submits racing each other may pass the maximum by their number.
The anonymous caller (loopback, no key) has no quota: its rate limit bounds it.
"""

#: Retry-After of a refused submit, seconds: a hint, jobs take about this long.
RETRY_AFTER_S = 30


class QuotaExceeded(Exception):
    def __init__(self, message, retry_after_s=RETRY_AFTER_S):
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


async def check_unfinished_quota(store, caller, maximum):
    """Raise QuotaExceeded when ``caller`` (an ``auth.Caller``) already has
    ``maximum`` unfinished jobs in ``store``."""
    if caller.anonymous:
        return
    count = await store.count_unfinished(caller.key_id)
    if count >= maximum:
        raise QuotaExceeded(f"API key {caller.key_id} has {count} unfinished jobs, the most allowed "
                            f"(MAX_UNFINISHED_JOBS_PER_KEY = {maximum}); submit again when some have finished")
