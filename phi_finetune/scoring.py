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
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from phi_finetune.errors import InvocationError

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
        if role not in ROLES:
            problems.append(f"{here}.role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{here}.content must be a non-empty string")
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
            problems.append(f"parameters.{name} must be {names}, got {value!r}")
            continue
        number = float(parameters[name])
        if name == "temperature" and number < 0:
            problems.append("parameters.temperature must be >= 0")
        if name == "top_p" and not 0 < number <= 1:
            problems.append("parameters.top_p must be in (0, 1]")
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

    ``parameters`` are merged over :data:`DEFAULT_PARAMETERS`. Raises ``ValueError`` naming the
    problem when a conversation or parameter is malformed.
    """
    items: list[Any] = list(conversations)
    if items and isinstance(items[0], Mapping):
        batch: list[list[dict[str, str]]] = [[dict(m) for m in items]]
    else:
        batch = [[dict(m) for m in conv] for conv in items]
    problems: list[str] = []
    if not batch:
        problems.append("at least one conversation is needed")
    for index, conversation in enumerate(batch):
        problems.extend(validate_conversation(conversation, where=f"input_string[{index}]"))
    merged = {**DEFAULT_PARAMETERS, **(parameters or {})}
    problems.extend(validate_parameters(merged))
    if problems:
        raise ValueError("invalid scoring request: " + "; ".join(problems))
    return {"input_data": {"input_string": batch, "parameters": merged}, "params": {}}


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
