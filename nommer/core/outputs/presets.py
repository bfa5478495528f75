"""Server presets: named lists of outputs a job asks for with ``"preset": NAME``.

A preset is a JSON object, one of two forms:

* declarative: ``{"description": str, "outputs": [output, ...], "requires":
  [field, ...]}`` (``requires`` optional: output fields the caller must give
  in ``overrides``, such as ``image_path`` for ``audio-image-merge``);
* the 2011 form: ``{"description": str, "nommer": dotted path, "options":
  the nommer's options}`` (``crf-720``, ``web-1280``, ``web-640``): the job
  becomes a ``job_options`` job, unchanged.

Either form may name a ``pool`` (``nommer.core.pools``): its jobs run
there unless the body names another; a pool the settings do not define
stops feederd at start.

Where they come from, later ones replacing earlier ones of the same name:

1. the built-in presets, ``nommer/core/outputs/presets/NAME.json``;
2. ``PRESETS_DIR``: a directory of ``NAME.json`` files (other files are
   ignored);
3. ``PRESETS``: ``{NAME: preset object}`` in the nomconf.

Names are lower-case letters, digits, ``.``, ``_`` and ``-`` (the schema's
``preset`` pattern). Every preset is validated when loaded: the shape, the
outputs (``validate_outputs``), ``requires``, and for the 2011 form the
nommer (``ALLOWED_NOMMERS``) and its options (``validate_options``). A bad
one is a ``PresetError`` naming the file (or ``PRESETS[NAME]``) and the
problem; the settings loader already checks the shape of PRESETS_DIR's and
PRESETS' presets (``check_preset``, ``read_preset_dir``), feederd calls
``load_presets`` at start for the rest. Loaded presets are cached per
settings object.

``expand(body, settings)`` turns ``{"preset": NAME, "overrides": {...}}``
into ``{"outputs": [...]}`` or ``{"job_options": {...}}``: each override is
set on every output of the preset whose type takes that field.
"""

import copy
import json
import os
import re
import weakref
from importlib import resources

from nommer.core.errors import InvalidJobSpec, NommerError, NoSuchPreset
from nommer.core.outputs.schema import JOB_SCHEMA, OUTPUT_SCHEMAS
from nommer.core.outputs.validate import output_article, validate_outputs

__all__ = ["PresetError", "check_preset", "read_preset_file", "read_preset_dir", "builtin_presets",
           "load_presets", "list_presets", "get_preset", "expand", "PRESET_NAME"]

#: A preset's name (the schema's ``preset`` pattern).
PRESET_NAME = re.compile(JOB_SCHEMA["properties"]["preset"]["pattern"])
#: Largest preset file read, bytes.
MAX_PRESET_FILE_BYTES = 1024 * 1024

_DECLARATIVE_KEYS = ("description", "outputs", "requires", "pool")
_LEGACY_KEYS = ("description", "nommer", "options", "pool")
#: A pool's name (the schema's ``pool`` pattern); whether the pool exists is checked at submit.
_POOL_NAME = re.compile(JOB_SCHEMA["properties"]["pool"]["pattern"])
#: Output fields that exclude each other: overriding one drops the other from the preset's output.
_EXCLUSIVE = {"mp4": {"bitrate": "crf", "crf": "bitrate"}}


