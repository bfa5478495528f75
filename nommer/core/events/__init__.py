"""A job's event log: what happened to it, when, and where (``event.py``)."""

from nommer.core.events.event import EventKind, JobEvent

__all__ = ["EventKind", "JobEvent"]
