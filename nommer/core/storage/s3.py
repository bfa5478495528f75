# -*- test-case-name: tests.core.test_storage_s3 -*-
"""``s3://bucket/key`` storage: boto3 managed transfers in a bounded pool.

Downloads and uploads use boto3's managed transfers (``download_file`` /
``upload_file``): objects above ``MULTIPART_THRESHOLD_BYTES`` go in parts of
``MULTIPART_CHUNKSIZE_BYTES`` (s3transfer grows the part size by itself when
an object would need more than 10,000 parts, so objects over 5 GB work),
streamed from and to disk, never whole in memory. Each transfer runs in the
thread pool of its own ``AWS`` (``nommer.core.aws``), closed when the
transfer ends; within the transfer s3transfer moves at most
``MAX_CONCURRENCY`` parts at once (bounded by ``AWS_MAX_THREADS``). Nothing
runs on the reactor thread, not even creating the client (that may ask the
instance metadata service for credentials). Canceling the Deferred of a
transfer (or the reactor shutting down) aborts it: no further request goes
out and an unfinished multipart upload is aborted.

Credentials: boto3's default chain (environment, profile, instance role),
or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the settings -- unless the
URI carries them, the original media-nommer's ``s3://KEY:SECRET@bucket/key``:
then that transfer uses a client made for those credentials. Secrets are
never logged nor put in an error message (``redact_uri`` everywhere). feederd
keeps such URIs sealed in the job store (``nommer.core.secrets``).

Uploads set ``ContentType`` from the output's extension (the scratch file is
named after its muxer, e.g. ``output.m4a``; else the key's: the one table of
``nommer.core.storage.content_types``, through ``base.content_type_for``), and
``ServerSideEncryption`` / ``SSEKMSKeyId`` / ``StorageClass`` from
S3_SERVER_SIDE_ENCRYPTION / S3_SSE_KMS_KEY_ID / S3_STORAGE_CLASS. Buckets are
never created.

Buckets: with ``S3_ALLOWED_BUCKETS`` set, a URI naming another bucket is
refused by ``check`` (BADINPUT at submit, ``PermanentJobError`` on the worker).
A source larger than ``MAX_SOURCE_BYTES`` is stopped there (the job ends in
ERROR).

Errors: a missing key or bucket is ``SourceNotFound`` on download; on upload a
missing bucket is a ``PermanentJobError``; access denied and refused
credentials are ``PermanentJobError``; throttling, S3 5xx, timeouts and
connection errors are ``TransientJobError`` (boto3 already retried them).

Size (issue 10: about 400 lines at most, or a reason): kept whole. It is
one backend: the transfers, their thread side (stopping a transfer, the
source size limit) and the translation of S3's answers into job errors all
speak boto3/s3transfer, and the Storage contract suite tests them as one.
"""

import errno
import os
import re
import threading

import boto3
import botocore.exceptions as bexc
from boto3.s3.transfer import TransferConfig
from twisted.internet import defer
from twisted.logger import Logger

from nommer.core.aws import AWS, client_kwargs, error_code
from nommer.core.errors import PermanentJobError, SourceNotFound, TransientJobError
from nommer.core.storage.base import Storage, content_type_for
from nommer.core.uri import REDACTED, InvalidURI, as_media_uri, redact_uri

__all__ = ["S3Storage", "content_type_for", "transfer_config"]

MiB = 1024 * 1024

#: Objects larger than this are transferred in parts (multipart upload,
#: ranged GETs), bytes.
MULTIPART_THRESHOLD_BYTES = 64 * MiB
#: Size of one part, bytes (S3: at least 5 MiB; s3transfer raises it when an
#: object would need more than 10,000 parts).
MULTIPART_CHUNKSIZE_BYTES = 64 * MiB
#: Most parts of one transfer in flight at once (never more than AWS_MAX_THREADS).
MAX_CONCURRENCY = 4

#: Longest S3 key, bytes of UTF-8.
MAX_KEY_BYTES = 1024

# Legacy (us-east-1) bucket names may hold capitals and underscores, so only
# the characters are checked; S3 itself refuses a name it does not like.
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED_CODES = {"403", "AccessDenied", "AllAccessDisabled", "AccountProblem"}
_BAD_CREDENTIALS_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                          "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                    "RequestTimeoutException", "InternalError", "ServiceUnavailable",
                    "RequestLimitExceeded", "TooManyRequestsException", "OperationAborted",
                    "NoSuchUpload", "PreconditionFailed", "RequestTimeTooSkewed",
                    "500", "502", "503", "504"}
