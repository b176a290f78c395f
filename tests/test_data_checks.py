"""The per-field checks of ``check_record`` (issue order, fast paths) and the data modules' size."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import phi_finetune.data as data
from phi_finetune.data.validation import check_record

DATA_DIR = Path(data.__file__).parent


def issues_of(record: Any, *, purpose: str = "train", scan: bool = True, **kw: Any) -> list[Any]:
    return check_record(record, purpose=purpose, scan_strings=scan, **kw)[0]


def test_issues_keep_the_order_role_then_repeat_then_content_then_ending() -> None:
    record = {
        "prompt_id": "",
        "prompt": 3,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": 5},
            {"role": "system", "content": "  "},
            {"content": "x\u0007"},
            "not a message",
            {"role": "bot", "content": "y"},
        ],
    }
    found = [(code, field) for code, field, _message in issues_of(record, max_tokens=1)]
    assert found == [
        ("system-not-first", "messages[1].role"),
        ("content-not-string", "messages[1].content"),
        ("system-not-first", "messages[2].role"),
        ("same-role-twice", "messages[2].role"),
        ("content-empty", "messages[2].content"),
        ("role-missing", "messages[3].role"),
        ("control-characters", "messages[3].content"),
        ("message-not-object", "messages[4]"),
        ("role-invalid", "messages[5].role"),
        ("no-assistant", "messages"),
        ("too-long", "messages"),
        ("prompt-id-invalid", "prompt_id"),
        ("prompt-invalid", "prompt"),
    ]


def test_facts_count_roles_characters_and_derive_the_prompt_id() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
        ]
    }
    issues, facts = check_record(record, purpose="train", scan_strings=False)
    assert issues == [] and facts is not None
    assert facts.roles == (1, 1, 1)
    assert facts.chars == len("be brief") + len("hello") + len("hi")
    assert facts.first_user == "hello"
    assert facts.prompt_id == data.derive_prompt_id("hello")


class Text(str):
    """A ``str`` subclass: not a plain string to the checks."""


def test_a_str_subclass_prompt_equal_to_the_first_user_message_is_still_invalid() -> None:
    record = {
        "prompt": Text("hello"),
        "messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "x"}],
    }
    assert [code for code, _f, _m in issues_of(record)] == ["prompt-invalid"]


@pytest.mark.parametrize(
    ("purpose", "last", "code"),
    [("train", "user", "last-not-assistant"), ("score", "assistant", "last-not-user")],
)
def test_the_ending_is_checked_for_the_purpose(purpose: str, last: str, code: str) -> None:
    first = "assistant" if last == "user" else "user"
    record = {"messages": [{"role": first, "content": "a"}, {"role": last, "content": "b"}]}
    found = issues_of(record, purpose=purpose)
    assert [(c, f) for c, f, _m in found] == [(code, "messages[1].role")]


def test_escaped_controls_are_found_only_when_strings_are_scanned() -> None:
    record = {
        "messages": [{"role": "user", "content": "a\x01"}, {"role": "assistant", "content": "b"}]
    }
    assert [c for c, _f, _m in issues_of(record, scan=True)] == ["control-characters"]
    assert issues_of(record, scan=False) == []


def test_old_module_paths_name_the_same_objects() -> None:
    from phi_finetune.data.dataset import PreparedData, UltraChatDataset
    from phi_finetune.data.validation import RULES, Rule, ValidationReport

    assert PreparedData is data.PreparedData and UltraChatDataset is data.UltraChatDataset
    assert RULES is data.RULES and Rule is data.Rule and ValidationReport is data.ValidationReport


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.py")), ids=lambda p: p.name)
def test_data_modules_stay_small(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count("\n") <= 600, f"{path.name} has {source.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, f"{path.name}: functions over 80 lines: {', '.join(long)}"
