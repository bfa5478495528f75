"""Submit-time validation of job bodies against ``JOB_SCHEMA`` (no I/O but ``check_vmaf``'s).

* ``validate_body(body)``: the whole ``POST /job/submit`` body against
  ``nommer.core.outputs.schema.JOB_SCHEMA`` (``jsonschema``'s Draft 2020-12
  validator, compiled once). Schema rules only: what a form needs beyond
  that is checked by ``nommer.core.spec``.
* ``validate_outputs(outputs, field="outputs")``: a list of outputs alone
  (against the same schema's ``$defs``), then the few rules a schema cannot
  say; returns the list normalized (every field spelled out,
  ``nommer.core.outputs.normalize``). The worker and the outputs nommer's
  ``validate_options`` call it too.
* ``check_vmaf(outputs, settings)``: outputs asking for VMAF refused when
  this host has no VMAF-capable ffmpeg (feederd calls it at submit; it runs
  that binary once, so it is not in ``validate_outputs``).

Every problem raises ``nommer.core.errors.InvalidJobSpec(field, message)``:
``field`` is a dotted path such as ``outputs[2].crf`` (None for the body as
a whole), the message a sentence for a person (``unknown field 'foo' (an
hls output takes: ladder, codec, ...)``). The error also carries
``reason``: the message without the field prefix.

Of all the schema's errors the one reported is the most useful, not
``jsonschema``'s ``best_match`` (which prefers shallow errors): the body's
fields in the original's order (``source_path``, ``dest_path``,
``notify_url``), then unknown top-level fields, then which of the three
forms the body takes, then the forms' own errors, the first output first and
its deepest error first; inside a ``oneOf`` (a bitrate, a ladder) the
alternative that fits the value's type.

The rules beyond the schema (each tested in tests/core/test_outputs_validate.py):

* an audio output's file name extension suits its codec
  (``nommer.workerd.outputs.audio.check_spec``);
* at most one output per destination path: no two outputs write the same
  file or directory, nor one inside another's directory; except that an
  ``hls`` and a ``dash`` output may share ``dir``, and then they must agree
  on ``ladder``, ``codec``, ``segment_s``, ``encoder_preset`` and
  ``audio_bitrate`` (they share one set of CMAF segments);
* a bitrate given as a string is 16 kb/s to 100 Mb/s, as an integer is
  (``nommer.workerd.outputs.common.parse_bitrate``);
* an ``mp4`` output takes ``crf`` or ``bitrate``, not both;
* a ``captions`` output's ``engine`` is installed on this host and has its
  ``language`` (``nommer.workerd.transcribe.engines.pick``): else the error
  is on ``engine`` (an engine named but not installed) or ``language``,
  naming the languages there are.
"""

import copy
import re

from jsonschema import Draft202012Validator

from nommer.core.errors import InvalidJobSpec
from nommer.core.outputs.normalize import normalize_outputs
from nommer.core.outputs.schema import JOB_SCHEMA, OUTPUT_SCHEMAS, OUTPUT_TYPES
from nommer.workerd.outputs.common import parse_bitrate

__all__ = ["validate_body", "validate_outputs", "check_vmaf", "vmaf_field", "FORMS", "MIN_BITRATE", "MAX_BITRATE",
           "SHARED_SEGMENT_FIELDS", "output_article"]

#: The three forms of a body, in the order messages name them.
FORMS = ("job_options", "outputs", "preset")
#: Bounds of every bitrate, bits per second (the schema's for integers).
MIN_BITRATE = 16000
MAX_BITRATE = 100000000
#: Fields an hls and a dash output sharing a ``dir`` must agree on.
SHARED_SEGMENT_FIELDS = ("ladder", "codec", "segment_s", "encoder_preset", "audio_bitrate")

_FORMS_MESSAGE = "give exactly one of job_options (the 2011 form), outputs, or preset"
#: Top-level fields in the order their errors are reported (the original's order first).
_TOP_ORDER = ("source_path", "dest_path", "notify_url", "<unknown>", "<forms>", "job_options",
              "outputs", "preset", "overrides", "<dependent>")

_BODY_VALIDATOR = Draft202012Validator(JOB_SCHEMA)
_OUTPUTS_SCHEMA = dict(copy.deepcopy(JOB_SCHEMA["properties"]["outputs"]),
                       **{"$schema": JOB_SCHEMA["$schema"], "$defs": copy.deepcopy(JOB_SCHEMA["$defs"])})
