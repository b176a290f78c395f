"""Scoring requests from data rows (the reference's ``sample_score.json``, done right).

The reference sends a whole ``test_gen`` conversation, trailing assistant answer included; a
chat model should answer the *user*. We drop the trailing assistant turn(s) so the conversation
ends with a user turn, then build the body with :func:`phi_finetune.scoring.build_request`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from phi_finetune._atomic import atomic_write_bytes
from phi_finetune.errors import DataProblem, DataValidationError
from phi_finetune.scoring import build_request

__all__ = ["scoring_conversation", "scoring_request_from_row", "write_sample_score"]


def scoring_conversation(
    row: Mapping[str, Any] | list[Any], *, source: str = "<row>"
) -> list[dict[str, str]]:
    """The row's messages without trailing assistant turns (ends with a user turn)."""
    messages = row.get("messages") if isinstance(row, Mapping) else row
    if not isinstance(messages, list) or not messages:
        raise DataValidationError(
            "cannot build a scoring request: the row has no messages",
            problems=[
                DataProblem(
                    source,
                    None,
                    "messages",
                    "no non-empty 'messages' list",
                    "use a row with a conversation",
                    code="messages-missing",
                )
            ],
        )
    conversation = [dict(m) if isinstance(m, Mapping) else m for m in messages]
    while (
        conversation
        and isinstance(conversation[-1], dict)
        and conversation[-1].get("role") == "assistant"
    ):
        conversation.pop()
    if not conversation:
        raise DataValidationError(
            "cannot build a scoring request: the conversation has no user turn",
            problems=[
                DataProblem(
                    source,
                    None,
                    "messages",
                    "only assistant messages",
                    "use a row with a user turn",
                    code="last-not-user",
                )
            ],
        )
    return conversation


def scoring_request_from_row(
    row: Mapping[str, Any] | list[Any],
    parameters: Mapping[str, Any] | None = None,
    *,
    source: str = "<row>",
) -> dict[str, Any]:
    """The scoring body for one row (the reference's ``sample_score.json``).

    ``{"input_data": {"input_string": [conversation], "parameters": {...}}, "params": {}}``.

    ``parameters`` are merged over the reference's (temperature 0.6, top_p 0.9, do_sample,
    max_new_tokens 200). Raises :class:`DataValidationError` when the row cannot be scored.
    """
    conversation = scoring_conversation(row, source=source)
    try:
        return build_request([conversation], parameters)
    except ValueError as exc:
        raise DataValidationError(
            f"cannot build a scoring request from {source}: {exc}",
            problems=[
                DataProblem(
                    source,
                    None,
                    "messages",
                    str(exc),
                    "fix the conversation or the parameters",
                    code="invalid-request",
                )
            ],
        ) from exc


def write_sample_score(
    row: Mapping[str, Any] | list[Any],
    path: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """Write the scoring body for ``row`` to ``path`` (``sample_score.json``) atomically."""
    body = scoring_request_from_row(row, parameters)
    return atomic_write_bytes(
        path,
        orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n",
        mode=0o644,
    )