_CONNECTION_ERRORS = (bexc.ConnectionError, bexc.HTTPClientError,
                      bexc.ResponseStreamingError, bexc.IncompleteReadError)
_CREDENTIALS_ERRORS = (bexc.NoCredentialsError, bexc.PartialCredentialsError,
                       bexc.CredentialRetrievalError)


def transfer_config(settings):
    """The ``TransferConfig`` of every transfer (module constants read at
    call time, so tests may lower the multipart threshold)."""
    concurrency = max(1, min(MAX_CONCURRENCY, int(settings.AWS_MAX_THREADS)))
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD_BYTES,
        multipart_chunksize=MULTIPART_CHUNKSIZE_BYTES,
        max_concurrency=concurrency,
        use_threads=True,
        # The CRT client ignores this config and resolves credentials its own way.
        preferred_transfer_client="classic",
    )


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _client_error(exc):
    """The botocore ClientError behind ``exc`` (boto3 wraps upload errors
    in ``S3UploadFailedError``), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, bexc.ClientError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _chained(exc, classes):
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, classes):
            return exc
        last = getattr(exc, "last_exception", None)  # RetriesExceededError
        exc = exc.__cause__ or exc.__context__ or last
        seen += 1
    return None


class S3Storage(Storage):
    """Read and write ``s3://bucket/key`` objects.

    @param transfer_config: a ``TransferConfig`` for every transfer of this
        instance; by default ``transfer_config(settings)``.
    """

    log = Logger()

    def __init__(self, settings, reactor, transfer_config=None):
        super().__init__(settings, reactor)
        self._transfer_config = transfer_config

    # --- checks (no I/O) ------------------------------------------------------

    def check(self, uri, for_write, field=None):
        """See ``Storage.check``: a bucket, a key, no port or query, and
        credentials either absent or ``KEY:SECRET@``."""
        super().check(uri, for_write, field)
        muri = as_media_uri(uri, field)
        shown = redact_uri(muri)
        if muri.scheme != "s3":
            raise InvalidURI(f"{shown}: S3Storage handles s3:// URIs only", field)
        if not muri.host:
            raise InvalidURI(f"{shown}: an s3:// URI names a bucket and a key, "
                             "s3://bucket/path/to/key", field)
        if not _BUCKET_RE.fullmatch(muri.host):
            raise InvalidURI(f"{shown}: {muri.host!r} is not a valid S3 bucket name", field)
        allowed = getattr(self.settings, "S3_ALLOWED_BUCKETS", None)
        if allowed is not None and muri.host not in allowed:
            raise InvalidURI(f"{shown}: bucket {muri.host!r} is not one of S3_ALLOWED_BUCKETS "
                             f"({', '.join(allowed) or 'none'})", field)
        if muri.port is not None:
            raise InvalidURI(f"{shown}: an s3:// URI takes no port", field)
        if muri.query:
            raise InvalidURI(f"{shown}: an s3:// URI takes no query; percent-encode a '?' "
                             "in a key as %3F", field)
        key = muri.key
        if not key or key.endswith("/"):
            raise InvalidURI(f"{shown} does not name an object (s3://bucket/path/to/key)", field)
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidURI(f"{shown}: an S3 key is at most {MAX_KEY_BYTES} bytes", field)
        if muri.username is not None or muri.password is not None:
            if not muri.username or not muri.password:
                raise InvalidURI(
                    f"{shown}: credentials in an s3:// URI are written "
                    "s3://ACCESS_KEY_ID:SECRET_ACCESS_KEY@bucket/key (both, or neither "
                    "to use the default credential chain)", field)
            if muri.password == REDACTED:
                raise InvalidURI(
                    f"{shown}: the secret access key was redacted and is not known here "
                    "(a job store read without its sealed credentials?)", field)

    # --- transfers --------------------------------------------------------------

    async def download(self, uri, local_path):
        """Fetch the object at ``uri`` into ``local_path``; return the byte count.

        @raise SourceNotFound: no such key or bucket.
        @raise PermanentJobError: access denied, credentials refused, an
            archived object, a URI that fails ``check``, an object larger
            than MAX_SOURCE_BYTES.
        @raise TransientJobError: throttling, S3 5xx, connection errors.
        """
        muri = self._check_at_use(uri, for_write=False)
        shown = redact_uri(muri)
        size = await self._in_pool(self._download_in_thread, muri, local_path, shown)
        self.log.debug("Downloaded {uri} to {local_path} ({size} bytes)",
                       uri=shown, local_path=local_path, size=size)
        return size

    async def upload(self, local_path, uri):
        """Store ``local_path`` at ``uri``; return the byte count.

        @raise PermanentJobError: ``local_path`` missing, no such bucket,
            access denied, credentials refused, a URI that fails ``check``.
        @raise TransientJobError: throttling, S3 5xx, connection errors.
        """
        muri = self._check_at_use(uri, for_write=True)
        shown = redact_uri(muri)
        extra = self.extra_args(local_path, muri)
        size = await self._in_pool(self._upload_in_thread, local_path, muri, shown, extra)
        self.log.debug("Uploaded {local_path} to {uri} ({size} bytes, {content_type})",
                       uri=shown, local_path=local_path, size=size,
                       content_type=extra["ContentType"])
        return size

    async def delete(self, uri):
        """Delete the object at ``uri``: ``True`` when it was there, ``False``
        when not (no key, or no bucket).

        S3 answers a DELETE of a missing key with 204 as well, so a HEAD asks
        first; when the HEAD is refused (no s3:GetObject), the DELETE goes out
        anyway and ``True`` is returned. A versioned bucket keeps the object's
        versions (the DELETE adds a delete marker).

        @raise PermanentJobError: access denied, credentials refused, a URI
            that fails ``check`` for writing.
        @raise TransientJobError: throttling, S3 5xx, connection errors.
        """
        muri = self._check_at_use(uri, for_write=True)
        shown = redact_uri(muri)
        deleted = await self._in_pool(self._delete_in_thread, muri, shown)
        self.log.debug("Deleted {uri}: {outcome}", uri=shown,
                       outcome="done" if deleted else "there was no such object")
        return deleted

    def extra_args(self, local_path, uri):
        """``ExtraArgs`` of an upload: ContentType, and encryption and storage
        class from the settings when set."""
        muri = as_media_uri(uri)
        extra = {"ContentType": content_type_for(local_path, muri.key)}
        sse = getattr(self.settings, "S3_SERVER_SIDE_ENCRYPTION", None)
        if sse:
            extra["ServerSideEncryption"] = sse
            kms_key = getattr(self.settings, "S3_SSE_KMS_KEY_ID", None)
            if kms_key and sse.startswith("aws:kms"):
                extra["SSEKMSKeyId"] = kms_key
        storage_class = getattr(self.settings, "S3_STORAGE_CLASS", None)
        if storage_class:
            extra["StorageClass"] = storage_class
        return extra

    async def _in_pool(self, fn, *args):
        """Run ``fn(aws, stop, *args)`` in a fresh pool, closed as soon as
        ``fn`` returns. Canceling the wait, or the reactor shutting down,
        sets ``stop``: the transfer then aborts at its next progress callback
        or request (an unfinished multipart upload is aborted), and the pool
        closes when it has (shutdown waits for that: pool threads are not
        daemons)."""
        aws = AWS(self.settings, self.reactor, name="s3-storage")
        stop = threading.Event()
        finished = defer.Deferred()

        def closed():
            # Closing joins the pool thread, so it happens once fn is over,
            # never when a wait is merely canceled.
            aws.close()
            try:
                self.reactor.removeSystemEventTrigger(trigger)
            except (ValueError, KeyError, TypeError):
                pass
            finished.callback(None)

        def on_shutdown():
            stop.set()
            return finished

        def work():
            try:
                return fn(aws, stop, *args)
            finally:
                self.reactor.callFromThread(closed)

        trigger = self.reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
        try:
            return await aws.run(work)
        except defer.CancelledError:
            stop.set()
            raise

    def _config(self):
        return self._transfer_config or transfer_config(self.settings)

    # --- thread side ---------------------------------------------------------------

    def _client(self, aws, muri):
        """The S3 client for a transfer (called in the pool): the part's own
        client, or one made for the credentials the URI carries."""
        if muri.username is None:
            return aws.client("s3")
        kwargs = client_kwargs(self.settings, "s3")
        kwargs["aws_access_key_id"] = muri.username
        kwargs["aws_secret_access_key"] = muri.password
        return boto3.session.Session().client("s3", **kwargs)

    def _download_in_thread(self, aws, stop, muri, local_path, shown):
        client = None
        limit = _SizeLimit(self._max_source_bytes())
        try:
            client = self._client(aws, muri)
            _stop_requests(client, stop)
            client.download_file(muri.host, muri.key, local_path, Config=self._config(),
                                 Callback=_stopper(stop, limit))
            return os.path.getsize(local_path)
        except Exception as e:
            _unlink_quietly(local_path)
            if limit.exceeded:
                raise PermanentJobError(
                    f"{shown} is larger than MAX_SOURCE_BYTES ({limit.max_bytes}); the download "
                    "was stopped") from None
            error = _transfer_error(e, muri, shown, for_write=False)
            if isinstance(error, SourceNotFound) and client is not None:
                error = _which_is_missing(client, muri, shown) or error
            raise error from None

    def _upload_in_thread(self, aws, stop, local_path, muri, shown, extra):
        try:
            with open(local_path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise PermanentJobError(
                f"cannot read the file to store at {shown}: {e.strerror}") from None
        try:
            client = self._client(aws, muri)
            _stop_requests(client, stop)
            client.upload_file(local_path, muri.host, muri.key, ExtraArgs=extra,
                               Config=self._config(), Callback=_stopper(stop))
        except Exception as e:
            raise _transfer_error(e, muri, shown, for_write=True) from None
        return size

    def _delete_in_thread(self, aws, stop, muri, shown):
        try:
            client = self._client(aws, muri)
            _stop_requests(client, stop)
            try:
                client.head_object(Bucket=muri.host, Key=muri.key)
            except bexc.ClientError as e:
                code = error_code(e) or ""
                status = (getattr(e, "response", None) or {}).get(
                    "ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if code in _NOT_FOUND_CODES or status == 404:
                    return False
                if not (code in _DENIED_CODES or status == 403):
                    raise
            client.delete_object(Bucket=muri.host, Key=muri.key)
        except Exception as e:
            raise _transfer_error(e, muri, shown, for_write=True, operation="delete") from None
        return True


class TransferStopped(Exception):
    """Raised inside a transfer whose wait was canceled, to abort it."""


class SourceTooBig(Exception):
    """Raised inside a download that passed MAX_SOURCE_BYTES, to abort it."""


class _SizeLimit:
    """Bytes received by one download against ``max_bytes``; ``exceeded``
    stays True once passed (whatever error the transfer then ends with)."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.seen = 0
        self.exceeded = False
        self._lock = threading.Lock()  # parts report from several threads

    def add(self, n_bytes):
        with self._lock:
            self.seen += n_bytes
            if self.seen > self.max_bytes:
                self.exceeded = True
            return self.exceeded


