"""Validation of a submitted job (the body of ``POST /job/submit``).

The body is the original media-nommer's::

    {"source_path": URI, "dest_path": URI, "notify_url": URL or null,
     "job_options": {"nommer": dotted path, "options": nommer options}}

Every problem raises ``InvalidJobSpec(field, message)``; nothing here does I/O.
"""

import urllib.parse

from twisted.python.reflect import namedAny

from nommer.core.errors import InvalidJobSpec
from nommer.core.secrets import seal_uri
from nommer.core.storage import check_destination, check_source

MAX_URI_LENGTH = 4096


def _required_string(body, key):
    value = body.get(key)
    if value is None or value == "":
        raise InvalidJobSpec(key, "is required (a non-empty string)")
    if not isinstance(value, str):
        raise InvalidJobSpec(key, f"must be a string, not {type(value).__name__}")
    if len(value) > MAX_URI_LENGTH:
        raise InvalidJobSpec(key, f"is longer than {MAX_URI_LENGTH} characters")
    return value


def resolve_nommer(name, settings):
    """Canonical dotted path of an allowed nommer class, and the class.

    Old paths (``NOMMER_ALIASES``) map to today's; anything not in
    ``ALLOWED_NOMMERS`` raises InvalidJobSpec (the class is never imported).
    """
    if not isinstance(name, str) or not name:
        raise InvalidJobSpec("job_options.nommer", "is required (the dotted path of a nommer class)")
    canonical = settings.NOMMER_ALIASES.get(name, name)
    if canonical not in settings.ALLOWED_NOMMERS:
        raise InvalidJobSpec("job_options.nommer",
                             f"{name!r} is not an allowed nommer; allowed: {', '.join(settings.ALLOWED_NOMMERS)}")
    return canonical, namedAny(canonical)


def validate_submission(body, settings):
    """Check a submit body. Returns a dict with ``source_path``, ``dest_path``,
    ``notify_url``, ``nommer`` (canonical dotted path) and ``job_options``
    (the nommer's normalized options), plus ``sealed_credentials`` when a URI
    holds credentials: the URIs returned are then redacted and the originals
    sealed (``nommer.core.secrets.seal_uri``), so the job store never holds a
    secret in clear. Raises ``InvalidJobSpec``."""
    if not isinstance(body, dict):
        raise InvalidJobSpec(None, "the request body must be a JSON object")
    # The original's order: source_path, dest_path, job_options.
    source = _required_string(body, "source_path")
    dest = _required_string(body, "dest_path")
    options = body.get("job_options")
    if not options:
        raise InvalidJobSpec("job_options", "is required (an object with 'nommer' and 'options')")
    if not isinstance(options, dict):
        raise InvalidJobSpec("job_options", f"must be an object, not {type(options).__name__}")
    if not options.get("options"):
        raise InvalidJobSpec("job_options.options", "is required (the nommer's options, e.g. a list of passes)")
    canonical, nommer_class = resolve_nommer(options.get("nommer"), settings)

    notify_url = body.get("notify_url")
    if notify_url is not None:
        if not isinstance(notify_url, str):
            raise InvalidJobSpec("notify_url", "must be a string or null")
        parts = urllib.parse.urlsplit(notify_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidJobSpec("notify_url", "must be an http:// or https:// URL")
        if len(notify_url) > MAX_URI_LENGTH:
            raise InvalidJobSpec("notify_url", f"is longer than {MAX_URI_LENGTH} characters")

    check_source(source, settings)
    check_destination(dest, settings)
    normalized = nommer_class.validate_options(options["options"], settings, dest_path=dest)
    spec = {"notify_url": notify_url or None, "nommer": canonical, "job_options": normalized}
    sealed = {}
    for field, uri in (("source_path", source), ("dest_path", dest)):
        spec[field], token = seal_uri(uri, settings, field)
        if token is not None:
            sealed[field] = token
    if sealed:
        spec["sealed_credentials"] = sealed
    return spec
