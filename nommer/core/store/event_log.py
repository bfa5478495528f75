"""The event-log half of a job store whose events live apart from its jobs
(a second DynamoDB table, a second SimpleDB domain)."""


class SeparateEventLog:
    """Mixin of a ``JobStore`` whose event logs are kept by ``self.events``
    (``DynamoDBEventLog``, ``SimpleDBEventLog``: ``append(event)``,
    ``list(job_id, after_seq, limit)``, ``max_events``), set by the store's
    ``__init__``. Listed before the ``JobStore`` base, whose methods it
    provides."""

    @property
    def max_events(self):
        """The bound of a job's event log (MAX_EVENTS_PER_JOB)."""
        return self.events.max_events

    @max_events.setter
    def max_events(self, value):
        self.events.max_events = value

    def append_event(self, event):
        """Deferred[JobEvent|None]: see ``JobStore`` and the event log's ``append``."""
        return self.events.append(event)

    def list_events(self, job_id, after_seq=0, limit=500):
        """Deferred[list[JobEvent]]: see ``JobStore`` and the event log's ``list``."""
        return self.events.list(job_id, after_seq, limit)
