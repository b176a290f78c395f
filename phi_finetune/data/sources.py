"""Where records come from: JSONL/JSON/Parquet files and folders, pandas, lists, Hugging Face.

Every source yields ``(line, payload)`` pairs lazily. ``line`` is the 1-based physical line for
JSON Lines and the 1-based row for everything else; ``payload`` is the raw line (``bytes``)
for JSON Lines (parsed and validated later, in one place) and a Python object otherwise.
Heavy libraries (``datasets``, ``pandas``, ``pyarrow``) are imported only when used.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from phi_finetune.data.records import HUB_SPLITS, canonical_split
from phi_finetune.errors import DataSourceError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HUB_DATASET",
    "DataFrameSource",
    "HFSource",
    "JsonArraySource",
    "JsonlSource",
    "ParquetSource",
    "RecordsSource",
    "RowSource",
    "discover_files",
    "load_hub",
]

DEFAULT_HUB_DATASET = "HuggingFaceH4/ultrachat_200k"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
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
    """A JSON Lines file, read line by line in binary (flat memory)."""

    kind = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def _open(self) -> Any:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise DataSourceError(f"cannot read {self.path}: {exc.strerror or exc}") from exc

    def rows(self) -> Iterator[tuple[int, Any]]:
        with self._open() as handle:
            first = handle.readline()
            if first.startswith(b"\xef\xbb\xbf"):
                first = first[3:]
            if first and not first.isspace():
                yield 1, first
            # orjson ignores the trailing newline: lines go on unstripped (no copy).
            for number, line in enumerate(handle, 2):
                if not line.isspace():
                    yield number, line

    def count(self) -> int:
        n = 0
        with self._open() as handle:
            for line in handle:
                if not line.isspace():
                    n += 1
        return n

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "bytes": _size(self.path)}


class JsonArraySource(RowSource):
    """A ``.json`` file holding an array of records (read whole: not streaming)."""

    kind = "json"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def rows(self) -> Iterator[tuple[int, Any]]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise DataSourceError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            yield 1, data  # bytes: the validator reports the exact JSON error
            return
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            yield 1, value
            return
        yield from enumerate(value, 1)

    def count(self) -> int:
        return sum(1 for _ in self.rows())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "bytes": _size(self.path)}


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
            raise DataSourceError(f"cannot read Parquet file {self.path}: {exc}") from exc

    def rows(self) -> Iterator[tuple[int, Any]]:
        number = 0
        for batch in self._file().iter_batches(batch_size=_BATCH):
            for row in batch.to_pylist():
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


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def file_source(path: Path) -> RowSource:
    """The source for one file, chosen by suffix (``.json`` holding JSON Lines is accepted)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetSource(path)
    if suffix == ".json":
        try:
            with path.open("rb") as handle:
                head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        except OSError as exc:
            raise DataSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return JsonArraySource(path) if head.startswith(b"[") else JsonlSource(path)
    return JsonlSource(path)


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
                and p.suffix.lower() in DATA_SUFFIXES
                and p.name not in _NOT_DATA
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not inside:
                raise DataSourceError(
                    f"no .jsonl, .json or .parquet files in folder {path}; "
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
