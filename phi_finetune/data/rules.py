"""The validation rules: every rule has a stable code, a severity and a fix.

Rules (code, severity):

==========================  ========  ===================================================
code                        severity  when
==========================  ========  ===================================================
``invalid-encoding``        error     the line is not UTF-8
``invalid-json``            error     the line is not one JSON value (or uses NaN/Infinity)
``invalid-surrogate``       error     a string holds an unpaired UTF-16 surrogate
``not-an-object``           error     the record is not a JSON object
``messages-missing``        error     no ``messages`` key
``messages-not-list``       error     ``messages`` is not a list
``messages-empty``          error     ``messages`` is an empty list
``message-not-object``      error     a message is not an object
``role-missing``            error     a message has no ``role``
``role-invalid``            error     ``role`` is not system, user or assistant
``content-missing``         error     a message has no ``content``
``content-not-string``      error     ``content`` is not a string
``content-empty``           error     ``content`` is empty or whitespace only
``control-characters``      error     ``content`` holds control characters (not tab/CR/LF)
``system-not-first``        error     a system message anywhere but first
``same-role-twice``         error     two consecutive messages with the same role
``no-assistant``            error     (train) no assistant message at all
``last-not-assistant``      error     (train) the conversation does not end with assistant
``last-not-user``           error     (score) the conversation does not end with user
``too-long``                error     more tokens than ``max_tokens``
``duplicate-prompt-id``     error     a ``prompt_id`` seen before in the same split
``prompt-id-invalid``       error     ``prompt_id`` present but not a non-empty string
``prompt-invalid``          error     ``prompt`` present but not a string
``prompt-mismatch``         warning   ``prompt`` differs from the first user message
``leakage``                 warning   a test row shares prompt_id or first user message with train
``empty-file``              error     a file holds no record (empty, blank lines only, ``[]``)
``line-too-long``           error     a line (or JSON array element) over ``max_line_bytes``
``duplicate-key``           warning   a key repeated in one object (the last value is used)
==========================  ========  ===================================================

``prompt-mismatch`` is only a warning: ultrachat truecases its messages, so about one row in ten
differs from its ``prompt`` in case or whitespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias

import attrs

from phi_finetune.errors import ConfigurationError

__all__ = [
    "MODES",
    "PURPOSES",
    "RULES",
    "Issue",
    "Mode",
    "Purpose",
    "Rule",
    "check_mode",
    "is_error",
]

Mode: TypeAlias = Literal["strict", "skip", "report"]
Purpose: TypeAlias = Literal["train", "score"]
MODES = ("strict", "skip", "report")
PURPOSES = ("train", "score")

#: One problem found in a record: (rule code, field or ``None``, message).
Issue: TypeAlias = tuple[str, str | None, str]


@attrs.frozen
class Rule:
    """One validation rule: its stable code, severity and the fix a user should apply."""

    code: str
    severity: str
    description: str
    fix: str


def _rule(code: str, description: str, fix: str, severity: str = "error") -> Rule:
    return Rule(code=code, severity=severity, description=description, fix=fix)


RULES: Mapping[str, Rule] = {
    r.code: r
    for r in (
        _rule("invalid-encoding", "the line is not valid UTF-8", "re-save the file as UTF-8"),
        _rule(
            "invalid-json",
            "the line is not a single JSON value",
            "write one JSON object per line (JSON Lines); no NaN, no trailing commas",
        ),
        _rule(
            "invalid-surrogate",
            "a string holds an unpaired UTF-16 surrogate",
            "fix the text encoding (an emoji split in half?)",
        ),
        _rule(
            "not-an-object",
            "the record is not a JSON object",
            'make each record {"messages": [...]}',
        ),
        _rule("messages-missing", "no 'messages' key", "add a 'messages' list of {role, content}"),
        _rule("messages-not-list", "'messages' is not a list", "make 'messages' a list"),
        _rule("messages-empty", "'messages' is empty", "add the conversation or drop the row"),
        _rule(
            "message-not-object", "a message is not an object", 'use {"role": ..., "content": ...}'
        ),
        _rule("role-missing", "a message has no role", "add 'role': system, user or assistant"),
        _rule("role-invalid", "unknown role", "use one of system, user, assistant"),
        _rule("content-missing", "a message has no content", "add the 'content' text"),
        _rule("content-not-string", "content is not a string", "make 'content' a string"),
        _rule("content-empty", "content is empty or whitespace", "write the text or drop the turn"),
        _rule(
            "control-characters",
            "content holds control characters",
            "remove control characters other than tab, CR and LF",
        ),
        _rule("system-not-first", "system message not first", "move the system message to the top"),
        _rule(
            "same-role-twice",
            "two consecutive messages with the same role",
            "merge the two messages or add the missing turn between them",
        ),
        _rule("no-assistant", "no assistant message", "add the assistant answer to train on"),
        _rule(
            "last-not-assistant",
            "training conversation does not end with an assistant turn",
            "end each training conversation with the assistant's answer",
        ),
        _rule(
            "last-not-user",
            "scoring conversation does not end with a user turn",
            "drop the trailing assistant turn (scoring_request_from_row does this)",
        ),
        _rule(
            "too-long",
            "conversation longer than the token limit",
            "shorten or drop the conversation, or raise max_seq_length",
        ),
        _rule(
            "duplicate-prompt-id",
            "prompt_id seen before in this split",
            "drop the duplicate row or give it its own prompt_id",
        ),
        _rule(
            "prompt-id-invalid", "prompt_id is not a non-empty string", "use a string id or omit it"
        ),
        _rule("prompt-invalid", "prompt is not a string", "make 'prompt' a string or omit it"),
        _rule(
            "prompt-mismatch",
            "prompt differs from the first user message",
            "usually harmless (ultrachat truecases messages); the messages are what is trained on",
            "warning",
        ),
        _rule(
            "leakage",
            "test row shares its prompt_id or first user message with a train row",
            "drop the row from test (or from train) so evaluation is honest",
            "warning",
        ),
        _rule(
            "empty-file",
            "the file holds no record",
            "write at least one record, or leave the file out",
        ),
        _rule(
            "line-too-long",
            "a line or JSON array element is longer than max_line_bytes",
            "split the record, or raise max_line_bytes (--max-line-bytes) if it is genuine",
        ),
        _rule(
            "duplicate-key",
            "a key appears twice in one JSON object",
            "remove the repeated key (JSON keeps only its last value)",
            "warning",
        ),
    )
}


def is_error(code: str) -> bool:
    """Whether the rule ``code`` is an error (not a warning)."""
    return RULES[code].severity == "error"


def check_mode(mode: str, key: str) -> None:
    """Raise :class:`ConfigurationError` unless ``mode`` (argument ``key``) is a known mode."""
    if mode not in MODES:
        raise ConfigurationError(f"{key} must be strict, skip or report, got {mode!r}", key=key)
