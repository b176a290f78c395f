"""Record validation: parse a line, check a record field by field, check rows across a split.

The rules themselves (code, severity, fix) are listed in :mod:`phi_finetune.data.rules`; the
report they feed is :mod:`phi_finetune.data.report`. Every check appends ``(code, field,
message)`` issues; problems then carry the file and 1-based line of their row.

- :func:`parse_line`: one JSONL line to an object (encoding, JSON, surrogates).
- :func:`check_record`: one record: ``messages`` (shape, each turn's role and content, how the
  conversation ends), length in tokens, ``prompt_id`` and ``prompt``.
- :func:`check_duplicates_and_leakage`: a row against the rows before it (same split: duplicate
  ``prompt_id``; test splits: leakage from train).
- :func:`checked_rows`: every row of a split's sources, parsed and checked, streaming.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import orjson

from phi_finetune.data.records import (
    TokenizerLike,
    count_tokens,
    derive_prompt_id,
    estimate_tokens,
)
from phi_finetune.data.report import ValidationReport
from phi_finetune.data.rules import RULES, Issue, Mode, Purpose, Rule
from phi_finetune.data.sources import SourceProblem

if TYPE_CHECKING:
    from phi_finetune.data.sources import RowSource

__all__ = [
    "RULES",
    "Mode",
    "Purpose",
    "Rule",
    "ValidationReport",
]

_MISSING: Any = object()
_ROLES = ("system", "user", "assistant")
# C0 controls but tab, LF, CR; DEL; and lone surrogates (only reachable from Python sources).
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Splits read before the others, so test rows can be checked against train (leakage).
TRAIN_SPLITS = ("train_sft", "train_gen")
TEST_SPLITS = ("validation", "test_sft", "test_gen")

#: (source label, line (``None``: the whole source), parsed object, issues, facts, raw line)
Row: TypeAlias = tuple[str, int | None, Any, list[Issue], "RowFacts | None", bytes | None]


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- parsing
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
    issues: list[Issue] = []
    # Every key ends with '"' then ':' (maybe after blanks): more of those than keys parsed
    # means a key was repeated (or a string holds \": ), then the exact, slow check runs.
    keys = line.count(b'":')
    if b'" ' in line or b'"\t' in line or b'"\r' in line or b'"\n' in line:
        keys += len(_SPACED_COLON.findall(line))
    if keys > _shallow_key_count(obj) and keys > _key_count(obj):
        issues.extend(_duplicate_keys(line))
    return obj, issues, (b"\\u00" in line or b"\x7f" in line)


_SPACED_COLON = re.compile(rb'"[ \t\r\n]+:')


def _shallow_key_count(obj: Any) -> int:
    """Keys of the record and of its messages (the usual shape: no deeper objects)."""
    if type(obj) is not dict:
        return 0
    count = len(obj)
    messages = obj.get("messages")
    if type(messages) is list:
        for message in messages:
            if type(message) is dict:
                count += len(message)
    return count


def _key_count(obj: Any) -> int:
    count = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            stack.extend(v for v in item.values() if type(v) is dict or type(v) is list)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)
    return count


def _duplicate_keys(line: bytes) -> list[Issue]:
    """One warning per key repeated in an object of ``line`` (JSON keeps the last value)."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _value in items:
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(line.decode("utf-8"), object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []
    return [
        (
            "duplicate-key",
            key,
            f"key {_short(key)} appears more than once in one object; only the last value is used",
        )
        for key in repeated
    ]


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


# ----------------------------------------------------------------------------- one record
class RowFacts(NamedTuple):
    """What the checker learned about one record (for splitting, leakage and stats)."""

    prompt_id: str | None
    first_user: str | None
    messages: int
    chars: int
    tokens: int
    roles: tuple[int, int, int]


#: Tallies of the message loop: (system, user, assistant) counts, characters, first user text.
_Turns: TypeAlias = tuple[tuple[int, int, int], int, "str | None"]
_NO_TURNS: _Turns = ((0, 0, 0), 0, None)


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
    roles, chars, first_user = _check_messages(messages, purpose, scan_strings, issues)
    n_messages = len(messages) if type(messages) is list else 0
    tokens = _check_length(messages, n_messages, chars, max_tokens, tokenizer, issues)
    # The checkers run only when their rule could apply (this is the hot path).
    prompt_id = obj.get("prompt_id")
    if prompt_id is not None and (type(prompt_id) is not str or not prompt_id):
        _invalid_prompt_id(prompt_id, issues)
        prompt_id = None
    prompt = obj.get("prompt")
    if prompt is not None and (type(prompt) is not str or prompt != first_user):
        _check_prompt(prompt, first_user, issues)
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
        roles=roles,
    )
    return issues, facts


