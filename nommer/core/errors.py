"""Errors shared by both daemons.

Each error a user can cause carries an ``error_code`` (the API's error shape is
``{"success": false, "error_code": ..., "message": ...}``) and an HTTP status.
Errors raised while a job runs say whether retrying can help:
``PermanentJobError`` ends the job in ERROR at once, ``TransientJobError``
sends it back to the queue until MAX_JOB_ATTEMPTS is used up.
"""


class NommerError(Exception):
    """Base class. ``message`` is meant for a person."""

    error_code = "ERROR"
    http_status = 500

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class InvalidJobSpec(NommerError):
    """A submitted job is malformed. ``field`` names the offending key path,
    e.g. ``job_options.options[0].outfile_options``."""

    error_code = "BADINPUT"
    http_status = 400

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NoSuchJob(NommerError):
    error_code = "NOSUCHJOB"
    http_status = 404

    def __init__(self, job_id):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


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

    error_code = "CANCELED"
    http_status = 409
