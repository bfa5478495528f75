"""Validation of a submitted job (the body of ``POST /job/submit``).

A body has ``source_path``, ``dest_path``, ``notify_url`` (URL or null) and
exactly one of three forms (the JSON Schema ``nommer.core.outputs.schema``,
checked first by ``nommer.core.outputs.validate.validate_body``):

* the original media-nommer's ``"job_options": {"nommer": dotted path,
  "options": nommer options}``, checked as it always was;
* ``"outputs": [output, ...]``, declarative outputs: the job's nommer is
  ``OUTPUTS_NOMMER`` and its ``job_options`` are ``{"outputs": the outputs
  normalized, "preset": name or None, "single_file": bool}``;
* ``"preset": NAME`` with optional ``"overrides"``: a server preset
  (``nommer.core.outputs.presets.expand``), which becomes one of the two
  forms above.

Every problem raises ``InvalidJobSpec(field, message)``; nothing here does I/O.
"""

from nommer.core.classes import ClassNotAllowed, canonical_name, load_class
from nommer.core.errors import InvalidJobSpec
from nommer.core.netguard import allowed_networks
from nommer.core.chunking import normalize_request
from nommer.core.outputs import presets
from nommer.core.outputs.validate import check_vmaf, validate_body, validate_outputs
from nommer.core.pools import UnknownPool, check_pool
from nommer.core.priority import DEFAULT_PRIORITY
from nommer.core.secrets import seal_uri
from nommer.core.storage import check_destination, check_destination_prefix, check_source
from nommer.core.uri import InvalidURI, as_media_uri, parse_uri, refused_host_reason

MAX_URI_LENGTH = 4096
#: The nommer of declarative jobs (``outputs`` or a declarative preset).
OUTPUTS_NOMMER = "nommer.workerd.nommers.outputs.OutputsNommer"
#: The fields of each output type naming another input of the job (read by
#: the worker beside the source): checked as source_path is, and sealed when
#: they hold credentials.
OUTPUT_INPUT_FIELDS = {"mp4": ("image_path",), "compare": ("distorted",)}
#: Output types that make exactly one file: a job with one of them alone may
#: name that file as its dest_path (no trailing ``/``).
SINGLE_FILE_TYPES = ("mp4", "audio", "poster")


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


def _check_notify_url(body, settings):
    """The body's notify_url (None or a public http(s) URL), or InvalidJobSpec."""
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
    return notify_url


def _check_input(uri, field, settings):
    """A URI the worker will read (source_path, an output's image_path or
    distorted: ``OUTPUT_INPUT_FIELDS``): it parses, an http(s) one names no
    private address literal (Badinput: SSRF), a storage backend can read it
    (``check_source``). Errors name ``field``."""
    try:
        muri = as_media_uri(uri, field)
        if muri.scheme in ("http", "https"):
            _refuse_private_literal(field, muri, settings)
        check_source(uri, settings)
    except InvalidURI as e:
        raise e.for_field(field) from None
    except InvalidJobSpec as e:
        if e.field == field:
            raise
        prefix = f"{e.field}: " if e.field else ""
        raise InvalidJobSpec(field, e.message[len(prefix):]) from None


def _seal(uris, settings):
    """Seal every URI of ``uris`` (``[(field, uri)]``) that holds
    credentials. Returns ``({field: uri to store}, {field: sealed token})``:
    a URI with credentials is stored redacted, its token holds it whole."""
    sealed, stored = {}, {}
    for field, uri in uris:
        stored[field], token = seal_uri(uri, settings, field)
        if token is not None:
            sealed[field] = token
    return stored, sealed


def _check_prefix(dest, settings):
    """dest_path ending in '/': a prefix a storage backend can write under."""
    return check_destination_prefix(dest, settings)


def _validate_outputs_job(body, settings, preset_name):
    """The declarative form: outputs (already expanded from a preset)."""
    source, dest = body["source_path"], body["dest_path"]
    outputs = validate_outputs(body["outputs"])
    check_vmaf(outputs, settings)
    notify_url = _check_notify_url(body, settings)
    _check_input(source, "source_path", settings)
    if dest.endswith("/"):
        _check_prefix(dest, settings)
        single = False
    elif len(outputs) == 1 and outputs[0]["type"] in SINGLE_FILE_TYPES:
        check_destination(dest, settings)
        single = True
    else:
        what = (f"this job makes {len(outputs)} outputs" if len(outputs) > 1 else
                f"{'an' if outputs[0]['type'][0] in 'ah' else 'a'} {outputs[0]['type']} output "
                f"makes many files")
        raise InvalidJobSpec("dest_path", f"must end with '/' (a prefix): {what}; only a job of one "
                                          f"mp4, audio or poster output may name its file")
    uris = [("source_path", source), ("dest_path", dest)]
    if notify_url:
        uris.append(("notify_url", notify_url))
    inputs = []
    for i, spec in enumerate(outputs):
        for name in OUTPUT_INPUT_FIELDS.get(spec["type"], ()):
            if spec.get(name) is not None:
                field = f"outputs[{i}].{name}"
                _check_input(spec[name], field, settings)
                inputs.append((i, name, field))
                uris.append((field, spec[name]))
    stored, sealed = _seal(uris, settings)
    for i, name, field in inputs:
        outputs[i][name] = stored[field]
    try:
        canonical, nommer_class = resolve_nommer(OUTPUTS_NOMMER, settings)
    except InvalidJobSpec:
        raise InvalidJobSpec("outputs", f"declarative outputs are not enabled on this server "
                                        f"(ALLOWED_NOMMERS lacks {OUTPUTS_NOMMER})") from None
    options = {"outputs": outputs, "preset": preset_name, "single_file": single,
               "chunking": normalize_request(body.get("chunking"), settings)}
    normalized = nommer_class.validate_options(options, settings, dest_path=dest)
    spec = {"notify_url": stored.get("notify_url"), "nommer": canonical, "job_options": normalized,
            "source_path": stored["source_path"], "dest_path": stored["dest_path"]}
    if sealed:
        spec["sealed_credentials"] = sealed
    return spec


