"""Record validation: every rule has a stable code; problems carry file and 1-based line.

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
==========================  ========  ===================================================

``prompt-mismatch`` is only a warning: ultrachat truecases its messages, so about one row in ten
differs from its ``prompt`` in case or whitespace.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple, TypeAlias

import attrs
import orjson

from phi_finetune.data.records import (
    TokenizerLike,
    count_tokens,
    derive_prompt_id,
    estimate_tokens,
)
from phi_finetune.errors import DataProblem, DataValidationError

__all__ = [
    "RULES",
    "Mode",
    "Purpose",
    "Rule",
    "ValidationReport",
]

Mode: TypeAlias = Literal["strict", "skip", "report"]
Purpose: TypeAlias = Literal["train", "score"]
MODES = ("strict", "skip", "report")
PURPOSES = ("train", "score")


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
    )
}

_MISSING: Any = object()
_ROLES = ("system", "user", "assistant")
# C0 controls but tab, LF, CR; DEL; and lone surrogates (only reachable from Python sources).
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# (code, field, message)
Issue: TypeAlias = tuple[str, str | None, str]


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_line(line: bytes) -> tuple[Any, list[Issue], bool]:
    """Parse one JSONL line: (object or _MISSING, issues, strings_need_scan)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return _MISSING, [("invalid-encoding", None, f"not UTF-8 at byte {uexc.start}")], False
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as jexc:
            return _MISSING, [("invalid-json", None, f"not valid JSON: {jexc}")], False
        if _contains_surrogate(obj):
            return obj, [], True
        return _MISSING, [("invalid-json", None, f"not valid JSON: {exc}")], False
    # Escaped controls (\u0001) survive JSON; raw DEL is legal JSON. Scan only when present.
    return obj, [], (b"\\u00" in line or b"\x7f" in line)


def _contains_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class RowFacts(NamedTuple):
    """What the checker learned about one record (for splitting, leakage and stats)."""

    prompt_id: str | None
    first_user: str | None
    messages: int
    chars: int
    tokens: int
    roles: tuple[int, int, int]


