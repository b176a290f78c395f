"""Every validation rule: one failing record each, with the exact file and line reported."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phi_finetune.data import RULES, UltraChatDataset, ValidationReport
from phi_finetune.errors import DataValidationError

GOOD: dict[str, Any] = {
    "prompt": "How do I boil an egg?",
    "messages": [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Six minutes in simmering water."},
    ],
}


def conv(*pairs: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in pairs], **extra}


U, A, S = "user", "assistant", "system"

# code -> the raw JSONL text of one failing line
CASES: dict[str, bytes] = {
    "invalid-encoding": b'{"messages": "\xff\xfe"}',
    "invalid-json": b'{"messages": [}',
    "invalid-surrogate": b'{"messages": [{"role": "user", "content": "a\\ud800b"},'
    b' {"role": "assistant", "content": "ok"}]}',
    "not-an-object": b"[1, 2, 3]",
    "messages-missing": b'{"prompt": "hi"}',
    "messages-not-list": b'{"messages": "hello"}',
    "messages-empty": b'{"messages": []}',
    "message-not-object": b'{"messages": ["hello", {"role": "assistant", "content": "x"}]}',
    "role-missing": json.dumps(
        {"messages": [{"content": "hi"}, {"role": A, "content": "x"}]}
    ).encode(),
    "role-invalid": json.dumps(conv(("bot", "hi"), (A, "x"))).encode(),
    "content-missing": json.dumps(
        {"messages": [{"role": U}, {"role": A, "content": "x"}]}
    ).encode(),
    "content-not-string": json.dumps(
        {"messages": [{"role": U, "content": 5}, {"role": A, "content": "x"}]}
    ).encode(),
    "content-empty": json.dumps(conv((U, "   \n"), (A, "x"))).encode(),
    "control-characters": json.dumps(conv((U, "bell\u0007"), (A, "x"))).encode(),
    "system-not-first": json.dumps(conv((U, "hi"), (S, "be nice"), (A, "x"))).encode(),
    "same-role-twice": json.dumps(conv((U, "hi"), (U, "again"), (A, "x"))).encode(),
    "no-assistant": json.dumps(conv((S, "sys"), (U, "hi"))).encode(),
    "last-not-assistant": json.dumps(conv((U, "hi"), (A, "x"), (U, "and?"))).encode(),
    "too-long": json.dumps(conv((U, "word " * 200), (A, "x"))).encode(),
    "duplicate-prompt-id": json.dumps({**GOOD, "prompt_id": "same"}).encode(),
    "prompt-id-invalid": json.dumps({**GOOD, "prompt_id": 12}).encode(),
    "prompt-invalid": json.dumps({**GOOD, "prompt": ["x"]}).encode(),
    "prompt-mismatch": json.dumps({**GOOD, "prompt": "how do i boil an egg"}).encode(),
    "duplicate-key": b'{"messages": [{"role": "user", "content": "hi", "role": "user"},'
    b' {"role": "assistant", "content": "x"}]}',
}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_rule_reports_code_file_and_line(tmp_path: Path, code: str) -> None:
    first = json.dumps({**GOOD, "prompt_id": "same"} if code == "duplicate-prompt-id" else GOOD)
    path = write_lines(tmp_path / "train.jsonl", [first.encode(), b"", CASES[code]])
    report = UltraChatDataset.from_files(path).validate(mode="report", max_tokens=100)
    found = [p for p in report.problems if p.code == code]
    assert found, report.format()
    assert all(p.line == 3 and p.source == str(path) for p in found)
    assert report.by_code[code] >= 1
    assert found[0].severity == RULES[code].severity
    # nothing is reported on line 1 (the good record) and the blank line 2 is skipped
    assert not [p for p in report.problems if p.line in (1, 2)]


def test_rule_table_is_covered() -> None:
    # empty-file and line-too-long concern whole files: tests/test_data_files.py
    covered = set(CASES) | {"last-not-user", "leakage", "empty-file", "line-too-long"}
    assert covered == set(RULES)


def test_last_not_user_for_scoring_purpose(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "score.jsonl", [json.dumps(GOOD).encode()])
    report = UltraChatDataset.from_files(path).validate(mode="report", purpose="score")
    assert [p.code for p in report.problems] == ["last-not-user"]
    assert report.problems[0].line == 1


def test_control_characters_and_surrogates_from_python_records() -> None:
    records = [conv((U, "a\ud800"), (A, "x")), conv((U, "a\x1bb"), (A, "x"))]
    report = UltraChatDataset.from_records(records).validate(mode="report")
    assert [(p.line, p.code) for p in report.problems] == [
        (1, "invalid-surrogate"),
        (2, "control-characters"),
    ]


def test_strict_raises_with_problems_and_totals(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [b"{", b"[]", json.dumps(GOOD).encode()])
    with pytest.raises(DataValidationError) as info:
        UltraChatDataset.from_files(path).validate()
    err = info.value
    assert err.total == 2
    assert [p.line for p in err.problems] == [1, 2]
    assert f"{path}:1" in str(err)


def test_report_is_printable_and_json(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [b"{", json.dumps(GOOD).encode()])
    report = UltraChatDataset.from_files(path).validate(mode="report")
    assert isinstance(report, ValidationReport)
    assert not report.ok
    assert report.rows_checked == 2 and report.rows_invalid == 1 and report.rows_valid == 1
    text = str(report)
    assert "INVALID" in text and f"{path}:1" in text and "invalid-json" in text
    data = json.loads(report.to_json())
    assert data["errors"] == 1 and data["problems"][0]["line"] == 1
    assert data["problems"][0]["code"] == "invalid-json"


def test_tokenizer_is_used_when_given() -> None:
    class Tok:
        def encode(self, text: str) -> list[int]:
            return [0] * len(text)  # one token per character

    ds = UltraChatDataset.from_records([GOOD])
    assert ds.validate(mode="report", max_tokens=40).ok  # estimate: ~20 tokens
    report = ds.validate(mode="report", max_tokens=40, tokenizer=Tok())
    assert report.by_code == {"too-long": 1}
    assert report.token_count == "tokenizer"
    assert ds.validate(mode="report", max_tokens=40, tokenizer=lambda s: len(s)).by_code


def test_valid_demo_has_no_problems() -> None:
    report = UltraChatDataset.demo().validate()
    assert report.ok and report.warnings == 0 and report.rows_checked == 60


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "bot", ""]) | json_values,
        "content": st.text() | json_values,
    },
)
record = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(message | json_values, max_size=5) | json_values,
        "prompt": st.text() | json_values,
        "prompt_id": st.text() | json_values,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(record | json_values, max_size=6), raw=st.lists(st.binary(max_size=40)))
def test_validator_only_raises_its_own_error(records: list[Any], raw: list[bytes]) -> None:
    dataset = UltraChatDataset.from_records(records)
    for mode in ("report", "strict"):
        try:
            report = dataset.validate(mode=mode, max_tokens=50)
        except DataValidationError:
            continue
        assert report.rows_checked == len(records)
    raw_lines = [r for r in raw if r.strip() and b"\n" not in r]
    from phi_finetune.data.sources import RecordsSource

    raw_ds = UltraChatDataset({"train_sft": [RecordsSource(raw_lines)]}, origin={})
    with contextlib.suppress(DataValidationError):
        raw_ds.validate(mode="strict")