def _check_messages(messages: Any, purpose: str, scan_strings: bool, issues: list[Issue]) -> _Turns:
    """``messages`` is a non-empty list; then every turn, then how the conversation ends."""
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
        turns = _check_turns(messages, scan_strings, issues)
        _check_ending(messages, purpose, turns[0][2], issues)  # [0][2]: assistant turns
        return turns
    return _NO_TURNS


def _check_turns(messages: list[Any], scan_strings: bool, issues: list[Issue]) -> _Turns:
    """Each message: an object with a valid role and text content; roles alternate."""
    n_system = n_user = n_assistant = chars = 0
    first_user: str | None = None
    prev: Any = None
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
        # Most turns pass: the checkers run only where one of their rules could apply.
        if role == prev or role not in _ROLES or (index and role == "system"):
            role = _check_role(role, index, prev, issues)
        if role == "assistant":
            n_assistant += 1
        elif role == "user":
            n_user += 1
            if first_user is None and type(content) is str:
                first_user = content
        elif role == "system":
            n_system += 1
        prev = role
        if not scan_strings and type(content) is str and content and not content.isspace():
            chars += len(content)
        else:
            chars += _check_content(content, index, scan_strings, issues)
    return (n_system, n_user, n_assistant), chars, first_user


def _check_role(role: Any, index: int, prev: Any, issues: list[Issue]) -> Any:
    """The message's role, or ``None`` when it is missing or unknown (reported)."""
    if role is _MISSING or role is None:
        issues.append(("role-missing", f"messages[{index}].role", "no 'role'"))
        return None
    if role == "system" and index:
        issues.append(
            (
                "system-not-first",
                f"messages[{index}].role",
                f"system message at position {index}; only the first may be system",
            )
        )
    elif role not in _ROLES:
        issues.append(
            (
                "role-invalid",
                f"messages[{index}].role",
                f"role {_short(role)} is not one of system, user, assistant",
            )
        )
        return None
    if role == prev:
        issues.append(
            (
                "same-role-twice",
                f"messages[{index}].role",
                f"messages {index - 1} and {index} are both {role}",
            )
        )
    return role


def _check_content(content: Any, index: int, scan_strings: bool, issues: list[Issue]) -> int:
    """Check one message's content; return its length in characters (0 if not text)."""
    if content is _MISSING:
        issues.append(("content-missing", f"messages[{index}].content", "no 'content'"))
        return 0
    if type(content) is not str:
        issues.append(
            (
                "content-not-string",
                f"messages[{index}].content",
                f"content is {type(content).__name__}, not a string",
            )
        )
        return 0
    if not content or content.isspace():
        issues.append(("content-empty", f"messages[{index}].content", "content is empty or blank"))
    elif scan_strings:
        _check_characters(content, index, issues)
    return len(content)


def _check_characters(content: str, index: int, issues: list[Issue]) -> None:
    """The first control character or unpaired surrogate in ``content``, if any."""
    bad = _BAD_CHARS.search(content)
    if bad is None:
        return
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


def _check_ending(messages: list[Any], purpose: str, n_assistant: int, issues: list[Issue]) -> None:
    """Training ends with assistant; scoring with user; ``gen`` with either."""
    index = len(messages) - 1
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


def _check_length(
    messages: Any,
    n_messages: int,
    chars: int,
    max_tokens: int | None,
    tokenizer: TokenizerLike | None,
    issues: list[Issue],
) -> int:
    """The conversation's tokens (tokenizer or estimate), reported when over ``max_tokens``."""
    if tokenizer is not None and type(messages) is list:
        tokens = count_tokens([m for m in messages if type(m) is dict], tokenizer)
    else:
        tokens = estimate_tokens(chars, n_messages)
    if max_tokens is not None and tokens > max_tokens:
        issues.append(
            ("too-long", "messages", f"{tokens} tokens, more than the limit of {max_tokens}")
        )
    return tokens


