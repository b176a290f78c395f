"""The one check layer: value coercion and the field specs every configuration class uses.

:func:`coerce` is the only place that decides whether a value is a boolean, an integer, a number
or a string, and converts it. The run configuration (exact Python types), the fine-tuning
parameters (pipeline inputs, whose defaults travel as text in model tags) and the local backend's
parameters (loose: ``"yes"``, ``1``, ``"3.0"``) all call it, each with its own ``mode``.

The rest is the spec machinery of :mod:`phi_finetune.config`: every attrs field carries a
``_Spec`` in its metadata; the same specs check values given in Python (at construction) and
values read from a file (before construction, so every problem is collected with its file and
key).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal

import attrs

from phi_finetune.errors import ConfigurationError

__all__ = ["KINDS", "CoercionError", "Kind", "Mode", "coerce"]

Kind = Literal["string", "integer", "number", "boolean"]
"""The scalar kinds, named as the Azure ML component interface names input types."""
Mode = Literal["exact", "text", "loose"]
"""How far :func:`coerce` converts: see its docstring."""
KINDS: tuple[str, ...] = ("string", "integer", "number", "boolean")

_PY_KINDS: Mapping[type, Kind] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_EXPECTED: Mapping[str, str] = {
    "string": "expected a string",
    "integer": "expected an integer",
    "number": "expected a number",
    "boolean": "expected true or false",
}
_TRUE_WORDS = {"exact": ("true",), "text": ("true",), "loose": ("true", "1", "yes")}
_FALSE_WORDS = {"exact": ("false",), "text": ("false",), "loose": ("false", "0", "no")}


class CoercionError(ValueError):
    """A value is not of the kind asked for (the message says which kind was expected)."""


def coerce(value: Any, kind: Kind | type, *, mode: Mode = "exact") -> Any:
    """``value`` as ``kind`` (a kind name, or ``str``/``int``/``float``/``bool``).

    Modes, each accepting everything the one before does:

    * ``"exact"``: only values already of the kind; ``bool`` is never a number, an ``int`` is a
      number (returned as ``float``).
    * ``"text"``: also the text forms values take in tags, environment variables and command
      lines: ``"true"``/``"false"``, ``"3"``, ``"5e-6"``; an integer (or an integral float) for a
      string becomes its digits.
    * ``"loose"``: also ``"1"``/``"yes"``/``"0"``/``"no"`` and ``0``/``1`` for booleans, integral
      floats for integers, and any value for a string (``str(value).strip()``).

    Raises :class:`CoercionError` (a ``ValueError``) saying what was expected. Range and choice
    checks are the caller's.
    """
    name: str = _PY_KINDS[kind] if isinstance(kind, type) else kind
    if name == "boolean":
        return _boolean(value, mode)
    if name == "integer":
        return _integer(value, mode)
    if name == "number":
        return _number(value, mode)
    if name == "string":
        return _string(value, mode)
    raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def _boolean(value: Any, mode: Mode) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and mode != "exact":
        word = value.strip().lower()
        if word in _TRUE_WORDS[mode]:
            return True
        if word in _FALSE_WORDS[mode]:
            return False
    if mode == "loose" and isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CoercionError(_EXPECTED["boolean"])


def _integer(value: Any, mode: Mode) -> int:
    if isinstance(value, bool):
        raise CoercionError(_EXPECTED["integer"])
    if isinstance(value, int):
        return value
    if mode == "loose" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and mode != "exact":
        try:
            number = float(value.strip())
        except ValueError:
            number = float("nan")
        if number.is_integer():
            return int(number)
    raise CoercionError(_EXPECTED["integer"])


def _number(value: Any, mode: Mode) -> float:
    if isinstance(value, bool):
        raise CoercionError(_EXPECTED["number"])
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and mode != "exact":
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise CoercionError(_EXPECTED["number"])


def _string(value: Any, mode: Mode) -> str:
    if isinstance(value, str):
        return value.strip() if mode == "loose" else value
    if mode == "loose":
        return str(value).strip()
    if mode == "text" and not isinstance(value, bool):
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
    raise CoercionError(_EXPECTED["string"])


_Accept = Kind | type
"""A kind name checked with :func:`coerce` (exact), or a class checked with ``isinstance``."""

# --------------------------------------------------------------------------------------------
# The checking machinery: every field carries a _Spec in its attrs metadata. The same specs
# check values given in Python (at construction) and values read from a file (before
# construction, so every problem is collected with its file and key).
# --------------------------------------------------------------------------------------------

_SPEC = "phi_finetune.spec"
_Check = Callable[[Any], str | None]


@attrs.frozen
class _Spec:
    types: tuple[_Accept, ...]
    """Accepted kinds (see :func:`coerce`; ``bool`` never counts as a number) or classes."""
    type_name: str
    """The type as a user reads it, e.g. ``integer``."""
    optional: bool = False
    """``None`` is allowed (a file omits the key instead)."""
    choices: tuple[str, ...] = ()
    check: _Check | None = None
    """Returns what is wrong with a value of the right type, or ``None``."""
    allowed: str = ""
    """What is allowed, for messages (``choices`` fill it when empty)."""
    path: str = ""
    """``"path"``: resolved against the file's folder; ``"maybe"``: only when it looks local."""
    section: type | None = None
    """For RunConfig's section fields: the section class."""


