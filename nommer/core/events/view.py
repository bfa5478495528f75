"""How the API and the live stream show an event: ``event_to_api``."""

from nommer.core.job import iso8601


def event_to_api(event):
    """The API's view of a ``JobEvent`` (``GET /job/<id>/events`` and the
    event stream): ``{"job_id", "seq", "kind", "at", "state", "worker_id",
    "attempt", "progress", "details"}`` with ``kind`` its string value
    (``"state"``, ``"assigned"``...) and ``at`` ISO 8601 UTC with
    milliseconds, like the job's own times (``"2026-11-22T03:04:05.123Z"``);
    ``progress`` in percent (one decimal) or None."""
    return {
        "job_id": event.job_id,
        "seq": event.seq,
        "kind": event.kind.value,
        "at": iso8601(event.at),
        "state": event.state,
        "worker_id": event.worker_id,
        "attempt": event.attempt,
        "progress": None if event.progress is None else round(event.progress, 1),
        "details": event.details,
    }
