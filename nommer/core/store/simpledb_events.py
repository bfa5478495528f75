"""The jobs' event logs on SimpleDB: a second domain beside the jobs'.

Domain ``SIMPLEDB_EVENTS_DOMAIN`` (default: ``SIMPLEDB_JOB_STATE_DOMAIN`` +
``"_events"``, so ``media_nommer_events``). One item per event, named
``<job_id>/<seq>`` with ``seq`` zero-padded to SEQ_DIGITS digits
(``"3f.../0000000007"``), so text order is ``seq`` order::

    job_id   "3f..."            plain, for Select
    seq      "0000000007"       zero-padded, compared and sorted as text
    doc      '{"kind": ...}'    JobEvent.to_dict() as ASCII JSON; split over
                                doc.0 .. doc.<n-1> with ``chunks`` when longer
                                than 1024 bytes (nommer.core.aws.simpledb.chunked)

``seq`` is allocated by a conditional put: read the log's last ``seq`` (a
consistent Select ``order by seq desc limit 1``), then PutAttributes the
next item with Expected ``seq`` absent; another writer's item there fails
the condition and the log is read again (at most MAX_WRITE_ATTEMPTS times,
then ``StoreConflict``). The count of a log is its last ``seq``.

SimpleDB has no expiry and nommer prunes no jobs from it: a job's events
stay as long as the job.
"""

import json

import attr

from nommer.core.aws.pool import condition_held
from nommer.core.aws.simpledb import CONFLICT_CODES, SimpleDBDomain, chunked, quote, unchunked
from nommer.core.deferreds import deferred
from nommer.core.events import JobEvent, keeps
from nommer.core.store.base import event_limit
from nommer.core.store.versioned import MAX_WRITE_ATTEMPTS, StoreConflict

#: Digits of the zero-padded ``seq`` (a log holds at most 2 * MAX_EVENTS_PER_JOB events).
SEQ_DIGITS = 10


def events_domain_name(settings):
    """SIMPLEDB_EVENTS_DOMAIN, or SIMPLEDB_JOB_STATE_DOMAIN + ``"_events"``."""
    return getattr(settings, "SIMPLEDB_EVENTS_DOMAIN", None) or settings.SIMPLEDB_JOB_STATE_DOMAIN + "_events"


def seq_text(seq):
    """``seq`` as stored: ``"0000000007"``."""
    return f"{int(seq):0{SEQ_DIGITS}d}"


def item_name(job_id, seq):
    """The item of event ``seq`` of job ``job_id``: ``"<job_id>/0000000007"``."""
    return f"{job_id}/{seq_text(seq)}"


class SimpleDBEventLog(SimpleDBDomain):
    """The event domain (see the module docstring), its calls made in
    ``pool`` (the job store's). ``max_events`` bounds a job's log."""

    def __init__(self, settings, reactor, pool=None, max_events=500):
        self._open_domain(settings, reactor, events_domain_name(settings), "simpledb-events", pool)
        self.max_events = max_events

    async def _last_seq(self, job_id):
        items = await self._select("seq", f"job_id = {quote(job_id)} and seq is not null",
                                   order_by="seq desc", limit=1)
        return int(items[0][1]["seq"]) if items else 0

    @deferred
    async def append(self, event):
        """Deferred[JobEvent|None]: ``event`` stored at the next ``seq`` of
        its job's log, or None when the bound drops it. StoreConflict after
        MAX_WRITE_ATTEMPTS lost races."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            count = await self._last_seq(event.job_id)
            if not keeps(event.kind, count, self.max_events):
                return None
            stored = attr.evolve(event, seq=count + 1)
            attrs = {"job_id": stored.job_id, "seq": seq_text(stored.seq)}
            attrs.update(chunked({"doc": json.dumps(stored.to_dict(), ensure_ascii=True)}))
            put = self._call("put_attributes", ItemName=item_name(stored.job_id, stored.seq),
                             Attributes=[{"Name": n, "Value": v, "Replace": True} for n, v in attrs.items()],
                             Expected={"Name": "seq", "Exists": False})
            if await condition_held(put, CONFLICT_CODES):
                return stored
        raise StoreConflict(event.job_id, MAX_WRITE_ATTEMPTS)

    @deferred
    async def list(self, job_id, after_seq=0, limit=500):
        """Deferred[list[JobEvent]]: the job's events after ``after_seq``,
        ascending, at most ``limit`` (a consistent Select)."""
        after_seq, limit = event_limit(after_seq, limit)
        items = await self._select("*", f"job_id = {quote(job_id)} and seq > {quote(seq_text(after_seq))}",
                                   order_by="seq asc", limit=limit)
        return [JobEvent.from_dict(json.loads(unchunked(attrs, ("doc",))["doc"])) for _, attrs in items[:limit]]
