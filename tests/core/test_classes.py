"""load_class: a class by dotted path, the allow-list checked before any import,
every failure one ClassLoadError; and its users (nommers, storage backends)."""

import sys

from twisted.trial.unittest import SynchronousTestCase

from nommer.conf import Settings
from nommer.core.classes import ClassLoadError, ClassNotAllowed, canonical_name, load_class
from nommer.core.errors import InvalidJobSpec
from nommer.core.spec import resolve_nommer
from nommer.core.storage import backend_class
from nommer.core.storage.file import FileStorage
from nommer.workerd.nommers.ffmpeg import FFmpegNommer

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"
OLD_FFMPEG = "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer"


class LoadClassTests(SynchronousTestCase):

    def test_loads_a_class(self):
        """A dotted path gives the class it names."""
        self.assertIs(load_class(FFMPEG), FFmpegNommer)

    def test_alias_then_allow_list(self):
        """An old path maps to today's, which the allow-list is checked against."""
        self.assertIs(load_class(OLD_FFMPEG, allowed=[FFMPEG], aliases={OLD_FFMPEG: FFMPEG}), FFmpegNommer)
        self.assertEqual(canonical_name(OLD_FFMPEG, {OLD_FFMPEG: FFMPEG}), FFMPEG)
        self.assertEqual(canonical_name(FFMPEG, None), FFMPEG)

    def test_not_allowed_is_never_imported(self):
        """A path outside the allow-list is refused before its module is imported."""
        name = "tests.core.never_imported_module.Thing"
        with self.assertRaises(ClassNotAllowed) as cm:
            load_class(name, allowed=[FFMPEG], what="nommer")
        self.assertNotIn("tests.core.never_imported_module", sys.modules)
        self.assertEqual(cm.exception.reason, f"{name!r} is not an allowed nommer; allowed: {FFMPEG}")
        self.assertIsInstance(cm.exception, ImportError)

    def test_failures_are_one_error_naming_the_path(self):
        """No module, no such name, not a class, not a dotted path: each a ClassLoadError saying which."""
        cases = [
            ("nommer.no_such_module.Thing", "cannot be imported"),
            ("nommer.core.classes.NoSuchThing", "has no class 'NoSuchThing'"),
            ("nommer.core.classes.load_class", "is not a class but function"),
            ("Thing", "is not a dotted path"),
            (None, "is not a dotted path"),
        ]
        for dotted, said in cases:
            with self.assertRaises(ClassLoadError, msg=dotted) as cm:
                load_class(dotted, what="thing")
            self.assertNotIsInstance(cm.exception, ClassNotAllowed)
            self.assertIn(said, cm.exception.reason)
            self.assertIn(repr(dotted), str(cm.exception))
            self.assertEqual(cm.exception.dotted, dotted)

    def test_import_error_kept_as_cause(self):
        """The import's own error is the cause of the ClassLoadError."""
        with self.assertRaises(ClassLoadError) as cm:
            load_class("nommer.no_such_module.Thing")
        self.assertIsInstance(cm.exception.__cause__, ModuleNotFoundError)


class UsersTests(SynchronousTestCase):
    """Nommers (at submit and in the worker) and storage backends load through load_class."""

    def test_nommer_resolved_with_aliases_and_allow_list(self):
        """resolve_nommer gives today's path and the class, and refuses the rest as a bad job spec."""
        settings = Settings.from_overrides()
        self.assertEqual(resolve_nommer(OLD_FFMPEG, settings), (FFMPEG, FFmpegNommer))
        with self.assertRaises(InvalidJobSpec) as cm:
            resolve_nommer("os.system", settings)
        self.assertEqual(cm.exception.field, "job_options.nommer")
        self.assertIn("'os.system' is not an allowed nommer", cm.exception.message)

    def test_allowed_nommer_that_cannot_load_is_a_configuration_error(self):
        """An allowed path whose module is missing is a ClassLoadError, not the caller's bad input."""
        settings = Settings.from_overrides(ALLOWED_NOMMERS=["nommer.no_such_module.Nommer"])
        with self.assertRaises(ClassLoadError) as cm:
            resolve_nommer("nommer.no_such_module.Nommer", settings)
        self.assertNotIsInstance(cm.exception, ClassNotAllowed)

    def test_storage_backend(self):
        """backend_class loads STORAGE_BACKENDS[scheme]; a bad entry is a ClassLoadError naming it."""
        settings = Settings.from_overrides(STORAGE_BACKENDS={
            "file": "nommer.core.storage.file.FileStorage", "bogus": "nommer.core.storage.file.NoSuch"})
        self.assertIs(backend_class("file", settings), FileStorage)
        with self.assertRaises(ClassLoadError) as cm:
            backend_class("bogus", settings)
        self.assertIn("STORAGE_BACKENDS['bogus']", str(cm.exception))