#: Requests refused once a transfer is stopped (AbortMultipartUpload still goes out).
_STOPPABLE_OPERATIONS = ("HeadObject", "GetObject", "PutObject", "CreateMultipartUpload",
                         "UploadPart", "CompleteMultipartUpload", "DeleteObject")


def _stopper(stop, limit=None):
    """A progress callback that aborts the transfer once ``stop`` is set
    (mid-body; botocore sees a send error and retries, which
    ``_stop_requests`` refuses), or once ``limit`` (a ``_SizeLimit``) is
    passed (then ``stop`` is set too, so no further request goes out)."""
    def on_progress(n_bytes):
        if limit is not None and limit.add(n_bytes):
            stop.set()
            raise SourceTooBig()
        if stop.is_set():
            raise TransferStopped()
    return on_progress


def _stop_requests(client, stop):
    """Make ``client`` send no further transfer request once ``stop`` is set;
    an error raised here is not retried by botocore. ``client`` must be this
    transfer's own (each transfer has its own ``AWS``, hence its own client)."""
    def before_send(**kwargs):
        if stop.is_set():
            raise TransferStopped()
    for operation in _STOPPABLE_OPERATIONS:
        client.meta.events.register(f"before-send.s3.{operation}", before_send)


def _which_is_missing(client, muri, shown):
    """After a 404 on download (HEAD cannot tell), ask whether the bucket
    exists, for a clearer message. None when that cannot be told."""
    if client is None:
        return None
    try:
        client.head_bucket(Bucket=muri.host)
    except bexc.ClientError as e:
        if error_code(e) in ("404", "NoSuchBucket", "NotFound"):
            return SourceNotFound(f"{shown} does not exist: there is no bucket {muri.host!r}")
        return None
    except Exception:
        return None
    return SourceNotFound(f"{shown} does not exist: bucket {muri.host!r} has no key {muri.key!r}")


