"""Where records come from: JSONL/JSON/Parquet files and folders, pandas, lists, Hugging Face.

Every source yields ``(line, payload)`` pairs lazily. ``line`` is the 1-based physical line for
JSON Lines and the 1-based row for everything else; ``payload`` is the raw text (``bytes``)
for JSON Lines and for each element of a JSON array (parsed and validated later, in one
place), a :class:`SourceProblem` for a line or element that cannot be read as a record, and a
Python object otherwise. JSON Lines and JSON arrays are streamed (memory stays bounded by
:data:`DEFAULT_MAX_LINE_BYTES`, whatever the file size) and may be gzip-compressed (``.gz`` or
detected by its magic bytes). A file that cannot be read raises
:class:`~phi_finetune.errors.DataSourceError` naming it. Heavy libraries (``datasets``,
``pandas``, ``pyarrow``) are imported only when used.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_finetune.data.records import HUB_SPLITS, canonical_split
from phi_finetune.data.streams import (
    DEFAULT_MAX_LINE_BYTES,
    GZIP_MAGIC,
    SourceProblem,
    array_elements,
    guarded,
    jsonl_lines,
    open_data,
    read_failure,
)
from phi_finetune.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HUB_DATASET",
    "DEFAULT_MAX_LINE_BYTES",
    "DataFrameSource",
    "HFSource",
    "JsonArraySource",
    "JsonlSource",
    "ParquetSource",
    "RecordsSource",
    "RowSource",
    "SourceProblem",
    "discover_files",
    "load_hub",
]

DEFAULT_HUB_DATASET = "HuggingFaceH4/ultrachat_200k"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
#: Compressed data files read too (gzip).
GZIP_SUFFIXES = (".jsonl.gz", ".json.gz")
#: Files ``prepare`` writes beside the data; never read back as data.
_NOT_DATA = {"manifest.json", "sample_score.json", "validation_report.json"}
_BATCH = 1024


class RowSource:
    """One file or in-memory table; ``bytes`` payloads are undecoded JSON text."""

    label: str
    kind: str = "records"

    def rows(self) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def count(self) -> int:
        """Number of records (JSON Lines: non-blank lines)."""
        return sum(1 for _ in self.rows())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label}


class JsonlSource(RowSource):
    """A JSON Lines file (optionally gzip), read line by line in binary (bounded memory)."""

    kind = "jsonl"

    def __init__(self, path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.path = path
        self.label = str(path)
        self.max_line_bytes = max_line_bytes

    def _open(self) -> Any:
        return open_data(self.path)

    def rows(self) -> Iterator[tuple[int, Any]]:
        return guarded(self.path, lambda handle: jsonl_lines(handle, self.max_line_bytes))

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def describe(self) -> dict[str, Any]:
        return _describe_file(self.kind, self.path)


class JsonArraySource(RowSource):
    """A ``.json`` file (optionally gzip) holding an array of records, streamed element by
    element: memory stays bounded by ``max_line_bytes`` per element, as for JSON Lines."""

    kind = "json"

    def __init__(self, path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.path = path
        self.label = str(path)
        self.max_line_bytes = max_line_bytes

    def rows(self) -> Iterator[tuple[int, Any]]:
        return guarded(self.path, lambda handle: array_elements(handle, self.max_line_bytes))

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def describe(self) -> dict[str, Any]:
        return _describe_file(self.kind, self.path)


class ParquetSource(RowSource):
    """A Parquet file, read in record batches (flat memory)."""

    kind = "parquet"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def _file(self) -> Any:
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path)
        except Exception as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> DataSourceError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return DataSourceError(
            f"cannot read Parquet file {self.path}: {reason or type(exc).__name__}; the file "
            "is corrupt, truncated or not Parquet: re-export or re-download it"
        )

    def rows(self) -> Iterator[tuple[int, Any]]:
        number = 0
        batches = self._file().iter_batches(batch_size=_BATCH)
        while True:
            try:  # pyarrow raises ArrowInvalid/OSError for corrupt pages while iterating
                batch = next(batches, None)
                rows = None if batch is None else batch.to_pylist()
            except Exception as exc:
                raise self._failure(exc) from None
            if rows is None:
                return
            for row in rows:
                number += 1
                yield number, row

    def count(self) -> int:
        return int(self._file().metadata.num_rows)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "bytes": _size(self.path)}


class RecordsSource(RowSource):
    """A list of dicts given in Python."""

    def __init__(self, records: Sequence[Any], label: str = "<records>") -> None:
        self.records = records
        self.label = label

    def rows(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.records, 1)

    def count(self) -> int:
        return len(self.records)


class DataFrameSource(RowSource):
    """A pandas DataFrame (numpy arrays in cells become lists, NaN becomes missing)."""

    kind = "dataframe"

    def __init__(self, frame: pd.DataFrame, label: str = "<DataFrame>") -> None:
        self.frame = frame
        self.label = label

    def rows(self) -> Iterator[tuple[int, Any]]:
        number = 0
        for start in range(0, len(self.frame), _BATCH):
            chunk = self.frame.iloc[start : start + _BATCH]
            for record in chunk.to_dict(orient="records"):
                number += 1
                yield number, {str(k): _plain(v) for k, v in record.items() if not _is_nan(v)}

    def count(self) -> int:
        return len(self.frame)


class HFSource(RowSource):
    """One split of a ``datasets.Dataset`` (memory-mapped Arrow, iterated in batches)."""

    kind = "huggingface"

    def __init__(self, dataset: Any, label: str, *, dataset_id: str = "", split: str = "") -> None:
        self.dataset = dataset
        self.label = label
        self.dataset_id = dataset_id
        self.split = split

    def rows(self) -> Iterator[tuple[int, Any]]:
        number = 0
        for batch in self.dataset.iter(batch_size=_BATCH):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns), strict=True):
                number += 1
                yield number, dict(zip(columns, values, strict=True))

    def count(self) -> int:
        return len(self.dataset)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind, "dataset": self.dataset_id, "split": self.split}
        fingerprint = getattr(self.dataset, "_fingerprint", None)
        if fingerprint:
            info["fingerprint"] = fingerprint
        return info


def _plain(value: Any) -> Any:
    if isinstance(value, str | bytes | dict | list | int | float | bool) or value is None:
        if isinstance(value, list):
            return [_plain(v) for v in value]
        if isinstance(value, dict):
            return {k: _plain(v) for k, v in value.items()}
        return value
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _plain(tolist())
    return value


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _describe_file(kind: str, path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": kind, "path": str(path), "bytes": _size(path)}
    if _is_gzip(path):
        info["compression"] = "gzip"
    return info


def _is_gzip(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError:
        return False


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def file_source(path: Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> RowSource:
    """The source for one file, chosen by suffix (``.json`` holding JSON Lines is accepted).

    ``.gz`` files (or any file starting with the gzip magic bytes) are decompressed while read.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".parquet"):
        return ParquetSource(path)
    if name.endswith(".json"):
        import zlib

        try:
            with open_data(path) as handle:
                head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        except (OSError, EOFError, zlib.error) as exc:
            raise read_failure(path, exc) from None
        if head.startswith(b"["):
            return JsonArraySource(path, max_line_bytes=max_line_bytes)
    return JsonlSource(path, max_line_bytes=max_line_bytes)


