"""Events on the state-change queue.

Every event a daemon records (``JobLedger.record_event``) is also sent on
the state-change queue (STATE_CHANGE_QUEUE_NAME), beside the state-change
messages the webhooks come from, as JSON ``{"event": {...}}`` where the
inner object is ``JobEvent.to_dict()`` (``at`` in epoch seconds, ``kind``
its string value, ``seq`` the store's, or None when the store dropped it
or could not be written). A state-change message never has an ``event``
key, so a reader tells them apart by that key alone (``event_of``).
"""

import json

from nommer.core.events.event import JobEvent


def event_body(event):
    """The queue message body announcing ``event`` (str)."""
    return json.dumps({"event": event.to_dict()})


def event_of(message):
    """The ``JobEvent`` a parsed state-change-queue message (a dict)
    announces, or None when it is not an event message (a state change).
    Raises ValueError (or TypeError) for an ``event`` that is not a valid
    event."""
    if not isinstance(message, dict) or "event" not in message:
        return None
    doc = message["event"]
    if not isinstance(doc, dict):
        raise ValueError(f"an event message's event is not an object: {doc!r}")
    return JobEvent.from_dict(doc)


def is_event_body(body):
    """Whether a raw state-change-queue message body (str) is an event
    announcement rather than a state change."""
    try:
        return event_of(json.loads(body)) is not None
    except (ValueError, TypeError):
        return False