def check_record(
    obj: Any,
    *,
    purpose: str,
    scan_strings: bool,
    max_tokens: int | None = None,
    tokenizer: TokenizerLike | None = None,
) -> tuple[list[Issue], RowFacts | None]:
    """Check one parsed record. ``purpose`` is ``train``, ``score`` or ``gen`` (either end)."""
    issues: list[Issue] = []
    if type(obj) is not dict:
        issues.append(("not-an-object", None, f"expected an object, got {type(obj).__name__}"))
        return issues, None
    messages = obj.get("messages", _MISSING)
    n_system = n_user = n_assistant = chars = 0
    first_user: str | None = None
    if messages is _MISSING:
        issues.append(("messages-missing", "messages", "no 'messages' key"))
    elif type(messages) is not list:
        issues.append(
            (
                "messages-not-list",
                "messages",
                f"'messages' is {type(messages).__name__}, not a list",
            )
        )
    elif not messages:
        issues.append(("messages-empty", "messages", "'messages' is an empty list"))
    else:
        prev: Any = None
        index = 0
        for index, message in enumerate(messages):
            if type(message) is not dict:
                issues.append(
                    (
                        "message-not-object",
                        f"messages[{index}]",
                        f"message is {type(message).__name__}, not an object",
                    )
                )
                prev = None
                continue
            role = message.get("role", _MISSING)
            content = message.get("content", _MISSING)
            if role is _MISSING or role is None:
                issues.append(("role-missing", f"messages[{index}].role", "no 'role'"))
                role = None
            elif role == "assistant":
                n_assistant += 1
            elif role == "user":
                n_user += 1
                if first_user is None and type(content) is str:
                    first_user = content
            elif role == "system":
                n_system += 1
                if index:
                    issues.append(
                        (
                            "system-not-first",
                            f"messages[{index}].role",
                            f"system message at position {index}; only the first may be system",
                        )
                    )
            else:
                issues.append(
                    (
                        "role-invalid",
                        f"messages[{index}].role",
                        f"role {_short(role)} is not one of system, user, assistant",
                    )
                )
                role = None
            if role is not None and role == prev:
                issues.append(
                    (
                        "same-role-twice",
                        f"messages[{index}].role",
                        f"messages {index - 1} and {index} are both {role}",
                    )
                )
            prev = role
            if content is _MISSING:
                issues.append(("content-missing", f"messages[{index}].content", "no 'content'"))
            elif type(content) is not str:
                issues.append(
                    (
                        "content-not-string",
                        f"messages[{index}].content",
                        f"content is {type(content).__name__}, not a string",
                    )
                )
            else:
                chars += len(content)
                if not content or content.isspace():
                    issues.append(
                        ("content-empty", f"messages[{index}].content", "content is empty or blank")
                    )
                elif scan_strings:
                    bad = _BAD_CHARS.search(content)
                    if bad is not None:
                        ch = bad.group()
                        if "\ud800" <= ch <= "\udfff":
                            issues.append(
                                (
                                    "invalid-surrogate",
                                    f"messages[{index}].content",
                                    f"unpaired surrogate U+{ord(ch):04X} at char {bad.start()}",
                                )
                            )
                        else:
                            issues.append(
                                (
                                    "control-characters",
                                    f"messages[{index}].content",
                                    f"control character U+{ord(ch):04X} at character {bad.start()}",
                                )
                            )
        last = messages[-1]
        last_role = last.get("role") if type(last) is dict else None
        if purpose == "train":
            if not n_assistant:
                issues.append(("no-assistant", "messages", "no assistant message to train on"))
            elif last_role != "assistant":
                issues.append(
                    (
                        "last-not-assistant",
                        f"messages[{index}].role",
                        f"training conversation ends with {_short(last_role)}, not assistant",
                    )
                )
        elif purpose == "score":
            if last_role != "user":
                issues.append(
                    (
                        "last-not-user",
                        f"messages[{index}].role",
                        f"scoring conversation ends with {_short(last_role)}, not user",
                    )
                )
        elif purpose == "gen" and last_role not in ("user", "assistant"):
            issues.append(
                (
                    "last-not-user",
                    f"messages[{index}].role",
                    f"conversation ends with {_short(last_role)}, not user or assistant",
                )
            )
    n_messages = len(messages) if type(messages) is list else 0
    if tokenizer is not None and type(messages) is list:
        tokens = count_tokens([m for m in messages if type(m) is dict], tokenizer)
    else:
        tokens = estimate_tokens(chars, n_messages)
    if max_tokens is not None and tokens > max_tokens:
        issues.append(
            ("too-long", "messages", f"{tokens} tokens, more than the limit of {max_tokens}")
        )
    prompt_id = obj.get("prompt_id", _MISSING)
    if prompt_id is _MISSING or prompt_id is None:
        prompt_id = None
    elif type(prompt_id) is not str or not prompt_id:
        issues.append(("prompt-id-invalid", "prompt_id", f"prompt_id is {_short(prompt_id)}"))
        prompt_id = None
    prompt = obj.get("prompt", _MISSING)
    if prompt is not _MISSING and prompt is not None:
        if type(prompt) is not str:
            issues.append(("prompt-invalid", "prompt", f"prompt is {type(prompt).__name__}"))
        elif first_user is not None and prompt != first_user:
            issues.append(
                ("prompt-mismatch", "prompt", "prompt differs from the first user message")
            )
    if prompt_id is None:
        basis = prompt if type(prompt) is str else first_user
        if basis is not None:
            prompt_id = derive_prompt_id(basis)
    facts = RowFacts(
        prompt_id=prompt_id,
        first_user=first_user,
        messages=n_messages,
        chars=chars,
        tokens=tokens,
        roles=(n_system, n_user, n_assistant),
    )
    return issues, facts


