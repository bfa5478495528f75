"""The Storage contract (``nommer.core.storage.base.Storage``): mixed into
one TestCase per backend, run unchanged against each (file://, http(s)://
on a loopback server, s3:// on moto).

What it checks, as the worker and feederd rely on it:

- ``download`` writes the whole source (a longer file already at
  ``local_path`` is truncated) and returns its size; a missing source is
  ``SourceNotFound`` (a ``PermanentJobError``) and leaves no file; so does
  every other failed download;
- error classes: not found -> ``SourceNotFound``; refused (forbidden, not
  a regular file, an archived object, a source over MAX_SOURCE_BYTES, a
  URI that fails ``check`` on the worker) -> ``PermanentJobError`` but not
  ``SourceNotFound``; unreachable -> ``TransientJobError``; never another
  exception;
- ``upload`` is atomic at the destination: while the bytes move, the final
  name holds nothing (or the previous version, whole); after an upload that
  breaks midway it still does, and nothing partial is left behind (no
  ``.part`` file, no unfinished multipart upload); a re-run replaces;
- ``delete`` removes the one object named (not a neighbour whose name
  starts the same) and returns True, and False when there is none (a second
  delete, a name never stored); a URI that fails ``check`` on the worker is
  a ``PermanentJobError`` and the object stays;
- a backend that cannot write (``can_write = False``) refuses a
  destination at ``check``, ``upload`` and ``delete``, and writes nothing;
- a backend that reaches a server: one that does not answer is
  ``TransientJobError`` at download, and no I/O at ``check``;
- ``check`` at submit: made with ``reactor=None``, it accepts this
  backend's URIs without I/O (also a source that does not exist, on a
  server that does not answer) and raises ``InvalidJobSpec`` naming the
  field for one it cannot handle; ``check_source``/``check_destination``
  reach this class through STORAGE_BACKENDS;
- signatures: every public method keeps ``Storage``'s signature
  (``tests.contracts.assert_matches_interface``).

The contract comes in capability mixins, each one ``StorageContract`` (what
every backend does) plus the tests of one capability; a backend's TestCase
inherits those that apply, so no test skips for a backend it does not fit:

- ``WritableStorageContract`` (``can_write = True``: upload) or
  ``ReadOnlyStorageContract`` (``can_write = False``: the refusal) -- exactly
  one of them, which ``test_write_capability_is_tested`` checks;
- ``NetworkStorageContract``, for a backend that talks to a server
  (http(s), s3), not for file://.

A backend test case provides:

- ``storage_class``; ``EXTRA_PUBLIC_METHODS``: public methods it adds on
  purpose (default none);
- ``settings``: the test's settings (STORAGE_BACKENDS routing the scheme to
  ``storage_class``);
- ``make_storage(settings=None)``: an instance on the real reactor;
- ``uri(name)``: the URI of object ``name`` in the backend's test place
  (the object need not exist);
- ``put(name, data)``: a coroutine function making ``name`` hold ``data``,
  from outside the backend;
- ``peek(name)``: the bytes stored at ``name`` or None; blocking, called
  from a thread that is not the reactor's (the contract uses
  ``deferToThread``, and the upload hook below calls it where it runs);
- ``refused_source()``: a coroutine function giving the URI of a source
  that exists but the backend may not read;
- ``unacceptable_uri()``: a URI of the backend's scheme that ``check``
  refuses;

with ``NetworkStorageContract``:

- ``unreachable_source()``: ``(storage, uri)`` for a source whose server
  does not answer;

with ``WritableStorageContract``:

- ``refused_destination()``: a coroutine function giving the URI of a
  destination the backend may not write;
- ``during_upload(observe)``: arrange (with ``self.patch``) that the next
  upload calls ``observe()`` once, where the bytes move, after about half
  of them have been written and before the upload ends; ``observe`` may
  raise to break the upload there (and every further write, so that
  retries fail too);
- ``leftovers()``: what a failed upload left behind (partial files,
  unfinished multipart uploads); blocking, like ``peek``;
- ``refused_deletion()``: a coroutine function giving ``(storage, uri,
  still_there)``: an object that exists but that ``storage.delete`` must
  refuse (``check`` fails for it on the worker: outside the file roots, a
  bucket or host the settings refuse), and a blocking callable saying
  whether it is still there;

and, for any of them:

- ``PAYLOAD_BYTES``: size of the objects moved (default 1 MiB and 3 bytes;
  the S3 case moves more than its lowered multipart threshold).
"""