_OUTPUTS_VALIDATOR = Draft202012Validator(_OUTPUTS_SCHEMA)

_ARTICLES = {"hls": "an", "mp4": "an", "audio": "an"}


def output_article(type_name):
    """``"an hls"``, ``"a dash"``...: an output type with its article."""
    return f"{_ARTICLES.get(type_name, 'a')} {type_name}"


def _invalid(field, message):
    error = InvalidJobSpec(field, message)
    error.reason = message
    return error


# --- paths and values in messages ------------------------------------------------------

def _dotted(path, prefix=None):
    """``["outputs", 2, "crf"]`` -> ``"outputs[2].crf"``; None for the root."""
    text = prefix or ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or None


def _join(parent, child):
    return f"{parent}.{child}" if parent else child


def _show(value):
    text = repr(value) if not isinstance(value, bool) else ("true" if value else "false")
    if value is None:
        text = "null"
    return text if len(text) <= 60 else text[:57] + "..."


_JSON_TYPES = {"string": "a string", "integer": "an integer", "number": "a number",
               "object": "an object", "array": "a list", "boolean": "true or false", "null": "null"}


#: Python type -> JSON Schema type, in the order to test them (bool is an int).
_PY_TYPES = ((type(None), "null"), (bool, "boolean"), (str, "string"), (int, "integer"),
             (float, "number"), (dict, "object"), (list, "array"))


def _json_type(value):
    """``value``'s JSON type in words (``"a string"``), as _JSON_TYPES says it."""
    for py_type, json_type in _PY_TYPES:
        if isinstance(value, py_type):
            return _JSON_TYPES[json_type]
    return type(value).__name__


def _number(x):
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _or(words):
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# --- messages for one jsonschema error -------------------------------------------------

def _takes(schema):
    return ", ".join(k for k in schema.get("properties", {}) if k != "type")


def _unknown_fields(error, prefix):
    instance, schema = error.instance, error.schema
    extra = [k for k in instance if k not in schema.get("properties", {})]
    names = ", ".join(repr(k) for k in extra)
    noun = "field" if len(extra) == 1 else "fields"
    type_name = instance.get("type") if isinstance(instance, dict) else None
    if not error.absolute_path and prefix is None:
        owner = "a job body"
    elif type_name in OUTPUT_SCHEMAS and schema.get("properties", {}).get("type") == {"const": type_name}:
        owner = f"{output_article(type_name)} output"
    else:
        owner = schema.get("description") or "this object"
    return f"unknown {noun} {names} ({owner} takes: {_takes(schema)})"


_EXTENSIONS = re.compile(r"\\\.\(([A-Za-z0-9|]+)\)\$$|\\\.([A-Za-z0-9]+)\$$")


def _pattern_message(error):
    value, pattern = error.instance, error.validator_value
    if "[kM]" in pattern:
        return (f"is {_show(value)}, not a bitrate: give bits per second as an integer, "
                f"or a string such as \"128k\" or \"7.8M\"")
    if pattern == JOB_SCHEMA["properties"]["preset"]["pattern"]:
        return (f"{_show(value)} is not a preset name: lower-case letters, digits, '.', '_' "
                f"and '-', at most 64")
    ends = _EXTENSIONS.search(pattern)
    if not ends:
        return (f"{_show(value)} is not a directory name: parts of letters, digits, '.', '_' and "
                f"'-' (not starting with '.') separated by '/'")
    exts = (ends.group(1) or ends.group(2)).split("|")
    slash = ", '/' between directories" if "._/-" in pattern else ""
    return (f"{_show(value)} is not a file name: letters, digits, '.', '_', '-'{slash} (no part "
            f"starting with '.'), ending in {_or('.' + e for e in exts)}")


#: Numeric bound keyword -> the words before the bound in the message.
_BOUNDS = {"minimum": "the minimum is", "maximum": "the maximum is",
           "exclusiveMinimum": "it must be more than", "exclusiveMaximum": "it must be less than"}


