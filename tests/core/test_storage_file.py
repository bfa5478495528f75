import os
import shutil
import tempfile
import threading
import types

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from nommer.conf import defaults
from nommer.core.errors import InvalidJobSpec, PermanentJobError, SourceNotFound
from nommer.core.storage import check_destination, check_source, get_storage
from nommer.core.storage import file as file_mod
from nommer.core.storage.file import FileStorage
from nommer.core.storage.http import HTTPStorage
from nommer.core.uri import InvalidURI
from tests.core.storage_contract import WritableStorageContract
from tests.helpers import ensure, temp_settings


def make_temp_dir(testcase):
    """A fresh real (symlink-free) temp dir removed after the test."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="nommer-test-"))
    testcase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def make_settings(roots, **overrides):
    values = dict(
        FILE_STORAGE_ROOTS=roots,
        STORAGE_BACKENDS=dict(defaults.STORAGE_BACKENDS),
        HTTP_DOWNLOAD_TIMEOUT_S=defaults.HTTP_DOWNLOAD_TIMEOUT_S,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


class _Dirs:
    """A root directory with an 'outside' sibling, built per test."""

    def make_dirs(self):
        base = make_temp_dir(self)
        self.root = os.path.join(base, "root")
        self.outside = os.path.join(base, "outside")
        os.makedirs(self.root)
        os.makedirs(self.outside)
        self.settings = make_settings([self.root])
        self.storage = FileStorage(self.settings, reactor)

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()


class FileCheckTests(_Dirs, TestCase):
    """FileStorage.check: confinement to FILE_STORAGE_ROOTS without copying anything."""

    def setUp(self):
        self.make_dirs()

    def test_inside_root_accepted(self):
        """A file under a root is a valid source and destination."""
        src = self.write(os.path.join(self.root, "in.mp4"), b"x")
        self.storage.check(f"file://{src}", for_write=False)
        self.storage.check(f"file://{self.root}/new/dir/out.mp4", for_write=True)

    def test_localhost_accepted(self):
        """file://localhost/abs/path is the same as file:///abs/path."""
        self.storage.check(f"file://localhost{self.root}/a.mp4", for_write=True)

    def test_etc_passwd_refused(self):
        """A path outside every root is refused with the roots in the message."""
        with self.assertRaises(InvalidJobSpec) as cm:
            self.storage.check("file:///etc/passwd", for_write=False, field="source_path")
        e = cm.exception
        self.assertEqual(e.field, "source_path")
        self.assertIn("file:///etc/passwd is outside the allowed FILE_STORAGE_ROOTS", e.message)
        self.assertIn(self.root, e.message)

    def test_unresolved_default_root_is_the_media_dir(self):
        """Settings whose FILE_STORAGE_ROOTS the loader did not resolve (None) confine to
        ./media, the documented default, not the working directory (DATA_DIR, nomconf.py)."""
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.outside)
        os.makedirs("media")
        data = self.write(os.path.join(self.outside, "jobs.sqlite"), b"store")
        storage = FileStorage(make_settings(None), reactor)
        self.assertRaises(InvalidJobSpec, storage.check, f"file://{data}", False)
        self.assertRaises(InvalidJobSpec, storage.check, f"file://{self.outside}/nomconf.py", True)
        storage.check(f"file://{self.outside}/media/out.mp4", True)

    def test_dotdot_escape_refused(self):
        """'..' climbing out of a root is refused, for reading and writing."""
        self.write(os.path.join(self.outside, "secret"), b"s")
        uri = f"file://{self.root}/../outside/secret"
        self.assertRaises(InvalidJobSpec, self.storage.check, uri, False)
        self.assertRaises(InvalidJobSpec, self.storage.check, uri, True)

    def test_symlink_out_refused_for_read(self):
        """A symlink inside a root pointing outside it is not a valid source."""
        target = self.write(os.path.join(self.outside, "secret"), b"s")
        os.symlink(target, os.path.join(self.root, "link"))
        self.assertRaises(InvalidJobSpec, self.storage.check,
                          f"file://{self.root}/link", False)

    def test_symlinked_dir_out_refused_for_write(self):
        """A destination whose parent directory resolves outside the roots is refused."""
        os.symlink(self.outside, os.path.join(self.root, "dirlink"))
        self.assertRaises(InvalidJobSpec, self.storage.check,
                          f"file://{self.root}/dirlink/out.mp4", True)

    def test_symlink_within_root_allowed(self):
        """A symlink that stays inside the roots is fine."""
        target = self.write(os.path.join(self.root, "real.mp4"), b"x")
        os.symlink(target, os.path.join(self.root, "alias.mp4"))
        self.storage.check(f"file://{self.root}/alias.mp4", for_write=False)

    def test_other_host_refused(self):
        """file://somehost/path is refused rather than silently dropping the host."""
        with self.assertRaises(InvalidURI) as cm:
            self.storage.check(f"file://otherhost{self.root}/a.mp4", False)
        self.assertIn("otherhost", cm.exception.message)

    def test_query_and_directory_refused(self):
        """A query ('?' unencoded) or a path naming no file is refused."""
        self.assertRaises(InvalidURI, self.storage.check, f"file://{self.root}/a?b", False)
        self.assertRaises(InvalidURI, self.storage.check, f"file://{self.root}/", True)
        self.assertRaises(InvalidURI, self.storage.check, f"file://{self.root}/..", True)

    def test_root_itself_not_a_destination(self):
        """The root directory itself cannot be replaced by an upload."""
        self.assertRaises(InvalidURI, self.storage.check, f"file://{self.root}", True)