def _is_data_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(DATA_SUFFIXES) or lower.endswith(GZIP_SUFFIXES)


def discover_files(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into data files."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise DataSourceError("no data files given; pass a file, several files or a folder")
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _is_data_file(p.name)
                and p.name not in _NOT_DATA
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise DataSourceError(
                    f"no .jsonl, .json or .parquet files (or .jsonl.gz, .json.gz) in folder "
                    f"{path}; "
                    "point at the data files or the folder that holds them"
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise DataSourceError(f"no such file or folder: {path}")
    return found


def split_of(path: Path) -> str:
    """The split a file belongs to, from its name (unknown names are training data)."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in DATA_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return canonical_split(name) or "train_sft"


def load_hub(
    dataset_id: str,
    splits: Sequence[str],
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, HFSource]:
    """Load ``splits`` of a hub dataset (or a ``save_to_disk`` folder) through ``datasets``."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataSourceError("the 'datasets' package is needed to load hub datasets") from exc

    local = Path(dataset_id)
    if local.is_dir() and (
        (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
    ):
        return _load_saved(datasets, local, splits, dataset_id)
    return {
        split: _load_hub_split(datasets, dataset_id, split, revision=revision, cache_dir=cache_dir)
        for split in splits
    }


def _load_saved(
    datasets: Any, local: Path, splits: Sequence[str], dataset_id: str
) -> dict[str, HFSource]:
    """A folder written by ``Dataset(Dict).save_to_disk``."""
    try:
        loaded = datasets.load_from_disk(str(local))
    except Exception as exc:
        raise DataSourceError(f"cannot load the saved dataset in {local}: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        return _pick(loaded, splits, dataset_id)
    only = splits[0] if splits else "train_sft"
    return {only: HFSource(loaded, f"{dataset_id}", dataset_id=dataset_id, split=only)}


def _load_hub_split(
    datasets: Any,
    dataset_id: str,
    split: str,
    *,
    revision: str | None,
    cache_dir: str | None,
) -> HFSource:
    """One split from the Hugging Face Hub, with what to do when it cannot be loaded."""
    try:
        ds = datasets.load_dataset(dataset_id, split=split, revision=revision, cache_dir=cache_dir)
    except (ValueError, KeyError) as exc:
        if "split" in str(exc).lower():
            raise DataSourceError(
                f"dataset {dataset_id!r} has no split {split!r} ({exc}); "
                f"pass splits=... with existing split names"
            ) from exc
        raise DataSourceError(f"cannot load {dataset_id!r} split {split!r}: {exc}") from exc
    except Exception as exc:
        raise DataSourceError(
            f"cannot load {dataset_id!r} split {split!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}). Check the network connection, the dataset id and "
            "HF_TOKEN for gated datasets; offline, download the splits as JSONL/Parquet "
            "elsewhere and use UltraChatDataset.from_files(...)."
        ) from exc
    return HFSource(ds, f"hf:{dataset_id}[{split}]", dataset_id=dataset_id, split=split)


def _pick(loaded: Mapping[str, Any], splits: Sequence[str], dataset_id: str) -> dict[str, HFSource]:
    result: dict[str, HFSource] = {}
    wanted = list(splits) if splits else list(loaded)
    for split in wanted:
        if split in loaded:
            result[split] = HFSource(
                loaded[split], f"{dataset_id}[{split}]", dataset_id=dataset_id, split=split
            )
    if not result:
        raise DataSourceError(
            f"{dataset_id} holds splits {sorted(loaded)}, none of {list(wanted)}; "
            "pass splits=... with the names it has"
        )
    missing = [s for s in wanted if s not in loaded and s in HUB_SPLITS]
    if missing and splits:
        logger.info("%s has no split(s) %s", dataset_id, ", ".join(missing))
    return result