def _invalid_prompt_id(prompt_id: Any, issues: list[Issue]) -> None:
    """A given ``prompt_id`` that is not a non-empty string: reported, then ignored."""
    issues.append(("prompt-id-invalid", "prompt_id", f"prompt_id is {_short(prompt_id)}"))


def _check_prompt(prompt: Any, first_user: str | None, issues: list[Issue]) -> None:
    """A given ``prompt`` must be a string; it should equal the first user message."""
    if type(prompt) is not str:
        issues.append(("prompt-invalid", "prompt", f"prompt is {type(prompt).__name__}"))
    elif first_user is not None and prompt != first_user:
        issues.append(("prompt-mismatch", "prompt", "prompt differs from the first user message"))


# ----------------------------------------------------------------------------- across rows
def key_digest(text: str) -> bytes:
    """A compact, collision-safe key for duplicate and leakage sets."""
    return hashlib.blake2b(text.strip().encode("utf-8", "surrogatepass"), digest_size=16).digest()


def check_duplicates_and_leakage(
    issues: list[Issue],
    facts: RowFacts,
    split: str,
    seen: set[bytes],
    train_keys: set[bytes] | None,
) -> None:
    """Duplicate prompt_id within the split; leakage of test rows against train rows.

    ``train_keys`` is ``None`` when there is no test split to check (nothing to remember).
    """
    prompt_id = facts.prompt_id
    id_key = key_digest(prompt_id) if prompt_id is not None else None
    if id_key is not None:
        if id_key in seen:
            issues.append(
                (
                    "duplicate-prompt-id",
                    "prompt_id",
                    f"prompt_id {prompt_id!r:.24} seen before in {split}",
                )
            )
        seen.add(id_key)
    if train_keys is None:
        return
    first = facts.first_user
    first_key = key_digest("\x00user:" + first) if first is not None else None
    if split in TRAIN_SPLITS:
        if id_key is not None:
            train_keys.add(id_key)
        if first_key is not None:
            train_keys.add(first_key)
    elif split in TEST_SPLITS:
        if id_key is not None and id_key in train_keys:
            issues.append(("leakage", "prompt_id", f"prompt_id {prompt_id!r:.24} is also in train"))
        elif first_key is not None and first_key in train_keys:
            issues.append(
                ("leakage", "messages[0].content", "the first user message also appears in train")
            )


def purpose_for(split: str, purpose: str | None) -> str:
    """The purpose a split is checked for: the given one, else ``gen`` for ``*_gen`` splits."""
    if purpose is not None:
        return purpose
    return "gen" if split.endswith("_gen") else "train"


def checked_rows(
    sources: Sequence[RowSource],
    *,
    purpose: str,
    max_tokens: int | None,
    tokenizer: TokenizerLike | None,
    limit: int | None = None,
    pick: set[int] | None = None,
    report_empty: bool = False,
) -> Iterator[Row]:
    """Every row of ``sources``, parsed and checked (``limit``: the first n; ``pick``: these).

    ``report_empty``: a source without a single record yields one ``empty-file`` row.
    """
    index = -1
    for source in sources:
        label = source.label
        before = index
        for line, payload in source.rows():
            index += 1
            if limit is not None and index >= limit:
                return
            if pick is not None and index not in pick:
                continue
            raw: bytes | None = None
            if type(payload) is SourceProblem:
                yield label, line, _MISSING, [(payload.code, None, payload.message)], None, None
                continue
            if type(payload) is bytes:
                raw = payload
                obj, issues, scan = parse_line(payload)
                if obj is _MISSING:
                    yield label, line, obj, issues, None, None
                    continue
            else:
                obj, issues, scan = payload, [], True
            more, facts = check_record(
                obj,
                purpose=purpose,
                scan_strings=scan,
                max_tokens=max_tokens,
                tokenizer=tokenizer,
            )
            if issues:
                more = issues + more
            yield label, line, obj, more, facts, raw
        if report_empty and index == before:
            empty = ("empty-file", None, "no records: the file is empty or holds only blanks/[]")
            yield label, None, _MISSING, [empty], None, None
