"""s3:// storage against a moto server: managed transfers, metadata, errors, URI credentials."""

import hashlib
import os
import socket
import threading

import boto3
import botocore.retries.standard
from botocore.exceptions import ClientError, EndpointConnectionError
from twisted.internet import defer, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from nommer.core.aws import AWS, client_kwargs
from nommer.core.errors import PermanentJobError, SourceNotFound, TransientJobError
from nommer.core.storage import check_destination, check_source, get_storage
from nommer.core.storage import s3 as s3_mod
from nommer.core.storage.s3 import S3Storage, content_type_for
from nommer.core.uri import InvalidURI, parse_uri
from tests.aws_server import aws_settings, reset_moto
from tests.core.storage_contract import NetworkStorageContract, WritableStorageContract, with_overrides
from tests.helpers import ensure, eventually

BUCKET = "nommer-media"
KEY_ID = "AKIAEXAMPLE0123456789"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz9SECRET"
MiB = 1024 * 1024


class _RecordingAWS(AWS):
    """AWS that remembers every instance, to check pools are closed."""

    instances = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).instances.append(self)


class S3StorageTests(TestCase):
    timeout = 60

    def setUp(self):
        reset_moto()
        self.settings, self.root = aws_settings(self)
        self.aws = AWS(self.settings, reactor, name="test")
        self.addCleanup(self.aws.close)
        _RecordingAWS.instances = []
        self.shutdown_triggers = self.shutdownTriggers()
        self.patch(s3_mod, "AWS", _RecordingAWS)
        self.addCleanup(self.assertPoolsClosed)

    def shutdownTriggers(self):
        triggers = getattr(reactor, "_eventTriggers", {}).get("shutdown")
        return None if triggers is None else len(triggers.before)

    def assertPoolsClosed(self):
        self.assertEqual(self.shutdownTriggers(), self.shutdown_triggers,
                         "a shutdown trigger of a finished transfer was left behind")
        for aws in _RecordingAWS.instances:
            self.assertTrue(aws._closed, "an S3Storage AWS pool was left open")
            self.assertEqual([t for t in aws._pool.threads if t.is_alive()], [],
                             "an S3Storage pool thread is still alive")

    def storage(self, settings=None):
        return S3Storage(settings or self.settings, reactor)

    def write(self, name, data):
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    async def make_bucket(self, name=BUCKET):
        await self.aws.call("s3", "create_bucket", Bucket=name)

    async def head(self, key, bucket=BUCKET):
        return await self.aws.call("s3", "head_object", Bucket=bucket, Key=key)

    @ensure
    async def test_round_trip(self):
        """A file uploaded to s3:// downloads back byte for byte, as a single PUT."""
        await self.make_bucket()
        data = os.urandom(300 * 1024)
        src = self.write("output.mp4", data)
        uri = f"s3://{BUCKET}/videos/clip.mp4"
        self.assertEqual(await self.storage().upload(src, uri), len(data))
        head = await self.head("videos/clip.mp4")
        self.assertEqual(head["ContentLength"], len(data))
        self.assertNotIn("-", head["ETag"])

        dest = os.path.join(self.root, "back.mp4")
        self.assertEqual(await get_storage(uri, self.settings, reactor).download(uri, dest),
                         len(data))
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), data)

    @ensure
    async def test_multipart_above_threshold(self):
        """Above the multipart threshold the upload goes in parts and the download in ranges."""
        self.patch(s3_mod, "MULTIPART_THRESHOLD_BYTES", 8 * MiB)
        self.patch(s3_mod, "MULTIPART_CHUNKSIZE_BYTES", 8 * MiB)
        await self.make_bucket()
        data = os.urandom(20 * MiB)
        src = self.write("output.mp4", data)
        uri = f"s3://{BUCKET}/big.mp4"
        self.assertEqual(await self.storage().upload(src, uri), len(data))
        head = await self.head("big.mp4")
        self.assertTrue(head["ETag"].strip('"').endswith("-3"), head["ETag"])
        self.assertEqual(head["ContentLength"], len(data))

        dest = os.path.join(self.root, "big-back.mp4")
        self.assertEqual(await self.storage().download(uri, dest), len(data))
        with open(dest, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(data).digest())

    @ensure
    async def test_cancel_aborts_transfer(self):
        """Canceling an upload's Deferred aborts the transfer: no object, no open multipart upload."""
        self.patch(s3_mod, "MULTIPART_THRESHOLD_BYTES", 8 * MiB)
        self.patch(s3_mod, "MULTIPART_CHUNKSIZE_BYTES", 8 * MiB)
        await self.make_bucket()
        src = self.write("output.mp4", os.urandom(24 * MiB))
        d = defer.Deferred.fromCoroutine(self.storage().upload(src, f"s3://{BUCKET}/c.mp4"))
        d.cancel()
        await self.assertFailure(d, defer.CancelledError)
        await eventually(lambda: _RecordingAWS.instances[0]._closed, what="the transfer to end")
        listing = await self.aws.call("s3", "list_objects_v2", Bucket=BUCKET)
        self.assertEqual(listing.get("KeyCount"), 0)
        uploads = await self.aws.call("s3", "list_multipart_uploads", Bucket=BUCKET)
        self.assertEqual(uploads.get("Uploads", []), [])

    def test_transfer_config(self):
        """The transfer config uses the module's threshold and part size, bounded concurrency."""
        self.patch(s3_mod, "MULTIPART_THRESHOLD_BYTES", 9 * MiB)
        config = s3_mod.transfer_config(self.settings)
        self.assertEqual(config.multipart_threshold, 9 * MiB)
        self.assertEqual(config.multipart_chunksize, s3_mod.MULTIPART_CHUNKSIZE_BYTES)
        self.assertLessEqual(config.max_request_concurrency, self.settings.AWS_MAX_THREADS)
        self.assertEqual(config.preferred_transfer_client, "classic")

    def test_content_types(self):
        """Content-Type comes from the output file's extension, else the key's, else octet-stream."""
        cases = {
            ("output.mp4", "a/b.mp4"): "video/mp4",
            ("output.m4a", "song"): "audio/mp4",
            ("output.webm", "x.webm"): "video/webm",
            ("output.mkv", "x"): "video/x-matroska",
            ("output.mov", "x"): "video/quicktime",
            ("output.mp3", "x"): "audio/mpeg",
            ("output.ts", "x"): "video/mp2t",
            ("output.out", "x.mp4"): "video/mp4",
            ("output.out", "x"): "application/octet-stream",
        }
        for (local, key), expected in cases.items():
            self.assertEqual(content_type_for(local, key), expected, (local, key))

    @ensure
    async def test_upload_sets_content_type(self):
        """An upload records the output's Content-Type (audio/mp4 for an m4a) on the object."""
        await self.make_bucket()
        src = self.write("output.m4a", b"audio")
        await self.storage().upload(src, f"s3://{BUCKET}/songs/track")
        self.assertEqual((await self.head("songs/track"))["ContentType"], "audio/mp4")

    @ensure
    async def test_streaming_types_stored_with_their_content_type(self):
        """HLS playlists, DASH manifests, CMAF segments and WebVTT are stored with the Content-Type
        of the one table (nommer.core.storage.content_types), as the http backend sends them."""
        await self.make_bucket()
        cases = {"master.m3u8": "application/vnd.apple.mpegurl",
                 "manifest.mpd": "application/dash+xml",
                 "seg_00001.m4s": "video/iso.segment",
                 "storyboard.vtt": "text/vtt",
                 "init.mp4": "video/mp4"}
        for name, expected in cases.items():
            src = self.write(name, b"x" * 100)
            await self.storage().upload(src, f"s3://{BUCKET}/title/{name}")
            self.assertEqual((await self.head(f"title/{name}"))["ContentType"], expected, name)

    @ensure
    async def test_delete(self):
        """delete removes the object (True; HEAD then 404) and not a neighbour; a missing key or
        bucket is False; every pool is closed afterwards."""
        await self.make_bucket()
        for key in ("title/hls/seg_1.m4s", "title/hls/seg_1.m4s.keep"):
            await self.aws.call("s3", "put_object", Bucket=BUCKET, Key=key, Body=b"x")
        self.assertIs(await self.storage().delete(f"s3://{BUCKET}/title/hls/seg_1.m4s"), True)
        listing = await self.aws.call("s3", "list_objects_v2", Bucket=BUCKET)
        self.assertEqual([o["Key"] for o in listing["Contents"]], ["title/hls/seg_1.m4s.keep"])
        self.assertIs(await self.storage().delete(f"s3://{BUCKET}/title/hls/seg_1.m4s"), False)
        self.assertIs(await self.storage().delete("s3://no-such-bucket-here/a.mp4"), False)

    @ensure
    async def test_delete_goes_ahead_when_head_is_refused(self):
        """Without s3:GetObject the HEAD is refused (403): the DELETE is sent anyway, exactly once,
        and delete returns True; a refused DELETE is a PermanentJobError naming s3:DeleteObject."""
        from botocore.stub import Stubber
        stubbed = []

        def stubbed_client(storage, aws, muri):
            client = boto3.session.Session().client("s3", **client_kwargs(self.settings, "s3"))
            stubber = Stubber(client)
            stubber.add_client_error("head_object", "403", "Forbidden", 403,
                                     expected_params={"Bucket": BUCKET, "Key": "a.mp4"})
            if not stubbed:
                stubber.add_response("delete_object", {},
                                     expected_params={"Bucket": BUCKET, "Key": "a.mp4"})
            else:
                stubber.add_client_error("delete_object", "AccessDenied", "Access Denied", 403,
                                         expected_params={"Bucket": BUCKET, "Key": "a.mp4"})
            stubber.activate()
            stubbed.append(stubber)
            return client
        self.patch(S3Storage, "_client", stubbed_client)
        self.assertIs(await self.storage().delete(f"s3://{BUCKET}/a.mp4"), True)
        stubbed[0].assert_no_pending_responses()
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage().delete(f"s3://{BUCKET}/a.mp4")
        self.assertIn(f"cannot delete s3://{BUCKET}/a.mp4: access denied", cm.exception.message)
        self.assertIn("s3:DeleteObject", cm.exception.message)
        stubbed[1].assert_no_pending_responses()

    @ensure
    async def test_sse_and_storage_class(self):
        """S3_SERVER_SIDE_ENCRYPTION and S3_STORAGE_CLASS reach the stored object."""
        settings, _ = aws_settings(self, S3_SERVER_SIDE_ENCRYPTION="AES256",
                                   S3_STORAGE_CLASS="STANDARD_IA")
        await self.make_bucket()
        src = self.write("output.mp4", b"x" * 1000)
        await self.storage(settings).upload(src, f"s3://{BUCKET}/enc.mp4")
        head = await self.head("enc.mp4")
        self.assertEqual(head["ServerSideEncryption"], "AES256")
        self.assertEqual(head["StorageClass"], "STANDARD_IA")

    @ensure
    async def test_sse_kms_key(self):
        """With aws:kms, S3_SSE_KMS_KEY_ID is sent as the object's KMS key."""
        key = await self.aws.call("kms", "create_key", Description="nommer test")
        key_id = key["KeyMetadata"]["KeyId"]
        settings, _ = aws_settings(self, S3_SERVER_SIDE_ENCRYPTION="aws:kms",
                                   S3_SSE_KMS_KEY_ID=key_id)
        self.assertEqual(self.storage(settings).extra_args("o.mp4", f"s3://{BUCKET}/k.mp4"),
                         {"ContentType": "video/mp4", "ServerSideEncryption": "aws:kms",
                          "SSEKMSKeyId": key_id})
        await self.make_bucket()
        src = self.write("output.mp4", b"x" * 1000)
        await self.storage(settings).upload(src, f"s3://{BUCKET}/kms.mp4")
        head = await self.head("kms.mp4")
        self.assertEqual(head["ServerSideEncryption"], "aws:kms")
        self.assertIn(key_id, head["SSEKMSKeyId"])

    @ensure
    async def test_missing_key(self):
        """Downloading a key that does not exist is SourceNotFound, and leaves no local file."""
        await self.make_bucket()
        dest = os.path.join(self.root, "nothing.mp4")
        with self.assertRaises(SourceNotFound) as cm:
            await self.storage().download(f"s3://{BUCKET}/nope.mp4", dest)
        self.assertIn("has no key 'nope.mp4'", cm.exception.message)
        self.assertFalse(os.path.exists(dest))

    @ensure
    async def test_missing_bucket(self):
        """A missing bucket is SourceNotFound on download and a permanent error on upload."""
        dest = os.path.join(self.root, "nothing.mp4")
        with self.assertRaises(SourceNotFound) as cm:
            await self.storage().download("s3://no-such-bucket/a.mp4", dest)
        self.assertIn("no bucket 'no-such-bucket'", cm.exception.message)

        src = self.write("output.mp4", b"data")
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage().upload(src, "s3://no-such-bucket/a.mp4")
        self.assertNotIsInstance(cm.exception, SourceNotFound)
        self.assertIn("no bucket 'no-such-bucket'", cm.exception.message)

    @ensure
    async def test_upload_missing_local_file(self):
        """Uploading a local file that does not exist is a permanent error."""
        with self.assertRaises(PermanentJobError):
            await self.storage().upload(os.path.join(self.root, "absent.mp4"),
                                        f"s3://{BUCKET}/a.mp4")

    @ensure
    async def test_uri_credentials_used_and_never_logged(self):
        """KEY:SECRET@ in the URI signs that transfer with those keys; the secret is never logged."""
        await self.make_bucket()
        signed_with = []
        original = S3Storage._client

        def capturing_client(storage, aws, muri):
            client = original(storage, aws, muri)

            def capture(request, **kwargs):
                signed_with.append(request.headers.get("Authorization", b""))
            client.meta.events.register("before-send.s3", capture)
            return client
        self.patch(S3Storage, "_client", capturing_client)

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        uri = f"s3://{KEY_ID}:{SECRET}@{BUCKET}/private/clip.mp4"
        self.assertEqual(parse_uri(uri).password, SECRET)
        src = self.write("output.mp4", b"secret video")
        await self.storage().upload(src, uri)
        dest = os.path.join(self.root, "back.mp4")
        await self.storage().download(uri, dest)
        with self.assertRaises(SourceNotFound) as cm:
            await self.storage().download(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/missing.mp4", dest)

        self.assertTrue(signed_with)
        for auth in signed_with:
            auth = auth.decode() if isinstance(auth, bytes) else auth
            self.assertIn(f"Credential={KEY_ID}/", auth)
            self.assertNotIn(SECRET, auth)
        self.assertNotIn(SECRET, cm.exception.message)
        self.assertIn(":***@", cm.exception.message)

        # Without URI credentials the default chain signs, not the URI's keys.
        signed_with.clear()
        await self.storage().download(f"s3://{BUCKET}/private/clip.mp4", dest)
        self.assertTrue(signed_with)
        self.assertNotIn(KEY_ID, b"".join(signed_with).decode())

        self.assertTrue(any("private/clip.mp4" in repr(e) for e in events),
                        "the transfers logged nothing; the check below would prove nothing")
        for event in events:
            self.assertNotIn(SECRET, repr(event))
            self.assertNotIn(SECRET, formatEvent(event) or "")

    def test_check(self):
        """check accepts s3://bucket/key (with or without KEY:SECRET@) and refuses the rest, no I/O."""
        storage = S3Storage(self.settings, None)
        for uri in (f"s3://{BUCKET}/a.mp4", f"s3://{BUCKET}/dir/a b.mp4",
                    f"s3://{KEY_ID}:{SECRET}@{BUCKET}/a.mp4", "s3://legacy_Bucket/a.mp4"):
            storage.check(uri, True, "dest_path")
            storage.check(uri, False, "source_path")
        for uri in ("s3://bucket", "s3://bucket/", "s3://bucket/dir/", "s3://bucket/a.mp4?v=1",
                    "s3://bucket:9000/a.mp4", f"s3://{KEY_ID}@bucket/a.mp4",
                    f"s3://{KEY_ID}:***@bucket/a.mp4", "s3://b/" + "k" * 1100,
                    "s3://bad!bucket/a.mp4"):
            with self.assertRaises(InvalidURI, msg=uri) as cm:
                storage.check(uri, True, "dest_path")
            self.assertEqual(cm.exception.field, "dest_path")
        with self.assertRaises(InvalidURI) as cm:
            check_source(f"s3://{KEY_ID}:{SECRET}@bucket", self.settings)
        self.assertNotIn(SECRET, cm.exception.message)
        self.assertEqual(check_destination(f"s3://{BUCKET}/o.mp4", self.settings).key, "o.mp4")

    def test_allowed_buckets(self):
        """With S3_ALLOWED_BUCKETS, another bucket is BADINPUT at submit (source and destination) and
        refused again by the storage on the worker; listed buckets pass."""
        from nommer.core.errors import InvalidJobSpec
        from nommer.core.spec import validate_submission
        from tests.helpers import doc_two_pass
        settings, _ = aws_settings(self, S3_ALLOWED_BUCKETS=[BUCKET])
        check_source(f"s3://{BUCKET}/in.mp4", settings)
        check_destination(f"s3://{BUCKET}/out.mp4", settings)
        for field, check in (("source_path", check_source), ("dest_path", check_destination)):
            with self.assertRaises(InvalidURI) as cm:
                check("s3://someone-elses-bucket/x.mp4", settings)
            self.assertEqual(cm.exception.field, field)
            self.assertIn("'someone-elses-bucket' is not one of S3_ALLOWED_BUCKETS (nommer-media)",
                          cm.exception.message)
        body = {"source_path": "s3://other-bucket/in.mp4", "dest_path": f"s3://{BUCKET}/out.mp4",
                "job_options": {"nommer": "nommer.workerd.nommers.ffmpeg.FFmpegNommer", "options": doc_two_pass()}}
        with self.assertRaises(InvalidJobSpec) as cm:
            validate_submission(body, settings)
        self.assertTrue(cm.exception.message.startswith("source_path:"), cm.exception.message)
        d = defer.Deferred.fromCoroutine(self.storage(settings).download("s3://other-bucket/in.mp4",
                                                                         os.path.join(self.root, "x")))
        self.assertIn("S3_ALLOWED_BUCKETS", self.failureResultOf(d, PermanentJobError).value.message)
        settings, _ = aws_settings(self, S3_ALLOWED_BUCKETS=[])
        self.assertRaises(InvalidURI, check_source, f"s3://{BUCKET}/in.mp4", settings)

    @ensure
    async def test_download_over_max_source_bytes_stopped(self):
        """An object larger than MAX_SOURCE_BYTES: the download stops (also a multipart one), the job
        ends in ERROR with the reason, and no local file is left."""
        self.patch(s3_mod, "MULTIPART_THRESHOLD_BYTES", 8 * MiB)
        self.patch(s3_mod, "MULTIPART_CHUNKSIZE_BYTES", 8 * MiB)
        await self.make_bucket()
        for size in (300 * 1024, 20 * MiB):
            src = self.write("output.mp4", os.urandom(size))
            uri = f"s3://{BUCKET}/big-{size}.mp4"
            await self.storage().upload(src, uri)
            settings, _ = aws_settings(self, MAX_SOURCE_BYTES=size - 1)
            dest = os.path.join(self.root, "back.mp4")
            with self.assertRaises(PermanentJobError) as cm:
                await self.storage(settings).download(uri, dest)
            self.assertIn(f"is larger than MAX_SOURCE_BYTES ({size - 1})", cm.exception.message)
            self.assertFalse(os.path.exists(dest))
            settings, _ = aws_settings(self, MAX_SOURCE_BYTES=size)
            self.assertEqual(await self.storage(settings).download(uri, dest), size)

    def test_error_mapping(self):
        """Access denied and bad keys are permanent; throttling, 5xx and connection errors transient."""
        muri = parse_uri(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/a.mp4")
        shown = f"s3://{KEY_ID}:***@{BUCKET}/a.mp4"

        def client_error(code, status, message="boom"):
            return ClientError({"Error": {"Code": code, "Message": message},
                                "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

        cases = [
            (client_error("AccessDenied", 403), False, PermanentJobError, "access denied"),
            (client_error("403", 403), True, PermanentJobError, "access denied"),
            (client_error("InvalidAccessKeyId", 403), False, PermanentJobError,
             "refused the credentials"),
            (client_error("SlowDown", 503), True, TransientJobError, "will retry"),
            (client_error("InternalError", 500), False, TransientJobError, "will retry"),
            (client_error("NoSuchKey", 404), False, SourceNotFound, "does not exist"),
            (client_error("NoSuchBucket", 404), True, PermanentJobError, "no bucket"),
            (client_error("InvalidObjectState", 403), False, PermanentJobError, "archived"),
            (client_error("InvalidRequest", 400, f"leaked {SECRET}"), False,
             PermanentJobError, "***"),
            (EndpointConnectionError(endpoint_url="http://s3"), False, TransientJobError,
             "connection"),
        ]
        for exc, for_write, cls, words in cases:
            error = s3_mod._transfer_error(exc, muri, shown, for_write)
            self.assertIsInstance(error, cls, repr(exc))
            if cls is not SourceNotFound and not for_write:
                self.assertFalse(isinstance(error, SourceNotFound), repr(exc))
            self.assertIn(words, error.message)
            self.assertNotIn(SECRET, error.message)
        # boto3 wraps upload ClientErrors in S3UploadFailedError; the code is still found.
        from boto3.exceptions import S3UploadFailedError
        try:
            try:
                raise client_error("AccessDenied", 403)
            except ClientError as e:
                raise S3UploadFailedError(f"Failed to upload: {e}")
        except S3UploadFailedError as wrapped:
            error = s3_mod._transfer_error(wrapped, muri, shown, True)
        self.assertIsInstance(error, PermanentJobError)
        self.assertIn("access denied", error.message)


class S3StorageContractTests(WritableStorageContract, NetworkStorageContract, TestCase):
    """The Storage contract (tests/core/storage_contract.py) against s3:// on
    the moto server, with multipart transfers (5 MiB parts, 12 MiB objects).

    botocore's retries sleep between attempts; here they do not (the number
    of attempts is unchanged), so that a transfer broken on purpose or a
    server that does not answer fails in well under a second."""

    storage_class = S3Storage
    EXTRA_PUBLIC_METHODS = ("extra_args",)
    PAYLOAD_BYTES = 12 * MiB + 3
    timeout = 120

    def setUp(self):
        reset_moto()
        self.settings, _ = aws_settings(self)
        self.patch(s3_mod, "MULTIPART_THRESHOLD_BYTES", 5 * MiB)
        self.patch(s3_mod, "MULTIPART_CHUNKSIZE_BYTES", 5 * MiB)
        self.patch(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda *_: 0)
        # The test's own client, used from threads only (peek, leftovers, put).
        self.s3 = boto3.session.Session().client("s3", **client_kwargs(self.settings, "s3"))
        # Bound, never listening: connecting is refused, and no one else takes the port.
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.addCleanup(self.silent.close)
        return threads.deferToThread(self.s3.create_bucket, Bucket=BUCKET)

    def make_storage(self, settings=None):
        return S3Storage(settings or self.settings, reactor)

    def uri(self, name):
        return f"s3://{BUCKET}/contract/{name}"

    async def put(self, name, data, **extra):
        await threads.deferToThread(self.s3.put_object, Bucket=BUCKET, Key=f"contract/{name}",
                                    Body=data, **extra)

    def peek(self, name):
        try:
            return self.s3.get_object(Bucket=BUCKET, Key=f"contract/{name}")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def leftovers(self):
        """Multipart uploads begun and neither completed nor aborted."""
        return [u["Key"] for u in self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]

    async def refused_source(self):
        """An archived object (S3 refuses a GET until it is restored)."""
        await self.put("archived.mp4", b"cold", StorageClass="GLACIER")
        return self.uri("archived.mp4")

    async def refused_destination(self):
        return "s3://no-such-bucket-here/out.mp4"  # nommer never creates buckets

    def unreachable_source(self):
        port = self.silent.getsockname()[1]
        settings = with_overrides(self.settings, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
        return self.make_storage(settings), self.uri("x.mp4")

    def unacceptable_uri(self):
        return f"s3://{BUCKET}/contract/"  # a "directory", not an object

    async def refused_deletion(self):
        """An object in a bucket that S3_ALLOWED_BUCKETS leaves out."""
        await self.put("kept.mp4", b"keep")
        storage = self.make_storage(with_overrides(self.settings,
                                                   S3_ALLOWED_BUCKETS=["someone-elses-bucket"]))
        return storage, self.uri("kept.mp4"), lambda: self.peek("kept.mp4") is not None

    def during_upload(self, observe):
        """Call ``observe`` from the progress callback once half the bytes
        went out; once it raised, every later callback raises too."""
        real = _real_stopper
        state = {"sent": 0, "called": False, "broken": None}
        lock = threading.Lock()

        def stopper(stop, limit=None):
            inner = real(stop, limit)

            def on_progress(n_bytes):
                inner(n_bytes)
                with lock:
                    if state["broken"] is not None:
                        raise state["broken"]
                    state["sent"] += n_bytes
                    due = not state["called"] and state["sent"] >= self.PAYLOAD_BYTES // 2
                    if due:
                        state["called"] = True
                if due:
                    try:
                        observe()
                    except Exception as e:
                        state["broken"] = e
                        raise
            return on_progress
        self.patch(s3_mod, "_stopper", stopper)


_real_stopper = s3_mod._stopper
