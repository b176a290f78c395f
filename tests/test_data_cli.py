"""``phi-finetune data``: exit codes 0 valid, 1 invalid (every problem as file:line), 2 usage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from phi_finetune.cli import data as data_cli


def run(argv: list[str]) -> int:
    """Through main.py when it exists, else through a tiny parser with the same contract."""
    try:
        from phi_finetune.cli.main import main
    except ImportError:  # pragma: no cover - main.py is built elsewhere
        parser = argparse.ArgumentParser(prog="phi-finetune")
        parser.add_argument("--json", action="store_true")
        data_cli.register(parser.add_subparsers(dest="command"))
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        return int(args.handler(args))
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            }
        )
        + "\n"
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{oops\n" + '{"messages": []}\n')
    return {"good": good, "bad": bad}


def test_validate_valid_is_0(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "validate", str(files["good"])]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_invalid_is_1_listing_every_problem(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["data", "validate", str(files["good"]), str(files["bad"])]) == 1
    out = capsys.readouterr().out
    assert f"{files['bad']}:2" in out and f"{files['bad']}:3" in out
    assert "invalid-json" in out and "messages-empty" in out and "Traceback" not in out


def test_validate_json_output(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "validate", str(files["bad"]), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and [p["line"] for p in data["problems"]] == [2, 3]


def test_validate_max_tokens(files: dict[str, Path]) -> None:
    assert run(["data", "validate", str(files["good"]), "--max-tokens", "5"]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "validate"],
        ["data", "validate", "missing.jsonl"],
        ["data", "validate", "GOOD", "--max-tokens", "zero"],
        ["data", "prepare", "--out", "x"],
        ["data", "prepare", "--source", "demo", "--out", "OUT", "--rows", "3", "--split-pc", "5"],
        ["data", "prepare", "--source", "./nowhere", "--out", "OUT"],
        ["data", "prepare", "--source", "demo", "--out", "OUT", "--validation-pc", "150"],
        ["data"],
        ["data", "stats", "missing.jsonl"],
    ],
)
def test_usage_errors_are_2(
    argv: list[str], files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        str(files["good"]) if a == "GOOD" else str(tmp_path / "o") if a == "OUT" else a
        for a in argv
    ]
    assert run(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_prepare_demo_and_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    argv = ["data", "prepare", "--source", "demo", "--out", str(out), "--split-pc", "50"]
    assert run([*argv, "--validation-pc", "10", "--sample", "random", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and set(result["files"]) >= {"train", "test", "test_gen"}
    assert (out / "manifest.json").is_file() and (out / "sample_score.json").is_file()
    assert run(["data", "stats", str(out / "train.jsonl"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["train_sft"]["rows"] == result["counts"]["train"]
    assert run(["data", "stats", str(out)]) == 0
    assert "rows" in capsys.readouterr().out


def test_prepare_invalid_is_1(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "prepare", "--source", str(files["bad"]), "--out", str(tmp_path / "o")]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert f"{files['bad']}:2" in err and "Traceback" not in err
    assert run([*argv, "--on-invalid", "skip"]) == 0


def test_prepare_unreachable_hub_is_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from phi_finetune.errors import DataSourceError

    def unreachable(*args: object, **kwargs: object) -> object:
        raise DataSourceError("cannot load 'x/y' from the Hugging Face Hub")

    monkeypatch.setattr("phi_finetune.data.dataset.load_hub", unreachable)
    assert run(["data", "prepare", "--source", "x/y", "--out", str(tmp_path / "o")]) == 1
    assert "Hugging Face Hub" in capsys.readouterr().err
