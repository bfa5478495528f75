"""What a worker has encoded, for its heartbeat (and feederd's /metrics).

``EncodeFigures`` counts the attempts this worker finished (stored
FINISHED) since it started: how many, their wall time (download, encode,
upload) and the media seconds they made, and keeps the last
``RECENT_ENCODES`` of them. ``RegistryHeartbeat`` writes ``fields()`` into
the worker's ``WorkerRecord``; feederd turns the records into Prometheus
metrics (``nommer.feederd.metrics``), one observation per encode.
"""

import collections

#: How many finished encodes a worker record lists (``recent_encodes``).
RECENT_ENCODES = 20


def media_seconds(output):
    """Seconds of media a finished job's ``output`` says it made: the
    source's duration of a declarative job (``output["source"]["duration_s"]``),
    else the encoded file's (``output["duration_s"]``, the 2011 nommer's
    summary); None when unknown."""
    if not isinstance(output, dict):
        return None
    source = output.get("source")
    for value in ((source or {}).get("duration_s") if isinstance(source, dict) else None,
                  output.get("duration_s")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


class EncodeFigures:
    """A worker's finished encodes since start (see the module docstring)."""

    def __init__(self):
        self.jobs_finished = 0
        self.encode_seconds_total = 0.0
        self.media_seconds_total = 0.0
        self.last_encode_speed = None
        self.recent = collections.deque(maxlen=RECENT_ENCODES)

    def finished(self, seconds, media_s=None):
        """Count one attempt stored FINISHED: ``seconds`` its wall time (from
        taking the job to FINISHED stored), ``media_s`` the media seconds it
        made (``media_seconds``) or None."""
        seconds = max(0.0, float(seconds))
        self.jobs_finished += 1
        self.encode_seconds_total += seconds
        if media_s is not None:
            self.media_seconds_total += media_s
            if seconds > 0:
                self.last_encode_speed = round(media_s / seconds, 4)
        self.recent.append([round(seconds, 3), None if media_s is None else round(media_s, 3)])

    def fields(self):
        """The ``WorkerRecord`` fields these figures fill: ``jobs_finished``
        (int), ``encode_seconds_total`` and ``media_seconds_total`` (float
        seconds), ``last_encode_speed`` (x real time, or None) and
        ``recent_encodes`` (``[[seconds, media seconds or None], ...]``,
        oldest first, at most RECENT_ENCODES)."""
        return {"jobs_finished": self.jobs_finished,
                "encode_seconds_total": round(self.encode_seconds_total, 3),
                "media_seconds_total": round(self.media_seconds_total, 3),
                "last_encode_speed": self.last_encode_speed,
                "recent_encodes": [list(e) for e in self.recent]}
