"""The job model: one encoding job as stored and as shown by the API."""

import datetime
import secrets

import attr

from nommer.core.pools import DEFAULT_POOL
from nommer.core.priority import DEFAULT_PRIORITY
from nommer.core.records import record_from_dict, record_to_dict
from nommer.core.states import JobState


def new_job_id():
    """A new job id: 50 lowercase hex characters, the original's id shape,
    from ``secrets`` (the original hashed ``random.random()``)."""
    return secrets.token_hex(25)


def iso8601(epoch_s):
    """Epoch seconds (float) -> ``"2026-11-22T03:04:05.123Z"`` (UTC), or None."""
    if epoch_s is None:
        return None
    dt = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@attr.s(auto_attribs=True, frozen=True, kw_only=True)
class Job:
    """One encoding job.

    Times are epoch seconds (float, UTC) from the daemon's clock; the API shows
    them as ISO 8601. ``job_options`` is the nommer's options (for FFmpegNommer
    the list of pass objects, the original's ``job_options.options``).
    ``progress`` is a percentage 0..100 or None before encoding starts.
    ``output`` is what the nommer reports about the result (size in bytes,
    duration in seconds, codecs...) once FINISHED.
    ``sealed_credentials`` is ``{"source_path": token, "dest_path": token}``
    (either key may be absent) when a URI had credentials: the stored URI is
    then redacted and the token is the original, encrypted (see
    ``nommer.core.secrets``); None otherwise. The API never shows it.
    ``owner`` is the ``key_id`` of the API key that submitted the job (public,
    not a secret), or None for a job submitted anonymously (loopback, no key
    yet) or stored before API keys existed.
    ``priority`` is 0..100, higher taken first (``nommer.core.priority``);
    ``pool`` the pool whose queue and workers run it (``nommer.core.pools``);
    ``retries`` how many times ``POST /job/<id>/retry`` queued it again (the
    store lets a final job go back to PENDING only in a write that adds one:
    ``nommer.core.states.check_transition``). A job stored before these
    fields reads as priority 50, pool ``default``, 0 retries.
    ``chunks`` is a chunked job's plan and the state of each chunk
    (``nommer.core.chunking``), None for a job encoded whole.
    """

    job_id: str
    source_path: str
    dest_path: str
    nommer: str
    job_options: object
    notify_url: str = None
    job_state: JobState = attr.ib(default=JobState.PENDING, converter=JobState)
    job_state_details: str = None
    progress: float = None
    attempts: int = 0
    worker_id: str = None
    output: dict = None
    created_at: float = None
    updated_at: float = None
    started_at: float = None
    finished_at: float = None
    heartbeat_at: float = None
    sealed_credentials: dict = attr.ib(default=None, repr=False)
    owner: str = None
    priority: int = DEFAULT_PRIORITY
    pool: str = DEFAULT_POOL
    retries: int = 0
    chunks: list = None

    @property
    def is_final(self):
        return self.job_state.is_final

    def evolve(self, **changes):
        return attr.evolve(self, **changes)

    def to_dict(self):
        """Plain JSON-able dict (states as strings) for storage."""
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, d):
        """Inverse of ``to_dict``; unknown keys ignored."""
        return record_from_dict(cls, d)
