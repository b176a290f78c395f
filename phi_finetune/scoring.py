"""The Azure ML chat scoring contract, shared by Azure endpoints and the local server.

Request body (what the reference notebook writes to ``sample_score.json``)::

    {"input_data": {"input_string": [<conversation>, ...],
                    "parameters": {"temperature": 0.6, "top_p": 0.9,
                                   "do_sample": true, "max_new_tokens": 200}},
     "params": {}}

A conversation is a list of ``{"role": ..., "content": ...}`` messages ending with a user turn.
Responses come in two shapes: ``{"output": "<text>"}`` from the foundation-model inference
container, and ``[{"0": "<text>"}]`` from the older MLflow scoring path. Both parse into
:class:`ScoreResult`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from phi_finetune.errors import DataProblem, DataValidationError, InvocationError

__all__ = [
    "DEFAULT_PARAMETERS",
    "ROLES",
    "Message",
    "ScoreResult",
    "build_request",
    "parse_response",
    "validate_conversation",
]

ROLES = ("system", "user", "assistant")
Message = Mapping[str, str]

#: The reference notebook's generation parameters.
DEFAULT_PARAMETERS: Mapping[str, Any] = {
    "temperature": 0.6,
    "top_p": 0.9,
    "do_sample": True,
    "max_new_tokens": 200,
}

_PARAMETER_TYPES: Mapping[str, tuple[type, ...]] = {
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "do_sample": (bool,),
    "max_new_tokens": (int,),
    "repetition_penalty": (int, float),
    "num_beams": (int,),
    "return_full_text": (bool,),
}


_SURROGATE = re.compile("[\ud800-\udfff]")
_REPR_LIMIT = 40


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def validate_conversation(conversation: Any, *, where: str = "conversation") -> list[str]:
    """Problems that make ``conversation`` unusable as a scoring input (empty list: fine)."""
    problems: list[str] = []
    if not isinstance(conversation, list) or not conversation:
        return [f"{where} must be a non-empty list of {{'role', 'content'}} messages"]
    for index, message in enumerate(conversation):
        here = f"{where}[{index}]"
        if not isinstance(message, Mapping):
            problems.append(f"{here} must be an object with 'role' and 'content'")
            continue
        role = message.get("role")
        content = message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            problems.append(f"{here}.role must be one of {', '.join(ROLES)}, got {_short(role)}")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{here}.content must be a non-empty string")
        elif _SURROGATE.search(content):
            problems.append(
                f"{here}.content holds an unpaired UTF-16 surrogate (not valid Unicode); "
                "fix the text encoding"
            )
    last = conversation[-1]
    if isinstance(last, Mapping) and last.get("role") != "user":
        problems.append(f"{where} must end with a user turn (the model answers it)")
    return problems


def validate_parameters(
    parameters: Mapping[str, Any], *, max_new_tokens_limit: int | None = None
) -> list[str]:
    """Problems with generation ``parameters`` (known names are type- and range-checked)."""
    problems: list[str] = []
    for name, value in parameters.items():
        expected = _PARAMETER_TYPES.get(name)
        if expected is None:
            continue
        if isinstance(value, bool) and bool not in expected:
            problems.append(f"parameters.{name} must be a number, got {value!r}")
            continue
        if not isinstance(value, expected):
            names = "/".join(t.__name__ for t in expected)
            problems.append(f"parameters.{name} must be {names}, got {_short(value)}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        number = float(value)
        if not math.isfinite(number):
            problems.append(f"parameters.{name} must be a finite number, got {value!r}")
            continue
        if name == "temperature" and number < 0:
            problems.append("parameters.temperature must be >= 0")
        if name == "top_p" and not 0 < number <= 1:
            problems.append("parameters.top_p must be in (0, 1]")
        if name == "top_k" and number < 0:
            problems.append("parameters.top_k must be >= 0 (0: no top-k filtering)")
        if name == "repetition_penalty" and number <= 0:
            problems.append("parameters.repetition_penalty must be > 0 (1.0: no penalty)")
        if name == "num_beams" and number < 1:
            problems.append("parameters.num_beams must be >= 1")
        if name == "max_new_tokens":
            if number < 1:
                problems.append("parameters.max_new_tokens must be >= 1")
            elif max_new_tokens_limit is not None and number > max_new_tokens_limit:
                problems.append(
                    f"parameters.max_new_tokens must be <= {max_new_tokens_limit}, got {value}"
                )
    return problems


def build_request(
    conversations: Sequence[Sequence[Message]] | Sequence[Message],
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the scoring body for one conversation or a list of them.

    ``parameters`` are merged over :data:`DEFAULT_PARAMETERS`. Raises
    :class:`~phi_finetune.errors.DataValidationError` (a ``ValueError``) naming every problem
    when a conversation or parameter is malformed, whatever the type of the input.
    """
    problems: list[str] = []
    batch = _batch(conversations, problems)
    if not batch and not problems:
        problems.append("at least one conversation is needed")
    for index, conversation in enumerate(batch):
        problems.extend(validate_conversation(conversation, where=f"input_string[{index}]"))
    if parameters is None:
        merged = dict(DEFAULT_PARAMETERS)
    elif isinstance(parameters, Mapping):
        merged = {**DEFAULT_PARAMETERS, **parameters}
        problems.extend(_parameter_name_problems(parameters))
    else:
        merged = dict(DEFAULT_PARAMETERS)
        problems.append(
            f"parameters must be a mapping of name to value, got {type(parameters).__name__}"
        )
    problems.extend(validate_parameters(merged))
    body = {"input_data": {"input_string": batch, "parameters": merged}, "params": {}}
    if not problems:
        problems.extend(_encoding_problems(body))
    if problems:
        raise _invalid_request(problems)
    return body


