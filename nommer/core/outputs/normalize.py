"""Fill in the defaults of outputs, read from the schema.

The job store holds every output fully spelled out, so the worker (and a
person reading the job) never has to know a default: each field of the
output's type (``nommer.core.outputs.schema.OUTPUT_SCHEMAS``) with a
``default`` keyword gets it when absent. Nothing else changes: given
values are kept as they are (``"128k"`` stays a string), a custom ladder's
rungs are left untouched, fields without a default (``mp4.height``,
``poster.at_s``, ``mp4.quality``) stay absent; an object given (``quality``,
``target``) gets its own fields' defaults.

One exception, so a normalized output says what was asked: an ``mp4`` given
a ``bitrate`` does not get ``crf``'s default (an mp4 takes one or the
other, never both).

No validation here: call ``nommer.core.outputs.validate.validate_outputs``,
which validates and then normalizes.
"""

import copy

from nommer.core.outputs.schema import OUTPUT_SCHEMAS

__all__ = ["defaults_of", "normalize_output", "normalize_outputs"]

#: {output type: {field: exclusive field}}: the default of ``field`` is not
#: filled in when the exclusive field is given.
_EXCLUSIVE = {"mp4": {"crf": "bitrate"}}


def defaults_of(type_name):
    """``{field: default}`` of an output type, in the schema's order (a new
    dict of copies). :raise KeyError: unknown type."""
    props = OUTPUT_SCHEMAS[type_name]["properties"]
    return {name: copy.deepcopy(prop["default"]) for name, prop in props.items() if "default" in prop}


def normalize_output(spec):
    """A new dict: ``spec`` (an output that passed the schema: a dict with a
    known ``type``) with every missing field that has a default filled in.
    Keys come in the schema's order, ``type`` first; keys the schema does
    not know are kept at the end (validation refuses them, not this)."""
    type_name = spec["type"]
    exclusive = _EXCLUSIVE.get(type_name, {})
    out = {}
    for name, prop in OUTPUT_SCHEMAS[type_name]["properties"].items():
        if name in spec:
            out[name] = _with_defaults(spec[name], prop)
        elif "default" in prop and exclusive.get(name) not in spec:
            out[name] = copy.deepcopy(prop["default"])
    for name, value in spec.items():
        if name not in out:
            out[name] = copy.deepcopy(value)
    return out


def _with_defaults(value, prop):
    """A copy of ``value``; when it is an object of a schema with
    ``properties`` (``quality``, ``target``), its missing fields that have a
    default filled in too."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in prop:
        for name, sub in prop["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
    return value


def normalize_outputs(outputs):
    """``[normalize_output(o) for o in outputs]`` (a new list)."""
    return [normalize_output(o) for o in outputs]
