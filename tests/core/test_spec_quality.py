"""validate_submission (nommer.core.spec) for quality: a compare's ``distorted``
under the rules of source_path (checked, sealed when it holds credentials),
and VMAF refused at submit, with the fix, when this host finds no VMAF-capable
ffmpeg (``nommer.core.outputs.validate.check_vmaf``)."""

import json

from cryptography.fernet import Fernet
from twisted.trial.unittest import TestCase

from nommer.core.errors import InvalidJobSpec
from nommer.core.secrets import unseal_uri
from nommer.core.spec import validate_submission
from nommer.workerd.outputs.vmaf import HOW_TO_ENABLE
from tests.helpers import temp_settings


class QualitySubmitTests(TestCase):

    def setUp(self):
        self.settings, self.root = temp_settings(self, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        self.src = f"file://{self.root}/ref.mp4"
        self.prefix = f"file://{self.root}/out/"

    def body(self, outputs):
        return {"source_path": self.src, "dest_path": self.prefix, "outputs": outputs}

    def compare(self, distorted, **fields):
        return self.body([{"type": "compare", "distorted": distorted, **fields}])

    def refused(self, body, settings=None):
        with self.assertRaises(InvalidJobSpec) as cm:
            validate_submission(body, settings or self.settings)
        return cm.exception

    # --- distorted: the rules of source_path -------------------------------------------------

    def test_distorted_plain(self):
        distorted = f"file://{self.root}/encode.mkv"
        spec = validate_submission(self.compare(distorted), self.settings)
        (out,) = spec["job_options"]["outputs"]
        self.assertEqual(out, {"type": "compare", "distorted": distorted, "metrics": ["vmaf", "psnr", "ssim"],
                               "model": "vmaf_v0.6.1", "subsample": 1, "name": "compare.json"})
        self.assertNotIn("sealed_credentials", spec)

    def test_distorted_credentials_sealed(self):
        distorted = "https://user:s3cr3t@media.example/encode.mp4?X-Amz-Signature=S1G"
        spec = validate_submission(self.compare(distorted), self.settings)
        stored = spec["job_options"]["outputs"][0]["distorted"]
        self.assertNotIn("s3cr3t", json.dumps(spec))
        self.assertNotIn("S1G", json.dumps(spec))
        self.assertEqual(set(spec["sealed_credentials"]), {"outputs[0].distorted"})
        self.assertEqual(unseal_uri(stored, spec["sealed_credentials"]["outputs[0].distorted"], self.settings),
                         distorted)
        bare, _ = temp_settings(self, FILE_STORAGE_ROOTS=[self.root])  # no JOB_CREDENTIALS_KEY
        e = self.refused(self.compare(distorted), bare)
        self.assertEqual(e.field, "outputs[0].distorted")
        self.assertIn("JOB_CREDENTIALS_KEY", e.message)

    def test_distorted_private_literals_and_outside_roots_refused(self):
        bare, _ = temp_settings(self, ALLOWED_PRIVATE_NETWORKS=[], FILE_STORAGE_ROOTS=[self.root])
        for distorted in ("http://127.0.0.1/e.mp4", "http://169.254.169.254/latest/meta-data",
                          "file:///etc/passwd", "gopher://h/e.mp4"):
            e = self.refused(self.compare(distorted), bare)
            self.assertEqual(e.field, "outputs[0].distorted", distorted)

    # --- VMAF without a VMAF-capable ffmpeg ------------------------------------------------

    def no_vmaf(self, binary="/usr/bin/ffmpeg"):
        settings, _ = temp_settings(self, FILE_STORAGE_ROOTS=[self.root], VMAF_FFMPEG_BIN=binary)
        return settings

    def test_vmaf_refused_with_the_fix(self):
        distorted = f"file://{self.root}/encode.mkv"
        cases = [
            (self.body([{"type": "poster"}, {"type": "mp4", "quality": {}}]), "outputs[1].quality.metrics"),
            (self.compare(distorted), "outputs[0].metrics"),
            (self.body([{"type": "hls", "target": {"vmaf": 93}}]), "outputs[0].target"),
        ]
        for body, field in cases:
            e = self.refused(body, self.no_vmaf())
            self.assertEqual(e.field, field)
            self.assertIn("VMAF_FFMPEG_BIN (/usr/bin/ffmpeg) has no libvmaf filter", e.message)
            self.assertIn(HOW_TO_ENABLE, e.message)
        e = self.refused(self.compare(distorted), self.no_vmaf(f"{self.root}/missing-ffmpeg"))
        self.assertIn("is not an executable", e.message)

    def test_psnr_and_ssim_need_no_vmaf(self):
        settings = self.no_vmaf()
        validate_submission(self.body([{"type": "mp4", "quality": {"metrics": ["psnr", "ssim"]}}]), settings)
        validate_submission(self.compare(f"file://{self.root}/e.mkv", metrics=["ssim"]), settings)

    def test_vmaf_accepted_with_the_wheel(self):
        """The test extra installs imageio-ffmpeg: found without any setting."""
        spec = validate_submission(self.body([{"type": "mp4", "quality": {"model": "vmaf_v0.6.1neg"}}]),
                                   self.settings)
        self.assertEqual(spec["job_options"]["outputs"][0]["quality"],
                         {"metrics": ["vmaf", "psnr", "ssim"], "model": "vmaf_v0.6.1neg", "subsample": 1})
