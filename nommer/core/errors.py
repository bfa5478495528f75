"""Errors shared by both daemons.

An error carries a message for a person (and fields such as
``InvalidJobSpec.field``), not how an API answers it: feederd's API decides
the HTTP status and ``error_code`` at its edge (``EDGE_ERRORS`` in
``nommer.feederd.api``).

Errors raised while a job runs say whether retrying can help:
``PermanentJobError`` ends the job in ERROR at once, ``TransientJobError``
sends it back to the queue until MAX_JOB_ATTEMPTS is used up.
"""


class NommerError(Exception):
    """Base class. ``message`` is meant for a person."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class InvalidJobSpec(NommerError):
    """A submitted job is malformed. ``field`` names the offending key path,
    e.g. ``job_options.options[0].outfile_options``."""

    #: Kept only because tests outside the API read it (tests/core/test_uri.py,
    #: tests/core/keys_contract.py, tests/workerd/test_ffmpeg_options.py); the
    #: API does not: EDGE_ERRORS in nommer.feederd.api decides its answers.
    error_code = "BADINPUT"

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NoSuchJob(NommerError):
    """No job has that id (or the caller may not see it)."""

    def __init__(self, job_id):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class NoSuchPreset(NommerError):
    """No server preset has that name (``GET /presets/NAME``; at submit the
    spec turns it into an ``InvalidJobSpec`` of field ``preset``). ``name``
    is the name asked for, ``names`` the presets there are (sorted)."""

    def __init__(self, name, names=()):
        self.name = name
        self.names = sorted(names)
        super().__init__(f"no preset named {name!r}; presets: {', '.join(self.names) or 'none'}")


class JobError(NommerError):
    """A job cannot go on. Subclasses say whether another attempt can help."""

    retryable = False


class PermanentJobError(JobError):
    """Retrying cannot help (the source is not media, ffmpeg refused the
    options, the source does not exist): the job ends in ERROR at once."""

    retryable = False


class TransientJobError(JobError):
    """Another attempt may succeed (a download timed out, a server said 503):
    the job goes back to the queue until MAX_JOB_ATTEMPTS is used up."""

    retryable = True


class SourceNotFound(PermanentJobError):
    """The source URI names nothing (file missing, HTTP 404)."""


class JobCanceled(NommerError):
    """The job was canceled (or otherwise finished) while a worker held it."""
