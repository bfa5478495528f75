"""Validation of a submitted job (the body of ``POST /job/submit``).

The body is the original media-nommer's::

    {"source_path": URI, "dest_path": URI, "notify_url": URL or null,
     "job_options": {"nommer": dotted path, "options": nommer options}}

Every problem raises ``InvalidJobSpec(field, message)``; nothing here does I/O.
"""

from nommer.core.classes import ClassNotAllowed, canonical_name, load_class
from nommer.core.errors import InvalidJobSpec
from nommer.core.netguard import allowed_networks
from nommer.core.secrets import seal_uri
from nommer.core.storage import check_destination, check_source
from nommer.core.uri import InvalidURI, as_media_uri, parse_uri, refused_host_reason

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


def _refuse_private_literal(field, muri, settings):
    """Refuse a URL whose host is an IP literal of a non-public range
    (loopback, private, link-local with the cloud metadata service, ...) in
    any spelling (``nommer.core.uri.refused_host_reason``), unless
    ALLOWED_PRIVATE_NETWORKS allows it. Host names are not resolved here: the
    worker and the notifier check the addresses they connect to."""
    reason = refused_host_reason(muri.host, allowed_networks(settings))
    if reason:
        raise InvalidJobSpec(field, reason)


def resolve_nommer(name, settings):
    """Canonical dotted path of an allowed nommer class, and the class
    (feederd at submit, the worker before running a job).

    Old paths (``NOMMER_ALIASES``) map to today's; anything not in
    ``ALLOWED_NOMMERS`` raises InvalidJobSpec (the class is never imported:
    ``nommer.core.classes.load_class``). An allowed path that cannot be
    loaded raises ``ClassLoadError`` (the configuration's fault).
    """
    if not isinstance(name, str) or not name:
        raise InvalidJobSpec("job_options.nommer", "is required (the dotted path of a nommer class)")
    try:
        nommer_class = load_class(name, allowed=settings.ALLOWED_NOMMERS, aliases=settings.NOMMER_ALIASES,
                                  what="nommer")
    except ClassNotAllowed as e:
        raise InvalidJobSpec("job_options.nommer", e.reason) from None
    return canonical_name(name, settings.NOMMER_ALIASES), nommer_class


def validate_submission(body, settings):
    """Check a submit body. Returns a dict with ``source_path``, ``dest_path``,
    ``notify_url``, ``nommer`` (canonical dotted path) and ``job_options``
    (the nommer's normalized options), plus ``sealed_credentials``
    (``{field: token}``, fields ``source_path``, ``dest_path``, ``notify_url``)
    when a URI holds credentials (a password, or a secret query parameter such
    as a presigned URL's ``X-Amz-Signature``): the URIs returned are then
    redacted and the originals sealed (``nommer.core.secrets.seal_uri``), so
    the job store never holds a secret in clear. Raises ``InvalidJobSpec``."""
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
        if len(notify_url) > MAX_URI_LENGTH:
            raise InvalidJobSpec("notify_url", f"is longer than {MAX_URI_LENGTH} characters")
        # Badinput: parse_uri, not urlsplit, which raised ValueError (a 500) on
        # "http://[::1" and let lone surrogates and control characters through.
        try:
            notify = parse_uri(notify_url)
        except InvalidURI as e:
            raise InvalidJobSpec("notify_url", f"must be an http:// or https:// URL: {e.reason}")
        if notify.scheme not in ("http", "https") or not notify.host:
            raise InvalidJobSpec("notify_url", "must be an http:// or https:// URL")
        _refuse_private_literal("notify_url", notify, settings)

    # Badinput (SSRF): an http(s) source may not name a non-public address.
    source_uri = as_media_uri(source, "source_path")
    if source_uri.scheme in ("http", "https"):
        _refuse_private_literal("source_path", source_uri, settings)
    check_source(source, settings)
    check_destination(dest, settings)
    normalized = nommer_class.validate_options(options["options"], settings, dest_path=dest)
    spec = {"notify_url": notify_url or None, "nommer": canonical, "job_options": normalized}
    sealed = {}
    uris = [("source_path", source), ("dest_path", dest)]
    if notify_url:
        uris.append(("notify_url", notify_url))
    for field, uri in uris:
        spec[field], token = seal_uri(uri, settings, field)
        if token is not None:
            sealed[field] = token
    if sealed:
        spec["sealed_credentials"] = sealed
    return spec
