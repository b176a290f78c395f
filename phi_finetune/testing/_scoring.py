"""Scorers answer scoring POSTs sent to a fake endpoint's scoring URI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Scorer", "echo_scorer", "last_user_message"]

Scorer = Callable[[Any, "str | None"], Any]
"""``scorer(request_json, deployment_name) -> JSON value or Reply``."""


def last_user_message(payload: Any) -> str:
    """The content of the last ``user`` turn of the first conversation ('' if none)."""
    try:
        conversations = payload["input_data"]["input_string"]
        conversation = conversations[0]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(conversation, str):
        return conversation
    if not isinstance(conversation, list):
        return ""
    for turn in reversed(conversation):
        if isinstance(turn, dict) and turn.get("role") == "user":
            return str(turn.get("content", ""))
    return ""


def echo_scorer(shape: Literal["output", "list"] = "output") -> Scorer:
    """A deterministic scorer answering ``echo: <last user message>``.

    ``shape="output"`` answers ``{"output": text}`` (the foundation-model inference container);
    ``shape="list"`` answers ``[{"0": text}]`` (the older MLflow scoring path).
    """
    if shape not in ("output", "list"):
        raise ValueError(f"shape must be 'output' or 'list', not {shape!r}")

    def score(payload: Any, deployment: str | None) -> Any:
        text = f"echo: {last_user_message(payload)}"
        return {"output": text} if shape == "output" else [{"0": text}]

    return score
