"""Limits and validation for requests to the local endpoint, independent of any route.

What a request may ask of the server, checked before any model work starts:

- the body: at most ``max_body_bytes``, strict UTF-8, JSON nested at most ``max_json_depth``
  levels, no lone surrogates (``"\\ud800"``) in any string (a tokenizer cannot encode them);
- the conversations: at most ``max_batch`` per request, ``max_messages`` per conversation and
  ``max_prompt_chars`` characters of content in all;
- each generation parameter: its type and a bounded range (:data:`PARAMETER_RULES`), so no
  value can exhaust memory (``num_beams``) or break sampling (``temperature`` NaN);
- the prompt tokens: with ``max_new_tokens`` they must fit the model's context
  (``context_length``, from the model config's ``max_position_embeddings``).

Every refusal is a :class:`RequestRejected` with the HTTP status to answer (400 for a body that
is not valid JSON/UTF-8, 413 for an oversized body, 422 for valid JSON that breaks a limit) and
a message naming the parameter or position and the allowed values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "PARAMETER_RULES",
    "RequestLimits",
    "RequestRejected",
    "check_prompt_tokens",
    "check_scoring_body",
    "parameter_problems",
    "parse_json_body",
]


class RequestRejected(ValueError):
    """A request the server refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@attrs.frozen(kw_only=True)
class RequestLimits:
    """What one request may ask of the local endpoint (see the module docstring)."""

    max_body_bytes: int = 1_000_000
    max_new_tokens: int = 512
    default_max_new_tokens: int = 200
    max_batch: int = 32
    max_messages: int = 4096
    max_prompt_chars: int = 50_000
    max_num_beams: int = 4
    max_json_depth: int = 32
    context_length: int | None = None

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.name == "context_length" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"RequestLimits.{field.name} must be an integer >= 1, got {value!r}"
                )


@attrs.frozen
class _Rule:
    kind: str  # "int", "number" or "bool"
    low: float | None = None
    high: float | None = None
    allowed: str = ""


#: Type and range of every generation parameter the server uses (``num_beams`` and
#: ``max_new_tokens`` are further capped by :class:`RequestLimits`).
PARAMETER_RULES: Mapping[str, _Rule] = {
    "max_new_tokens": _Rule("int", 1, None, "an integer >= 1"),
    "do_sample": _Rule("bool", allowed="true or false"),
    "return_full_text": _Rule("bool", allowed="true or false"),
    # 0 means greedy; a positive value below 1e-4 overflows the logits when sampling.
    "temperature": _Rule("number", 0, 100, "0 (greedy) or a number in [0.0001, 100]"),
    "top_p": _Rule("number", 0, 1, "a number in (0, 1]"),
    "top_k": _Rule("int", 0, 100_000, "an integer in [0, 100000] (0 disables top-k)"),
    "repetition_penalty": _Rule("number", 0.01, 10, "a number in [0.01, 10]"),
    "num_beams": _Rule("int", 1, None, "an integer >= 1"),
}
_MIN_TEMPERATURE = 1e-4


