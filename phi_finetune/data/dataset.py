"""``UltraChatDataset``: chat data split by split; load, read, validate, describe and prepare.

The ``prepare`` pipeline itself is :mod:`phi_finetune.data.prepare`; the checks are
:mod:`phi_finetune.data.validation`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_finetune.data.prepare import PreparedData, PrepareOptions, prepare_splits
from phi_finetune.data.records import TokenizerLike, canonical_split, token_count_label
from phi_finetune.data.report import ReportBuilder, ValidationReport
from phi_finetune.data.rules import PURPOSES, check_mode, is_error
from phi_finetune.data.scoring_sample import scoring_request_from_row
from phi_finetune.data.sources import (
    DEFAULT_HUB_DATASET,
    DEFAULT_MAX_LINE_BYTES,
    DataFrameSource,
    HFSource,
    RecordsSource,
    RowSource,
    SourceProblem,
    discover_files,
    file_source,
    load_hub,
    split_of,
)
from phi_finetune.data.stats import DataStats, StatsBuilder
from phi_finetune.data.validation import (
    _MISSING,
    TEST_SPLITS,
    check_duplicates_and_leakage,
    checked_rows,
    parse_line,
    purpose_for,
)
from phi_finetune.errors import ConfigurationError, DataSourceError
from phi_finetune.progress import progress

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PreparedData", "UltraChatDataset"]

DEMO_DIR = Path(__file__).parent / "demo"
_ORDER = {
    name: i
    for i, name in enumerate(("train_sft", "train_gen", "validation", "test_sft", "test_gen"))
}


class UltraChatDataset:
    """Chat data in the ultrachat schema, split by split, read lazily (streaming).

    Build one with a classmethod (:meth:`from_hub`, :meth:`from_files`, :meth:`from_pandas`,
    :meth:`from_records`, :meth:`from_hf`, :meth:`demo`), then :meth:`validate`,
    :meth:`stats`, :meth:`head` or :meth:`prepare` it.
    """

    def __init__(self, splits: Mapping[str, Sequence[RowSource]], *, origin: Mapping[str, Any]):
        if not splits:
            raise DataSourceError("a dataset needs at least one split")
        self._splits = {
            name: list(sources)
            for name, sources in sorted(
                splits.items(), key=lambda kv: (_ORDER.get(kv[0], 99), kv[0])
            )
        }
        self._origin = dict(origin)

    def __repr__(self) -> str:
        splits = ", ".join(
            f"{k}({len(v)} source{'s' * (len(v) != 1)})" for k, v in self._splits.items()
        )
        return f"UltraChatDataset({self._origin.get('kind', '?')}: {splits})"

    # ----------------------------------------------------------------------------- sources
    @classmethod
    def from_hub(
        cls,
        dataset_id: str = DEFAULT_HUB_DATASET,
        *,
        splits: Sequence[str] = ("train_sft", "test_sft", "test_gen"),
        revision: str | None = None,
        cache_dir: str | None = None,
    ) -> UltraChatDataset:
        """Load splits of a Hugging Face dataset (default ``HuggingFaceH4/ultrachat_200k``).

        ``dataset_id`` may also be a folder written by ``Dataset(Dict).save_to_disk``. Raises
        :class:`DataSourceError` when the hub cannot be reached or a split does not exist.
        """
        loaded = load_hub(dataset_id, list(splits), revision=revision, cache_dir=cache_dir)
        origin = {"kind": "huggingface", "dataset": dataset_id, "revision": revision}
        return cls({name: [src] for name, src in loaded.items()}, origin=origin)

    @classmethod
    def from_hf(
        cls, dataset: Any, *, split: str = "train_sft", label: str = "<datasets>"
    ) -> UltraChatDataset:
        """Wrap an in-memory ``datasets.Dataset`` (as ``split``) or a ``DatasetDict``."""
        if isinstance(dataset, Mapping):
            sources = {
                name: [HFSource(ds, f"{label}[{name}]", dataset_id=label, split=name)]
                for name, ds in dataset.items()
            }
        else:
            sources = {split: [HFSource(dataset, label, dataset_id=label, split=split)]}
        return cls(sources, origin={"kind": "huggingface", "dataset": label})

    @classmethod
    def from_files(
        cls,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        split: str | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> UltraChatDataset:
        """JSONL, JSON (array) or Parquet files, or folders of them (searched recursively).

        Each file's split comes from its name (``train_sft.jsonl``, ``test.jsonl``,
        ``test_gen-00000-of-00001.parquet``; unknown names are training data) unless ``split``
        puts every file in one split. ``.jsonl.gz``/``.json.gz`` (or any gzip file) are
        decompressed while read. A line or JSON array element longer than ``max_line_bytes``
        is a ``line-too-long`` error (memory stays bounded by it).
        """
        if isinstance(max_line_bytes, bool) or not isinstance(max_line_bytes, int):
            raise ConfigurationError(
                f"max_line_bytes must be a positive integer, got {max_line_bytes!r}",
                key="max_line_bytes",
            )
        if max_line_bytes < 1:
            raise ConfigurationError(
                f"max_line_bytes must be a positive integer, got {max_line_bytes}",
                key="max_line_bytes",
            )
        files = discover_files(paths)
        grouped: dict[str, list[RowSource]] = {}
        for path in files:
            name = split or split_of(path)
            grouped.setdefault(name, []).append(file_source(path, max_line_bytes=max_line_bytes))
        origin = {"kind": "files", "paths": [str(p) for p in files]}
        return cls(grouped, origin=origin)

    @classmethod
    def from_pandas(cls, frame: pd.DataFrame, *, split: str = "train_sft") -> UltraChatDataset:
        """A DataFrame with a ``messages`` column (and optional ``prompt``, ``prompt_id``)."""
        return cls(
            {split: [DataFrameSource(frame)]}, origin={"kind": "dataframe", "rows": len(frame)}
        )

    @classmethod
    def from_records(
        cls,
        records: Sequence[Any] | Mapping[str, Sequence[Any]],
        *,
        split: str = "train_sft",
    ) -> UltraChatDataset:
        """A list of dicts (one split), or a mapping of split name to list of dicts."""
        if isinstance(records, Mapping):
            groups = {
                name: [RecordsSource(list(rows), f"<records:{name}>")]
                for name, rows in records.items()
            }
            return cls(groups, origin={"kind": "records"})
        return cls({split: [RecordsSource(records)]}, origin={"kind": "records"})

    @classmethod
    def demo(cls) -> UltraChatDataset:
        """The small demo set shipped with the package (train_sft, test_sft, test_gen)."""
        dataset = cls.from_files(DEMO_DIR)
        dataset._origin = {
            "kind": "demo",
            "files": sorted(p.name for p in DEMO_DIR.glob("*.jsonl")),
        }
        return dataset

    # ----------------------------------------------------------------------------- reading
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def _sources(self, split: str) -> list[RowSource]:
        name = split if split in self._splits else canonical_split(split) or split
        if name not in self._splits:
            raise DataSourceError(f"no split {split!r}; this dataset has {', '.join(self._splits)}")
        return self._splits[name]

    def count(self, split: str | None = None) -> int:
        """Records in ``split`` (default: the first split)."""
        return sum(s.count() for s in self._sources(split or self.splits[0]))

    def rows(self, split: str | None = None) -> Iterator[dict[str, Any]]:
        """Parsed records of ``split`` (default: the first); unparseable lines are skipped."""
        for source in self._sources(split or self.splits[0]):
            for _line, payload in source.rows():
                if type(payload) is SourceProblem:
                    continue
                obj = parse_line(payload)[0] if type(payload) is bytes else payload
                if obj is not _MISSING:
                    yield obj

    def head(self, n: int = 5, *, split: str | None = None) -> list[dict[str, Any]]:
        """The first ``n`` records of ``split`` (the reference's preview)."""
        out: list[dict[str, Any]] = []
        if n <= 0:
            return out
        for record in self.rows(split):
            out.append(record)
            if len(out) >= n:
                break
        return out

    def to_pandas(self, n: int | None = 5, *, split: str | None = None) -> pd.DataFrame:
        """A DataFrame of the first ``n`` records (``None``: all; mind the memory)."""
        import pandas as pd

        records = list(self.rows(split)) if n is None else self.head(n, split=split)
        return pd.DataFrame.from_records(records)

    def scoring_request(
        self,
        index: int = 0,
        *,
        split: str = "test_gen",
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The scoring body built from row ``index`` of ``split`` (trailing assistant dropped)."""
        for i, record in enumerate(self.rows(split)):
            if i == index:
                return scoring_request_from_row(record, parameters, source=f"{split}[{index}]")
        raise DataSourceError(f"split {split!r} has no row {index}")

    # ----------------------------------------------------------------------------- validate
    def validate(
        self,
        *,
        mode: str = "strict",
        purpose: str | None = None,
        max_tokens: int | None = None,
        tokenizer: TokenizerLike | None = None,
        max_problems: int = 10_000,
    ) -> ValidationReport:
        """Check every record of every split; returns a :class:`ValidationReport`.

        ``purpose`` ``train`` (end with assistant) or ``score`` (end with user); by default
        ``*_gen`` splits may end with either and the others are training data. ``mode``
        ``strict`` raises :class:`DataValidationError` when there is any error; ``skip`` and
        ``report`` return the report (nothing is dropped here: ``prepare`` drops with ``skip``).
        """
        check_mode(mode, "mode")
        if purpose is not None and purpose not in PURPOSES:
            raise ConfigurationError(
                f"purpose must be train or score, got {purpose!r}", key="purpose"
            )
        builder = ReportBuilder(
            mode=mode,
            purpose=purpose,
            max_tokens=max_tokens,
            token_count=token_count_label(tokenizer),
            max_problems=max_problems,
        )
        train_keys: set[bytes] | None = (
            set() if any(s in TEST_SPLITS for s in self._splits) else None
        )
        for split in self._splits:
            seen: set[bytes] = set()
            rows = checked_rows(
                self._splits[split],
                purpose=purpose_for(split, purpose),
                max_tokens=max_tokens,
                tokenizer=tokenizer,
                report_empty=True,
            )
            for label, line, _obj, issues, facts, _raw in progress(
                rows, desc=f"validate {split}", unit="rows"
            ):
                if line is None:  # the whole source (an empty file): not a row
                    for issue in issues:
                        builder.extra(label, None, issue)
                    continue
                if facts is not None:
                    check_duplicates_and_leakage(issues, facts, split, seen, train_keys)
                builder.row(split, label, line, issues)
        report = builder.build()
        if mode == "strict":
            report.raise_for_errors()
        return report

    # ----------------------------------------------------------------------------- stats
    def stats(
        self, *, max_tokens: int | None = None, tokenizer: TokenizerLike | None = None
    ) -> DataStats:
        """Rows, turns, characters, tokens, roles and duplicates of every split."""
        result = {}
        for split in self._splits:
            builder = StatsBuilder(max_tokens)
            rows = checked_rows(
                self._splits[split],
                purpose=purpose_for(split, None),
                max_tokens=None,
                tokenizer=tokenizer,
            )
            for _label, _line, _obj, issues, facts, _raw in progress(
                rows, desc=f"stats {split}", unit="rows"
            ):
                builder.add(facts, any(is_error(code) for code, _f, _m in issues))
            result[split] = builder.build()
        return DataStats(splits=result, token_count=token_count_label(tokenizer))

    # ----------------------------------------------------------------------------- prepare
    def prepare(
        self,
        out_dir: str | os.PathLike[str],
        *,
        split_pc: float | None = None,
        sample: str = "head",
        seed: int = 42,
        rows: int | Mapping[str, int] | None = None,
        validation_pc: float | None = None,
        on_invalid: str = "strict",
        max_tokens: int | None = None,
        tokenizer: TokenizerLike | None = None,
        scoring_parameters: Mapping[str, Any] | None = None,
        max_problems: int = 10_000,
    ) -> PreparedData:
        """Validate, sample and write the pipeline's files into ``out_dir``.

        Files: ``train.jsonl``, [``validation.jsonl``], [``test.jsonl``], [``test_gen.jsonl`` and
        ``sample_score.json``], ``validation_report.json`` and ``manifest.json``.

        Streaming: memory stays flat whatever the input size. ``split_pc`` takes pc% of each
        split (``head``: the first rows, exactly like the reference; ``random``: a seeded
        sample); ``rows`` takes a row count instead (an int for every split, or per split).
        ``validation_pc`` carves a validation file out of train by a hash of ``prompt_id``.
        ``on_invalid``: ``strict`` writes nothing and raises if any sampled row has an error,
        ``skip`` drops bad rows, ``report`` keeps every row that parses. Same input and
        arguments give byte-identical files.
        """
        options = PrepareOptions(
            split_pc=split_pc,
            sample=sample,
            seed=seed,
            rows=rows,
            validation_pc=validation_pc,
            on_invalid=on_invalid,
            max_tokens=max_tokens,
            tokenizer=tokenizer,
            scoring_parameters=scoring_parameters,
            max_problems=max_problems,
        )
        return prepare_splits(self._splits, self._origin, out_dir, options)
