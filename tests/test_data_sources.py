"""Each source kind loads the same records; the hub path reports unreachable hubs clearly."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.data import UltraChatDataset
from phi_finetune.errors import DataSourceError

REAL = Path(__file__).resolve().parent / "data" / "ultrachat_200k_sample20.jsonl"


def demo_rows(split: str = "train_sft") -> list[dict[str, Any]]:
    return list(UltraChatDataset.demo().rows(split))


def test_demo_splits_and_sizes() -> None:
    demo = UltraChatDataset.demo()
    assert demo.splits == ("train_sft", "test_sft", "test_gen")
    assert [demo.count(s) for s in demo.splits] == [40, 10, 10]


def test_jsonl_json_array_parquet_and_folder(tmp_path: Path) -> None:
    rows = demo_rows()
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.json").write_text(json.dumps(rows[:3]))
    import pandas as pd

    pd.DataFrame(rows[:5]).to_parquet(tmp_path / "test_gen-00000-of-00001.parquet")
    ds = UltraChatDataset.from_files(tmp_path)
    assert ds.splits == ("train_sft", "test_sft", "test_gen")
    assert ds.head(40) == rows
    assert ds.head(3, split="test") == rows[:3]
    assert ds.head(5, split="test_gen") == rows[:5]  # numpy arrays became lists
    assert ds.validate().ok
    one = UltraChatDataset.from_files([tmp_path / "test.json"], split="train_sft")
    assert one.count() == 3


def test_json_array_syntax_error_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"messages": []},')
    report = UltraChatDataset.from_files(path).validate(mode="report")
    # Streamed: element 1 is read (and checked), then the unclosed array is reported after it.
    codes = [(p.code, p.line) for p in report.problems]
    assert codes == [("messages-empty", 1), ("invalid-json", 2)]
    assert "not closed" in report.problems[1].message


def test_pandas_and_records() -> None:
    import pandas as pd

    rows = demo_rows()
    assert UltraChatDataset.from_pandas(pd.DataFrame(rows)).head(40) == rows
    by_split = UltraChatDataset.from_records({"train_sft": rows, "test_sft": rows[:2]})
    assert by_split.splits == ("train_sft", "test_sft")
    frame = UltraChatDataset.from_records(rows).to_pandas(3)
    assert list(frame.columns) == ["prompt", "prompt_id", "messages"] and len(frame) == 3


def test_real_ultrachat_sample_loads_and_validates() -> None:
    ds = UltraChatDataset.from_files(REAL)
    report = ds.validate(mode="report")
    assert report.rows_checked == 20 and report.ok
    assert set(report.by_code) <= {"prompt-mismatch"}  # ultrachat truecases messages


def test_hf_dataset_saved_to_disk_loads_through_from_hub(tmp_path: Path) -> None:
    import datasets

    rows = demo_rows()
    ddict = datasets.DatasetDict(
        {
            "train_sft": datasets.Dataset.from_list(rows),
            "test_sft": datasets.Dataset.from_list(demo_rows("test_sft")),
        }
    )
    ddict.save_to_disk(str(tmp_path / "saved"))
    ds = UltraChatDataset.from_hub(str(tmp_path / "saved"), splits=["train_sft", "test_sft"])
    assert ds.splits == ("train_sft", "test_sft")
    assert ds.head(40) == rows
    assert ds.validate().ok
    prepared = ds.prepare(tmp_path / "out", split_pc=10)
    assert prepared.counts == {"train": 4, "test": 1}
    in_memory = UltraChatDataset.from_hf(ddict)
    assert in_memory.head(2) == rows[:2]


def test_unreachable_hub_raises_data_source_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub retries
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataSourceError) as info:
        UltraChatDataset.from_hub(
            "HuggingFaceH4/ultrachat_200k", splits=["test_gen"], cache_dir=str(tmp_path)
        )
    message = str(info.value)
    assert "HuggingFaceH4/ultrachat_200k" in message and "from_files" in message


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no such file"):
        UltraChatDataset.from_files(tmp_path / "nope.jsonl")
    with pytest.raises(DataSourceError, match=r"no \.jsonl"):
        UltraChatDataset.from_files(tmp_path)


def test_import_does_not_load_heavy_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, phi_finetune.data, phi_finetune.cli.data;"
        "heavy = ('pandas', 'datasets', 'azure.ai.ml', 'pyarrow');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
