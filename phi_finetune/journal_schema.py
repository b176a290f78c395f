"""What makes a JSON document a journal this release can use (:mod:`phi_finetune.journal`).

Every field a reader relies on is type-checked here, so a damaged or hand-edited journal gives
one clear list of problems instead of a traceback from deep inside a command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["READABLE_FORMATS", "RESOURCE_STATES", "STEP_STATUSES", "journal_problems"]

#: Formats this release reads (older ones are migrated in memory).
READABLE_FORMATS = (1, 2)
STEP_STATUSES = ("pending", "running", "completed", "failed")
RESOURCE_STATES = ("creating", "created", "deleted")

_OPTIONAL_TEXT = (str, type(None))


def journal_problems(data: Any) -> list[str]:
    """What makes ``data`` not a journal this release can use (empty when it is one)."""
    if not isinstance(data, dict):
        return ["it is not a JSON object"]
    if data.get("format") not in READABLE_FORMATS:
        return [
            f"format {data.get('format')!r} is not one this release reads "
            f"({', '.join(map(str, READABLE_FORMATS))}); a newer phi_finetune wrote it"
        ]
    problems: list[str] = []
    for key, kinds in (
        ("run_id", (str,)),
        ("backend", (str,)),
        ("steps", (dict,)),
        ("resources", (list,)),
        ("config", (dict,)),
        ("created_at", _OPTIONAL_TEXT),
        ("updated_at", _OPTIONAL_TEXT),
        ("finished_at", _OPTIONAL_TEXT),
    ):
        if not isinstance(data.get(key), kinds):
            problems.append(f"'{key}' is missing or not a {kinds[0].__name__}")
    if not isinstance(data.get("seq", 0), int) or isinstance(data.get("seq"), bool):
        problems.append("'seq' is not an integer")
    if problems:
        return problems
    for name, raw in data["steps"].items():
        problems.extend(f"step {name!r}: {p}" for p in _step_problems(raw))
    for index, raw in enumerate(data["resources"]):
        problems.extend(f"resource #{index}: {p}" for p in _resource_problems(raw))
    return problems


def _field_problems(raw: Any, fields: Mapping[str, tuple[type, ...]]) -> list[str]:
    if not isinstance(raw, dict):
        return ["it is not a JSON object"]
    out = []
    for key, kinds in fields.items():
        value = raw.get(key)
        if key in raw and (
            not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        ):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            out.append(f"'{key}' is {value!r:.40}, not {names}")
    return out


_STEP_FIELDS: Mapping[str, tuple[type, ...]] = {
    "name": (str,),
    "inputs": (dict, type(None)),
    "outputs": (dict, type(None)),
    "started_at": _OPTIONAL_TEXT,
    "finished_at": _OPTIONAL_TEXT,
    "error": _OPTIONAL_TEXT,
    "attempts": (int,),
    "completed_seq": (int, type(None)),
}
_RESOURCE_FIELDS: Mapping[str, tuple[type, ...]] = {
    "kind": (str,),
    "name": (str,),
    "version": _OPTIONAL_TEXT,
    "created_by_run": (bool,),
    "billable": (bool,),
    "details": (dict, type(None)),
    "created_at": _OPTIONAL_TEXT,
    "updated_at": _OPTIONAL_TEXT,
}


def _step_problems(raw: Any) -> list[str]:
    problems = _field_problems(raw, _STEP_FIELDS)
    if not problems and raw.get("status") not in STEP_STATUSES:
        problems.append(
            f"'status' is {raw.get('status')!r:.40}, not one of {', '.join(STEP_STATUSES)}"
        )
    return problems


def _resource_problems(raw: Any) -> list[str]:
    problems = _field_problems(raw, _RESOURCE_FIELDS)
    if problems:
        return problems
    missing = [key for key in ("kind", "name", "state") if key not in raw]
    if missing:
        return [f"{', '.join(missing)} missing"]
    if raw["state"] not in RESOURCE_STATES:
        return [f"'state' is {raw['state']!r:.40}, not one of {', '.join(RESOURCE_STATES)}"]
    return []
