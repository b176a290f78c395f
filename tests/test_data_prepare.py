"""prepare: sampling, determinism, validation carve, leakage, manifest, stats, assets, scoring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from phi_finetune.data import (
    UltraChatDataset,
    asset_version,
    head_rows,
    scoring_request_from_row,
    write_sample_score,
)
from phi_finetune.errors import (
    ConfigurationError,
    DataSourceError,
    DataValidationError,
    ServiceError,
)


def numbered(n: int, prefix: str = "q") -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"{prefix} question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]
        }
        for i in range(n)
    ]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def contents(path: Path) -> list[str]:
    return [r["messages"][0]["content"] for r in read(path)]


def _hf_slice(n: int, pc: int) -> int:
    import datasets

    instruction = datasets.ReadInstruction("train", to=pc, unit="%")
    absolute = instruction.to_absolute({"train": n})[0]
    return int(absolute.to - absolute.from_)


@pytest.mark.parametrize(
    ("n", "pc"), [(40, 5), (23110, 5), (207865, 5), (30, 5), (10, 25), (50, 1)]
)
def test_head_rows_match_datasets_percent_slicing(n: int, pc: int) -> None:
    assert head_rows(n, pc) == _hf_slice(n, pc)


@pytest.mark.parametrize("pc", [5, 7, 50])
def test_head_reproduces_the_reference_load_dataset_call(tmp_path: Path, pc: int) -> None:
    import datasets

    source = tmp_path / "train_sft.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in numbered(57)))
    # the reference: load_dataset(..., split=f"{split}[:{pc}%]")
    reference = datasets.load_dataset(
        "json", data_files=str(source), split=f"train[:{pc}%]", cache_dir=str(tmp_path / "c")
    )
    prepared = UltraChatDataset.from_files(source).prepare(tmp_path / "o", split_pc=pc)
    assert contents(prepared.train) == [r["messages"][0]["content"] for r in reference]


def test_head_takes_the_first_rows(tmp_path: Path) -> None:
    prepared = UltraChatDataset.from_records(numbered(30)).prepare(tmp_path, split_pc=5)
    assert contents(prepared.train) == ["q question 0", "q question 1"]  # round(1.5) == 2


def test_random_sample_is_seed_stable_and_ordered(tmp_path: Path) -> None:
    ds = UltraChatDataset.from_records(numbered(200))
    a = ds.prepare(tmp_path / "a", split_pc=10, sample="random", seed=1)
    b = ds.prepare(tmp_path / "b", split_pc=10, sample="random", seed=1)
    c = ds.prepare(tmp_path / "c", split_pc=10, sample="random", seed=2)
    assert a.counts["train"] == 20
    assert a.train.read_bytes() == b.train.read_bytes()
    assert contents(a.train) != contents(c.train)
    indices = [int(t.split()[-1]) for t in contents(a.train)]
    assert indices == sorted(indices) and indices != list(range(20))
    rows = ds.prepare(tmp_path / "d", rows=7, sample="random", seed=1)
    assert rows.counts["train"] == 7


def test_rows_head_and_per_split_mapping(tmp_path: Path) -> None:
    ds = UltraChatDataset.demo()
    prepared = ds.prepare(tmp_path, rows={"train_sft": 3, "test_sft": 2})
    assert prepared.counts == {"train": 3, "test": 2, "test_gen": 10}
    with pytest.raises(ConfigurationError):
        ds.prepare(tmp_path, rows=3, split_pc=5)
    with pytest.raises(ConfigurationError):
        ds.prepare(tmp_path, sample="shuffle")


def test_output_is_deterministic_and_manifest_hashes_match(tmp_path: Path) -> None:
    ds = UltraChatDataset.demo()
    one = ds.prepare(tmp_path / "1", validation_pc=20, split_pc=50, sample="random", seed=3)
    two = ds.prepare(tmp_path / "2", validation_pc=20, split_pc=50, sample="random", seed=3)
    for name in (
        "train.jsonl",
        "validation.jsonl",
        "test.jsonl",
        "test_gen.jsonl",
        "sample_score.json",
    ):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
    manifest = json.loads(one.manifest.read_text())
    for role, info in manifest["files"].items():
        data = (tmp_path / "1" / info["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"] == one.sha256[role]
        assert info["rows"] == one.counts[role] == len(data.splitlines())
    assert manifest["sampling"]["split_pc"] == 50 and manifest["validation"]["ok"]
    assert two.files().keys() == {"train", "validation", "test", "test_gen"}


def test_derived_prompt_id_and_canonical_rows(tmp_path: Path) -> None:
    prepared = UltraChatDataset.from_records(numbered(3)).prepare(tmp_path)
    first = read(prepared.train)[0]
    assert first["prompt"] == "q question 0"
    assert first["prompt_id"] == hashlib.sha256(b"q question 0").hexdigest()
    assert prepared.train.read_text().splitlines()[0].startswith('{"messages"')  # sorted keys


def test_validation_carve_by_prompt_id_hash(tmp_path: Path) -> None:
    ds = UltraChatDataset.from_records(numbered(400))
    full = ds.prepare(tmp_path / "full", validation_pc=10)
    assert full.validation is not None
    assert 20 < full.counts["validation"] < 65
    val = set(contents(full.validation))
    assert not val & set(contents(full.train))
    # a smaller sample keeps every row on the same side
    part = ds.prepare(tmp_path / "part", split_pc=50, sample="random", seed=9, validation_pc=10)
    assert part.validation is not None
    assert set(contents(part.validation)) <= val
    assert not set(contents(part.train)) & val


def test_leakage_between_train_and_test_is_reported(tmp_path: Path) -> None:
    train = numbered(5)
    test = [*numbered(2, prefix="t"), train[3]]
    ds = UltraChatDataset.from_records({"train_sft": train, "test_sft": test})
    report = ds.validate(mode="report")
    leaks = [p for p in report.problems if p.code == "leakage"]
    assert [(p.source, p.line) for p in leaks] == [("<records:test_sft>", 3)]
    assert report.ok  # a warning
    prepared = ds.prepare(tmp_path)
    assert prepared.report.by_code["leakage"] == 1
    same_id = {**numbered(1, "other")[0], "prompt_id": "shared"}
    ds2 = UltraChatDataset.from_records(
        {"train_sft": [{**train[0], "prompt_id": "shared"}], "test_sft": [same_id]}
    )
    assert ds2.validate(mode="report").by_code == {"leakage": 1}


def test_on_invalid_modes(tmp_path: Path) -> None:
    rows: list[Any] = numbered(4)
    rows.insert(2, {"messages": []})
    ds = UltraChatDataset.from_records(rows)
    with pytest.raises(DataValidationError) as info:
        ds.prepare(tmp_path / "strict")
    assert info.value.problems[0].line == 3
    assert not (tmp_path / "strict" / "train.jsonl").exists()
    assert not list((tmp_path / "strict").glob(".*tmp"))
    skip = ds.prepare(tmp_path / "skip", on_invalid="skip")
    assert skip.counts["train"] == 4 and skip.report.rows_invalid == 1
    report = ds.prepare(tmp_path / "report", on_invalid="report")
    assert report.counts["train"] == 5
    saved = json.loads((tmp_path / "skip" / "validation_report.json").read_text())
    assert saved["problems"][0]["code"] == "messages-empty"


def test_prepare_needs_a_train_split(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no training split"):
        UltraChatDataset.from_records(numbered(2), split="test_sft").prepare(tmp_path)


def test_stats() -> None:
    stats = UltraChatDataset.demo().stats(max_tokens=60)
    train = stats.splits["train_sft"]
    assert train.rows == 40 and train.turns.min == 4 and train.turns.max == 5
    assert train.roles["user"] == 80 and train.roles["system"] == 6
    assert 0 < train.over_limit <= 40 and train.duplicate_prompt_ids == 0
    assert "train_sft: 40 rows" in str(stats)
    assert json.loads(stats.to_json())["splits"]["test_gen"]["rows"] == 10


def test_scoring_request_from_row_drops_trailing_assistant(tmp_path: Path) -> None:
    row = UltraChatDataset.demo().head(1, split="test_gen")[0]
    body = scoring_request_from_row(row)
    conversation = body["input_data"]["input_string"][0]
    assert conversation[-1]["role"] == "user"
    assert conversation == row["messages"][:-1]
    assert body["input_data"]["parameters"] == {
        "temperature": 0.6,
        "top_p": 0.9,
        "do_sample": True,
        "max_new_tokens": 200,
    }
    assert body["params"] == {}
    custom = scoring_request_from_row(row, {"max_new_tokens": 50})
    assert custom["input_data"]["parameters"]["max_new_tokens"] == 50
    path = write_sample_score(row, tmp_path / "sample_score.json")
    assert json.loads(path.read_text()) == body
    with pytest.raises(DataValidationError):
        scoring_request_from_row({"messages": [{"role": "assistant", "content": "x"}]})
    with pytest.raises(DataValidationError):
        scoring_request_from_row(row, {"top_p": 7})
    with pytest.raises(DataValidationError):
        scoring_request_from_row({"messages": []})


def test_register_is_idempotent_with_autospec(tmp_path: Path) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from phi_finetune.testing import autospec_ml_client

    prepared = UltraChatDataset.demo().prepare(tmp_path)
    client = autospec_ml_client()
    client.data.get.side_effect = ResourceNotFoundError("missing")
    client.data.create_or_update.side_effect = lambda data: data
    first = prepared.register(client)
    assert {a.created for a in first.assets.values()} == {True}
    assert client.data.create_or_update.call_count == 3
    created = client.data.create_or_update.call_args_list[0].args[0]
    assert created.type == "uri_file" and created.version == asset_version(prepared.sha256["train"])
    stored = {
        (c.args[0].name, c.args[0].version): c.args[0]
        for c in client.data.create_or_update.call_args_list
    }
    client.data.get.side_effect = lambda name, version: stored[(name, version)]
    client.data.create_or_update.reset_mock()
    second = prepared.register(client, name_prefix="ultrachat")
    assert client.data.create_or_update.call_count == 0  # nothing uploaded
    assert [a.uri for a in second.assets.values()] == [a.uri for a in first.assets.values()]
    assert not any(a.created for a in second.assets.values())
    client.data.get.side_effect = lambda name, version: mock.Mock(tags={"sha256": "other"})
    with pytest.raises(ServiceError, match=r"exists with sha256"):
        prepared.register(client)


def test_register_against_fake_service(tmp_path: Path) -> None:
    testing = pytest.importorskip("phi_finetune.testing")
    from azure.ai.ml import Input

    prepared = UltraChatDataset.demo().prepare(tmp_path, validation_pc=10)
    with testing.FakeAzureML() as fake:
        client = fake.workspace_client()
        first = prepared.register(client)
        assert all(a.created for a in first.assets.values())
        second = prepared.register(client)
        assert not any(a.created for a in second.assets.values())
        assert len(fake.data_assets) == 4
        inputs = second.inputs()
        assert set(inputs) == {"train_file_path", "validation_file_path", "test_file_path"}
        train = inputs["train_file_path"]
        assert isinstance(train, Input) and train.type == "uri_file"
        assert train.path == f"azureml:ultrachat-train:{prepared.sha256['train'][:16]}"
