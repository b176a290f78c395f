"""Swagger 2.0 definitions (vendored in tests/data/contract/) as JSON Schema for ``jsonschema``.

Conversion rules, so a reply the fake gives is checked as the specification means it:

- ``$ref: #/definitions/X`` -> ``#/$defs/X`` (cross-file references were rewritten to local
  names when the definitions were vendored);
- ``x-nullable: true`` admits ``null``; other ``x-ms-*`` keys, ``readOnly``, ``title``,
  ``description``, ``default`` and ``format`` are dropped (``readOnly`` only matters for requests);
- enums stay closed even with ``modelAsString`` (the fake should only send values the
  specification names);
- ``discriminator``: a reference to the base resolves to the subtype chosen by the
  discriminator value (``if``/``then`` per ``x-ms-discriminator-value``); the subtypes' own
  ``allOf`` reference the plain base; a value naming no vendored subtype fails (it is not checked
  against the base alone);
- strict mode: every definition that is not an ``allOf`` member gets
  ``unevaluatedProperties: false``, so a key the specification does not name fails
  (``allOf`` members stay open, or they would reject their siblings' keys);
- a definition referenced but not transcribed is vendored as a stub, ``{"not": {}}``: it
  rejects every value, so a key the fake sends is never let through unread.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

CONTRACT_DIR = Path(__file__).parent / "data" / "contract"
SPEC_FILE = CONTRACT_DIR / "machineLearningServices.2023-08-01-preview.json"
# derived from azure-ai-ml 1.35.2 (api 2025-12-01); no longer the contract of any route (the
# workspace route follows WORKSPACE_BY_API_VERSION); its re-derivation is still tested
ASSETS_SPEC_FILE = CONTRACT_DIR / "armMlService.azure-ai-ml-1.35.2.json"
# api-version -> the vendored workspaceRP.json Workspace tree of that version
WORKSPACE_BY_API_VERSION: dict[str, Path] = {
    version: CONTRACT_DIR / f"workspaceRP.{version}.json"
    for version in ("2023-08-01-preview", "2024-10-01-preview")
}
# api-version -> machineLearningServices.json definitions (computes, vmSizes, usages)
COMPUTE_BY_API_VERSION: dict[str, Path] = {"2023-08-01-preview": SPEC_FILE}
# api-version -> the vendored swagger of that version (mfe.json definitions, see the README)
BY_API_VERSION: dict[str, Path] = {
    version: CONTRACT_DIR / f"mfe.{version}.json"
    for version in (
        "2022-02-01-preview",
        "2023-04-01-preview",
        "2023-08-01-preview",
        "2024-01-01-preview",
        "2024-10-01-preview",
    )
}
# registry data plane: the swagger azure-sdk-for-python generates its client from (not in
# azure-rest-api-specs); registry discovery: swagger v1.0
REGISTRY_FILE = CONTRACT_DIR / "mfe.2021-10-01-dataplanepreview.json"
DISCOVERY_FILE = CONTRACT_DIR / "registryDiscovery.v1.0.json"

_DROP = {"readOnly", "title", "description", "default", "format", "discriminator"}
_BASE_SUFFIX = "__base"


@cache
def spec(source: Path = SPEC_FILE) -> dict[str, Any]:
    """A vendored definitions document (with its ``_vendored`` provenance block)."""
    data: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return data


def example(name: str) -> dict[str, Any]:
    """A vendored example (``examples/<name>.json``) with its provenance block."""
    data: dict[str, Any] = json.loads((CONTRACT_DIR / "examples" / f"{name}.json").read_text())
    return data


def _ref_name(ref: str) -> str:
    prefix = "#/definitions/"
    if not ref.startswith(prefix):
        raise ValueError(f"only local definition references are vendored, got {ref!r}")
    return ref[len(prefix) :]


def _subtypes(defs: dict[str, Any]) -> dict[str, dict[str, str]]:
    """base name -> {discriminator value: subtype name}."""
    found: dict[str, dict[str, str]] = {}
    for name, schema in defs.items():
        value = schema.get("x-ms-discriminator-value")
        for part in schema.get("allOf", []):
            base = _ref_name(part["$ref"]) if "$ref" in part else None
            if value and base and "discriminator" in defs.get(base, {}):
                found.setdefault(base, {})[value] = name
    return found


def _allof_members(defs: dict[str, Any]) -> set[str]:
    members: set[str] = set()
    for schema in defs.values():
        for part in schema.get("allOf", []):
            if "$ref" in part:
                members.add(_ref_name(part["$ref"]))
    return members


def _convert(node: Any, *, in_allof: bool = False) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key.startswith("x-ms-") or key == "x-nullable":
            continue
        if key == "$ref":
            name = _ref_name(value)
            out["$ref"] = f"#/$defs/{name}{_BASE_SUFFIX if in_allof else ''}"
        elif key == "allOf":
            out["allOf"] = [_convert(part, in_allof=True) for part in value]
        elif key in ("properties",):
            out[key] = {prop: _convert(sub) for prop, sub in value.items()}
        else:
            out[key] = _convert(value)
    if node.get("x-nullable"):
        return {"anyOf": [{"type": "null"}, out]}
    return out


@cache
def json_schema_defs(source: Path = SPEC_FILE) -> dict[str, Any]:
    """Every definition of ``source`` as JSON Schema (draft 2020-12) ``$defs``."""
    defs: dict[str, Any] = spec(source)["definitions"]
    subtypes = _subtypes(defs)
    members = _allof_members(defs)
    out: dict[str, Any] = {}
    for name, schema in defs.items():
        converted = _convert(schema)
        if name in subtypes:
            out[name + _BASE_SUFFIX] = converted
            disc = schema["discriminator"]
            branches = [
                {
                    "if": {"properties": {disc: {"const": value}}, "required": [disc]},
                    "then": {"$ref": f"#/$defs/{sub}"},
                }
                for value, sub in subtypes[name].items()
            ]
            # a value naming a subtype that is not vendored fails, never passes on the base alone
            known = {"properties": {disc: {"enum": sorted(subtypes[name])}}}
            converted = {"allOf": [{"$ref": f"#/$defs/{name}{_BASE_SUFFIX}"}, known, *branches]}
        elif name in members:
            out[name + _BASE_SUFFIX] = converted
        if converted.get("type") == "object" or "allOf" in converted:
            converted = {**converted, "unevaluatedProperties": False}
        out[name] = converted
    return out


@cache
def validator(definition: str, source: Path = SPEC_FILE) -> jsonschema.protocols.Validator:
    """A strict validator for one vendored definition (``"ComputeResource"``)."""
    defs = json_schema_defs(source)
    if definition not in defs:
        raise KeyError(f"{definition!r} is not vendored in {source.name}")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": defs}
    schema["$ref"] = f"#/$defs/{definition}"
    cls = jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema)


def _flatten(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """An ``x-nullable`` value (``anyOf: [null, X]``) that is not null reports X's own errors."""
    if error.validator == "anyOf" and error.instance is not None:
        branches = error.validator_value
        nullable = [i for i, b in enumerate(branches) if b == {"type": "null"}]
        if len(branches) == 2 and nullable:
            inner = [e for e in error.context or [] if e.schema_path[0] != nullable[0]]
            if inner:
                return [leaf for e in inner for leaf in _flatten(e)]
    return [error]


def errors(definition: str, body: Any, source: Path = SPEC_FILE) -> list[str]:
    """Every way ``body`` breaks ``definition``: ``"<json path>: <message>"``, empty if none."""
    found = validator(definition, source).iter_errors(body)
    return sorted(f"{e.json_path}: {e.message}" for top in found for e in _flatten(top))


def has_definition(definition: str, source: Path) -> bool:
    """Whether ``source`` vendors ``definition`` (a stub counts: it rejects every value)."""
    return definition in spec(source)["definitions"]


def operation(operation_id: str, source: Path = SPEC_FILE) -> dict[str, Any]:
    """``{"method", "path", "responses": {status: {"schema", "headers"}}, ...}``."""
    ops: dict[str, Any] = spec(source)["operations"]
    return dict(ops[operation_id])
