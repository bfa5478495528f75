"""`nommer --api-key` / NOMMER_API_KEY on every API command, 401/403/429 messages, and
`nommer keys create/list/revoke` run as a subprocess on a real settings directory."""

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from tests.helpers import cli_against

KEY = "nmk_0123456789abcdef_" + "Ab-_" * 10 + "xyz"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def auth_headers(feederd):
    return [headers.get("Authorization") for _, _, headers, _ in feederd.requests]


def json_error(status, code, message, headers=None):
    return (status, "application/json",
            json.dumps({"success": False, "error_code": code, "message": message}).encode(), headers or {})


@pytest.fixture
def run(feederd):
    return cli_against(feederd.url)


def api_commands(feederd):
    job_id = feederd.add_job(state="ENCODING")
    done = feederd.add_job(state="FINISHED")
    return [["submit", "file:///a", "file:///b", "--preset", "web-640"], ["status", job_id], ["list"],
            ["cancel", job_id], ["wait", done], ["workers"], ["health"]]


@pytest.mark.parametrize("how", ["option", "env"])
def test_every_api_command_sends_the_key(run, feederd, how):
    """--api-key KEY, or NOMMER_API_KEY, reaches feederd as Authorization: Bearer KEY on every command."""
    feederd.api_key = KEY
    for args in api_commands(feederd):
        if how == "option":
            result = run("--api-key", KEY, *args)
        else:
            result = run(*args, env={"NOMMER_API_KEY": KEY})
        assert result.exit_code == 0, (args, result.output)
        assert KEY not in result.output
    assert len(feederd.requests) == 7
    assert auth_headers(feederd) == [f"Bearer {KEY}"] * 7


def test_without_a_key_nothing_is_sent(run, feederd):
    run("health")
    assert auth_headers(feederd) == [None]


def test_401_says_what_to_do(run, feederd):
    """A refused key: one error line and a hint naming --api-key, NOMMER_API_KEY and `nommer keys create`;
    exit 2; the key never printed."""
    feederd.api_key = "nmk_the_right_one"
    result = run("--api-key", KEY, "list")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: missing or invalid API key (UNAUTHORIZED)"
    assert "--api-key" in lines[1] and "NOMMER_API_KEY" in lines[1] and "nommer keys create" in lines[1]
    assert KEY not in result.output and "Traceback" not in result.output


def test_403_and_429(run, feederd):
    """403 points at the key's scopes; 429 says when to try again."""
    feederd.next_error = json_error(403, "FORBIDDEN", "this key may not cancel jobs")
    result = run("cancel", "x" * 50)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: this key may not cancel jobs (FORBIDDEN)\n")
    assert "scope" in result.stderr.splitlines()[1]
    feederd.next_error = json_error(429, "RATELIMITED", "too many requests", {"Retry-After": "12"})
    result = run("list")
    assert result.exit_code == 2
    assert result.stderr == "error: too many requests (RATELIMITED)\ntry again in 12 s\n"


def test_a_malformed_key_stops_api_commands_not_local_ones(run, feederd):
    """A NOMMER_API_KEY with a line break inside: API commands (presets too: the server's) refuse
    (exit 2, key not echoed); `keys --help` runs."""
    env = {"NOMMER_API_KEY": "nmk_a\nb"}
    for command in ("health", "presets"):
        result = run(command, env=env)
        assert result.exit_code == 2 and "API key" in result.stderr and "nmk_a" not in result.output
    assert feederd.requests == []
    result = run("keys", "--help", env=env)
    assert result.exit_code == 0 and "create" in result.stdout


def test_help_shows_the_option_not_the_key(run):
    result = run("--help", env={"NOMMER_API_KEY": KEY})
    assert "--api-key" in result.stdout and "NOMMER_API_KEY" in result.stdout
    assert KEY not in result.stdout


# --- nommer keys, a subprocess on a real settings directory -------------------------------


def nommer(cwd, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if k != "NOMMER_API_KEY"}
    full_env["PYTHONPATH"] = REPO
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "nommer.client.cli", *args], cwd=str(cwd), env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def site(tmp_path):
    """A directory with a nomconf.py putting DATA_DIR in ./state."""
    (tmp_path / "nomconf.py").write_text("DATA_DIR = 'state'\n")
    return tmp_path


def stored_rows(site):
    with sqlite3.connect(site / "state" / "keys.sqlite") as db:
        return db.execute("SELECT key_id, secret_hash, name, scopes, revoked_at FROM api_keys").fetchall()


def raw_files(site):
    data = b""
    for name in os.listdir(site / "state"):
        data += (site / "state" / name).read_bytes()
    return data