def validate_submission(body, settings):
    """Check a submit body. Returns a dict with ``source_path``, ``dest_path``,
    ``notify_url``, ``nommer`` (canonical dotted path) and ``job_options``
    (the nommer's normalized options), plus ``sealed_credentials``
    (``{field: token}``, fields ``source_path``, ``dest_path``, ``notify_url``
    and, for declarative jobs, ``outputs[i].image_path`` and
    ``outputs[i].distorted``: ``OUTPUT_INPUT_FIELDS``) when a URI holds
    credentials (a password, or a secret query parameter such as a presigned
    URL's ``X-Amz-Signature``): the URIs returned are then redacted and the
    originals sealed (``nommer.core.secrets.seal_uri``), so the job store
    never holds a secret in clear.

    The body is validated against the JSON Schema first
    (``validate_body``); a ``preset`` is expanded
    (``nommer.core.outputs.presets.expand``); the 2011 form is then checked
    as it always was; declarative outputs get ``OUTPUTS_NOMMER`` and
    ``job_options`` ``{"outputs": [...] (normalized), "preset": name or
    None, "single_file": bool}``. ``dest_path`` of a declarative job ends in
    ``/`` (a prefix every file goes under), except for a job of exactly one
    mp4, audio or poster output, whose file it then names (``single_file``
    true). A job asking for VMAF is refused when this server finds no
    VMAF-capable ffmpeg (``nommer.core.outputs.validate.check_vmaf``).

    Every form also gives ``priority`` (0..100, default 50) and ``pool``
    (the body's, else its preset's, else ``default``; one of POOLS, else
    InvalidJobSpec on ``pool`` naming the pools).

    Raises ``InvalidJobSpec``; ``PresetError`` when the server's presets are
    misconfigured (feederd loads them at start, so not here in practice)."""
    if not isinstance(body, dict):
        raise InvalidJobSpec(None, "the request body must be a JSON object")
    validate_body(body)
    preset_name = body.get("preset")
    if preset_name is not None:
        body = presets.expand(body, settings)
    try:
        pool = check_pool(settings, body.get("pool"))
    except UnknownPool as e:
        raise InvalidJobSpec("pool", str(e)) from None
    if "outputs" in body:
        spec = _validate_outputs_job(body, settings, preset_name)
    else:
        spec = _validate_2011(body, settings)
    spec.update(priority=int(body.get("priority", DEFAULT_PRIORITY)), pool=pool)  # 5.0 is an integer to JSON Schema
    return spec


def _validate_2011(body, settings):
    """The original media-nommer's form (``job_options``), unchanged."""
    # The original's order: source_path, dest_path, job_options.
    source = _required_string(body, "source_path")
    dest = _required_string(body, "dest_path")
    if body.get("chunking"):
        raise InvalidJobSpec("chunking", "needs a declarative job (outputs or a preset): a 2011 "
                                         "job_options job runs its own ffmpeg argv, which cannot be split")
    options = body.get("job_options")
    if not options:
        raise InvalidJobSpec("job_options", "is required (an object with 'nommer' and 'options')")
    if not isinstance(options, dict):
        raise InvalidJobSpec("job_options", f"must be an object, not {type(options).__name__}")
    if not options.get("options"):
        raise InvalidJobSpec("job_options.options", "is required (the nommer's options, e.g. a list of passes)")
    canonical, nommer_class = resolve_nommer(options.get("nommer"), settings)

    notify_url = _check_notify_url(body, settings)

    # Badinput (SSRF): an http(s) source may not name a non-public address.
    source_uri = as_media_uri(source, "source_path")
    if source_uri.scheme in ("http", "https"):
        _refuse_private_literal("source_path", source_uri, settings)
    check_source(source, settings)
    check_destination(dest, settings)
    normalized = nommer_class.validate_options(options["options"], settings, dest_path=dest)
    spec = {"notify_url": notify_url or None, "nommer": canonical, "job_options": normalized}
    uris = [("source_path", source), ("dest_path", dest)]
    if notify_url:
        uris.append(("notify_url", notify_url))
    stored, sealed = _seal(uris, settings)
    spec.update(stored)
    if sealed:
        spec["sealed_credentials"] = sealed
    return spec