def _whose(muri):
    if muri.username is not None:
        return f"with the credentials in the URI (access key id {muri.username})"
    return "with the default credentials (settings, environment, profile or instance role)"


def _transfer_error(exc, muri, shown, for_write, operation=None):
    """The job error a failed transfer means. Messages name the redacted URI
    and never hold the URI's secret, whatever an exception said.
    ``operation`` is ``"delete"`` for a deletion (``for_write`` True), else
    None (a download or an upload, as ``for_write`` says)."""
    error = _classify(exc, muri, shown, for_write, operation)
    if muri.password and muri.password in error.message:
        return type(error)(error.message.replace(muri.password, REDACTED))
    return error


def _classify(exc, muri, shown, for_write, operation=None):
    deleting = operation == "delete"
    verb = "delete" if deleting else "upload to" if for_write else "download"
    if _chained(exc, TransferStopped) is not None:
        what = "deletion" if deleting else "transfer"
        return TransientJobError(f"{verb} {shown} stopped: the {what} was canceled")
    ce = _client_error(exc)
    if ce is not None:
        code = error_code(ce) or ""
        response = getattr(ce, "response", None) or {}
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = response.get("Error", {}).get("Message") or ""
        said = f"{code}: {message}" if message and message != code else (code or f"HTTP {status}")
        if code in _NOT_FOUND_CODES or status == 404:
            if not for_write:
                if code == "NoSuchBucket":
                    return SourceNotFound(
                        f"{shown} does not exist: there is no bucket {muri.host!r}")
                return SourceNotFound(f"{shown} does not exist")
            if code == "NoSuchBucket" or status == 404:
                return PermanentJobError(
                    f"cannot {verb} {shown}: there is no bucket {muri.host!r} "
                    "(nommer does not create buckets; create it first)")
        if code == "InvalidObjectState":
            return PermanentJobError(
                f"cannot {verb} {shown}: the object is archived; restore it first ({said})")
        if code in _BAD_CREDENTIALS_CODES:
            return PermanentJobError(
                f"cannot {verb} {shown}: S3 refused the credentials {_whose(muri)} ({code})")
        if code in _DENIED_CODES or status == 403 or code.startswith("KMS."):
            need = ("s3:DeleteObject" if deleting
                    else "s3:PutObject (and kms:GenerateDataKey with SSE-KMS)" if for_write
                    else "s3:GetObject (without s3:ListBucket, S3 also answers a missing "
                         "key with access denied)")
            return PermanentJobError(
                f"cannot {verb} {shown}: access denied {_whose(muri)}; they need {need} "
                f"on the object ({said})")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientJobError(f"cannot {verb} {shown}: S3 said {said}; will retry")
        return PermanentJobError(f"cannot {verb} {shown}: S3 said {said}")
    if _chained(exc, _CREDENTIALS_ERRORS) is not None:
        return PermanentJobError(
            f"cannot {verb} {shown}: no usable AWS credentials (set them in the environment, "
            "a profile or an instance role, or put KEY:SECRET@ in the URI)")
    if isinstance(exc, OSError) and not isinstance(exc, _CONNECTION_ERRORS):
        local = f"cannot {verb} {shown}: local file error: {exc.strerror or exc}"
        if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
            return TransientJobError(local)
        return PermanentJobError(local)
    if _chained(exc, _CONNECTION_ERRORS) is not None or \
            type(exc).__name__ == "RetriesExceededError":
        return TransientJobError(
            f"cannot {verb} {shown}: connection to S3 failed ({type(exc).__name__}); will retry")
    if isinstance(exc, bexc.ParamValidationError):
        return PermanentJobError(f"cannot {verb} {shown}: invalid request ({exc})")
    if isinstance(exc, bexc.BotoCoreError):
        return TransientJobError(f"cannot {verb} {shown}: {type(exc).__name__}; will retry")
    return TransientJobError(f"cannot {verb} {shown}: {type(exc).__name__}: {exc}; will retry")