class PresetError(NommerError):
    """Presets are misconfigured (a server configuration error, not a
    caller's). ``problems``: list of str, each naming the file or
    ``PRESETS[NAME]`` and what is wrong; ``str()`` lists them all."""

    def __init__(self, problems):
        self.problems = list(problems)
        count = len(self.problems)
        lines = [f"{count} problem{'s' if count != 1 else ''} with the presets:"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def _reason(error):
    """An InvalidJobSpec's message without its field prefix."""
    reason = getattr(error, "reason", None)
    if reason is not None:
        return reason
    prefix = f"{error.field}: " if error.field else ""
    return error.message[len(prefix):] if error.message.startswith(prefix) else error.message


def _fields_taken(outputs):
    """Every field some output of ``outputs`` takes (its type's properties), minus ``type``."""
    taken = {}
    for spec in outputs:
        for name in OUTPUT_SCHEMAS[spec["type"]]["properties"]:
            if name != "type":
                taken[name] = True
    return list(taken)


def check_preset(obj, where=None):
    """Check a preset object's shape and outputs (no settings needed).

    :param obj: the preset as read (any JSON value).
    :param where: what to name in problems (a file path, ``PRESETS['x']``);
        None: problems are not prefixed.
    :return: ``{"description": str, "outputs": [...] , "requires": [...]}``
        or ``{"description": str, "job_options": {"nommer", "options"},
        "requires": []}`` (new objects; outputs as written, not normalized).
    :raise PresetError: with one problem.
    """
    def bad(text):
        return PresetError([f"{where}: {text}" if where else text])

    if not isinstance(obj, dict):
        raise bad("a preset is a JSON object with description and outputs (or the 2011 form: "
                  "description, nommer and options)")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise bad("description must be a string")
    if "outputs" in obj:
        unknown = [k for k in obj if k not in _DECLARATIVE_KEYS]
        if unknown:
            raise bad(f"unknown field{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(repr(k) for k in unknown)} (a preset takes: description, outputs, "
                      f"requires, pool; or the 2011 form: description, nommer, options, pool)")
        try:
            validate_outputs(obj["outputs"])
        except InvalidJobSpec as e:
            raise bad(e.message) from None
        requires = obj.get("requires", [])
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise bad("requires must be a list of output field names")
        taken = _fields_taken(obj["outputs"])
        for name in requires:
            if name not in taken:
                raise bad(f"requires {name!r}, which no output of the preset takes "
                          f"(they take: {', '.join(taken)})")
        return _with_pool(obj, {"description": description, "outputs": copy.deepcopy(obj["outputs"]),
                                "requires": list(dict.fromkeys(requires))}, bad)
    if "nommer" in obj or "options" in obj:
        unknown = [k for k in obj if k not in _LEGACY_KEYS]
        if unknown:
            raise bad(f"unknown field{'s' if len(unknown) > 1 else ''} "
                      f"{', '.join(repr(k) for k in unknown)} (a 2011 preset takes: description, "
                      f"nommer, options, pool)")
        if not isinstance(obj.get("nommer"), str) or not obj["nommer"]:
            raise bad("nommer must be the dotted path of a nommer class")
        if not obj.get("options"):
            raise bad("options is required (the nommer's options, e.g. a list of passes)")
        return _with_pool(obj, {"description": description,
                                "job_options": {"nommer": obj["nommer"], "options": copy.deepcopy(obj["options"])},
                                "requires": []}, bad)
    raise bad("a preset needs outputs (or, in the 2011 form, nommer and options)")


def _with_pool(obj, preset, bad):
    """``preset`` with the ``pool`` of ``obj`` (the pool its jobs run in,
    unless the body names one) when it has one; ``bad(text)`` makes the
    PresetError of a malformed name."""
    if "pool" in obj:
        if not isinstance(obj["pool"], str) or not _POOL_NAME.match(obj["pool"]):
            raise bad("pool must be a pool name (lower-case letters, digits and '-', starting with a letter)")
        preset["pool"] = obj["pool"]
    return preset


def _preset_name_of_file(filename):
    return filename[:-len(".json")]


def read_preset_file(path):
    """``(name, preset)`` from ``NAME.json`` at ``path`` (``check_preset``'s
    result). :raise PresetError: unreadable, not JSON, a bad name or preset;
    the problem names the file."""
    name = _preset_name_of_file(os.path.basename(path))
    if not PRESET_NAME.match(name):
        raise PresetError([f"{path}: {name!r} is not a preset name (the file name without .json: "
                           f"lower-case letters, digits, '.', '_' and '-', at most 64)"])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PRESET_FILE_BYTES + 1)
    except OSError as e:
        raise PresetError([f"{path}: cannot be read: {e.strerror or e}"]) from None
    return name, _parse(data, path)


def _parse(data, where):
    if len(data) > MAX_PRESET_FILE_BYTES:
        raise PresetError([f"{where}: larger than {MAX_PRESET_FILE_BYTES} bytes"])
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise PresetError([f"{where}: not valid JSON: {e}"]) from None
    return check_preset(obj, where)


