"""Writes ``registryDataplane.2021-10-01-dataplanepreview.json`` from generated SDK models.

No swagger for the registry data plane at api-version 2021-10-01-dataplanepreview is published in
Azure/azure-rest-api-specs (its ``data-plane/`` folder has registry discovery v1.0, model and
dataset data planes, but not this version). azure-ai-ml 1.35.2 no longer ships the per-version
client, so the definitions are derived from the msrest models generated for exactly that
api-version in azure-ai-ml 1.12.1 (PyPI; Azure/azure-sdk-for-python
``sdk/ml/azure-ai-ml/azure/ai/ml/_restclient/v2021_10_01_dataplanepreview/models/_models_py3.py``,
MIT): ``_attribute_map`` gives the wire keys and types, ``_validation`` the required fields.

Run with the wheel unpacked somewhere (nothing is installed)::

    pip download azure-ai-ml==1.12.1 --no-deps -d /tmp/aiml
    python -m zipfile -e /tmp/aiml/azure_ai_ml-1.12.1-py3-none-any.whl /tmp/aiml/x
    python tests/data/contract/derive_registry_dataplane.py /tmp/aiml/x
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "registryDataplane.2021-10-01-dataplanepreview.json"
MODELS = "azure/ai/ml/_restclient/v2021_10_01_dataplanepreview/models/_models_py3.py"
ROOTS = [
    "ModelVersionData",
    "ModelVersionResourceArmPaginatedResult",
    "ModelContainerData",
    "ComponentVersionData",
    "ComponentVersionResourceArmPaginatedResult",
]
SCALARS = {
    "str": {"type": "string"},
    "iso-8601": {"type": "string"},
    "duration": {"type": "string"},
    "bool": {"type": "boolean"},
    "int": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "object": {},
}


def _class_tables(source: str) -> dict[str, dict[str, Any]]:
    """class name -> {"bases", "attribute_map", "validation"} read from the module's AST."""
    tables: dict[str, dict[str, Any]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        entry: dict[str, Any] = {
            "bases": [ast.unparse(b) for b in node.bases],
            "attribute_map": {},
            "validation": {},
        }
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                if name in ("_attribute_map", "_validation"):
                    entry[name.lstrip("_")] = ast.literal_eval(stmt.value)
        tables[node.name] = entry
    return tables


def main(root: Path) -> None:
    tables = _class_tables((root / MODELS).read_text(encoding="utf-8"))
    defs: dict[str, Any] = {}
    queue = list(ROOTS)

    def schema(tp: str) -> dict[str, Any]:
        if tp in SCALARS:
            return dict(SCALARS[tp])
        if tp.startswith("[") and tp.endswith("]"):
            return {"type": "array", "items": schema(tp[1:-1])}
        if tp.startswith("{") and tp.endswith("}"):
            return {"type": "object", "additionalProperties": schema(tp[1:-1])}
        queue.append(tp)
        return {"$ref": f"#/definitions/{tp}"}

    while queue:
        name = queue.pop(0)
        if name in defs:
            continue
        table = tables[name]
        props: dict[str, Any] = {}
        required: list[str] = []
        for attr, spec in table["attribute_map"].items():
            wire = spec["key"]
            if "." in wire:
                raise ValueError(f"{name}.{attr}: flattened key {wire!r} is not supported")
            props[wire] = schema(spec["type"])
            rules = table["validation"].get(attr, {})
            if rules.get("required"):
                required.append(wire)
            else:  # msrest models keep no x-nullable: an optional field admits null
                props[wire]["x-nullable"] = True
        entry: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            entry["required"] = required
        defs[name] = entry
    document = {
        "_vendored": {
            "repository": "Azure/azure-sdk-for-python",
            "path": MODELS.replace("azure/", "sdk/ml/azure-ai-ml/azure/", 1),
            "package": "azure-ai-ml 1.12.1 (PyPI)",
            "apiVersion": "2021-10-01-dataplanepreview",
            "license": "MIT (Copyright (c) Microsoft Corporation)",
            "note": (
                "Derived (not transcribed) by tests/data/contract/derive_registry_dataplane.py: no "
                "swagger for this api-version is published in Azure/azure-rest-api-specs. Each "
                "generated class keeps its full field list (inherited fields included), so no "
                "allOf; optional fields admit null."
            ),
        },
        "definitions": dict(sorted(defs.items())),
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT.name}: {len(defs)} definitions")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: derive_registry_dataplane.py <unpacked azure-ai-ml 1.12.1 wheel>")
    main(Path(sys.argv[1]))
