"""Plain dicts of attrs records (a ``Job``, a ``JobEvent``), as the stores
keep them and the API sends them as JSON."""

import enum

import attr


def record_to_dict(record):
    """The attributes of the attrs instance ``record`` as a dict, not
    recursing into their values; an ``enum.Enum`` value is given as its
    ``.value`` (a ``JobState`` as ``"PENDING"``)."""
    return {name: value.value if isinstance(value, enum.Enum) else value
            for name, value in attr.asdict(record, recurse=False).items()}


def record_from_dict(cls, d):
    """``cls(**d)`` for the attrs class ``cls``, the keys of ``d`` that are
    not attributes of ``cls`` left out (a record written by a newer or older
    nommer). Raises what ``cls`` raises: TypeError for a missing mandatory
    attribute, ValueError from a converter (an unknown enum value)."""
    known = {a.name for a in attr.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})
