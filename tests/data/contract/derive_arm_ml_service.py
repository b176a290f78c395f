"""Writes ``armMlService.azure-ai-ml-1.35.2.json``: swagger-shaped definitions for the asset routes.

The definitions are read from the REST models azure-ai-ml 1.35.2 ships
(``azure/ai/ml/_restclient/arm_ml_service/models/_models.py``, MIT, generated from the
Microsoft.MachineLearningServices TypeSpec, api-version 2025-12-01): field wire names, required
fields (non-Optional annotations), closed string enums, inheritance as ``allOf`` and
discriminated subtypes. Only definitions reachable from ``ROOTS`` are written.

Run from the repository root: ``python tests/data/contract/derive_arm_ml_service.py``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "armMlService.azure-ai-ml-1.35.2.json"
ROOTS = [
    "Workspace",
    "Datastore",
    "DatastoreSecrets",
    "JobBase",
    "ModelContainer",
    "ModelVersion",
    "OnlineEndpoint",
    "EndpointAuthKeys",
    "OnlineDeployment",
]
# discriminated bases whose other subtypes the library never sends or reads
ONLY_SUBTYPES = {
    "JobBaseProperties": {"Pipeline"},
    "DatastoreProperties": {"AzureBlob"},
    "DatastoreSecrets": {"AccountKey"},
}
LISTS = {
    "JobBaseResourceArmPaginatedResult": "JobBase",
    "ModelContainerResourceArmPaginatedResult": "ModelContainer",
    "ModelVersionResourceArmPaginatedResult": "ModelVersion",
    "OnlineEndpointTrackedResourceArmPaginatedResult": "OnlineEndpoint",
    "OnlineDeploymentTrackedResourceArmPaginatedResult": "OnlineDeployment",
    "DatastoreResourceArmPaginatedResult": "Datastore",
}
SOURCE = "azure-ai-ml 1.35.2: azure/ai/ml/_restclient/arm_ml_service/models/_models.py"


def main() -> None:
    from azure.ai.ml._restclient.arm_ml_service import models
    from azure.ai.ml._restclient.arm_ml_service.models import _models

    namespace = {"_models": models, **vars(_models)}
    model_base = _models._Model
    defs: dict[str, Any] = {}
    queue = list(ROOTS)

    def ref(cls: type) -> dict[str, Any]:
        queue.append(cls.__name__)
        return {"$ref": f"#/definitions/{cls.__name__}"}

    def schema(tp: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            enums = [a for a in rest if isinstance(a, type) and issubclass(a, enum.Enum)]
            if enums:
                return {"type": "string", "enum": [e.value for e in enums[0]]}
            return schema(rest[0]) if len(rest) == 1 else {}
        if origin is typing.Literal:
            return {"type": "string", "enum": [getattr(a, "value", a) for a in args]}
        if origin is dict:
            return {"type": "object", "additionalProperties": schema(args[1])}
        if origin is list:
            return {"type": "array", "items": schema(args[0])}
        if tp is str or tp is dt.datetime or tp is dt.timedelta:
            return {"type": "string"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if isinstance(tp, type) and issubclass(tp, model_base):
            return ref(tp)
        return {}

    while queue:
        name = queue.pop(0)
        if name in defs:
            continue
        cls = getattr(models, name)
        cls()  # the generated model computes its field table on first use
        fields = cls._attr_to_rest_field
        hints = typing.get_type_hints(cls, globalns=namespace)
        parent = next((b for b in cls.__bases__ if issubclass(b, model_base)), None)
        parent = None if parent is model_base else parent
        inherited: set[str] = set()
        if parent is not None:
            parent()
            inherited = set(parent._attr_to_rest_field)
        props: dict[str, Any] = {}
        required: list[str] = []
        for attr, field in fields.items():
            if attr in inherited:
                continue
            tp = hints[attr]
            optional = type(None) in typing.get_args(tp)
            props[field._rest_name] = schema(tp)
            if optional:  # the generated models do not keep x-nullable: admit null
                props[field._rest_name]["x-nullable"] = True
            else:
                required.append(field._rest_name)
        entry: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            entry["required"] = required
        if parent is not None:
            entry = {"allOf": [ref(parent)], **entry}
            mapping = getattr(parent, "__mapping__", {})
            value = next((k for k, v in mapping.items() if v is cls), None)
            if value is not None:
                entry["x-ms-discriminator-value"] = value
        mapping = cls.__dict__.get("__mapping__")
        if mapping:
            disc = next(f for f in fields.values() if f._is_discriminator)
            entry["discriminator"] = disc._rest_name
            keep = ONLY_SUBTYPES.get(name)
            for value, sub in mapping.items():
                if keep is None or value in keep:
                    queue.append(sub.__name__)
        defs[name] = entry
    for list_name, item in LISTS.items():
        defs[list_name] = {
            "type": "object",
            "properties": {
                "value": {"type": "array", "items": {"$ref": f"#/definitions/{item}"}},
                "nextLink": {"type": "string"},
            },
        }
    document = {
        "_vendored": {
            "repository": "Azure/azure-sdk-for-python",
            "path": "sdk/ml/azure-ai-ml/azure/ai/ml/_restclient/arm_ml_service/models/_models.py",
            "package": "azure-ai-ml 1.35.2 (PyPI)",
            "apiVersion": "2025-12-01",
            "license": "MIT (Copyright (c) Microsoft Corporation)",
            "note": (
                "Derived by tests/data/contract/derive_arm_ml_service.py from the generated REST "
                "models (generated from the Microsoft.MachineLearningServices specification). "
                "Optional fields admit null (the models do not keep x-nullable). "
                "The *ResourceArmPaginatedResult lists are the ARM pageable envelope "
                "(value + nextLink) the specification uses for these list operations."
            ),
            "source": SOURCE,
        },
        "definitions": dict(sorted(defs.items())),
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"{OUT.name}: {len(defs)} definitions")


if __name__ == "__main__":
    main()
