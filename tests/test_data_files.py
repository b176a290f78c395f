"""Data files that are empty, damaged, compressed, huge or odd: the library's error or a
reported problem naming the file (and line), never a traceback or unbounded memory."""

from __future__ import annotations

import errno
import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.cli.main import main
from phi_finetune.data import UltraChatDataset
from phi_finetune.data import streams as streams_module
from phi_finetune.errors import DataSourceError, DataValidationError

ROW: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Six minutes in simmering water."},
    ]
}


def rows(n: int) -> list[dict[str, Any]]:
    return [{**ROW, "prompt_id": f"id-{i}"} for i in range(n)]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- empty files
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", b""),
        ("blank.jsonl", b"\n  \n\t\n"),
        ("empty-array.json", b"[]"),
        ("blank-array.json", b" [ \n ] \n"),
    ],
)
def test_empty_files_are_invalid_in_validate_as_in_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, out, err = cli(["data", "validate", str(path)], capsys)
    assert code == 1, out + err
    assert "empty-file" in out and str(path) in out and "Traceback" not in out + err
    report = UltraChatDataset.from_files(path).validate(mode="report")
    assert not report.ok and [p.code for p in report.problems] == ["empty-file"]
    assert report.problems[0].line is None and report.rows_checked == 0
    with pytest.raises(DataValidationError, match=r"empty-file|no records"):
        UltraChatDataset.from_files(path).validate()
    code, out, err = cli(["data", "prepare", "--source", str(path), "--out", str(tmp_path)], capsys)
    assert code == 1 and "Traceback" not in out + err


def test_an_empty_file_beside_a_good_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_bytes(jsonl(rows(2)))
    (tmp_path / "test.jsonl").write_bytes(b"\n")
    report = UltraChatDataset.from_files(tmp_path).validate(mode="report")
    assert [(p.code, p.source) for p in report.problems] == [
        ("empty-file", str(tmp_path / "test.jsonl"))
    ]
    assert report.rows_checked == 2


# ----------------------------------------------------------------------------- damaged files
def test_corrupt_parquet_pages_give_the_library_error_with_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    messages = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a" * 50}]
        for i in range(3000)
    ]
    pq.write_table(pa.table({"messages": messages}), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    hit = len(data) // 5
    data[hit : hit + 400] = b"\xff" * 400  # a data page hit, the footer intact
    path.write_bytes(bytes(data))
    pq.ParquetFile(path)  # still opens: the damage shows only while reading
    with pytest.raises(DataSourceError, match=r"train\.parquet"):
        UltraChatDataset.from_files(path).validate(mode="report")
    code, out, err = cli(["data", "validate", str(path)], capsys)
    assert code == 1 and "train.parquet" in err and "Traceback" not in out + err


class FailingReader:
    """A file whose reads fail with EIO after ``good`` lines."""

    def __init__(self, lines: list[bytes], good: int) -> None:
        self.lines = lines
        self.good = good

    def readline(self, size: int = -1) -> bytes:
        if self.good <= 0:
            raise OSError(errno.EIO, "Input/output error")
        self.good -= 1
        return self.lines.pop(0) if self.lines else b""

    def read(self, size: int = -1) -> bytes:
        return self.readline(size)

    def __enter__(self) -> FailingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_read_error_midway_gives_the_library_error_with_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "train.jsonl"
    content = jsonl(rows(5))
    path.write_bytes(content)
    monkeypatch.setattr(
        streams_module,
        "open_data",
        lambda p: FailingReader(content.splitlines(keepends=True), good=2),
    )
    with pytest.raises(DataSourceError, match=r"train\.jsonl: Input/output error"):
        UltraChatDataset.from_files(path).validate(mode="report")
    code, out, err = cli(["data", "validate", str(path)], capsys)
    assert code == 1 and "Input/output error" in err and str(path) in err
    assert "Traceback" not in out + err


def test_an_unreadable_file_gives_the_library_error_with_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(rows(2)))
    real_open = Path.open

    def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(DataSourceError, match="Permission denied") as caught:
        UltraChatDataset.from_files(path).validate(mode="report")
    assert str(path) in str(caught.value)
    code, out, err = cli(["data", "validate", str(path)], capsys)
    assert code == 1 and "Permission denied" in err and "Traceback" not in out + err


