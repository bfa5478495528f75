"""The secrets webhooks are signed with (the scheme: ``nommer.client.webhooks``).

One base secret per installation: WEBHOOK_SIGNING_SECRET, or, when that is
None, a random one (256 bits, ``secrets.token_urlsafe(32)``) generated at
first use into ``DATA_DIR/webhook_signing.secret`` (mode 0600; created
exclusively, so feederd and ``nommer keys webhook-secret`` starting at once
agree on one). Each API key gets its own signing secret derived from it::

    key_secret = "whsec_" + hex(HMAC-SHA256(base, "nommer webhook signing secret\\0" + key_id))

so a receiver that holds one key's secret can neither verify nor forge
another key's webhooks, and nothing new is stored per key. A job submitted
without a key (loopback, no key yet) is signed with the secret of the
key_id ``anonymous``. Changing the base secret (or losing DATA_DIR when it
was generated) changes every key's secret.

Where feederd runs on another machine than ``nommer keys`` (or several
feederds share a job store), set WEBHOOK_SIGNING_SECRET in the nomconf: a
generated file is local to one DATA_DIR.
"""

import hashlib
import hmac
import os
import secrets

#: The file holding a generated base secret, under DATA_DIR.
SECRET_FILE = "webhook_signing.secret"

#: The key_id whose secret signs the webhooks of jobs without an owner.
ANONYMOUS = "anonymous"

#: What a per-key secret starts with.
KEY_SECRET_PREFIX = "whsec_"

_DERIVATION = b"nommer webhook signing secret\x00"


def secret_file(settings):
    """Path of the generated base secret: ``DATA_DIR/webhook_signing.secret``."""
    return os.path.join(settings.DATA_DIR, SECRET_FILE)


def base_secret(settings):
    """The installation's base signing secret (str): WEBHOOK_SIGNING_SECRET,
    else the generated file's, generating it now if missing (DATA_DIR is
    created if needed). Blocking file I/O: call it at start, not per request.

    @raise OSError: the file cannot be read or written.
    @raise ValueError: the file holds less than 32 characters (damaged).
    """
    configured = getattr(settings, "WEBHOOK_SIGNING_SECRET", None)
    if configured:
        return configured
    path = secret_file(settings)
    try:
        with open(path, encoding="ascii") as f:
            return _checked(f.read().strip(), path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    generated = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process generated it meanwhile: use theirs
        with open(path, encoding="ascii") as f:
            return _checked(f.read().strip(), path)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(generated + "\n")
        f.flush()
        os.fsync(f.fileno())
    return generated


def _checked(text, path):
    if len(text) < 32:
        raise ValueError(f"{path} holds no webhook signing secret (under 32 characters); delete it to "
                         "generate a new one (every key's webhook secret changes) or set WEBHOOK_SIGNING_SECRET")
    return text


def key_secret(base, key_id):
    """The webhook signing secret of API key ``key_id`` (or ``ANONYMOUS``)
    under base secret ``base``: ``"whsec_"`` + 64 hex characters."""
    digest = hmac.new(base.encode("utf-8"), _DERIVATION + str(key_id).encode("utf-8"), hashlib.sha256)
    return KEY_SECRET_PREFIX + digest.hexdigest()


def owner_secret(base, owner):
    """The signing secret of a job whose ``owner`` is a key_id, or None (anonymous)."""
    return key_secret(base, owner if owner else ANONYMOUS)
