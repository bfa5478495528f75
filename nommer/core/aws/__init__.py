"""nommer on AWS: what every AWS-backed part shares.

- ``pool``: boto3 clients built from settings and the bounded thread pool
  their calls run in (``AWS``), ``client_kwargs``, ``error_code`` (imported
  here, so ``from nommer.core.aws import AWS`` is the way to get them), and
  ``condition_held``, which the backends below import from ``pool``.
- ``dynamodb``: ``DynamoDBTable``, one table used through a pool (lazy
  set-up, shape checks, paging), and the item converters.
- ``simpledb``: ``SimpleDBDomain``, one domain used through a pool, and its
  value layout (fixed-width times, chunks past the 1 KB attribute limit,
  Select quoting and paging).

The job store, the worker registry and the API key store build on the last
two; the work queue, S3 storage and the EC2 fleet on ``AWS`` alone.
"""

from nommer.core.aws.pool import AWS, client_kwargs, error_code  # noqa: F401