class FileTransferTests(_Dirs, TestCase):
    """FileStorage.download/upload copy real files off the reactor thread."""

    def setUp(self):
        self.make_dirs()
        self.scratch = make_temp_dir(self)

    @ensure
    async def test_download_copies(self):
        """download copies the bytes and returns their count."""
        data = os.urandom(3 * 1024 * 1024 + 7)
        src = self.write(os.path.join(self.root, "in.mp4"), data)
        local = os.path.join(self.scratch, "in")
        size = await self.storage.download(f"file://{src}", local)
        self.assertEqual(size, len(data))
        self.assertEqual(self.read(local), data)

    @ensure
    async def test_download_percent_encoded_name(self):
        """A percent-encoded file name is decoded before opening."""
        src = self.write(os.path.join(self.root, "my clip?.mp4"), b"abc")
        local = os.path.join(self.scratch, "in")
        await self.storage.download(
            f"file://{self.root}/my%20clip%3F.mp4", local)
        self.assertEqual(self.read(local), self.read(src))

    @ensure
    async def test_download_missing(self):
        """A missing source is SourceNotFound and leaves no local file."""
        local = os.path.join(self.scratch, "in")
        with self.assertRaises(SourceNotFound) as cm:
            await self.storage.download(f"file://{self.root}/nope.mp4", local)
        self.assertIn("does not exist", cm.exception.message)
        self.assertFalse(os.path.exists(local))

    @ensure
    async def test_download_outside_root_is_permanent(self):
        """A source outside the roots fails the job for good at transfer time too."""
        src = self.write(os.path.join(self.outside, "secret"), b"s")
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage.download(
                f"file://{src}", os.path.join(self.scratch, "in"))
        self.assertIn("outside the allowed FILE_STORAGE_ROOTS", cm.exception.message)

    @ensure
    async def test_download_over_max_source_bytes_refused(self):
        """A source larger than MAX_SOURCE_BYTES ends the job (permanent, the reason given), copies nothing;
        one exactly at the cap is copied."""
        src = self.write(os.path.join(self.root, "big.mp4"), b"x" * 1001)
        local = os.path.join(self.scratch, "in")
        storage = FileStorage(make_settings([self.root], MAX_SOURCE_BYTES=1000), reactor)
        with self.assertRaises(PermanentJobError) as cm:
            await storage.download(f"file://{src}", local)
        self.assertIn("is 1001 bytes, more than MAX_SOURCE_BYTES (1000)", cm.exception.message)
        self.assertFalse(os.path.exists(local))
        storage = FileStorage(make_settings([self.root], MAX_SOURCE_BYTES=1001), reactor)
        self.assertEqual(await storage.download(f"file://{src}", local), 1001)

    def test_copy_refuses_a_source_growing_past_the_cap(self):
        """A file that grows between the size check and the copy is cut at the cap and refused."""
        src = self.write(os.path.join(self.root, "grows.mp4"), b"x" * 10)
        local = os.path.join(self.scratch, "in")
        real_fstat = os.fstat

        def small_fstat(fd):  # the size seen before the copy: 10 bytes; then it grows
            result = real_fstat(fd)
            with open(src, "ab") as f:
                f.write(b"y" * 5000)
            return result
        self.patch(file_mod.os, "fstat", small_fstat)
        with self.assertRaises(PermanentJobError) as cm:
            file_mod._copy_in(src, local, "file://grows.mp4", 1000)
        self.assertIn("grew past MAX_SOURCE_BYTES (1000)", cm.exception.message)
        self.assertFalse(os.path.exists(local))

    @ensure
    async def test_download_directory_is_permanent(self):
        """A directory is not a source."""
        os.makedirs(os.path.join(self.root, "d"))
        with self.assertRaises(PermanentJobError):
            await self.storage.download(
                f"file://{self.root}/d", os.path.join(self.scratch, "in"))

    @ensure
    async def test_upload_creates_dirs_atomically(self):
        """upload creates missing parents, returns the size and leaves no temp file."""
        local = self.write(os.path.join(self.scratch, "out"), b"encoded" * 1000)
        dest = os.path.join(self.root, "a", "b", "out.mp4")
        size = await self.storage.upload(local, f"file://{dest}")
        self.assertEqual(size, 7000)
        self.assertEqual(self.read(dest), b"encoded" * 1000)
        self.assertEqual(os.listdir(os.path.dirname(dest)), ["out.mp4"])

    @ensure
    async def test_upload_file_mode_follows_umask(self):
        """The stored file gets the usual 0o666-minus-umask mode, not mkstemp's 0o600."""
        umask = os.umask(0o022)
        os.umask(umask)
        local = self.write(os.path.join(self.scratch, "out"), b"x")
        dest = os.path.join(self.root, "out.mp4")
        await self.storage.upload(local, f"file://{dest}")
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o666 & ~umask)

    @ensure
    async def test_upload_overwrites(self):
        """A re-run replaces an existing destination (at-least-once delivery)."""
        dest = self.write(os.path.join(self.root, "out.mp4"), b"old")
        local = self.write(os.path.join(self.scratch, "out"), b"new")
        await self.storage.upload(local, f"file://{dest}")
        self.assertEqual(self.read(dest), b"new")

    @ensure
    async def test_upload_replaces_symlink_not_target(self):
        """A symlink at the destination is replaced, the file it pointed to is untouched."""
        target = self.write(os.path.join(self.outside, "victim"), b"keep")
        os.symlink(target, os.path.join(self.root, "out.mp4"))
        local = self.write(os.path.join(self.scratch, "out"), b"new")
        await self.storage.upload(local, f"file://{self.root}/out.mp4")
        self.assertEqual(self.read(target), b"keep")
        self.assertFalse(os.path.islink(os.path.join(self.root, "out.mp4")))

    @ensure
    async def test_upload_outside_root_is_permanent(self):
        """An upload outside the roots is refused and writes nothing."""
        local = self.write(os.path.join(self.scratch, "out"), b"x")
        dest = os.path.join(self.outside, "out.mp4")
        with self.assertRaises(PermanentJobError):
            await self.storage.upload(local, f"file://{dest}")
        self.assertFalse(os.path.exists(dest))

    @ensure
    async def test_upload_missing_local_is_permanent(self):
        """Uploading a local file that does not exist is a PermanentJobError."""
        with self.assertRaises(PermanentJobError):
            await self.storage.upload(
                os.path.join(self.scratch, "nope"), f"file://{self.root}/out.mp4")

    @ensure
    async def test_upload_parent_is_a_file(self):
        """A destination under an existing file fails permanently and leaves it alone."""
        blocker = self.write(os.path.join(self.root, "blocker"), b"b")
        local = self.write(os.path.join(self.scratch, "out"), b"x")
        with self.assertRaises(PermanentJobError):
            await self.storage.upload(local, f"file://{blocker}/out.mp4")
        self.assertEqual(self.read(blocker), b"b")

    @ensure
    async def test_delete_outside_the_roots_is_permanent_and_deletes_nothing(self):
        """delete outside the roots (directly, by '..', through a symlinked directory) is a
        PermanentJobError naming the roots, and the file outside is still there."""
        victim = self.write(os.path.join(self.outside, "victim.mp4"), b"keep")
        os.symlink(self.outside, os.path.join(self.root, "dirlink"))
        for uri in (f"file://{victim}", f"file://{self.root}/../outside/victim.mp4",
                    f"file://{self.root}/dirlink/victim.mp4"):
            with self.assertRaises(PermanentJobError) as cm:
                await self.storage.delete(uri)
            self.assertIn("outside the allowed FILE_STORAGE_ROOTS", cm.exception.message)
            self.assertEqual(self.read(victim), b"keep")

    @ensure
    async def test_delete_removes_a_symlink_not_its_target(self):
        """A symlink at the name (pointing out of the roots) is removed; its target stays."""
        victim = self.write(os.path.join(self.outside, "victim.mp4"), b"keep")
        link = os.path.join(self.root, "link.mp4")
        os.symlink(victim, link)
        self.assertIs(await self.storage.delete(f"file://{link}"), True)
        self.assertFalse(os.path.lexists(link))
        self.assertEqual(self.read(victim), b"keep")

    @ensure
    async def test_delete_leaves_directories(self):
        """delete unlinks the file only: the (now empty) directory stays; a file in a directory
        that does not exist, or under a file, is simply not there (False)."""
        os.makedirs(os.path.join(self.root, "a", "b"))
        dest = self.write(os.path.join(self.root, "a", "b", "seg.m4s"), b"x")
        self.assertIs(await self.storage.delete(f"file://{dest}"), True)
        self.assertEqual(os.listdir(os.path.join(self.root, "a", "b")), [])
        blocker = self.write(os.path.join(self.root, "blocker"), b"b")
        self.assertIs(await self.storage.delete(f"file://{self.root}/no/such/dir/x.mp4"), False)
        self.assertIs(await self.storage.delete(f"file://{blocker}/x.mp4"), False)
        self.assertEqual(self.read(blocker), b"b")

    @ensure
    async def test_delete_of_a_directory_is_permanent(self):
        """A directory at the name is not deleted: PermanentJobError, the directory and its
        contents stay."""
        inner = os.path.join(self.root, "dir.mp4")
        os.makedirs(inner)
        self.write(os.path.join(inner, "kept"), b"k")
        with self.assertRaises(PermanentJobError) as cm:
            await self.storage.delete(f"file://{inner}")
        self.assertIn(f"cannot delete file://{inner}", cm.exception.message)
        self.assertEqual(os.listdir(inner), ["kept"])

    @ensure
    async def test_copies_run_off_the_reactor_thread(self):
        """The copy functions run in a pool thread, not the reactor thread."""
        seen = []
        real_in, real_out = file_mod._copy_in, file_mod._copy_out

        def spy(real):
            def wrapper(*args):
                seen.append(threading.current_thread() is threading.main_thread())
                return real(*args)
            return wrapper

        self.patch(file_mod, "_copy_in", spy(real_in))
        self.patch(file_mod, "_copy_out", spy(real_out))
        src = self.write(os.path.join(self.root, "in.mp4"), b"x")
        local = os.path.join(self.scratch, "in")
        await self.storage.download(f"file://{src}", local)
        await self.storage.upload(local, f"file://{self.root}/o.mp4")
        self.assertEqual(seen, [False, False])