import errno
import os

from twisted.internet import threads

from nommer.conf import Settings
from nommer.core.errors import (
    InvalidJobSpec, JobError, PermanentJobError, SourceNotFound, TransientJobError)
from nommer.core.storage import check_destination, check_source, get_storage
from nommer.core.storage.base import Storage
from nommer.core.uri import MediaURI
from tests.contracts import assert_matches_interface
from tests.helpers import ensure

__all__ = ["StorageContract", "WritableStorageContract", "ReadOnlyStorageContract",
           "NetworkStorageContract", "BrokenUpload", "with_overrides"]


class BrokenUpload(OSError):
    """What ``observe`` raises to break an upload midway (an I/O error)."""

    def __init__(self):
        super().__init__(errno.EIO, "the storage contract breaks this upload here")


def with_overrides(settings, **overrides):
    """A copy of ``settings`` (a ``Settings``) with some values replaced."""
    return Settings(dict(settings.as_dict(), **overrides))


class StorageContract:
    """What every backend does; mixed in through the capability mixins below."""

    EXTRA_PUBLIC_METHODS = ()
    PAYLOAD_BYTES = 1024 * 1024 + 3

    # --- helpers -------------------------------------------------------------------

    def payload(self, tag=b"a"):
        """PAYLOAD_BYTES of random bytes, starting with ``tag``."""
        return tag + os.urandom(self.PAYLOAD_BYTES - len(tag))

    def local(self, name, data=None):
        """A path in a scratch directory of the test (not in the backend's
        place); written with ``data`` when given."""
        scratch = getattr(self, "_scratch", None)
        if scratch is None:
            scratch = self._scratch = os.path.realpath(self.mktemp())
            os.makedirs(scratch)
        path = os.path.join(scratch, name)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        return path

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    async def stored(self, name):
        """``peek(name)``, off the reactor thread."""
        return await threads.deferToThread(self.peek, name)

    async def assert_nothing_left(self):
        self.assertEqual(await threads.deferToThread(self.leftovers), [],
                         "a failed upload left something behind")

    async def failing(self, error_class, transfer, local_path=None):
        """Await ``transfer`` (a coroutine), which must raise ``error_class``
        and leave no file at ``local_path``; return the error."""
        with self.assertRaises(JobError) as raised:
            await transfer
        self.assertIsInstance(raised.exception, error_class)
        self.assertIsInstance(raised.exception.message, str)
        if local_path is not None:
            self.assertFalse(os.path.exists(local_path), "a failed download left a file behind")
        return raised.exception

    # --- which capabilities are tested -------------------------------------------------

    def test_write_capability_is_tested(self):
        """The test case mixes in the upload tests if the backend writes, the refusal tests if not."""
        expected = WritableStorageContract if self.storage_class.can_write else ReadOnlyStorageContract
        other = ReadOnlyStorageContract if self.storage_class.can_write else WritableStorageContract
        self.assertIsInstance(self, expected, f"{self.storage_class.__name__}.can_write is "
                              f"{self.storage_class.can_write}: mix in {expected.__name__}")
        self.assertNotIsInstance(self, other)

    # --- signatures ------------------------------------------------------------------

    def test_signatures_match_the_interface(self):
        """Every public method keeps Storage's signature; download (and upload, if it writes) implemented."""
        self.assertTrue(issubclass(self.storage_class, Storage))
        assert_matches_interface(
            self, self.storage_class, Storage, extras=self.EXTRA_PUBLIC_METHODS,
            may_inherit=() if self.storage_class.can_write else ("upload", "delete"))

    def test_the_signature_check_catches_drift(self):
        """A subclass whose download takes another argument fails the signature check."""
        class Drifted(self.storage_class):
            async def download(self, uri, local_path, offset=0):
                raise AssertionError("never called")
        with self.assertRaises(self.failureException):
            assert_matches_interface(self, Drifted, Storage, extras=self.EXTRA_PUBLIC_METHODS,
                                     may_inherit=("upload", "delete"))

    # --- download --------------------------------------------------------------------

    @ensure
    async def test_download_writes_the_whole_source(self):
        """The whole source lands at local_path, truncating what was there; its size is returned."""
        data = self.payload()
        await self.put("whole.mp4", data)
        local = self.local("whole.mp4", b"x" * (len(data) + 4096))
        self.assertEqual(await self.make_storage().download(self.uri("whole.mp4"), local), len(data))
        self.assertEqual(self.read(local), data)

    @ensure
    async def test_missing_source_is_source_not_found_and_leaves_no_file(self):
        """A source that does not exist is SourceNotFound, a PermanentJobError naming it; no file is left."""
        local = self.local("missing.mp4")
        error = await self.failing(SourceNotFound, self.make_storage().download(
            self.uri("missing.mp4"), local), local)
        self.assertIsInstance(error, PermanentJobError)
        self.assertIn(self.uri("missing.mp4"), error.message)

    @ensure
    async def test_refused_source_is_permanent(self):
        """A source that exists but may not be read is a PermanentJobError, not SourceNotFound; no file."""
        local = self.local("refused.mp4")
        error = await self.failing(PermanentJobError, self.make_storage().download(
            await self.refused_source(), local), local)
        self.assertNotIsInstance(error, SourceNotFound)

    @ensure
    async def test_source_over_max_source_bytes_is_permanent(self):
        """A source larger than MAX_SOURCE_BYTES is a PermanentJobError and leaves no partial file."""
        data = self.payload()
        await self.put("big.mp4", data)
        storage = self.make_storage(with_overrides(self.settings, MAX_SOURCE_BYTES=len(data) // 2))
        local = self.local("big.mp4")
        error = await self.failing(PermanentJobError, storage.download(self.uri("big.mp4"), local),
                                   local)
        self.assertNotIsInstance(error, SourceNotFound)
        self.assertIn("MAX_SOURCE_BYTES", error.message)

    @ensure
    async def test_a_uri_check_refuses_is_permanent_at_use(self):
        """On the worker, a URI that fails check is a PermanentJobError (not InvalidJobSpec), both ways."""
        local = self.local("unacceptable.mp4", b"data")
        storage = self.make_storage()
        for transfer in (storage.download(self.unacceptable_uri(), self.local("down.mp4")),
                         storage.upload(local, self.unacceptable_uri())):
            error = await self.failing(PermanentJobError, transfer)
            self.assertNotIsInstance(error, InvalidJobSpec)
        self.assertFalse(os.path.exists(self.local("down.mp4")))

    # --- check at submit -------------------------------------------------------------------

    def test_check_at_submit(self):
        """Without a reactor, check accepts this backend's URIs with no I/O (a missing source) and
        refuses one it cannot handle with InvalidJobSpec(field)."""
        storage = self.storage_class(self.settings, None)
        self.assertIsNone(storage.check(self.uri("not-there-yet.mp4"), False, "source_path"))
        with self.assertRaises(InvalidJobSpec) as raised:
            storage.check(self.unacceptable_uri(), False, "source_path")
        self.assertEqual(raised.exception.field, "source_path")
        self.assertTrue(raised.exception.message.startswith("source_path: "), raised.exception.message)

    def test_submit_checks_reach_this_backend(self):
        """check_source/check_destination and get_storage pick this class by the URI's scheme."""
        uri = self.uri("routed.mp4")
        self.assertIsInstance(get_storage(uri, self.settings, None), self.storage_class)
        parsed = check_source(uri, self.settings)
        self.assertIsInstance(parsed, MediaURI)
        with self.assertRaises(InvalidJobSpec) as raised:
            check_source(self.unacceptable_uri(), self.settings)
        self.assertEqual(raised.exception.field, "source_path")


class WritableStorageContract(StorageContract):
    """The contract of a backend that uploads (``can_write = True``)."""

    def test_destinations_pass_the_submit_checks(self):
        """Without a reactor, check accepts a destination (no I/O: it need not exist yet), and
        check_destination routes one to this backend."""
        self.assertTrue(self.storage_class.can_write)
        storage = self.storage_class(self.settings, None)
        self.assertIsNone(storage.check(self.uri("not-there-yet.mp4"), True, "dest_path"))
        self.assertIsInstance(check_destination(self.uri("routed.mp4"), self.settings), MediaURI)

    # --- upload ------------------------------------------------------------------------

    @ensure
    async def test_upload_stores_the_whole_file_and_a_rerun_replaces_it(self):
        """upload returns the size and stores the bytes; uploading again replaces them (at-least-once)."""
        first, second = self.payload(b"1"), self.payload(b"2")[:-7]
        storage = self.make_storage()
        self.assertEqual(await storage.upload(self.local("out1", first), self.uri("out.mp4")),
                         len(first))
        self.assertEqual(await self.stored("out.mp4"), first)
        self.assertEqual(await storage.upload(self.local("out2", second), self.uri("out.mp4")),
                         len(second))
        self.assertEqual(await self.stored("out.mp4"), second)
        await self.assert_nothing_left()

    @ensure
    async def test_upload_is_atomic_while_writing(self):
        """Halfway through an upload the final name holds nothing, or the previous version whole."""
        old, new = self.payload(b"old"), self.payload(b"new")
        for name, before in (("fresh.mp4", None), ("replaced.mp4", old)):
            if before is not None:
                await self.put(name, before)
            seen = []
            self.during_upload(lambda: seen.append(self.peek(name)))
            self.assertEqual(await self.make_storage().upload(self.local(name, new), self.uri(name)),
                             len(new))
            self.assertEqual(len(seen), 1, "the upload hook did not run once")
            self.assertTrue(seen[0] is None if before is None else seen[0] == before,
                            f"{name}: {len(seen[0] or b'')} bytes visible under the final name "
                            "during the upload")
            self.assertEqual(await self.stored(name), new)
        await self.assert_nothing_left()

    @ensure
    async def test_an_upload_failing_midway_leaves_nothing_partial(self):
        """An upload broken halfway raises a job error; the final name keeps nothing (or the old
        version) and nothing partial is left behind."""
        old, new = self.payload(b"old"), self.payload(b"new")
        for name, before in (("fresh.mp4", None), ("replaced.mp4", old)):
            if before is not None:
                await self.put(name, before)
            seen = []

            def observe():
                seen.append(self.peek(name))
                raise BrokenUpload()
            self.during_upload(observe)
            await self.failing(JobError, self.make_storage().upload(self.local(name, new),
                                                                    self.uri(name)))
            self.assertEqual(len(seen), 1, "the upload hook did not run once")
            self.assertEqual(await self.stored(name), before)
            await self.assert_nothing_left()

    @ensure
    async def test_upload_of_a_missing_local_file_is_permanent(self):
        """Uploading a local file that does not exist is a PermanentJobError; nothing is stored."""
        await self.failing(PermanentJobError, self.make_storage().upload(
            self.local("never-written"), self.uri("nothing.mp4")))
        self.assertIsNone(await self.stored("nothing.mp4"))

    @ensure
    async def test_refused_destination_is_permanent(self):
        """A destination the backend may not write is a PermanentJobError; nothing partial is left."""
        await self.failing(PermanentJobError, self.make_storage().upload(
            self.local("refused", self.payload()), await self.refused_destination()))
        await self.assert_nothing_left()

    # --- delete --------------------------------------------------------------------------

    @ensure
    async def test_delete_removes_that_object_only_and_says_so(self):
        """delete of a stored object returns True and the object is gone; a neighbour whose name
        starts the same stays; a second delete returns False."""
        data = self.payload()
        storage = self.make_storage()
        await storage.upload(self.local("uploaded", data), self.uri("gone.mp4"))
        await self.put("gone.mp4.keep", b"neighbour")
        self.assertIs(await storage.delete(self.uri("gone.mp4")), True)
        self.assertIsNone(await self.stored("gone.mp4"))
        self.assertEqual(await self.stored("gone.mp4.keep"), b"neighbour")
        self.assertIs(await storage.delete(self.uri("gone.mp4")), False)
        self.assertEqual(await self.stored("gone.mp4.keep"), b"neighbour")

    @ensure
    async def test_delete_of_a_missing_object_is_false(self):
        """Deleting what was never stored is no error: delete returns False."""
        self.assertIs(await self.make_storage().delete(self.uri("never-stored.mp4")), False)
        self.assertIsNone(await self.stored("never-stored.mp4"))

    @ensure
    async def test_delete_a_uri_check_refuses_is_permanent_and_touches_nothing(self):
        """On the worker, delete of a URI that fails check (outside the roots, a refused bucket or
        host) is a PermanentJobError (not InvalidJobSpec), and the object is still there."""
        storage, uri, still_there = await self.refused_deletion()
        self.assertTrue(await threads.deferToThread(still_there), "the test object was not made")
        error = await self.failing(PermanentJobError, storage.delete(uri))
        self.assertNotIsInstance(error, InvalidJobSpec)
        self.assertNotIsInstance(error, SourceNotFound)
        self.assertTrue(await threads.deferToThread(still_there), "a refused delete deleted it")


class ReadOnlyStorageContract(StorageContract):
    """The contract of a backend that only downloads (``can_write = False``)."""

    @ensure
    async def test_read_only_backend_refuses_uploads(self):
        """A backend that cannot write refuses a destination at check, upload and delete, and
        writes (or deletes) nothing."""
        with self.assertRaises(InvalidJobSpec) as raised:
            check_destination(self.uri("dest.mp4"), self.settings)
        self.assertEqual(raised.exception.field, "dest_path")
        with self.assertRaises(InvalidJobSpec):
            self.storage_class(self.settings, None).check(self.uri("dest.mp4"), True)
        await self.failing(PermanentJobError, self.make_storage().upload(
            self.local("out", self.payload()), self.uri("dest.mp4")))
        self.assertIsNone(await self.stored("dest.mp4"))
        await self.put("kept.mp4", b"kept")
        await self.failing(PermanentJobError, self.make_storage().delete(self.uri("kept.mp4")))
        self.assertEqual(await self.stored("kept.mp4"), b"kept")


class NetworkStorageContract(StorageContract):
    """The contract of a backend that reaches a server (not file://)."""

    @ensure
    async def test_unreachable_source_is_transient(self):
        """A source on a server that does not answer is a TransientJobError; no file is left."""
        storage, uri = self.unreachable_source()
        local = self.local("unreachable.mp4")
        await self.failing(TransientJobError, storage.download(uri, local), local)

    def test_check_at_submit_does_not_connect(self):
        """Without a reactor, check accepts a source on a server that does not answer (no I/O)."""
        storage = self.storage_class(self.settings, None)
        self.assertIsNone(storage.check(self.unreachable_source()[1], False, "source_path"))