def _invalid_request(problems: Sequence[str], *, source: str = "<request>") -> DataValidationError:
    """The error :func:`build_request` raises: one :class:`DataProblem` per problem."""
    return DataValidationError(
        "invalid scoring request: " + "; ".join(problems),
        problems=[
            DataProblem(
                source=source,
                line=None,
                field=None,
                message=problem,
                fix="pass [{'role': 'user', 'content': '...'}] (ending with a user turn) and "
                "known generation parameters",
                code="invalid-request",
            )
            for problem in problems
        ],
    )


def _batch(conversations: Any, problems: list[str]) -> list[Any]:
    """The conversations as a list of lists of message dicts (problems noted, never raised)."""
    if isinstance(conversations, str | bytes) or not isinstance(conversations, Sequence):
        problems.append(
            "conversations must be a list of messages or a list of conversations, got "
            f"{type(conversations).__name__}"
        )
        return []
    items = list(conversations)
    if items and isinstance(items[0], Mapping):
        items = [items]
    batch: list[Any] = []
    for index, conversation in enumerate(items):
        if isinstance(conversation, str | bytes) or not isinstance(conversation, Sequence):
            problems.append(
                f"input_string[{index}] must be a {{'role', 'content'}} message or a list of "
                f"them, got {type(conversation).__name__}"
            )
            continue
        batch.append([dict(m) if isinstance(m, Mapping) else m for m in conversation])
    return batch


def _parameter_name_problems(parameters: Mapping[Any, Any]) -> list[str]:
    return [
        f"parameters keys must be strings, got {_short(name)}"
        for name in parameters
        if not isinstance(name, str)
    ]


def _encoding_problems(body: Mapping[str, Any]) -> list[str]:
    """What stops ``body`` from being sent as strict JSON in UTF-8 (NaN, surrogates, objects)."""
    try:
        json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        return ["the request is nested too deeply to be sent as JSON"]
    except (TypeError, ValueError) as exc:
        return [f"the request cannot be sent as JSON: {exc}"]
    return []


@attrs.frozen
class ScoreResult:
    """A parsed scoring response: one generated text per input conversation."""

    outputs: tuple[str, ...]
    shape: str
    """``output`` for ``{"output": ...}``, ``indexed`` for ``[{"0": ...}]``."""
    raw: Any = attrs.field(repr=False, eq=False)

    @property
    def text(self) -> str:
        """The first (usually only) generated text."""
        return self.outputs[0] if self.outputs else ""


def parse_response(body: str | bytes | Any) -> ScoreResult:
    """Parse either response shape into a :class:`ScoreResult`.

    Raises :class:`~phi_finetune.errors.InvocationError` with a body excerpt for anything else.
    """
    data = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InvocationError(
                "the endpoint answered with a body that is not JSON",
                body_excerpt=_excerpt(body),
            ) from exc
    # Some containers JSON-encode the payload twice.
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return ScoreResult(outputs=(data,), shape="text", raw=body)
    if isinstance(data, Mapping) and "output" in data:
        output = data["output"]
        outputs = tuple(str(o) for o in output) if isinstance(output, list) else (str(output),)
        return ScoreResult(outputs=outputs, shape="output", raw=data)
    if isinstance(data, list) and data and all(isinstance(item, Mapping) for item in data):
        outputs_list: list[str] = []
        for item in data:
            if "0" in item:
                outputs_list.append(str(item["0"]))
            elif "output" in item:
                outputs_list.append(str(item["output"]))
            else:
                break
        else:
            return ScoreResult(outputs=tuple(outputs_list), shape="indexed", raw=data)
    raise InvocationError(
        "the endpoint answered in an unknown shape; expected {'output': ...} or [{'0': ...}]",
        body_excerpt=_excerpt(body),
    )


def _excerpt(body: Any, limit: int = 500) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return text if len(text) <= limit else text[:limit] + "..."
