"""Sealing URI credentials for the job store: round trip, wrong key, no key, nothing to seal."""

import json

from cryptography.fernet import Fernet
from twisted.trial.unittest import TestCase

from nommer.core.errors import InvalidJobSpec, PermanentJobError
from nommer.core.job import Job
from nommer.core.secrets import (
    SealedCredentialsError, has_credentials, seal_uri, unseal_uri)
from nommer.core.spec import validate_submission
from tests.helpers import doc_two_pass, temp_settings

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
URI = f"s3://{KEY_ID}:{SECRET}@media-bucket/in/clip.mov"
FFMPEG = "nommer.workerd.nommers.ffmpeg.FFmpegNommer"


class SealTests(TestCase):

    def setUp(self):
        self.key = Fernet.generate_key().decode()
        self.settings, self.root = temp_settings(self, JOB_CREDENTIALS_KEY=self.key)

    def test_round_trip(self):
        """A URI with a password is stored redacted and unsealed back to the original."""
        stored, sealed = seal_uri(URI, self.settings, "source_path")
        self.assertEqual(stored, f"s3://{KEY_ID}:***@media-bucket/in/clip.mov")
        self.assertIsInstance(sealed, str)
        self.assertNotIn(SECRET, sealed)
        self.assertNotIn(SECRET.split("/")[0], sealed)
        self.assertEqual(unseal_uri(stored, sealed, self.settings), URI)

    def test_each_seal_differs(self):
        """Sealing the same URI twice gives different tokens (Fernet's random IV)."""
        self.assertNotEqual(seal_uri(URI, self.settings)[1], seal_uri(URI, self.settings)[1])

    def test_wrong_key_fails_clearly(self):
        """Another key cannot unseal: a permanent SealedCredentialsError naming the setting."""
        stored, sealed = seal_uri(URI, self.settings)
        other, _ = temp_settings(self, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())
        with self.assertRaises(SealedCredentialsError) as cm:
            unseal_uri(stored, sealed, other)
        self.assertIsInstance(cm.exception, PermanentJobError)
        self.assertIn("JOB_CREDENTIALS_KEY", cm.exception.message)
        self.assertIn(stored, cm.exception.message)
        self.assertNotIn(SECRET, cm.exception.message)

    def test_no_key_on_the_worker(self):
        """Unsealing without JOB_CREDENTIALS_KEY says to set the same key as feederd."""
        stored, sealed = seal_uri(URI, self.settings)
        bare, _ = temp_settings(self)
        with self.assertRaises(SealedCredentialsError) as cm:
            unseal_uri(stored, sealed, bare)
        self.assertIn("JOB_CREDENTIALS_KEY is not set", cm.exception.message)

    def test_damaged_or_foreign_token(self):
        """A damaged token, or one sealed for another URI, is refused."""
        stored, sealed = seal_uri(URI, self.settings)
        with self.assertRaises(SealedCredentialsError):
            unseal_uri(stored, sealed[:-4] + "AAAA", self.settings)
        other_stored, _ = seal_uri(URI.replace("clip.mov", "other.mov"), self.settings)
        with self.assertRaises(SealedCredentialsError) as cm:
            unseal_uri(other_stored, sealed, self.settings)
        self.assertIn("do not belong", cm.exception.message)

    def test_credentials_without_key_refused(self):
        """With no JOB_CREDENTIALS_KEY a URI holding a password is an InvalidJobSpec on its field."""
        bare, _ = temp_settings(self)
        with self.assertRaises(InvalidJobSpec) as cm:
            seal_uri(URI, bare, "dest_path")
        self.assertEqual(cm.exception.field, "dest_path")
        self.assertIn("has credentials in it; set JOB_CREDENTIALS_KEY", cm.exception.message)
        self.assertIn("instance role", cm.exception.message)
        self.assertNotIn(SECRET, cm.exception.message)

    def test_no_password_untouched(self):
        """A URI without a password (a username alone included) is returned as is, unsealed."""
        for uri in ("s3://media-bucket/in.mov", f"s3://{KEY_ID}@media-bucket/in.mov",
                    "file:///srv/media/in.mov", "https://host/in.mov?v=2"):
            self.assertEqual(seal_uri(uri, self.settings), (uri, None))
            self.assertFalse(has_credentials(uri))
            self.assertEqual(unseal_uri(uri, None, self.settings), uri)
        bare, _ = temp_settings(self)
        self.assertEqual(seal_uri("s3://b/k.mov", bare), ("s3://b/k.mov", None))

    def test_presigned_url_sealed(self):
        """A presigned URL's signature is a credential too: stored masked, unsealed whole."""
        url = ("https://media-bucket.s3.amazonaws.com/in.mov?X-Amz-Credential=AKIA%2F1"
               "&X-Amz-Signature=deadbeefcafe&X-Amz-Expires=600")
        stored, sealed = seal_uri(url, self.settings)
        self.assertNotIn("deadbeefcafe", stored)
        self.assertIn("X-Amz-Signature=***", stored)
        self.assertEqual(unseal_uri(stored, sealed, self.settings), url)

    def test_submission_sealed(self):
        """validate_submission returns redacted URIs and the tokens in sealed_credentials."""
        body = {"source_path": URI, "dest_path": f"file://{self.root}/out.mp4",
                "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}
        spec = validate_submission(body, self.settings)
        self.assertEqual(spec["source_path"], f"s3://{KEY_ID}:***@media-bucket/in/clip.mov")
        self.assertEqual(spec["dest_path"], body["dest_path"])
        self.assertEqual(set(spec["sealed_credentials"]), {"source_path"})
        self.assertNotIn(SECRET, json.dumps(spec))
        self.assertEqual(unseal_uri(spec["source_path"], spec["sealed_credentials"]["source_path"],
                                    self.settings), URI)

        body["source_path"] = f"file://{self.root}/in.mov"
        self.assertNotIn("sealed_credentials", validate_submission(body, self.settings))

    def test_job_keeps_sealed_credentials(self):
        """Job.to_dict/from_dict carry sealed_credentials; repr leaves them out."""
        stored, sealed = seal_uri(URI, self.settings)
        job = Job(job_id="j" * 50, source_path=stored, dest_path="file:///o.mp4",
                  nommer=FFMPEG, job_options=[], sealed_credentials={"source_path": sealed})
        again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
        self.assertEqual(again, job)
        self.assertNotIn(sealed, repr(job))
        old = job.to_dict()
        del old["sealed_credentials"]
        self.assertIsNone(Job.from_dict(old).sealed_credentials)

    def test_notify_url_sealed(self):
        """A notify_url with a password or a secret query parameter is sealed like source and dest;
        without JOB_CREDENTIALS_KEY it is BADINPUT on notify_url (never stored in clear)."""
        hook = "https://hooks:pw0rd@hooks.example/cb?api_key=K3Y&x=1"
        body = {"source_path": f"file://{self.root}/in.mov", "dest_path": f"file://{self.root}/out.mp4",
                "notify_url": hook, "job_options": {"nommer": FFMPEG, "options": doc_two_pass()}}
        spec = validate_submission(body, self.settings)
        self.assertEqual(spec["notify_url"], "https://hooks:***@hooks.example/cb?api_key=***&x=1")
        self.assertEqual(set(spec["sealed_credentials"]), {"notify_url"})
        self.assertNotIn("pw0rd", json.dumps(spec))
        self.assertNotIn("K3Y", json.dumps(spec))
        self.assertEqual(unseal_uri(spec["notify_url"], spec["sealed_credentials"]["notify_url"], self.settings),
                         hook)
        bare, _ = temp_settings(self, FILE_STORAGE_ROOTS=[self.root])
        with self.assertRaises(InvalidJobSpec) as cm:
            validate_submission(body, bare)
        self.assertEqual(cm.exception.field, "notify_url")
        self.assertNotIn("pw0rd", cm.exception.message)
        body["notify_url"] = "https://hooks.example/cb?x=1"
        self.assertNotIn("sealed_credentials", validate_submission(body, self.settings))


class TokenCredentialsTests(TestCase):
    """A token given as an http(s) username, or in a token-like query parameter, is a
    credential: sealed, never stored in clear."""

    def setUp(self):
        self.settings, self.root = temp_settings(self, JOB_CREDENTIALS_KEY=Fernet.generate_key().decode())

    def test_http_username_sealed(self):
        for uri, stored_form in [("https://ghp_T0KEN@media.example/in.mov", "https://***@media.example/in.mov"),
                                 ("https://media.example/in.mov?access-token=T0KEN", None),
                                 ("https://media.example/in.mov?hmac=T0KEN&t=1", None)]:
            self.assertTrue(has_credentials(uri), uri)
            stored, sealed = seal_uri(uri, self.settings, "source_path")
            self.assertNotIn("T0KEN", stored)
            if stored_form:
                self.assertEqual(stored, stored_form)
            self.assertEqual(unseal_uri(stored, sealed, self.settings), uri)

    def test_http_username_without_key_refused(self):
        bare, _ = temp_settings(self)
        with self.assertRaises(InvalidJobSpec) as cm:
            seal_uri("https://T0KEN@media.example/in.mov", bare, "source_path")
        self.assertIn("JOB_CREDENTIALS_KEY", cm.exception.message)
        self.assertNotIn("T0KEN", cm.exception.message)
        self.assertFalse(has_credentials("s3://AKIAEXAMPLE@bucket/in.mov"))  # an access key id

    def test_token_sealed_before_the_new_rules_still_opens(self):
        """A job sealed before these rules (stored showing the http username and hmac in clear,
        another secret masked) still unseals on an upgraded worker, to its original URI."""
        from cryptography.fernet import Fernet as F
        original = "https://T0KEN@media.example/in.mov?sig=S1G&hmac=HM4C"
        stored_then = "https://T0KEN@media.example/in.mov?sig=***&hmac=HM4C"
        sealed = F(self.settings.JOB_CREDENTIALS_KEY.encode()).encrypt(original.encode()).decode()
        self.assertEqual(unseal_uri(stored_then, sealed, self.settings), original)
        with self.assertRaises(PermanentJobError):  # a token of another URI is still refused
            unseal_uri("https://T0KEN@other.example/in.mov?sig=***&hmac=HM4C", sealed, self.settings)
