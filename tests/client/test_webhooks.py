"""``nommer.client.webhooks``: what a receiver runs to check a webhook's
``X-Nommer-Signature``; and ``nommer keys webhook-secret`` (a subprocess on a
real settings directory) giving the secret feederd signs with."""

import hashlib
import hmac
import os
import stat

import pytest

from nommer.client.webhooks import InvalidSignature, sign, signature, verify
from nommer.conf.settings import Settings
from nommer.core import webhook_signing
from tests.client.test_cli_keys import nommer, site  # noqa: F401 (a fixture)

SECRET = "whsec_" + "0f" * 32
BODY = b"unique_id=abc&job_id=abc&job_state=FINISHED&job_state_details="
NOW = 1_700_000_000


def test_signature_is_stripe_s_scheme():
    """v1 is the hex HMAC-SHA256 of "<t>.<body>" keyed with the secret; the header is t=...,v1=..."""
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert signature(BODY, SECRET, NOW) == expected
    assert sign(BODY, SECRET, NOW) == f"t=1700000000,v1={expected}"


def test_a_signed_body_verifies_and_gives_its_time():
    header = sign(BODY, SECRET, NOW)
    assert verify(BODY, header, SECRET, now=NOW + 10) == NOW
    assert verify(BODY.decode(), header.encode(), SECRET.encode(), now=NOW) == NOW  # str or bytes alike
    assert verify(BODY, header, SECRET, tolerance_s=None, now=NOW + 10**6) == NOW


@pytest.mark.parametrize("body, secret", [
    (BODY.replace(b"FINISHED", b"ERROR"), SECRET),  # forged body
    (BODY + b"&x=1", SECRET),                        # a field added
    (BODY, "whsec_" + "10" * 32),                    # another key's secret
])
def test_a_forged_body_or_another_secret_is_refused(body, secret):
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(body, sign(BODY, SECRET, NOW), secret, now=NOW)


def test_an_old_or_future_timestamp_is_refused():
    """A replay older than the tolerance (default 300 s), or a time far ahead, is refused even
    though its HMAC is right; a timestamp changed to look fresh breaks the HMAC."""
    header = sign(BODY, SECRET, NOW)
    assert verify(BODY, header, SECRET, now=NOW + 300) == NOW
    with pytest.raises(InvalidSignature, match="more than the 300 s tolerated"):
        verify(BODY, header, SECRET, now=NOW + 301)
    with pytest.raises(InvalidSignature, match="tolerated"):
        verify(BODY, header, SECRET, now=NOW - 3600)
    with pytest.raises(InvalidSignature, match="tolerated"):
        verify(BODY, header, SECRET, tolerance_s=5, now=NOW + 6)
    fresh = header.replace(f"t={NOW}", f"t={NOW + 1000}")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(BODY, fresh, SECRET, now=NOW + 1000)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=1700000000", "t=soon,v1=ab", "garbage",
                                    "t=1700000000,v0=" + "a" * 64])
def test_missing_or_malformed_headers_are_refused(header):
    with pytest.raises(InvalidSignature):
        verify(BODY, header, SECRET, now=NOW)


def test_one_matching_v1_of_several_is_enough():
    """While secrets change, a header may carry several v1 values: one matching passes."""
    header = f"t={NOW},v1={'0' * 64},v1={signature(BODY, SECRET, NOW)}"
    assert verify(BODY, header, SECRET, now=NOW) == NOW


# --- the secrets ----------------------------------------------------------------------------


def settings(tmp_path, **overrides):
    return Settings.from_overrides(DATA_DIR=str(tmp_path / "data"), **overrides)


def test_base_secret_generated_once_in_data_dir(tmp_path):
    """Without WEBHOOK_SIGNING_SECRET a random base secret is written to DATA_DIR (mode 0600) at
    first use and read back after; each key's secret is derived from it, stable, and differs per key."""
    s = settings(tmp_path)
    first = webhook_signing.base_secret(s)
    path = tmp_path / "data" / "webhook_signing.secret"
    assert path.read_text().strip() == first and len(first) >= 43
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert webhook_signing.base_secret(s) == first
    a, b = webhook_signing.key_secret(first, "0123456789abcdef"), webhook_signing.key_secret(first, "fedcba9876543210")
    assert a != b and a.startswith("whsec_") and len(a) == 6 + 64
    assert webhook_signing.key_secret(first, "0123456789abcdef") == a
    assert webhook_signing.owner_secret(first, None) == webhook_signing.key_secret(first, "anonymous")
    other = settings(tmp_path / "elsewhere")
    assert webhook_signing.base_secret(other) != first


def test_configured_base_secret_wins_and_a_damaged_file_is_an_error(tmp_path):
    s = settings(tmp_path, WEBHOOK_SIGNING_SECRET="x" * 40)
    assert webhook_signing.base_secret(s) == "x" * 40
    assert not (tmp_path / "data" / "webhook_signing.secret").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "webhook_signing.secret").write_text("short\n")
    with pytest.raises(ValueError, match="delete it"):
        webhook_signing.base_secret(settings(tmp_path))


def test_short_configured_secret_is_refused(tmp_path):
    from nommer.conf import ConfigErrors, load_settings
    (tmp_path / "nomconf.py").write_text("WEBHOOK_SIGNING_SECRET = 'too-short'\n")
    with pytest.raises(ConfigErrors, match="WEBHOOK_SIGNING_SECRET"):
        load_settings(str(tmp_path / "nomconf.py"), cwd=str(tmp_path))


def test_cli_webhook_secret(site):  # noqa: F811
    """`nommer keys webhook-secret KEY_ID` prints the key's secret alone on stdout (the one feederd
    derives from the base secret in DATA_DIR), `anonymous` works without a key, an unknown key id
    is one error line and exit 2."""
    created = nommer(site, "keys", "create", "hooks")
    key_id = created.stdout.strip()[4:20]
    shown = nommer(site, "keys", "webhook-secret", key_id)
    assert shown.returncode == 0, shown.stderr
    base = (site / "state" / "webhook_signing.secret").read_text().strip()
    assert shown.stdout == webhook_signing.key_secret(base, key_id) + "\n"
    assert "X-Nommer-Signature" in shown.stderr and "verify" in shown.stderr
    again = nommer(site, "keys", "webhook-secret", key_id)
    assert again.stdout == shown.stdout
    anonymous = nommer(site, "keys", "webhook-secret", "anonymous")
    assert anonymous.stdout == webhook_signing.key_secret(base, "anonymous") + "\n" != shown.stdout
    unknown = nommer(site, "keys", "webhook-secret", "0123456789abcdef")
    assert (unknown.returncode, unknown.stderr) == (2, "error: no API key with id '0123456789abcdef'\n")