def read_preset_dir(path):
    """``{name: preset}`` of every ``*.json`` file in directory ``path``
    (other files ignored). :raise PresetError: listing every bad file, or
    the directory cannot be listed."""
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        raise PresetError([f"{path}: cannot be listed: {e.strerror or e}"]) from None
    presets, problems = {}, []
    for filename in names:
        full = os.path.join(path, filename)
        if not filename.endswith(".json") or not os.path.isfile(full):
            continue
        try:
            name, preset = read_preset_file(full)
        except PresetError as e:
            problems += e.problems
            continue
        presets[name] = preset
    if problems:
        raise PresetError(problems)
    return presets


def builtin_presets():
    """``{name: preset}`` of the presets shipped in ``nommer/core/outputs/presets/``."""
    folder = resources.files("nommer.core.outputs").joinpath("presets")
    presets = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            presets[_preset_name_of_file(entry.name)] = _parse(entry.read_bytes(),
                                                                f"built-in preset {entry.name}")
    return presets


def _check_with_settings(preset, where, settings):
    """The checks that need the settings: its pool exists; a 2011 preset's
    nommer is allowed and takes its options."""
    if preset.get("pool") is not None:
        from nommer.core.pools import UnknownPool, check_pool
        try:
            check_pool(settings, preset["pool"])
        except UnknownPool as e:
            raise PresetError([f"{where}: {e}"]) from None
    if "job_options" not in preset:
        return
    from nommer.core.classes import ClassLoadError
    from nommer.core.spec import resolve_nommer
    options = preset["job_options"]
    try:
        _, nommer_class = resolve_nommer(options["nommer"], settings)
        nommer_class.validate_options(copy.deepcopy(options["options"]), settings, dest_path=None)
    except InvalidJobSpec as e:
        raise PresetError([f"{where}: {e.message}"]) from None
    except ClassLoadError as e:
        raise PresetError([f"{where}: {e.reason}"]) from None


_CACHE = weakref.WeakKeyDictionary()


def load_presets(settings):
    """Every preset: ``{name: preset}`` (the built-in ones, then
    PRESETS_DIR's, then PRESETS', each replacing one of the same name),
    each preset a dict as ``check_preset`` returns it. Validated in full
    (module docstring) and cached per ``settings`` object: call it at
    feederd start so that a bad preset stops the daemon there.

    Do not change what it returns (``list_presets`` and ``get_preset`` hand
    out copies).

    :raise PresetError: listing every bad preset, each named by its file or
        ``PRESETS['name']``.
    """
    try:
        cached = _CACHE.get(settings)
    except TypeError:  # not weakly referenceable: no cache
        cached = None
    if cached is not None:
        return cached
    problems = []
    sources = {}
    presets = {}
    try:
        for name, preset in builtin_presets().items():
            presets[name], sources[name] = preset, f"built-in preset {name}.json"
    except PresetError as e:
        problems += e.problems
    directory = getattr(settings, "PRESETS_DIR", None)
    if directory:
        try:
            for name, preset in read_preset_dir(directory).items():
                presets[name], sources[name] = preset, os.path.join(directory, f"{name}.json")
        except PresetError as e:
            problems += e.problems
    for name, obj in (getattr(settings, "PRESETS", None) or {}).items():
        where = f"PRESETS[{name!r}]"
        if not isinstance(name, str) or not PRESET_NAME.match(name):
            problems.append(f"{where}: not a preset name (lower-case letters, digits, '.', '_' and "
                            f"'-', at most 64)")
            continue
        try:
            presets[name], sources[name] = check_preset(obj, where), where
        except PresetError as e:
            problems += e.problems
    for name, preset in presets.items():
        try:
            _check_with_settings(preset, sources[name], settings)
        except PresetError as e:
            problems += e.problems
    if problems:
        raise PresetError(problems)
    try:
        _CACHE[settings] = presets
    except TypeError:
        pass
    return presets


def _public(name, preset):
    out = {"name": name, "description": preset["description"]}
    if "outputs" in preset:
        out["outputs"] = copy.deepcopy(preset["outputs"])
    else:
        out["job_options"] = copy.deepcopy(preset["job_options"])
    out["requires"] = list(preset["requires"])
    if preset.get("pool") is not None:
        out["pool"] = preset["pool"]
    return out