def _spec(
    types: tuple[_Accept, ...],
    type_name: str,
    *,
    optional: bool = False,
    choices: Sequence[str] = (),
    check: _Check | None = None,
    allowed: str = "",
    path: str = "",
    section: type | None = None,
) -> dict[str, _Spec]:
    return {
        _SPEC: _Spec(
            types=types,
            type_name=type_name + (" or omitted" if optional else ""),
            optional=optional,
            choices=tuple(choices),
            check=check,
            allowed=allowed or (", ".join(repr(c) for c in choices) if choices else ""),
            path=path,
            section=section,
        )
    }


_STR: tuple[_Accept, ...] = ("string",)
_INT: tuple[_Accept, ...] = ("integer",)
_NUM: tuple[_Accept, ...] = ("number",)
_BOOL: tuple[_Accept, ...] = ("boolean",)
_PATHLIKE: tuple[_Accept, ...] = ("string", PurePath)
_VERSION: tuple[_Accept, ...] = ("string", "integer")


def _int_range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False
) -> _Check:
    def check(value: Any) -> str | None:
        if low is not None and (value <= low if low_open else value < low):
            return f"must be {'>' if low_open else '>='} {low}"
        if high is not None and value > high:
            return f"must be <= {high}"
        return None

    return check


def _between(low: float, high: float, *, high_open: bool = False) -> _Check:
    def check(value: Any) -> str | None:
        if not (low < value < high if high_open else low < value <= high):
            return f"must be greater than {low} and {'below' if high_open else 'at most'} {high}"
        return None

    return check


def _non_empty(value: Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return "must not be empty"
    if isinstance(value, str) and value != value.strip():
        return "has leading or trailing whitespace"
    return None


def _pattern(regex: re.Pattern[str], what: str) -> _Check:
    def check(value: Any) -> str | None:
        problem = _non_empty(value)
        if problem:
            return problem
        return None if regex.match(str(value)) else f"is not a valid {what}"

    return check


def _to_str_version(value: Any) -> Any:
    # Versions are strings in Azure ML; a bare TOML/Python integer is accepted and converted.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _to_path(value: Any) -> Any:
    return Path(value) if isinstance(value, str | PurePath) else value


def _path_to_str(value: Any) -> Any:
    return str(value) if isinstance(value, PurePath) else value


def _to_optional_path(value: Any) -> Any:
    return None if value is None else _to_path(value)


def _to_params(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _type_ok(value: Any, spec: _Spec) -> bool:
    if value is None:
        return spec.optional
    return any(_accepts(accept, value) for accept in spec.types)


def _accepts(accept: _Accept, value: Any) -> bool:
    if not isinstance(accept, str):
        return isinstance(value, accept)
    try:
        coerce(value, accept)
    except CoercionError:
        return False
    return True


@attrs.frozen
class _Problem:
    key: str
    message: str
    allowed: str = ""
    suggestions: tuple[str, ...] = ()

    def render(self) -> str:
        parts = [f"{self.key}: {self.message}"]
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        if self.suggestions:
            parts.append("did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?")
        return "; ".join(parts)


def _close(word: str, candidates: Sequence[str]) -> tuple[str, ...]:
    return tuple(difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6))


def _raise_problems(problems: Sequence[_Problem], *, source: str | None, what: str) -> None:
    if not problems:
        return
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    lines = "\n".join(f"  - {p.render()}" for p in problems)
    if source is not None:
        message = f"{source}: {count} in {what}:\n{lines}"
    else:
        message = f"invalid {what}: {count}:\n{lines}"
    raise ConfigurationError(message, source=source, key=problems[0].key)


def _specs(cls: type) -> dict[str, _Spec]:
    return {f.name: f.metadata[_SPEC] for f in attrs.fields(cls) if _SPEC in f.metadata}


def _value_problems(spec: _Spec, key: str, value: Any) -> list[_Problem]:
    if not _type_ok(value, spec):
        got = "nothing (null)" if value is None else type(value).__name__
        return [_Problem(key, f"expected {spec.type_name}, got {got} {value!r}", spec.allowed)]
    if value is None:
        return []
    if spec.choices and value not in spec.choices:
        return [
            _Problem(
                key,
                f"{value!r} is not allowed",
                spec.allowed,
                _close(str(value), spec.choices),
            )
        ]
    if spec.check is not None:
        message = spec.check(value)
        if message:
            return [_Problem(key, message, spec.allowed)]
    return []


class _Section:
    """Shared behaviour of the configuration sections (a mixin for attrs classes)."""

    _section: ClassVar[str] = ""

    def __attrs_post_init__(self) -> None:
        cls = type(self)
        values = {name: getattr(self, name) for name in _specs(cls)}
        problems = _section_problems(cls, values, prefix=_prefix(cls))
        _raise_problems(problems, source=None, what=cls.__name__)

    @classmethod
    def _cross_check(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems between fields: ``(field, message)`` pairs; values are complete and typed."""
        return []


def _prefix(cls: type) -> str:
    section: str = getattr(cls, "_section", "")
    return f"{section}." if section else ""


def _section_problems(cls: type, values: Mapping[str, Any], *, prefix: str) -> list[_Problem]:
    """Field problems of ``values`` (only the keys given), then cross-field problems."""
    specs = _specs(cls)
    problems: list[_Problem] = []
    for name, value in values.items():
        problems.extend(_value_problems(specs[name], prefix + name, value))
    if problems:
        return problems
    merged = {**_defaults(cls), **values}
    for name, message in cls._cross_check(merged):  # type: ignore[attr-defined]
        problems.append(_Problem(prefix + name, message))
    return problems


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in attrs.fields(cls):
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if default is not attrs.NOTHING:
            out[f.name] = f.converter(default) if callable(f.converter) else default
    return out