def _message(error, prefix):
    """(field, message) for one leaf error."""
    path = list(error.absolute_path)
    field = _dotted(path, prefix)
    kind, bound, value = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [k for k in bound if not isinstance(value, dict) or k not in value]
        name = missing[0] if missing else "?"
        extra = ""
        if name == "type" and path and isinstance(path[-1], int):
            extra = f" (one of {', '.join(OUTPUT_TYPES)})"
        return _join(field, name), f"is required{extra}"
    if kind == "additionalProperties":
        return field, _unknown_fields(error, prefix)
    if kind == "enum" and path and path[-1] == "type" and len(path) >= 2 and isinstance(path[-2], int):
        return field, f"unknown output type {_show(value)}; types: {', '.join(OUTPUT_TYPES)}"
    if kind == "enum":
        return field, f"is {_show(value)}; expected one of {', '.join(_show(v) for v in bound)}"
    if kind == "const":
        return field, f"is {_show(value)}; expected {_show(bound)}"
    if kind == "type":
        types = bound if isinstance(bound, list) else [bound]
        return field, f"must be {_or(_JSON_TYPES.get(t, t) for t in types)}, not {_json_type(value)}"
    if kind in _BOUNDS:
        return field, f"is {_number(value)}; {_BOUNDS[kind]} {_number(bound)}"
    if kind == "minLength":
        return field, "must not be empty" if bound == 1 else f"is shorter than {bound} characters"
    if kind == "maxLength":
        return field, f"is longer than {bound} characters"
    if kind == "minItems":
        return field, f"has {len(value)} items; at least {bound} expected"
    if kind == "maxItems":
        if path == ["outputs"] or (not path and prefix):
            return field, f"asks for {len(value)} outputs; a job asks for at most {bound}"
        return field, f"has {len(value)} items; at most {bound} allowed"
    if kind == "maxProperties":
        return field, f"has {len(value)} fields; at most {bound} allowed"
    if kind == "pattern":
        return field, _pattern_message(error)
    if kind == "dependentRequired":
        return "overrides", "goes with preset only (it changes a preset's outputs)"
    return field, error.message


# --- choosing the error to report ------------------------------------------------------