# ----------------------------------------------------------------------------- gzip
def test_gzip_files_are_read_by_suffix_and_by_magic_bytes(tmp_path: Path) -> None:
    records = rows(4)
    (tmp_path / "train.jsonl.gz").write_bytes(gzip.compress(jsonl(records)))
    (tmp_path / "test.json.gz").write_bytes(gzip.compress(json.dumps(records[:2]).encode()))
    sneaky = tmp_path / "other" / "test_gen.jsonl"  # gzip without the suffix
    sneaky.parent.mkdir()
    sneaky.write_bytes(gzip.compress(jsonl(records[:3])))
    ds = UltraChatDataset.from_files(tmp_path)
    assert ds.splits == ("train_sft", "test_sft", "test_gen")
    assert ds.head(10) == records
    assert ds.head(10, split="test_sft") == records[:2]
    assert ds.head(10, split="test_gen") == records[:3]
    report = ds.validate(mode="report")
    assert report.ok, report.format()
    prepared = ds.prepare(tmp_path / "out", on_invalid="strict")
    assert prepared.counts["train"] == 4
    described = json.loads(prepared.manifest.read_text())["source"]["splits"]["train_sft"][0]
    assert described["compression"] == "gzip"


def test_a_truncated_gzip_file_is_named_as_gzip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(rows(200)))[:-30])
    with pytest.raises(DataSourceError, match=r"train\.jsonl\.gz.*gzip"):
        UltraChatDataset.from_files(path).validate(mode="report")
    code, out, err = cli(["data", "validate", str(path)], capsys)
    assert code == 1 and "gzip" in err and "Traceback" not in out + err
    assert "not UTF-8" not in out + err


# ----------------------------------------------------------------------------- JSON arrays
def test_json_arrays_are_streamed_with_memory_bounded_like_jsonl(tmp_path: Path) -> None:
    big = {
        "messages": [
            {"role": "user", "content": "q" * 4000},
            {"role": "assistant", "content": "a" * 16000},
        ]
    }
    records = [{**big, "prompt_id": str(i)} for i in range(1100)]  # about 22 MB
    array = tmp_path / "array" / "train.json"
    lines = tmp_path / "lines" / "train.jsonl"
    array.parent.mkdir()
    lines.parent.mkdir()
    array.write_text(json.dumps(records, indent=1))
    lines.write_bytes(jsonl(records))
    del records
    assert array.stat().st_size > 20_000_000

    def peak(path: Path) -> tuple[int, int]:
        dataset = UltraChatDataset.from_files(path)
        tracemalloc.start()
        try:
            report = dataset.validate(mode="report")
            return tracemalloc.get_traced_memory()[1], report.rows_checked
        finally:
            tracemalloc.stop()

    lines_peak, lines_rows = peak(lines)
    array_peak, array_rows = peak(array)
    assert array_rows == lines_rows == 1100
    # Reading the whole array (the old way) needs more than the file size.
    assert array_peak < 4 * lines_peak + 1_000_000, (array_peak, lines_peak)
    assert array_peak < array.stat().st_size // 5, (array_peak, lines_peak)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'[{"messages": []}, ', [("messages-empty", 1), ("invalid-json", 2)]),
        (b"[1, 2] x", [("not-an-object", 1), ("not-an-object", 2), ("invalid-json", 3)]),
        (b"[1, ]", [("not-an-object", 1), ("invalid-json", 2)]),
        (b"[1,, 2]", [("not-an-object", 1), ("invalid-json", 2), ("not-an-object", 3)]),
        (b'[{"a": 1}}', [("invalid-json", 1)]),
        (b'["unclosed string]', [("invalid-json", 1)]),
    ],
)
def test_broken_json_arrays_are_reported_by_element(
    tmp_path: Path, content: bytes, expected: list[tuple[str, int]]
) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(content)
    report = UltraChatDataset.from_files(path).validate(mode="report")
    found = [(p.code, p.line) for p in report.problems if p.code != "messages-missing"]
    assert found == expected, report.format()