def parse_json_body(raw: bytes, limits: RequestLimits) -> Any:
    """The JSON document in ``raw``; :class:`RequestRejected` (400/413) when it is not usable."""
    if len(raw) > limits.max_body_bytes:
        raise RequestRejected(413, f"request body over the limit of {limits.max_body_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejected(
            400,
            f"request body is not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8 JSON",
        ) from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise RequestRejected(400, _too_deep(limits)) from None
    except json.JSONDecodeError as exc:
        raise RequestRejected(
            400, f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError:  # e.g. an integer with more digits than Python converts
        raise RequestRejected(400, "request body is not valid JSON") from None
    _check_tree(document, limits)
    return document


def _too_deep(limits: RequestLimits) -> str:
    return (
        f"request body is nested deeper than {limits.max_json_depth} levels; "
        "send the scoring contract's shape"
    )


def _check_tree(document: Any, limits: RequestLimits) -> None:
    """Depth and string checks, iteratively (a deep document must not exhaust the stack)."""
    stack: list[tuple[Any, str, int]] = [(document, "$", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict | list):
            if depth > limits.max_json_depth:
                raise RequestRejected(400, _too_deep(limits))
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key, f"{where} (a key)")
                    stack.append((item, f"{where}.{key}", depth + 1))
            else:
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestRejected(
            400,
            f"invalid Unicode at {where}: a lone surrogate (\\u{ord(text[exc.start]):04x}) at "
            f"character {exc.start}; send well-formed UTF-16 pairs or plain UTF-8",
        ) from None


def check_scoring_body(
    body: Any, limits: RequestLimits
) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """Conversations and the generation parameters to use (``max_new_tokens`` filled in).

    Raises :class:`RequestRejected` (422) naming every problem.
    """
    from phi_finetune.errors import LocalBackendError
    from phi_finetune.local.registry import conversations_from_input

    if not isinstance(body, dict) or not isinstance(body.get("input_data"), dict):
        raise RequestRejected(
            422,
            "expected {'input_data': {'input_string': [<conversation>, ...], 'parameters': {...}}}",
        )
    inner = body["input_data"]
    raw_parameters = inner.get("parameters")
    if raw_parameters is None:
        raw_parameters = {}
    if not isinstance(raw_parameters, dict):
        raise RequestRejected(422, "invalid scoring input: input_data.parameters must be an object")
    problems = parameter_problems(raw_parameters, limits)
    problems.extend(_shape_problems(inner.get("input_string"), limits))
    if problems:
        raise RequestRejected(422, "invalid scoring input: " + "; ".join(problems))
    try:
        conversations, parameters = conversations_from_input(
            body, max_new_tokens_limit=limits.max_new_tokens, max_batch=limits.max_batch
        )
    except LocalBackendError as exc:
        raise RequestRejected(422, str(exc)) from None
    parameters.setdefault(
        "max_new_tokens", min(limits.default_max_new_tokens, limits.max_new_tokens)
    )
    return conversations, parameters


def parameter_problems(parameters: Mapping[str, Any], limits: RequestLimits) -> list[str]:
    """One message per invalid generation parameter, naming it and what is allowed."""
    problems: list[str] = []
    for name, rule in PARAMETER_RULES.items():
        if name not in parameters:
            continue
        value = parameters[name]
        high = rule.high
        allowed = rule.allowed
        if name == "max_new_tokens":
            high, allowed = limits.max_new_tokens, f"an integer in [1, {limits.max_new_tokens}]"
        elif name == "num_beams":
            high, allowed = limits.max_num_beams, f"an integer in [1, {limits.max_num_beams}]"
        if not _valid(name, value, rule, high):
            problems.append(f"parameters.{name} must be {allowed}, got {_show(value)}")
    return problems


def _valid(name: str, value: Any, rule: _Rule, high: float | None) -> bool:
    if rule.kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if rule.kind == "int" and not isinstance(value, int):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    # Python ints compare exactly at any size (float() of a huge one would overflow).
    if rule.low is not None and value < rule.low:
        return False
    if high is not None and value > high:
        return False
    if name == "top_p" and value == 0:
        return False
    return not (name == "temperature" and 0 < value < _MIN_TEMPERATURE)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape_problems(input_string: Any, limits: RequestLimits) -> list[str]:
    """Size limits on ``input_string`` (``conversations_from_input`` checks its structure)."""
    if not isinstance(input_string, list):
        return []
    conversations: list[Any] = input_string
    if conversations and isinstance(conversations[0], Mapping):
        conversations = [conversations]
    problems: list[str] = []
    chars = 0
    for index, conversation in enumerate(conversations):
        if not isinstance(conversation, list):
            continue
        if len(conversation) > limits.max_messages:
            problems.append(
                f"input_string[{index}] has {len(conversation)} messages, over the limit of "
                f"{limits.max_messages}"
            )
        for message in conversation:
            if isinstance(message, Mapping) and isinstance(message.get("content"), str):
                chars += len(message["content"])
    if chars > limits.max_prompt_chars:
        problems.append(
            f"the conversations hold {chars} characters of content, over the limit of "
            f"{limits.max_prompt_chars}; shorten them or send them in separate requests"
        )
    return problems


def check_prompt_tokens(
    prompt_lengths: Sequence[int], max_new_tokens: int, limits: RequestLimits
) -> None:
    """Refuse (422) a prompt whose tokens plus ``max_new_tokens`` exceed the model's context."""
    context = limits.context_length
    if context is None:
        return
    problems = [
        f"input_string[{index}] is {length} tokens; with max_new_tokens {max_new_tokens} that "
        f"is over the model's context of {context} positions"
        for index, length in enumerate(prompt_lengths)
        if length + max_new_tokens > context
    ]
    if problems:
        raise RequestRejected(
            422,
            "invalid scoring input: "
            + "; ".join(problems)
            + "; shorten the conversation or lower max_new_tokens",
        )
