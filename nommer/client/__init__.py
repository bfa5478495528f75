"""The Python client of feederd's JSON API and the ``nommer`` command line.

``NommerClient`` is the client; ``presets`` holds named job_options;
``connect`` keeps the original media-nommer client's shape.
"""

from nommer.client.api import (  # noqa: F401
    APIConnection,
    APIError,
    APIResponse,
    BadInput,
    ClientError,
    Conflict,
    ConnectionFailed,
    InvalidInputError,
    NoSuchJob,
    NommerClient,
    WaitTimeout,
    connect,
)
