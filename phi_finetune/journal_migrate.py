"""Journal format migrations: a journal written by an older release is read as the current format.

Format 1 (phi_finetune 0.1.0) stored each step's outputs as free-form dicts; format 2 stores the
``to_dict()`` of the step's typed record (:mod:`phi_finetune.steps`). Only completed steps carry
outputs worth converting; resources and step bookkeeping are unchanged between the two.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["migrate"]

_COMPONENT_VERSION = re.compile(r"/versions/([^/]+)$")
_PLAN_KEYS = (
    "model",
    "component_id",
    "compute",
    "parameters",
    "display_name",
    "experiment_name",
    "warnings",
    "ignored_on_local",
    "table",
)
_TRAINING_KEYS = (
    "base_model",
    "merged_dir",
    "adapter_dir",
    "final_loss",
    "eval_loss",
    "steps",
    "tokens_trained",
    "duration_s",
    "device",
    "mlflow_run_id",
    "history",
    "ignored",
)


def migrate(data: dict[str, Any], *, target: int) -> dict[str, Any]:
    """A copy of ``data`` (a journal document) converted up to format ``target``.

    Formats this module does not know are returned unchanged (the reader reports them).
    """
    out = copy.deepcopy(data)
    while isinstance(out.get("format"), int) and out["format"] < target:
        step = _MIGRATIONS.get(out["format"])
        if step is None:
            break
        out = step(out)
    return out


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    steps = data.get("steps")
    if isinstance(steps, dict):
        for name, raw in steps.items():
            convert = _V1_OUTPUTS.get(name)
            outputs = raw.get("outputs") if isinstance(raw, dict) else None
            if convert is None or not isinstance(outputs, dict) or not outputs:
                continue
            seconds = outputs.get("seconds")
            converted = convert(outputs, backend=str(data.get("backend")))
            if seconds is not None:
                converted["seconds"] = seconds
            raw["outputs"] = converted
    data["format"] = 2
    data["migrated_from"] = 1
    return data


def _plan_v1(outputs: Mapping[str, Any], *, backend: str) -> dict[str, Any]:
    model = dict(outputs.get("model") or {})
    compute = outputs.get("compute")
    component_id = outputs.get("component_id")
    found = _COMPONENT_VERSION.search(str(component_id or ""))
    plan: dict[str, Any] = {
        "model": {
            "name": model.get("name"),
            "version": model.get("version"),
            "id": model.get("id"),
            "inference_allow_list": model.get("inference_allow_list"),
            "test_model": bool(model.get("test_model", False)),
        },
        "component_id": component_id,
        "component_version": found.group(1) if found else None,
        "compute": None
        if not isinstance(compute, Mapping)
        else {
            k: compute.get(k) for k in ("name", "vm_size", "gpus_per_node", "nodes", "will_create")
        },
        "parameters": outputs.get("parameters") or {},
        "display_name": outputs.get("display_name"),
        "experiment_name": outputs.get("experiment_name"),
        "warnings": list(outputs.get("warnings") or []),
        "ignored_on_local": dict(outputs.get("ignored_on_local") or {}),
        "table": outputs.get("table") or _local_table(outputs),
        "details": {k: v for k, v in outputs.items() if k not in _PLAN_KEYS and k != "seconds"},
    }
    if isinstance(compute, Mapping):
        plan["details"]["compute"] = dict(compute)
    if len(model) > 2:
        plan["details"]["model"] = model
    return plan


def _local_table(outputs: Mapping[str, Any]) -> str:
    """0.1.0 journaled no table for local plans: one drawn from what it did journal."""
    from phi_finetune.steps import PlanParameter, plan_table

    params = outputs.get("parameters") if isinstance(outputs.get("parameters"), Mapping) else {}
    parameters = {
        str(name): PlanParameter(p.get("value"), str(p.get("source")), p.get("type"))
        for name, p in (params or {}).items()
        if isinstance(p, Mapping)
    }
    model = outputs.get("model") if isinstance(outputs.get("model"), Mapping) else {}
    rows = [
        ("model", str((model or {}).get("name"))),
        ("display name", str(outputs.get("display_name"))),
    ]
    rows += [
        (f"ignored {k}", str(v)) for k, v in dict(outputs.get("ignored_on_local") or {}).items()
    ]
    return plan_table(rows, parameters, list(outputs.get("warnings") or []))


def _fine_tune_v1(outputs: Mapping[str, Any], *, backend: str) -> dict[str, Any]:
    training = None
    if "merged_dir" in outputs:
        training = {k: outputs.get(k) for k in _TRAINING_KEYS}
    return {
        "name": outputs.get("job_name"),
        "status": outputs.get("status"),
        "studio_url": outputs.get("studio_url"),
        "trained_model": outputs.get("trained_model"),
        "training": training,
    }


def _register_v1(outputs: Mapping[str, Any], *, backend: str) -> dict[str, Any]:
    name, version = outputs.get("name"), outputs.get("version")
    if "model_uri" in outputs:  # local MLflow registry
        uri = outputs.get("model_uri")
        resource_id = None
    else:
        uri = outputs.get("asset_id") or f"azureml:{name}:{version}"
        resource_id = outputs.get("id")
    return {
        "name": name,
        "version": None if version is None else str(version),
        "uri": uri,
        "id": resource_id,
        "tracking_uri": outputs.get("tracking_uri"),
        "alias": outputs.get("alias"),
        "created": outputs.get("created"),
    }


def _same(outputs: Mapping[str, Any], *, backend: str) -> dict[str, Any]:
    return {k: v for k, v in outputs.items() if k != "seconds"}


_V1_OUTPUTS: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare_data": lambda outputs, backend: {
        **_same(outputs, backend=backend),
        "assets": dict(outputs.get("assets") or {}),
    },
    "plan": _plan_v1,
    "fine_tune": _fine_tune_v1,
    "register": _register_v1,
}

_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}
