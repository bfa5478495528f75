"""Destination prefixes: ``nommer.core.uri.join_under`` (the URI of a file
under a prefix) and ``nommer.core.storage.check_destination_prefix`` (the
submit-time check of a ``dest_path`` ending in ``/``), for every scheme."""

import os

from twisted.trial.unittest import TestCase

from nommer.core.errors import InvalidJobSpec
from nommer.core.storage import check_destination, check_destination_prefix
from nommer.core.uri import MAX_RELATIVE_PATH_CHARS, MediaURI, join_under, parse_uri
from tests.helpers import temp_settings

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz9SECRET"


class JoinUnderTests(TestCase):
    """join_under: good paths give the URI under the prefix; bad paths and prefixes are
    ValueErrors."""

    GOOD = [
        ("s3://bucket/title/", "hls/720p/seg_00001.m4s", "s3://bucket/title/hls/720p/seg_00001.m4s"),
        ("s3://bucket/", "poster.jpg", "s3://bucket/poster.jpg"),
        ("file:///srv/media/out/", "master.m3u8", "file:///srv/media/out/master.m3u8"),
        ("file://localhost/srv/media/", "a/b.vtt", "file://localhost/srv/media/a/b.vtt"),
        ("file:///srv/my%20media/", "x.mp4", "file:///srv/my%20media/x.mp4"),
        ("http://host/p/", "dash/manifest.mpd", "http://host/p/dash/manifest.mpd"),
        ("https://host:8443/up/load/", "init_0.mp4", "https://host:8443/up/load/init_0.mp4"),
        ("https://user:pa%2Fss@host/p/", "a.mp4", "https://user:pa%2Fss@host/p/a.mp4"),
        ("https://[2001:db8::1]/p/", "a.mp4", "https://[2001:db8::1]/p/a.mp4"),
        ("s3://bucket/t/", "Under_score-dash.v2/file.name.ext",
         "s3://bucket/t/Under_score-dash.v2/file.name.ext"),
        ("s3://bucket/t/", "x" * MAX_RELATIVE_PATH_CHARS, "s3://bucket/t/" + "x" * MAX_RELATIVE_PATH_CHARS),
    ]

    REFUSED_PATHS = ["../x", "a/../b", "..", ".", "./a", "/abs", "a//b", "a/", ".hidden",
                     "a/.hidden", "a\\b", "é.mp4", "a b", "a?b", "a#b", "a%2Fb", "a:b", "",
                     "x" * (MAX_RELATIVE_PATH_CHARS + 1), None, b"a"]

    def test_good_paths(self):
        """Each relative path lands under its prefix, the prefix written as given."""
        for prefix, rel, expected in self.GOOD:
            self.assertEqual(join_under(prefix, rel), expected, (prefix, rel))
            self.assertEqual(parse_uri(expected).path, parse_uri(prefix).path + rel)

    def test_refused_paths(self):
        """Climbing out, absolute, empty segments, hidden names, backslashes, non-ASCII, other
        characters and overlong paths are ValueErrors, for every scheme."""
        for prefix in ("s3://bucket/t/", "file:///srv/media/", "https://host/p/"):
            for rel in self.REFUSED_PATHS:
                with self.assertRaises(ValueError, msg=(prefix, rel)):
                    join_under(prefix, rel)

    def test_refused_prefixes(self):
        """A prefix must end with '/', and has no query string and no fragment."""
        with self.assertRaises(ValueError) as cm:
            join_under("https://host/p/?X-Amz-Signature=abc", "a.mp4")
        self.assertEqual(str(cm.exception), "a destination prefix cannot have a query string")
        self.assertNotIn("abc", str(cm.exception))
        for prefix, words in (("s3://bucket/title", "ends with '/'"),
                              ("s3://bucket", "ends with '/'"),
                              ("https://host/p/#frag/", "fragment"),
                              ("no-scheme/", "no scheme"),
                              (parse_uri("s3://bucket/key"), "ends with '/'"),
                              (parse_uri("https://h/p/?a=1"), "query string")):
            with self.assertRaises(ValueError, msg=prefix) as cm:
                join_under(prefix, "a.mp4")
            self.assertIn(words, str(cm.exception))

    def test_credentials_kept_for_the_transfer(self):
        """The credentials of the prefix reach the joined URI, also from a parsed MediaURI
        (whose str() is redacted) and from the original's unencoded s3 secret."""
        for prefix in (f"s3://AKIAEXAMPLE:{SECRET}@bucket/t/",
                       parse_uri(f"s3://AKIAEXAMPLE:{SECRET}@bucket/t/")):
            joined = parse_uri(join_under(prefix, "hls/a.m4s"))
            self.assertEqual((joined.username, joined.password, joined.host, joined.key),
                             ("AKIAEXAMPLE", SECRET, "bucket", "t/hls/a.m4s"))
        token = parse_uri(join_under(parse_uri("https://TOKEN@host/p/"), "a.mp4"))
        self.assertEqual((token.username, token.password), ("TOKEN", None))