# ----------------------------------------------------------------------------- duplicate keys
def test_duplicate_keys_are_a_warning_naming_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(ROW).encode()
    twice = (
        b'{"messages": [{"role": "user", "content": "a", "content": "b"},'
        b' {"role": "assistant", "content": "x"}], "prompt_id": "p", "prompt_id": "q"}'
    )
    spaced = (
        b'{"messages" : "x", "messages" : [{"role" : "user", "content" : "hi"},'
        b' {"role": "assistant", "content": "ok"}]}'
    )
    path.write_bytes(b"\n".join([good, twice, spaced]) + b"\n")
    report = UltraChatDataset.from_files(path).validate(mode="report")
    dups = [(p.line, p.field, p.severity) for p in report.problems if p.code == "duplicate-key"]
    assert dups == [
        (2, "content", "warning"),
        (2, "prompt_id", "warning"),
        (3, "messages", "warning"),
    ]
    code, out, _err = cli(["data", "validate", str(path)], capsys)
    assert code == 0  # warnings only
    assert f"{path}:2 [content]" in out and "duplicate-key" in out
    array = tmp_path / "test.json"
    array.write_bytes(b"[" + good + b",\n" + twice + b"]")
    report = UltraChatDataset.from_files(array).validate(mode="report")
    assert [p.line for p in report.problems if p.code == "duplicate-key"] == [2, 2]


def test_an_escaped_quote_before_a_colon_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    record = {
        "messages": [
            {"role": "user", "content": 'say "x": y and "z" : w'},
            {"role": "assistant", "content": "ok"},
        ]
    }
    path.write_text(json.dumps(record) + "\n")
    report = UltraChatDataset.from_files(path).validate(mode="report")
    assert report.ok and not report.problems, report.format()


# ----------------------------------------------------------------------------- long lines
def test_a_line_over_the_limit_is_an_error_naming_line_and_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "train.jsonl"
    long = json.dumps({**ROW, "prompt": "x" * 5000}).encode()
    other = json.dumps({**ROW, "prompt_id": "other"}).encode()
    path.write_bytes(b"\n".join([json.dumps(ROW).encode(), long, other]))
    report = UltraChatDataset.from_files(path, max_line_bytes=1000).validate(mode="report")
    assert [(p.code, p.line) for p in report.problems] == [("line-too-long", 2)]
    assert "max_line_bytes" in report.problems[0].message
    assert report.rows_checked == 3  # the line after the long one is still read
    assert UltraChatDataset.from_files(path).validate(mode="report").errors == 0
    code, out, _err = cli(["data", "validate", "--max-line-bytes", "1000", str(path)], capsys)
    assert code == 1 and f"{path}:2" in out and "--max-line-bytes" in out
    with pytest.raises(Exception, match="max_line_bytes"):
        UltraChatDataset.from_files(path, max_line_bytes=0)


def test_a_huge_line_does_not_take_unbounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    with path.open("wb") as handle:
        handle.write(b'{"messages": "')
        for _ in range(24):
            handle.write(b"a" * 1_000_000)
        handle.write(b'"}\n')
        handle.write(json.dumps(ROW).encode() + b"\n")
    dataset = UltraChatDataset.from_files(path, max_line_bytes=1_000_000)
    tracemalloc.start()
    try:
        report = dataset.validate(mode="report")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(p.code, p.line) for p in report.problems] == [("line-too-long", 1)]
    assert peak < 5_000_000, peak


def test_a_huge_json_array_element_is_an_error_not_unbounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(
        b"[" + json.dumps(ROW).encode() + b', {"messages": "' + b"a" * 3_000_000 + b'"}]'
    )
    report = UltraChatDataset.from_files(path, max_line_bytes=500_000).validate(mode="report")
    assert [(p.code, p.line) for p in report.problems] == [("line-too-long", 2)]
