"""The API's two documents, as the bytes feederd serves:

- ``GET /openapi.json``: ``openapi.json`` (OpenAPI 3.0) with the output
  schemas of declarative jobs filled in from the job schema
  (``nommer.core.outputs.schema.JOB_SCHEMA``), converted to OpenAPI 3.0's
  dialect of JSON Schema, so the two documents cannot drift apart;
- ``GET /schema``: the job schema itself (Draft 2020-12), bare.

Both are built once, on first use.
"""

import json
from importlib import resources

from nommer.core.outputs.schema import OUTPUT_SCHEMAS, OUTPUT_TYPES, job_schema

#: OpenAPI component name of each output type's schema.
OUTPUT_COMPONENTS = {t: t.capitalize() + "Output" for t in OUTPUT_TYPES}

#: Draft 2020-12 keywords OpenAPI 3.0 does not have; the outputs' schemas do not use them.
_UNSUPPORTED = {"$schema", "$id", "$defs", "if", "then", "else", "dependentRequired", "prefixItems",
                "unevaluatedProperties", "contains", "propertyNames", "examples"}

_documents = {}


def to_openapi(schema):
    """A Draft 2020-12 JSON Schema (a dict; nothing else read) as an OpenAPI
    3.0 Schema Object: ``const`` -> a one-value ``enum``, a numeric
    ``exclusiveMinimum``/``exclusiveMaximum`` -> ``minimum``/``maximum`` and
    the boolean, ``{"type": "null"}`` in a ``oneOf`` -> ``nullable``, and
    ``#/$defs/T`` references -> ``#/components/schemas/<OUTPUT_COMPONENTS[T]>``.
    Raises ``ValueError`` for a keyword 3.0 cannot say (``_UNSUPPORTED``)."""
    out = {}
    for key, value in schema.items():
        if key in _UNSUPPORTED:
            raise ValueError(f"OpenAPI 3.0 has no {key!r} (in {schema!r:.200})")
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "$ref":
            out[key] = "#/components/schemas/" + OUTPUT_COMPONENTS[value.rsplit("/", 1)[-1]]
        elif key == "properties":
            out[key] = {name: to_openapi(sub) for name, sub in value.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            out[key] = to_openapi(value)
        elif key in ("oneOf", "anyOf", "allOf"):
            subs = [sub for sub in value if sub != {"type": "null"}]
            if len(subs) < len(value):
                out["nullable"] = True
            if len(subs) == 1:
                out.update(to_openapi(subs[0]))
            else:
                out[key] = [to_openapi(sub) for sub in subs]
        else:
            out[key] = value
    return out


def output_components():
    """The OpenAPI component schemas of declarative outputs: one per type
    (``OUTPUT_COMPONENTS``) and ``Output``, their ``oneOf`` told apart by
    ``type`` (a discriminator)."""
    components = {OUTPUT_COMPONENTS[t]: to_openapi(OUTPUT_SCHEMAS[t]) for t in OUTPUT_TYPES}
    refs = {t: "#/components/schemas/" + OUTPUT_COMPONENTS[t] for t in OUTPUT_TYPES}
    components["Output"] = {
        "description": "One declarative output; its type says which fields it takes (GET /schema has "
                       "the same definitions as JSON Schema). Every field left out takes its default.",
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "type", "mapping": refs},
    }
    return components


def openapi_document():
    """The bytes of ``nommer/feederd/openapi.json``, whose ``Output`` schema
    is replaced by ``output_components()`` (built once)."""
    if "openapi" not in _documents:
        document = json.loads(resources.files("nommer.feederd").joinpath("openapi.json").read_bytes())
        document["components"]["schemas"].update(output_components())
        _documents["openapi"] = json.dumps(document).encode()
    return _documents["openapi"]


def schema_document():
    """The bytes of the job schema (``job_schema()``, JSON)."""
    if "schema" not in _documents:
        _documents["schema"] = json.dumps(job_schema()).encode()
    return _documents["schema"]