def test_keys_create_list_revoke(site):
    """create prints the secret once (stdout) and says it won't be shown again; only its hash is stored;
    list shows the key without it; revoke marks it revoked."""
    assert nommer(site, "keys", "list").stdout == "no API keys (create one with `nommer keys create NAME`)\n"
    created = nommer(site, "keys", "create", "ci-uploader")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n"
    assert secret.startswith("nmk_") and len(secret) == 4 + 16 + 1 + 43
    assert "shown only now" in created.stderr and "cannot be shown again" in created.stderr
    key_id = secret[4:20]
    assert key_id in created.stderr and "cancel,read,submit" in created.stderr

    [(stored_id, stored_hash, name, scopes, revoked_at)] = stored_rows(site)
    assert (stored_id, name, scopes, revoked_at) == (key_id, "ci-uploader", "cancel,read,submit", None)
    assert stored_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.encode() not in raw_files(site) and secret[-43:].encode() not in raw_files(site)

    admin = nommer(site, "keys", "create", "ops", "--scope", "admin,read", "--json")
    assert admin.returncode == 0, admin.stderr
    made = json.loads(admin.stdout)
    assert made["key"]["scopes"] == ["admin", "read"] and made["secret"].startswith("nmk_" + made["key"]["key_id"])

    listed = nommer(site, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY_ID", "NAME", "SCOPES", "CREATED", "(UTC)", "REVOKED", "(UTC)"]
    assert lines[1].startswith(key_id) and "ci-uploader" in lines[1] and lines[1].endswith("-")
    assert secret not in listed.stdout and made["secret"] not in listed.stdout

    revoked = nommer(site, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"revoked API key {key_id} 'ci-uploader' at ")
    as_json = json.loads(nommer(site, "keys", "list", "--json").stdout)
    assert [(k["key_id"], k["name"], k["revoked_at"] is not None) for k in as_json] == [
        (key_id, "ci-uploader", True), (made["key"]["key_id"], "ops", False)]
    assert set(as_json[0]) == {"key_id", "name", "scopes", "created_at", "revoked_at"}
    assert stored_rows(site)[0][4] is not None


def test_keys_errors(site):
    """Unknown key id, unknown scope, empty name: one clear line, exit 2, nothing stored."""
    unknown = nommer(site, "keys", "revoke", "0123456789abcdef")
    assert unknown.returncode == 2
    assert unknown.stderr == "error: no API key with id '0123456789abcdef'\n"
    bad_scope = nommer(site, "keys", "create", "x", "--scope", "submit,write")
    assert bad_scope.returncode == 2
    assert "unknown scope 'write'; the scopes are submit, read, cancel, admin" in bad_scope.stderr
    empty = nommer(site, "keys", "create", " ")
    assert (empty.returncode, empty.stderr) == (2, "error: name: a key needs a non-empty name\n")
    assert json.loads(nommer(site, "keys", "list", "--json").stdout) == []


def test_keys_use_the_config_given(tmp_path):
    """--config PATH picks the settings (and so the DATA_DIR) the keys live under; a broken config is reported."""
    (tmp_path / "elsewhere.py").write_text("DATA_DIR = 'other-data'\n")
    created = nommer(tmp_path, "keys", "create", "k", "--config", "elsewhere.py")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "other-data" / "keys.sqlite").exists()
    (tmp_path / "broken.py").write_text("DATA_DIRR = 'x'\n")
    broken = nommer(tmp_path, "keys", "list", "--config", "broken.py")
    assert broken.returncode == 1 and "DATA_DIRR" in broken.stderr


def test_keys_on_dynamodb(tmp_path):
    """With JOB_STORE_BACKEND dynamodb the CLI writes DYNAMODB_KEY_TABLE (on moto): hash, no secret."""
    import boto3

    from tests.aws_server import FAKE_CREDENTIALS, moto_endpoint, reset_moto
    reset_moto()
    (tmp_path / "nomconf.py").write_text(
        f"JOB_STORE_BACKEND = 'dynamodb'\nAWS_ENDPOINT_URL = {moto_endpoint()!r}\nAWS_REGION = 'us-east-1'\n"
        "DYNAMODB_KEY_TABLE = 'cli_keys'\n")
    created = nommer(tmp_path, "keys", "create", "remote", env=FAKE_CREDENTIALS)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    items = boto3.client("dynamodb", endpoint_url=moto_endpoint(), region_name="us-east-1").scan(
        TableName="cli_keys")["Items"]
    assert [i["secret_hash"]["S"] for i in items] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert secret not in json.dumps(items)
    revoked = nommer(tmp_path, "keys", "revoke", secret[4:20], env=FAKE_CREDENTIALS)
    assert revoked.returncode == 0, revoked.stderr
    listed = json.loads(nommer(tmp_path, "keys", "list", "--json", env=FAKE_CREDENTIALS).stdout)
    assert [(k["name"], k["revoked_at"] is not None) for k in listed] == [("remote", True)]