def key_digest(text: str) -> bytes:
    """A compact, collision-safe key for duplicate and leakage sets."""
    return hashlib.blake2b(text.strip().encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


@attrs.frozen
class ValidationReport:
    """The outcome of validating one or more splits. ``str(report)`` is a readable summary.

    ``problems`` holds at most ``max_problems`` problems (all errors before warnings are cut);
    the counts always cover every problem.
    """

    mode: str
    rows_checked: int
    rows_invalid: int
    rows_with_warnings: int
    errors: int
    warnings: int
    by_code: Mapping[str, int] = attrs.field(converter=_sorted_counts)
    splits: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    problems: tuple[DataProblem, ...] = ()
    max_tokens: int | None = None
    token_count: str = "estimate"
    purpose: str | None = None

    @property
    def ok(self) -> bool:
        """``True`` when there is no error (warnings allowed)."""
        return self.errors == 0

    @property
    def rows_valid(self) -> int:
        return self.rows_checked - self.rows_invalid

    @property
    def problems_truncated(self) -> bool:
        return len(self.problems) < self.errors + self.warnings

    def error_problems(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == "error"]

    def summary(self) -> str:
        status = "valid" if self.ok else "INVALID"
        lines = [
            f"{status}: {self.rows_checked} rows checked, {self.rows_invalid} invalid, "
            f"{self.errors} errors, {self.warnings} warnings (mode {self.mode}, "
            f"tokens: {self.token_count}"
            + (f", limit {self.max_tokens})" if self.max_tokens is not None else ")")
        ]
        for split, counts in self.splits.items():
            lines.append(
                f"  {split}: {counts.get('rows', 0)} rows, {counts.get('invalid', 0)} invalid"
            )
        if self.by_code:
            lines.append("  by code: " + ", ".join(f"{c}={n}" for c, n in self.by_code.items()))
        return "\n".join(lines)

    def format(self, limit: int | None = 50) -> str:
        """The summary followed by up to ``limit`` problems (``None``: every stored one)."""
        shown = self.problems if limit is None else self.problems[:limit]
        lines = [self.summary()]
        lines.extend(f"{p.severity}: {p} [{p.code}]" for p in shown)
        more = self.errors + self.warnings - len(shown)
        if more > 0:
            lines.append(f"... and {more} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "purpose": self.purpose,
            "rows_checked": self.rows_checked,
            "rows_valid": self.rows_valid,
            "rows_invalid": self.rows_invalid,
            "rows_with_warnings": self.rows_with_warnings,
            "errors": self.errors,
            "warnings": self.warnings,
            "by_code": dict(self.by_code),
            "splits": {k: dict(v) for k, v in self.splits.items()},
            "max_tokens": self.max_tokens,
            "token_count": self.token_count,
            "problems": [p.to_dict() for p in self.problems],
            "problems_truncated": self.problems_truncated,
        }

    def to_json(self, *, indent: bool = True) -> str:
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.to_dict(), option=option).decode("utf-8")

    def raise_for_errors(self, message: str = "the data has problems") -> None:
        """Raise :class:`DataValidationError` (first problems and totals) when not :attr:`ok`."""
        if self.ok:
            return
        counts = ", ".join(f"{c}={n}" for c, n in self.by_code.items())
        raise DataValidationError(
            f"{message}: {self.errors} errors in {self.rows_invalid} of {self.rows_checked} rows "
            f"({counts}). Fix them, or pass on_invalid='skip' to drop those rows.",
            problems=self.error_problems(),
            total=self.errors,
        )


class ReportBuilder:
    """Accumulates problems while records stream by (bounded memory)."""

    def __init__(
        self,
        *,
        mode: str,
        purpose: str | None,
        max_tokens: int | None,
        token_count: str,
        max_problems: int = 10_000,
    ) -> None:
        self.mode = mode
        self.purpose = purpose
        self.max_tokens = max_tokens
        self.token_count = token_count
        self.max_problems = max_problems
        self.rows = 0
        self.invalid = 0
        self.warned = 0
        self.errors = 0
        self.warnings = 0
        self.by_code: Counter[str] = Counter()
        self.splits: dict[str, dict[str, int]] = {}
        self.problems: list[DataProblem] = []
        self.warning_problems: list[DataProblem] = []

    def row(self, split: str, source: str, line: int | None, issues: Iterable[Issue]) -> bool:
        """Record one row's issues; return ``True`` when it has an error."""
        counts = self.splits.setdefault(split, {"rows": 0, "invalid": 0})
        counts["rows"] += 1
        self.rows += 1
        has_error = has_warning = False
        for code, field, message in issues:
            rule = RULES[code]
            self.by_code[code] += 1
            target = self.problems
            if rule.severity == "error":
                self.errors += 1
                has_error = True
            else:
                self.warnings += 1
                has_warning = True
                target = self.warning_problems
            if len(target) < self.max_problems:
                target.append(
                    DataProblem(
                        source=source,
                        line=line,
                        field=field,
                        message=message,
                        fix=rule.fix,
                        severity=rule.severity,
                        code=code,
                    )
                )
        if has_error:
            self.invalid += 1
            counts["invalid"] += 1
        if has_warning:
            self.warned += 1
        return has_error

    def extra(self, source: str, line: int | None, issue: Issue) -> None:
        """Add a problem found after the row was counted (e.g. leakage)."""
        code, field, message = issue
        rule = RULES[code]
        self.by_code[code] += 1
        if rule.severity == "error":
            self.errors += 1
            target = self.problems
        else:
            self.warnings += 1
            target = self.warning_problems
        if len(target) < self.max_problems:
            target.append(DataProblem(source, line, field, message, rule.fix, rule.severity, code))

    def build(self) -> ValidationReport:
        room = max(self.max_problems - len(self.problems), 0)
        return ValidationReport(
            mode=self.mode,
            purpose=self.purpose,
            rows_checked=self.rows,
            rows_invalid=self.invalid,
            rows_with_warnings=self.warned,
            errors=self.errors,
            warnings=self.warnings,
            by_code=dict(self.by_code),
            splits={k: dict(v) for k, v in self.splits.items()},
            problems=tuple(self.problems) + tuple(self.warning_problems[:room]),
            max_tokens=self.max_tokens,
            token_count=self.token_count,
        )