class StorageLookupTests(_Dirs, TestCase):
    """get_storage, check_source and check_destination (nommer.core.storage)."""

    def setUp(self):
        self.make_dirs()

    def test_get_storage_by_scheme(self):
        """The backend class comes from STORAGE_BACKENDS by scheme."""
        self.assertIsInstance(get_storage("file:///x", self.settings, reactor), FileStorage)
        self.assertIsInstance(get_storage("HTTPS://h/x", self.settings, reactor), HTTPStorage)

    def test_unknown_scheme_lists_configured(self):
        """An unconfigured scheme is an InvalidURI naming the configured schemes."""
        with self.assertRaises(InvalidURI) as cm:
            get_storage("ftp://h/x", self.settings, reactor)
        self.assertIn("ftp://", cm.exception.message)
        self.assertIn("file://, http://, https://", cm.exception.message)

    def test_backend_imported_lazily(self):
        """A backend module is imported only when its scheme is used."""
        settings = make_settings([self.root], STORAGE_BACKENDS={
            "file": "nommer.core.storage.file.FileStorage",
            "bogus": "nommer.no_such_module.Storage"})
        check_source(f"file://{self.root}/a", settings)
        with self.assertRaises(ImportError) as cm:
            check_source("bogus://x/y", settings)
        self.assertIn("STORAGE_BACKENDS['bogus']", str(cm.exception))

    def test_check_source_field(self):
        """check_source reports problems under the field source_path."""
        with self.assertRaises(InvalidJobSpec) as cm:
            check_source("file:///etc/passwd", self.settings)
        self.assertEqual(cm.exception.field, "source_path")
        with self.assertRaises(InvalidJobSpec) as cm:
            check_source("no-scheme/x.mp4", self.settings)
        self.assertEqual(cm.exception.field, "source_path")

    def test_check_destination_http(self):
        """An http(s) destination naming a file is accepted (it is PUT there); one naming a
        directory, or a private address literal, is refused under dest_path."""
        self.assertEqual(check_destination("https://h/out.mp4", self.settings).path, "/out.mp4")
        for uri, words in (("http://h/dir/", "does not name a file"),
                           ("http://10.0.0.7/out.mp4", "private address")):
            with self.assertRaises(InvalidJobSpec) as cm:
                check_destination(uri, self.settings)
            self.assertEqual(cm.exception.field, "dest_path")
            self.assertIn(words, cm.exception.message)

    def test_check_returns_parsed_uri(self):
        """The checks return the parsed MediaURI of an accepted URI."""
        u = check_destination(f"file://{self.root}/o.mp4", self.settings)
        self.assertEqual(u.path, f"{self.root}/o.mp4")
        self.assertEqual(check_source("https://h/a.mp4", self.settings).host, "h")

    def test_check_non_string(self):
        """A non-string source is a BADINPUT error, not a crash."""
        for value in (None, 5, ["file:///x"], ""):
            with self.assertRaises(InvalidJobSpec) as cm:
                check_source(value, self.settings)
            self.assertEqual(cm.exception.field, "source_path")

    def test_no_roots_configured(self):
        """With an empty root list every file:// URI is refused."""
        settings = make_settings([])
        with self.assertRaises(InvalidJobSpec) as cm:
            check_source(f"file://{self.root}/a", settings)
        self.assertIn("none configured", cm.exception.message)


