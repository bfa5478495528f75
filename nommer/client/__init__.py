"""The Python client of feederd's JSON API and the ``nommer`` command line.

``NommerClient`` is the client (``api_key=`` or the environment variable
NOMMER_API_KEY for feederd's API keys); ``presets`` holds named job_options;
``connect`` keeps the original media-nommer client's shape.
"""

from nommer.client.api import (  # noqa: F401
    API_KEY_ENV,
    APIConnection,
    APIError,
    APIResponse,
    BadInput,
    ClientError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidInputError,
    NoSuchJob,
    NommerClient,
    RateLimited,
    Unauthorized,
    WaitTimeout,
    connect,
)
