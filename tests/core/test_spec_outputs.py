"""validate_submission (nommer.core.spec) for declarative jobs and presets:
the schema first, presets expanded, the outputs nommer and its job_options,
dest_path prefix rules, image_path under the same rules as source_path, and
the 2011 form unchanged."""

import json

from cryptography.fernet import Fernet
from twisted.trial.unittest import TestCase

from nommer.core.errors import InvalidJobSpec
from nommer.core.secrets import unseal_uri
from nommer.core.spec import OUTPUTS_NOMMER, validate_submission
from tests.helpers import doc_two_pass, temp_settings

FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


class DeclarativeSubmitTests(TestCase):

    def setUp(self):
        self.settings, self.root = temp_settings(self, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        self.src = f"file://{self.root}/in.mov"
        self.prefix = f"file://{self.root}/out/"

    def body(self, **fields):
        b = {"source_path": self.src, "dest_path": self.prefix, "notify_url": None}
        b.update(fields)
        return b

    def refused(self, body, settings=None):
        with self.assertRaises(InvalidJobSpec) as cm:
            validate_submission(body, settings or self.settings)
        return cm.exception

    def test_outputs_job(self):
        spec = validate_submission(self.body(outputs=[{"type": "hls"}, {"type": "poster"}]), self.settings)
        self.assertEqual(spec["nommer"], OUTPUTS_NOMMER)
        self.assertEqual(spec["source_path"], self.src)
        self.assertEqual(spec["dest_path"], self.prefix)
        self.assertIsNone(spec["notify_url"])
        self.assertNotIn("sealed_credentials", spec)
        options = spec["job_options"]
        self.assertEqual(set(options), {"outputs", "preset", "single_file", "chunking"})
        self.assertIsNone(options["preset"])
        self.assertIs(options["single_file"], False)
        hls, poster = options["outputs"]
        self.assertEqual(hls["segment_s"], 6)     # defaults spelled out
        self.assertEqual(hls["dir"], "stream")
        self.assertEqual(poster, {"type": "poster", "name": "poster.jpg"})
        json.dumps(spec)  # storable

    def test_preset_job(self):
        spec = validate_submission(self.body(preset="cmaf-h264", overrides={"segment_s": 4}), self.settings)
        self.assertEqual(spec["nommer"], OUTPUTS_NOMMER)
        self.assertEqual(spec["job_options"]["preset"], "cmaf-h264")
        self.assertEqual([o["segment_s"] for o in spec["job_options"]["outputs"]], [4, 4])

    def test_legacy_preset_takes_the_2011_path(self):
        spec = validate_submission(self.body(preset="web-640", dest_path=f"file://{self.root}/out.mp4"),
                                   self.settings)
        self.assertEqual(spec["nommer"], FFMPEG)
        self.assertEqual(len(spec["job_options"]), 2)  # the two passes, normalized by FFmpegNommer
        e = self.refused(self.body(preset="web-640"))  # a prefix is no file for ffmpeg
        self.assertEqual(e.field, "dest_path")

    def test_schema_first(self):
        e = self.refused(self.body(outputs=[{"type": "gif"}]))
        self.assertEqual(e.field, "outputs[0].type")
        e = self.refused(self.body(outputs=[{"type": "hls"}], preset="hls-h264"))
        self.assertIn("give exactly one of job_options (the 2011 form), outputs, or preset", e.message)
        e = self.refused(self.body(preset="nope"))
        self.assertEqual(e.field, "preset")
        e = self.refused(self.body(preset="audio-image-merge"))
        self.assertEqual(e.field, "overrides.image_path")

    def test_rules_beyond_the_schema_apply(self):
        e = self.refused(self.body(outputs=[{"type": "hls"}, {"type": "dash", "codec": "hevc"}]))
        self.assertEqual(e.field, "outputs[1].codec")

    # --- dest_path ---------------------------------------------------------------------------

    def test_single_file_destination(self):
        for output in ({"type": "mp4"}, {"type": "audio"}, {"type": "poster"}):
            dest = f"file://{self.root}/result.bin"
            spec = validate_submission(self.body(dest_path=dest, outputs=[output]), self.settings)
            self.assertIs(spec["job_options"]["single_file"], True, output)
            self.assertEqual(spec["dest_path"], dest)
        spec = validate_submission(self.body(dest_path=f"file://{self.root}/a.m4a", preset="audio-aac"),
                                   self.settings)
        self.assertIs(spec["job_options"]["single_file"], True)

    def test_many_files_need_a_prefix(self):
        dest = f"file://{self.root}/out"
        e = self.refused(self.body(dest_path=dest, outputs=[{"type": "mp4"}, {"type": "poster"}]))
        self.assertEqual(e.field, "dest_path")
        self.assertIn("must end with '/' (a prefix): this job makes 2 outputs", e.message)
        e = self.refused(self.body(dest_path=dest, outputs=[{"type": "hls"}]))
        self.assertIn("must end with '/' (a prefix): an hls output makes many files", e.message)
        for kind in ("dash", "thumbnails", "storyboard"):
            self.assertEqual(self.refused(self.body(dest_path=dest, outputs=[{"type": kind}])).field,
                             "dest_path")
        e = self.refused(self.body(dest_path=dest, preset="storyboard"))
        self.assertIn("this job makes 2 outputs", e.message)

    def test_prefix_checked_by_storage(self):
        """A prefix outside FILE_STORAGE_ROOTS, or escaping them, is refused on dest_path."""
        for dest in ("file:///etc/", f"file://{self.root}/../elsewhere/"):
            e = self.refused(self.body(dest_path=dest, outputs=[{"type": "hls"}]))
            self.assertEqual(e.field, "dest_path", dest)
        e = self.refused(self.body(dest_path="gopher://h/out/", outputs=[{"type": "hls"}]))
        self.assertEqual(e.field, "dest_path")
        self.assertIn("no storage backend", e.message)

    def test_single_file_destination_checked(self):
        e = self.refused(self.body(dest_path="file:///etc/x.mp4", outputs=[{"type": "mp4"}]))
        self.assertEqual(e.field, "dest_path")

    def test_source_checked(self):
        e = self.refused(self.body(source_path="file:///etc/passwd", outputs=[{"type": "hls"}]))
        self.assertEqual(e.field, "source_path")
        e = self.refused(self.body(source_path="http://169.254.169.254/latest", outputs=[{"type": "hls"}]))
        self.assertEqual(e.field, "source_path")

    def test_notify_url_checked(self):
        e = self.refused(self.body(notify_url="ftp://h/x", outputs=[{"type": "hls"}]))
        self.assertEqual(e.field, "notify_url")
        e = self.refused(self.body(notify_url="http://10.1.2.3/hook", outputs=[{"type": "hls"}]))
        self.assertEqual(e.field, "notify_url")

    # --- image_path: the rules of source_path ---------------------------------------------------

    def merge(self, image, **fields):
        return self.body(outputs=[{"type": "poster"}, {"type": "mp4", "image_path": image}], **fields)

    def test_image_path_plain(self):
        image = f"file://{self.root}/cover.jpg"
        spec = validate_submission(self.merge(image), self.settings)
        self.assertEqual(spec["job_options"]["outputs"][1]["image_path"], image)
        self.assertNotIn("sealed_credentials", spec)

    def test_image_path_credentials_sealed(self):
        image = "https://user:s3cr3t@media.example/cover.jpg?X-Amz-Signature=S1G"
        spec = validate_submission(self.merge(image), self.settings)
        stored = spec["job_options"]["outputs"][1]["image_path"]
        self.assertNotIn("s3cr3t", json.dumps(spec))
        self.assertNotIn("S1G", json.dumps(spec))
        self.assertEqual(set(spec["sealed_credentials"]), {"outputs[1].image_path"})
        self.assertEqual(unseal_uri(stored, spec["sealed_credentials"]["outputs[1].image_path"], self.settings),
                         image)
        bare, _ = temp_settings(self, FILE_STORAGE_ROOTS=[self.root])  # no JOB_CREDENTIALS_KEY
        e = self.refused(self.merge(image), bare)
        self.assertEqual(e.field, "outputs[1].image_path")
        self.assertIn("JOB_CREDENTIALS_KEY", e.message)
        self.assertNotIn("s3cr3t", e.message)

    def test_image_path_through_preset_sealed(self):
        image = "https://tok:pw@media.example/cover.png"
        spec = validate_submission(self.body(preset="audio-image-merge", overrides={"image_path": image}),
                                   self.settings)
        self.assertEqual(set(spec["sealed_credentials"]), {"outputs[0].image_path"})
        self.assertEqual(spec["job_options"]["preset"], "audio-image-merge")

    def test_image_path_private_literals_refused(self):
        for image in ("http://127.0.0.1/cover.jpg", "http://169.254.169.254/latest/meta-data",
                      "https://[::1]/c.jpg", "http://0x7f000001/c.jpg", "http://10.0.0.8/c.jpg"):
            bare, _ = temp_settings(self, ALLOWED_PRIVATE_NETWORKS=[], FILE_STORAGE_ROOTS=[self.root])
            e = self.refused(self.merge(image), bare)
            self.assertEqual(e.field, "outputs[1].image_path", image)
        # ALLOWED_PRIVATE_NETWORKS allows them, as for sources (the test settings allow loopback)
        validate_submission(self.merge("http://127.0.0.1/cover.jpg"), self.settings)

    def test_image_path_outside_roots_refused(self):
        for image in ("file:///etc/passwd", "gopher://h/c.jpg", "not a uri"):
            e = self.refused(self.merge(image))
            self.assertEqual(e.field, "outputs[1].image_path", image)
            self.assertTrue(e.message.startswith("outputs[1].image_path: "), e.message)

    def test_outputs_nommer_not_allowed(self):
        only_ffmpeg, _ = temp_settings(self, ALLOWED_NOMMERS=[FFMPEG], FILE_STORAGE_ROOTS=[self.root])
        e = self.refused({"source_path": self.src, "dest_path": self.prefix, "outputs": [{"type": "hls"}]},
                         only_ffmpeg)
        self.assertEqual(e.field, "outputs")
        self.assertIn("not enabled", e.message)


class Form2011Tests(TestCase):
    """The 2011 body goes through as before: same result, same refusals."""

    def setUp(self):
        self.settings, self.root = temp_settings(self)

    def body(self, **fields):
        b = {"source_path": f"file://{self.root}/in.mov", "dest_path": f"file://{self.root}/out.mp4",
             "notify_url": None, "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}
        b.update(fields)
        return b

    def test_accepted_unchanged(self):
        spec = validate_submission(self.body(), self.settings)
        self.assertEqual(spec["nommer"], FFMPEG)
        # priority and pool (issue 12) come with every form: the defaults for a 2011 body.
        self.assertEqual(set(spec), {"notify_url", "nommer", "job_options", "source_path", "dest_path",
                                     "priority", "pool"})
        self.assertEqual((spec["priority"], spec["pool"]), (50, "default"))
        self.assertEqual(len(spec["job_options"]), 2)
        self.assertEqual(spec["dest_path"], f"file://{self.root}/out.mp4")

    def test_original_nommer_path(self):
        body = self.body(job_options={"nommer": "media_nommer.ec2nommerd.nommers.ffmpeg.FFmpegNommer",
                                      "options": doc_two_pass()})
        self.assertEqual(validate_submission(body, self.settings)["nommer"], FFMPEG)

    def test_refusals(self):
        for changes, field in [({"job_options": {"nommer": "os.system", "options": [{}]}}, "job_options.nommer"),
                               ({"job_options": {"nommer": FFMPEG, "options": []}}, "job_options.options"),
                               ({"source_path": "file:///etc/passwd"}, "source_path"),
                               ({"notify_url": 5}, "notify_url")]:
            with self.assertRaises(InvalidJobSpec) as cm:
                validate_submission(self.body(**changes), self.settings)
            self.assertEqual(cm.exception.field, field, changes)
        with self.assertRaises(InvalidJobSpec) as cm:
            validate_submission({"source_path": f"file://{self.root}/in.mov",
                                 "dest_path": f"file://{self.root}/out.mp4"}, self.settings)
        self.assertIn("job_options", cm.exception.message)
        self.assertIn("required", cm.exception.message)