class FileStorageContractTests(WritableStorageContract, TestCase):
    """The Storage contract (tests/core/storage_contract.py) against file:// in a temp root:
    it writes, and uses no network."""

    storage_class = FileStorage

    def setUp(self):
        self.settings, self.root = temp_settings(self)

    def make_storage(self, settings=None):
        return FileStorage(settings or self.settings, reactor)

    def uri(self, name):
        return f"file://{self.root}/{name}"

    async def put(self, name, data):
        self.write(os.path.join(self.root, name), data)

    def write(self, path, data):
        with open(path, "wb") as f:
            f.write(data)

    def peek(self, name):
        try:
            with open(os.path.join(self.root, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def leftovers(self):
        """The upload's temporary files (``.NAME.RANDOM.part`` beside the destination)."""
        return sorted(n for n in os.listdir(self.root) if n.endswith(".part"))

    async def refused_source(self):
        """A directory is not a regular file."""
        os.mkdir(os.path.join(self.root, "a-directory.mp4"))
        return self.uri("a-directory.mp4")

    async def refused_destination(self):
        """A directory already holds the destination's name."""
        os.mkdir(os.path.join(self.root, "taken.mp4"))
        return self.uri("taken.mp4")

    def unacceptable_uri(self):
        return "file:///etc/passwd"  # outside FILE_STORAGE_ROOTS

    async def refused_deletion(self):
        """A file in a directory beside the root, outside it."""
        outside = os.path.realpath(self.mktemp())
        os.makedirs(outside)
        victim = os.path.join(outside, "victim.mp4")
        self.write(victim, b"keep")
        return self.make_storage(), f"file://{victim}", lambda: os.path.exists(victim)

    def during_upload(self, observe):
        """Copy half the file into the temporary file, call ``observe``, copy the rest."""
        def copy_half_then_observe(fsrc, fdst, length=0):
            fdst.write(fsrc.read(os.fstat(fsrc.fileno()).st_size // 2))
            fdst.flush()
            observe()
            shutil.copyfileobj(fsrc, fdst, length)
        self.patch(file_mod, "shutil", types.SimpleNamespace(copyfileobj=copy_half_then_observe))
