"""EC2 user data of workers: the cloud-config contract, no secrets, the 16 KB limit."""

import json

import pytest
import yaml
from twisted.trial.unittest import TestCase

from nommer.feederd.fleet import userdata
from nommer.feederd.fleet.userdata import (ENV_FILE_PATH, MAX_USER_DATA_BYTES, parse_env_file, render_env_file,
                                           render_user_data)
from tests.helpers import temp_settings

FERNET_KEY = "q2K3yV8m7m0WZr7xjx3qvX4u9cB0lH5cX3pJb3m6ZkA="


def document(text):
    assert text.startswith("#cloud-config\n")
    return json.loads(text[len("#cloud-config\n"):])


class RenderUserDataTests(TestCase):

    def settings(self, **overrides):
        values = dict(CONFIG_S3_BUCKET="acme-nommer-config", AWS_REGION="eu-west-3")
        values.update(overrides)
        return temp_settings(self, **values)[0]

    def test_the_contract_exactly(self):
        """One file, 0644, NOMMER_CONFIG and AWS_DEFAULT_REGION, and one runcmd starting the unit."""
        doc = document(render_user_data(self.settings()))
        self.assertEqual(sorted(doc), ["runcmd", "write_files"])
        [entry] = doc["write_files"]
        self.assertEqual(entry, {"path": ENV_FILE_PATH, "permissions": "0644", "content": entry["content"]})
        self.assertEqual(entry["path"], "/etc/nommer/workerd.env")
        self.assertEqual(parse_env_file(entry["content"]),
                         {"NOMMER_CONFIG": "s3://acme-nommer-config/nomconf.py", "AWS_DEFAULT_REGION": "eu-west-3"})
        self.assertEqual(entry["content"].splitlines(),
                         ["NOMMER_CONFIG=s3://acme-nommer-config/nomconf.py", "AWS_DEFAULT_REGION=eu-west-3"])
        self.assertEqual(doc["runcmd"], [["systemctl", "enable", "--now", "nommer-workerd.service"]])

    def test_endpoint_only_when_set(self):
        """AWS_ENDPOINT_URL is written only when the settings have one (tests against moto)."""
        env = parse_env_file(document(render_user_data(self.settings(
            AWS_ENDPOINT_URL="http://127.0.0.1:5000")))["write_files"][0]["content"])
        self.assertEqual(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:5000")
        env = parse_env_file(document(render_user_data(self.settings()))["write_files"][0]["content"])
        self.assertNotIn("AWS_ENDPOINT_URL", env)

    def test_cloud_init_reads_it_as_yaml(self):
        """cloud-init parses user data with PyYAML: the JSON body is the same document as YAML."""
        text = render_user_data(self.settings(AWS_ENDPOINT_URL="http://127.0.0.1:5000"))
        self.assertEqual(yaml.safe_load(text), document(text))

    def test_no_credentials_ever(self):
        """Keys and the job-credentials key in the settings never reach user data (readable by the instance)."""
        settings = self.settings(AWS_ACCESS_KEY_ID="AKIAEXAMPLEKEYID1234",
                                 AWS_SECRET_ACCESS_KEY="s3cr3t-SECRET-value/xyz", JOB_CREDENTIALS_KEY=FERNET_KEY)
        text = render_user_data(settings)
        for secret in ("AKIAEXAMPLEKEYID1234", "s3cr3t-SECRET-value/xyz", FERNET_KEY,
                       "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "JOB_CREDENTIALS_KEY"):
            self.assertNotIn(secret, text)
        env = parse_env_file(document(text)["write_files"][0]["content"])
        self.assertEqual(set(env), {"NOMMER_CONFIG", "AWS_DEFAULT_REGION"})

    def test_under_16_kb(self):
        """EC2 refuses user data over 16 KB: ours is far under, and an oversized one raises."""
        self.assertLess(len(render_user_data(self.settings()).encode()), MAX_USER_DATA_BYTES // 8)
        self.patch(userdata, "MAX_USER_DATA_BYTES", 100)
        with self.assertRaises(ValueError) as caught:
            render_user_data(self.settings())
        self.assertIn("at most 100", str(caught.exception))


@pytest.mark.parametrize("env", [
    {"A": "x\ny"}, {"A": "has space"}, {"A": "quote'd"}, {"A": ""}, {"not a name": "v"}, {"A=B": "v"}])
def test_unwritable_values_are_refused(env):
    """A value that systemd's EnvironmentFile would read differently is refused, not written."""
    with pytest.raises(ValueError):
        render_env_file(env)


def test_parse_env_file():
    """Comments and blank lines are skipped, one pair of quotes removed, '=' in values kept."""
    text = "# nommer\n\nA=1\n  B = \"two words\"\nC='x'\nD=a=b\n"
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "x", "D": "a=b"}
    assert parse_env_file(render_env_file({"X": "s3://b/k", "Y": "y"})) == {"X": "s3://b/k", "Y": "y"}
    with pytest.raises(ValueError, match="line 2"):
        parse_env_file("A=1\nnonsense\n")
