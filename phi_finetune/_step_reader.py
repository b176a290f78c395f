"""Field-by-field reading of a journaled step's dict, for :mod:`phi_finetune.steps`: every
problem raises a :class:`~phi_finetune.errors.RunStateError` naming the step and the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi_finetune.errors import RunStateError

__all__ = ["Reader", "reader"]


class Reader:
    """Reads one step's dict field by field; every problem names the step and the field."""

    def __init__(self, data: Any, step: str, source: str, prefix: str = "") -> None:
        self.step = step
        self.source = source
        self.prefix = prefix
        if not isinstance(data, Mapping):
            self.fail("", f"is a {type(data).__name__}, not an object")
        self.data: Mapping[str, Any] = data

    def fail(self, key: str, problem: str) -> None:
        field = f"{self.prefix}{key}" or "(the whole output)"
        where = f"{self.source}: " if self.source else ""
        raise RunStateError(
            f"{where}step {self.step!r}, field {field!r} {problem}; the journal was edited or "
            "written by an incompatible version: restore it, or re-run the step with "
            "`phi-finetune resume` after deleting that step from the journal"
        )

    def _get(self, key: str, kinds: type | tuple[type, ...], what: str, *, optional: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if optional:
                return None
            self.fail(key, "is missing")
        value = self.data[key]
        if isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        ):
            self.fail(key, f"is {value!r}, not {what}")
        if not isinstance(value, kinds):
            self.fail(key, f"is a {type(value).__name__} ({value!r:.60}), not {what}")
        return value

    def text(self, key: str) -> str:
        return str(self._get(key, str, "a string", optional=False))

    def opt_str(self, key: str) -> str | None:
        value = self._get(key, (str, int), "a string", optional=True)
        return None if value is None else str(value)

    def version(self, key: str) -> str:
        return str(self._get(key, (str, int), "a version string", optional=False))

    def integer(self, key: str) -> int:
        return int(self._get(key, int, "an integer", optional=False))

    def opt_number(self, key: str) -> float | None:
        value = self._get(key, (int, float), "a number", optional=True)
        return None if value is None else float(value)

    def opt_int(self, key: str) -> int | None:
        value = self._get(key, int, "an integer", optional=True)
        return None if value is None else int(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key, bool, "true or false", optional=True)
        return default if value is None else bool(value)

    def mapping(self, key: str, *, optional: bool = True) -> Mapping[str, Any]:
        value = self._get(key, Mapping, "an object", optional=optional)
        return {} if value is None else {str(k): v for k, v in value.items()}

    def str_map(self, key: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.mapping(key).items():
            if not isinstance(value, str):
                self.fail(f"{key}.{name}", f"is a {type(value).__name__}, not a string")
            out[name] = value
        return out

    def int_map(self, key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, value in self.mapping(key).items():
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(f"{key}.{name}", f"is {value!r}, not an integer")
            out[name] = value
        return out

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key, (list, tuple), "a list", optional=True)
        items = tuple(value or ())
        for index, item in enumerate(items):
            if not isinstance(item, str):
                self.fail(f"{key}[{index}]", f"is a {type(item).__name__}, not a string")
        return items

    def opt_str_list(self, key: str) -> tuple[str, ...] | None:
        if self.data.get(key) is None:
            return None
        return self.str_list(key)

    def items(self, key: str) -> list[Any]:
        return list(self._get(key, (list, tuple), "a list", optional=True) or [])

    def sub(self, key: str, *, optional: bool = False) -> Reader | None:
        value = self._get(key, Mapping, "an object", optional=optional)
        if value is None:
            return None
        return Reader(value, self.step, self.source, f"{self.prefix}{key}.")

    def required_sub(self, key: str) -> Reader:
        reader = self.sub(key)
        assert reader is not None
        return reader


def reader(cls: type, data: Any, source: str) -> Reader:
    return Reader(data, str(getattr(cls, "STEP")), source)  # noqa: B009