class CheckDestinationPrefixTests(TestCase):
    """check_destination_prefix for file://, s3:// and http(s)://, against the real
    STORAGE_BACKENDS of the settings; no I/O beyond resolving file paths."""

    def setUp(self):
        self.settings, self.root = temp_settings(self, S3_ALLOWED_BUCKETS=["media", "other"])
        self.outside = os.path.join(os.path.dirname(self.root), "outside")
        os.makedirs(self.outside)

    def refused(self, uri, *words, settings=None):
        with self.assertRaises(InvalidJobSpec, msg=uri) as cm:
            check_destination_prefix(uri, settings or self.settings)
        self.assertEqual(cm.exception.field, "dest_path")
        self.assertTrue(cm.exception.message.startswith("dest_path: "), cm.exception.message)
        for word in words:
            self.assertIn(word, cm.exception.message)
        self.assertNotIn("x" * 20, cm.exception.message, "the message names the probe, not the prefix")
        return cm.exception.message

    def test_file_prefix_inside_the_roots(self):
        """The root itself and a directory under it that does not exist yet are accepted
        (nothing is created); the parsed MediaURI is returned."""
        for uri in (f"file://{self.root}/", f"file://{self.root}/titles/new/",
                    f"file://localhost{self.root}/t/"):
            muri = check_destination_prefix(uri, self.settings)
            self.assertIsInstance(muri, MediaURI)
            self.assertTrue(muri.path.endswith("/"))
        self.assertFalse(os.path.exists(os.path.join(self.root, "titles")))

    def test_file_prefix_outside_the_roots(self):
        """Outside the roots: directly, by '..', through a symlinked directory; named in the
        message with the roots."""
        os.symlink(self.outside, os.path.join(self.root, "escape"))
        for uri in ("file:///etc/", f"file://{self.outside}/", f"file://{self.root}/../outside/",
                    f"file://{self.root}/escape/", f"file://{self.root}/escape/deeper/"):
            message = self.refused(uri, "outside the allowed FILE_STORAGE_ROOTS", self.root)
            self.assertIn(f"{uri} is outside", message)

    def test_s3_prefix(self):
        """A valid, allowed bucket is accepted (its root too); a bad or unlisted bucket is
        refused; a prefix leaving no room for a 200-character name says so."""
        for uri in ("s3://media/title/", "s3://media/", f"s3://AKIAX:{SECRET}@other/t/"):
            self.assertEqual(check_destination_prefix(uri, self.settings).scheme, "s3")
        self.refused("s3://-bad/t/", "not a valid S3 bucket name")
        self.refused("s3://elsewhere/t/", "'elsewhere' is not one of S3_ALLOWED_BUCKETS")
        message = self.refused("s3://media/" + "k" * 830 + "/", "at most 1024 bytes",
                               f"up to {MAX_RELATIVE_PATH_CHARS} characters")
        self.assertIn("s3://media/kkkk", message)
        check_destination_prefix("s3://media/" + "k" * 820 + "/", self.settings)
        message = self.refused(f"s3://AKIAX:{SECRET}@elsewhere/t/", "S3_ALLOWED_BUCKETS")
        self.assertNotIn(SECRET, message)

    def test_http_prefix(self):
        """http(s) prefixes on acceptable hosts are accepted, credentials included; a private
        address literal is refused as for a single destination."""
        for uri in ("https://uploads.example.com/title/", "http://user:pw@example.com/p/",
                    "http://127.0.0.1:8080/up/"):  # the test settings allow loopback
            self.assertEqual(check_destination_prefix(uri, self.settings).path[-1], "/")
        self.refused("http://10.0.0.9/p/", "10.0.0.9", "private address", "ALLOWED_PRIVATE_NETWORKS")
        self.refused("http:///p/", "needs a host")

    def test_not_a_prefix(self):
        """No trailing '/', a query string, a fragment, a non-string, an unknown scheme."""
        self.refused("s3://media/title", "not a destination prefix", "ends with '/'")
        self.refused(f"file://{self.root}/out.mp4", "not a destination prefix")
        self.refused("https://example.com/p/?X-Amz-Signature=abc",
                     "a destination prefix cannot have a query string")
        self.refused("https://example.com/p/?sig=abc/", "cannot have a query string")
        self.refused("https://example.com/p/#frag/", "fragment")
        for value in (None, 7, "", ["s3://media/t/"]):
            self.refused(value, "non-empty URI string")
        self.refused("ftp://example.com/p/", "no storage backend handles ftp://")

    def test_check_destination_is_unchanged_for_files(self):
        """A single destination keeps its checks: a file is accepted, a 'directory' refused as
        before by the s3 and file backends."""
        self.assertEqual(check_destination(f"file://{self.root}/out.mp4", self.settings).path,
                         f"{self.root}/out.mp4")
        self.assertEqual(check_destination("s3://media/out.mp4", self.settings).key, "out.mp4")
        for uri, words in (("s3://media/dir/", "does not name an object"),
                           (f"file://{self.root}/", "does not name a file"),
                           ("file:///etc/passwd", "outside the allowed FILE_STORAGE_ROOTS")):
            with self.assertRaises(InvalidJobSpec) as cm:
                check_destination(uri, self.settings)
            self.assertIn(words, cm.exception.message)