def list_presets(settings):
    """Every preset, sorted by name: a list of ``{"name", "description",
    "outputs" (as the preset writes them) or "job_options" (the 2011 form),
    "requires"}`` (new objects). :raise PresetError: see ``load_presets``."""
    presets = load_presets(settings)
    return [_public(name, presets[name]) for name in sorted(presets)]


def get_preset(name, settings):
    """One preset, shaped as in ``list_presets``.

    :raise NoSuchPreset: no preset has that name (its message lists them).
    :raise PresetError: see ``load_presets``.
    """
    presets = load_presets(settings)
    if not isinstance(name, str) or name not in presets:
        raise NoSuchPreset(name, presets)
    return _public(name, presets[name])


def _invalid(field, message):
    error = InvalidJobSpec(field, message)
    error.reason = message
    return error


#: What to tell a caller who left out a field a preset requires (else the schema's description).
_FIELD_HINTS = {"image_path": "the URI of the still image"}

_ERROR_FIELD = re.compile(r"^outputs\[(\d+)\]\.([A-Za-z0-9_]+)(.*)$")


def expand(body, settings):
    """A body with ``preset`` (and optional ``overrides``) as the body it
    stands for: a new dict with the body's other fields and ``outputs``
    (validated and normalized, ``validate_outputs``) or ``job_options``
    (the 2011 form, checked by the caller as any 2011 body).

    Each override is set on every output of the preset whose type takes the
    field; overriding one of ``crf`` / ``bitrate`` of an mp4 drops the other.

    :param body: a body that passed ``validate_body`` with a ``preset``.
    :raise InvalidJobSpec: ``preset``: no such preset (the message lists
        them); ``overrides``: given to a 2011 preset; ``overrides.type``;
        ``overrides.FIELD``: no output of the preset takes FIELD, a field
        the preset requires is missing, or an override's value is not valid
        (the message names the output).
    :raise PresetError: see ``load_presets``.
    """
    name = body["preset"]
    try:
        preset = get_preset(name, settings)
    except NoSuchPreset as e:
        raise _invalid("preset", e.message) from None
    overrides = body.get("overrides") or {}
    out = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("preset", "overrides")}
    if preset.get("pool") is not None and out.get("pool") is None:
        out["pool"] = preset["pool"]  # the body's own pool wins
    if "job_options" in preset:
        if overrides:
            raise _invalid("overrides", f"preset {name} is a 2011 job_options preset (ffmpeg options): "
                                        f"it takes no overrides")
        out["job_options"] = preset["job_options"]
        return out
    outputs = preset["outputs"]
    taken = _fields_taken(outputs)
    for field in overrides:
        if field == "type":
            raise _invalid("overrides.type", "an output's type cannot be overridden; ask for other "
                                             "outputs instead")
        if field not in taken:
            raise _invalid(f"overrides.{field}", f"no output of preset {name} takes {field}; its "
                                                 f"outputs take: {', '.join(taken)}")
    for field in preset["requires"]:
        if field not in overrides:
            what = _FIELD_HINTS.get(field) or _field_description(outputs, field)
            raise _invalid(f"overrides.{field}",
                           f"preset {name} needs overrides.{field}" + (f" ({what})" if what else ""))
    expanded = []
    for spec in outputs:
        spec = copy.deepcopy(spec)
        props = OUTPUT_SCHEMAS[spec["type"]]["properties"]
        for field, value in overrides.items():
            if field in props:
                spec[field] = copy.deepcopy(value)
                other = _EXCLUSIVE.get(spec["type"], {}).get(field)
                if other and other not in overrides:
                    spec.pop(other, None)
        expanded.append(spec)
    try:
        out["outputs"] = validate_outputs(expanded)
    except InvalidJobSpec as e:
        reason = _reason(e)
        match = _ERROR_FIELD.match(e.field or "")
        if match and match.group(2) in overrides:
            index = int(match.group(1))
            raise _invalid(f"overrides.{match.group(2)}{match.group(3)}",
                           f"{reason} (in preset {name}'s outputs[{index}], "
                           f"{output_article(expanded[index]['type'])} output)") from None
        raise _invalid(e.field, f"preset {name} with these overrides: {reason}") from None
    return out


def _field_description(outputs, field):
    for spec in outputs:
        prop = OUTPUT_SCHEMAS[spec["type"]]["properties"].get(field)
        if prop and prop.get("description"):
            return prop["description"]
    return None