def _leaf(error):
    """The error that says most, looking inside ``oneOf``/``anyOf``: the
    deepest error of the alternative the value's type fits; ``None`` when
    every alternative fails on its type or constant (the caller describes the
    alternatives)."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return error
    fits = [c for c in error.context if c.validator not in ("type", "const", "enum")]
    if not fits:
        return None
    deepest = max(fits, key=lambda c: len(c.absolute_path))
    return _leaf(deepest) or deepest


def _alternatives(error):
    """"a string or null" for the alternatives of a ``oneOf``."""
    words = []
    for sub in error.validator_value:
        if "const" in sub:
            words.append(_show(sub["const"]))
        elif "type" in sub:
            words.append(_JSON_TYPES.get(sub["type"], sub["type"]))
    return _or(dict.fromkeys(words)) if words else "one of the forms the schema allows"


def _describe(error, prefix):
    """(field, message) for an error, resolving ``oneOf``."""
    leaf = _leaf(error)
    if leaf is not None:
        return _message(leaf, prefix)
    field = _dotted(list(error.absolute_path), prefix)
    text = f"must be {_alternatives(error)}, not {_json_type(error.instance)}"
    description = error.schema.get("description")
    if description and any("const" in sub for sub in error.validator_value):
        text = f"is {_show(error.instance)}; expected {description}"
    return field, text


def _rank(error):
    path = list(error.absolute_path)
    if path:
        top = path[0] if path[0] in _TOP_ORDER else "<unknown>"
    elif error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        top = missing[0] if missing and missing[0] in _TOP_ORDER else "<unknown>"
    elif error.validator == "additionalProperties":
        top = "<unknown>"
    elif error.validator == "oneOf":
        top = "<forms>"
    else:
        top = "<dependent>"
    index = next((p for p in path if isinstance(p, int)), -1)
    leaf = _leaf(error) or error
    return (_TOP_ORDER.index(top), index, -len(leaf.absolute_path))


def _forms_message(body):
    given = [k for k in FORMS if k in body]
    if not given:
        return _invalid(None, f"job_options, outputs or preset is required: {_FORMS_MESSAGE}")
    has = ", ".join(given[:-1]) + " and " + given[-1]
    return _invalid(None, f"{_FORMS_MESSAGE}; this body has {has}")


def validate_body(body):
    """Validate a submit body (any JSON value) against ``JOB_SCHEMA``.

    Returns None. Checks the schema only: storage, credentials, presets and
    the rules beyond the schema are ``nommer.core.spec``'s and
    ``validate_outputs``'.

    :raise InvalidJobSpec: with the most useful error (see the module
        docstring): ``(None, "the request body must be a JSON object")``,
        ``(None, "give exactly one of job_options (the 2011 form), outputs,
        or preset; ...")``, ``("outputs[7]", "unknown field 'foo' (...)")``,
        ``("outputs[0].segment_s", "is 100; the maximum is 30")``...
    """
    if not isinstance(body, dict):
        raise _invalid(None, "the request body must be a JSON object")
    errors = list(_BODY_VALIDATOR.iter_errors(body))
    if not errors:
        return
    error = min(errors, key=_rank)
    if not error.absolute_path and error.validator == "oneOf":
        raise _forms_message(body)
    raise _invalid(*_describe(error, None))


def _schema_check_outputs(outputs, field):
    errors = list(_OUTPUTS_VALIDATOR.iter_errors(outputs))
    if errors:
        error = min(errors, key=lambda e: (next((p for p in e.absolute_path if isinstance(p, int)), -1),
                                           -len((_leaf(e) or e).absolute_path)))
        raise _invalid(*_describe(error, field))


# --- the rules beyond the schema -------------------------------------------------------

_BITRATE_FIELDS = {"hls": ("audio_bitrate",), "dash": ("audio_bitrate",),
                   "mp4": ("bitrate", "audio_bitrate"), "audio": ("bitrate",)}


def _check_bitrate(value, field):
    try:
        bps = parse_bitrate(value)
    except (TypeError, ValueError):
        raise _invalid(field, f"is {_show(value)}, not a bitrate") from None
    if not MIN_BITRATE <= bps <= MAX_BITRATE:
        raise _invalid(field, f"is {_show(value)} ({bps} bits per second); a bitrate is from "
                              f"16k to 100M bits per second")


def _check_bitrates(spec, field):
    for name in _BITRATE_FIELDS.get(spec["type"], ()):
        if spec.get(name) is not None:
            _check_bitrate(spec[name], f"{field}.{name}")
    if spec["type"] in ("hls", "dash") and isinstance(spec.get("ladder"), list):
        for j, rung in enumerate(spec["ladder"]):
            _check_bitrate(rung["bitrate"], f"{field}.ladder[{j}].bitrate")


def _check_audio(spec, field):
    # Another module's rule (extension vs codec): imported here so that a
    # worker-side change does not ripple into feederd's import graph.
    from nommer.workerd.outputs.audio import check_spec
    try:
        check_spec(spec)
    except ValueError as e:
        raise _invalid(field, str(e)) from None


def _check_captions(spec, field):
    # The engines installed here (feederd's host, or the worker checking again).
    from nommer.workerd.transcribe import engines
    try:
        engines.pick(spec["engine"], spec["language"])
    except ValueError as e:
        name = "engine" if spec["engine"] != "auto" and spec["engine"] not in engines.available() \
            else "language"
        raise _invalid(f"{field}.{name}", str(e)) from None


def _places(spec):
    """(kind, path) pairs an output writes: ``("dir", "stream")`` or
    ``("file", "video.mp4")``."""
    if spec["type"] in ("hls", "dash", "thumbnails", "storyboard", "captions"):
        return ("dir", spec["dir"])
    return ("file", spec["name"])


def _inside(path, parent):
    return path.startswith(parent + "/")


def _check_places(outputs, field):
    seen = []  # (index, spec, kind, path)
    for i, spec in enumerate(outputs):
        kind, path = _places(spec)
        for j, other, other_kind, other_path in seen:
            mine = f"{field}[{i}] ({spec['type']}, {path}{'/' if kind == 'dir' else ''})"
            theirs = f"{field}[{j}] ({other['type']}, {other_path}{'/' if other_kind == 'dir' else ''})"
            if path == other_path:
                if kind == other_kind == "dir" and {spec["type"], other["type"]} == {"hls", "dash"}:
                    _check_shared(spec, other, i, j, field)
                    continue
                other_name = {("dir", "dir"): "dir", ("file", "file"): "name"}.get((kind, other_kind),
                                                                                  "dir or name")
                raise _invalid(f"{field}[{i}]", f"{theirs} and {mine} write to the same place; "
                                                f"give one of them another {other_name}")
            if (other_kind == "dir" and _inside(path, other_path)) or (kind == "dir" and _inside(other_path, path)):
                raise _invalid(f"{field}[{i}]", f"{theirs} and {mine}: one writes inside the other's "
                                                f"directory; give them separate places")
        seen.append((i, spec, kind, path))


def _check_shared(spec, other, i, j, field):
    for name in SHARED_SEGMENT_FIELDS:
        if spec[name] != other[name]:
            raise _invalid(
                f"{field}[{i}].{name}",
                f"{field}[{j}] ({other['type']}) and {field}[{i}] ({spec['type']}) share dir "
                f"{spec['dir']!r} (one set of CMAF segments) but differ in {name} "
                f"({_show(other[name])} vs {_show(spec[name])}); make them agree or give them "
                f"different dirs")


def _check_target(spec, field):
    """A target quality search needs a CRF to search (not a bitrate), a
    range that is one, and a picture encoded from the source (not an audio
    merge's still image)."""
    target = spec.get("target")
    if not target:
        return
    lo, hi = target["crf_range"]
    if lo > hi:
        raise _invalid(f"{field}.target.crf_range", f"is [{lo:g}, {hi:g}]: give [lowest, highest]")
    if spec.get("bitrate") is not None:
        raise _invalid(f"{field}.target", "searches the CRF: an output with a target takes no bitrate")
    if spec.get("image_path"):
        raise _invalid(f"{field}.target", "an audio merge (image_path) has no source picture to reach "
                                          "a quality target against")


def validate_outputs(outputs, field="outputs"):
    """Validate a list of outputs and return it normalized.

    :param outputs: the ``outputs`` of a body or of a stored job (any JSON
        value: everything is checked).
    :param field: the path errors start with (``"outputs"``; a preset's
        loader passes its own).
    :return: a new list of new dicts, every field of each output's type
        filled with its default (``normalize.normalize_outputs``); an
        already normalized list comes back equal.
    :raise InvalidJobSpec: the schema's error (see ``validate_body``), or
        one of the rules beyond it (module docstring), naming the field
        (``outputs[1].segment_s``) and, for two outputs in conflict, both.
    """
    _schema_check_outputs(outputs, field)
    for i, spec in enumerate(outputs):
        if spec["type"] == "mp4" and "crf" in spec and "bitrate" in spec:
            raise _invalid(f"{field}[{i}].bitrate", "an mp4 output takes crf (constant quality) "
                                                    "or bitrate (average bits per second), not both")
    normalized = normalize_outputs(outputs)
    for i, spec in enumerate(normalized):
        _check_bitrates(spec, f"{field}[{i}]")
        if spec["type"] == "audio":
            _check_audio(spec, f"{field}[{i}]")
        if spec["type"] == "captions":
            _check_captions(spec, f"{field}[{i}]")
        if spec["type"] == "mp4" and spec.get("image_path") and spec.get("quality"):
            raise _invalid(f"{field}[{i}].quality", "an audio merge (image_path) has no source picture "
                                                    "to measure against")
        _check_target(spec, f"{field}[{i}]")
    _check_places(normalized, field)
    return normalized


# --- what this host can do ---------------------------------------------------------------

def vmaf_field(spec, field):
    """The field through which output ``spec`` (normalized) asks for VMAF
    (``outputs[0].quality.metrics``, ``outputs[0].metrics`` of a compare,
    ``outputs[0].target``), or None when it does not."""
    if spec.get("target"):
        return f"{field}.target"
    if spec["type"] == "compare" and "vmaf" in spec.get("metrics", ()):
        return f"{field}.metrics"
    if "vmaf" in (spec.get("quality") or {}).get("metrics", ()):
        return f"{field}.quality.metrics"
    return None


def check_vmaf(outputs, settings, field="outputs"):
    """Refuse outputs asking for VMAF (a ``quality`` or compare ``metrics``
    with ``"vmaf"``, or a ``target``) when this host has no VMAF-capable
    ffmpeg (``nommer.workerd.outputs.vmaf.search``: VMAF_FFMPEG_BIN, else the
    imageio-ffmpeg wheel's). Runs that binary once (``-filters``; the answer
    is cached per binary).

    :param outputs: normalized outputs (``validate_outputs``).
    :raise InvalidJobSpec: on the first output asking, with how to enable
        VMAF (``vmaf.HOW_TO_ENABLE``) and what was looked at.
    """
    asking = [f for f in (vmaf_field(spec, f"{field}[{i}]") for i, spec in enumerate(outputs)) if f]
    if not asking:
        return
    # Imported here: feederd's import graph stays free of worker modules until VMAF is asked.
    from nommer.workerd.outputs import vmaf
    path, reason = vmaf.search(settings)
    if path is None:
        raise _invalid(asking[0], f"asks for VMAF, but this server has no VMAF-capable ffmpeg "
                                  f"({reason}). {vmaf.HOW_TO_ENABLE}")
