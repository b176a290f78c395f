"""``UltraChatDataset``: load, validate, sample, split, write and register chat data."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.data_assets import RegisteredData, register_file
from phi_finetune.data.records import SPLIT_FILES, TokenizerLike, canonical_split
from phi_finetune.data.sampling import (
    check_sampling,
    in_validation,
    random_indices,
    rows_wanted,
)
from phi_finetune.data.scoring_sample import scoring_request_from_row
from phi_finetune.data.sources import (
    DEFAULT_HUB_DATASET,
    DataFrameSource,
    HFSource,
    RecordsSource,
    RowSource,
    discover_files,
    file_source,
    load_hub,
    split_of,
)
from phi_finetune.data.stats import DataStats, StatsBuilder
from phi_finetune.data.validation import (
    _MISSING,
    MODES,
    PURPOSES,
    Issue,
    ReportBuilder,
    RowFacts,
    ValidationReport,
    check_record,
    key_digest,
    parse_line,
)
from phi_finetune.data.writer import JsonlWriter, dumps_record, write_manifest
from phi_finetune.errors import ConfigurationError, DataSourceError, DataValidationError
from phi_finetune.progress import progress

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["PreparedData", "UltraChatDataset"]

DEMO_DIR = Path(__file__).parent / "demo"
MANIFEST = "manifest.json"
REPORT_FILE = "validation_report.json"
SAMPLE_SCORE = "sample_score.json"
MANIFEST_FORMAT = "phi_finetune.data/1"
#: Splits read before the others, so test rows can be checked against train (leakage).
_TRAIN_SPLITS = ("train_sft", "train_gen")
_TEST_SPLITS = ("validation", "test_sft", "test_gen")
_ORDER = {
    name: i
    for i, name in enumerate(("train_sft", "train_gen", "validation", "test_sft", "test_gen"))
}

#: (source label, line, parsed object, issues, facts, raw JSONL line or None)
Row = tuple[str, int, Any, list[Issue], "RowFacts | None", bytes | None]


def _purpose_for(split: str, purpose: str | None) -> str:
    if purpose is not None:
        return purpose
    return "gen" if split.endswith("_gen") else "train"


def _token_label(tokenizer: TokenizerLike | None) -> str:
    return "estimate" if tokenizer is None else "tokenizer"


@attrs.frozen
class PreparedData:
    """The files ``prepare`` wrote: paths, row counts, SHA-256s and the validation report."""

    out_dir: Path
    train: Path
    validation: Path | None
    test: Path | None
    test_gen: Path | None
    sample_score: Path | None
    manifest: Path
    counts: Mapping[str, int]
    sha256: Mapping[str, str]
    report: ValidationReport = attrs.field(repr=False)

    def files(self) -> dict[str, Path]:
        """Role (train, validation, test, test_gen) -> path, for the files that exist."""
        candidates = {
            "train": self.train,
            "validation": self.validation,
            "test": self.test,
            "test_gen": self.test_gen,
        }
        return {role: path for role, path in candidates.items() if path is not None}

    def register(
        self, ml_client: Any, *, name_prefix: str = "ultrachat", description: str | None = None
    ) -> RegisteredData:
        """Register each file as a ``uri_file`` data asset named ``<prefix>-<role>``.

        The version is the first 16 hex digits of the file's SHA-256: registering the same
        data again uploads nothing and returns the same assets (``created=False``).
        """
        assets = {}
        for role, path in self.files().items():
            assets[role] = register_file(
                ml_client,
                path,
                role=role,
                name=f"{name_prefix}-{role.replace('_', '-')}",
                sha256=self.sha256[role],
                description=description,
                tags={"rows": str(self.counts[role]), "role": role},
            )
        return RegisteredData(assets=assets)


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
    ) -> UltraChatDataset:
        """JSONL, JSON (array) or Parquet files, or folders of them (searched recursively).

        Each file's split comes from its name (``train_sft.jsonl``, ``test.jsonl``,
        ``test_gen-00000-of-00001.parquet``; unknown names are training data) unless ``split``
        puts every file in one split.
        """
        files = discover_files(paths)
        grouped: dict[str, list[RowSource]] = {}
        for path in files:
            name = split or split_of(path)
            grouped.setdefault(name, []).append(file_source(path))
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

    def _checked(
        self,
        split: str,
        *,
        purpose: str,
        max_tokens: int | None,
        tokenizer: TokenizerLike | None,
        limit: int | None = None,
        pick: set[int] | None = None,
    ) -> Iterator[Row]:
        index = -1
        for source in self._splits[split]:
            label = source.label
            for line, payload in source.rows():
                index += 1
                if limit is not None and index >= limit:
                    return
                if pick is not None and index not in pick:
                    continue
                raw: bytes | None = None
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
        _check_mode(mode, "mode")
        if purpose is not None and purpose not in PURPOSES:
            raise ConfigurationError(
                f"purpose must be train or score, got {purpose!r}", key="purpose"
            )
        builder = ReportBuilder(
            mode=mode,
            purpose=purpose,
            max_tokens=max_tokens,
            token_count=_token_label(tokenizer),
            max_problems=max_problems,
        )
        train_keys: set[bytes] | None = (
            set() if any(s in _TEST_SPLITS for s in self._splits) else None
        )
        for split in self._splits:
            seen: set[bytes] = set()
            rows = self._checked(
                split,
                purpose=_purpose_for(split, purpose),
                max_tokens=max_tokens,
                tokenizer=tokenizer,
            )
            for label, line, _obj, issues, facts, _raw in progress(
                rows, desc=f"validate {split}", unit="rows"
            ):
                if facts is not None:
                    _dup_and_leak(issues, facts, split, seen, train_keys)
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
            rows = self._checked(
                split, purpose=_purpose_for(split, None), max_tokens=None, tokenizer=tokenizer
            )
            for _label, _line, _obj, issues, facts, _raw in progress(
                rows, desc=f"stats {split}", unit="rows"
            ):
                builder.add(facts, any(_is_error(code) for code, _f, _m in issues))
            result[split] = builder.build()
        return DataStats(splits=result, token_count=_token_label(tokenizer))

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
        _check_mode(on_invalid, "on_invalid")
        check_sampling(split_pc, rows, sample, validation_pc)
        if "train_sft" not in self._splits:
            raise DataSourceError(
                f"no training split; this dataset has {', '.join(self._splits)}. Name the file "
                "train_sft.jsonl/train.jsonl or pass split='train_sft'"
            )
        if validation_pc is not None and "validation" in self._splits:
            raise ConfigurationError(
                "the data already has a validation split; drop validation_pc or that split",
                key="validation_pc",
            )
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        plan = [("train", "train_sft")]
        plan += [
            (role, split)
            for role, split in (
                ("validation", "validation"),
                ("test", "test_sft"),
                ("test_gen", "test_gen"),
            )
            if split in self._splits
        ]
        builder = ReportBuilder(
            mode=on_invalid,
            purpose=None,
            max_tokens=max_tokens,
            token_count=_token_label(tokenizer),
            max_problems=max_problems,
        )
        writers: dict[str, JsonlWriter] = {}
        sources_split: dict[str, str] = {}
        sampling_info: dict[str, Any] = {}
        first_gen: dict[str, Any] | None = None
        train_keys: set[bytes] | None = set() if len(plan) > 1 else None
        try:
            for role, split in plan:
                n: int | None = None
                if split_pc == 100 and sample == "head":
                    k = None  # every row: no counting pass
                else:
                    if split_pc is not None or (sample == "random" and rows is not None):
                        n = sum(s.count() for s in self._splits[split])
                    k = rows_wanted(split, n, split_pc, rows)
                pick: set[int] | None = None
                limit: int | None = None
                if k is not None:
                    if sample == "random":
                        assert n is not None
                        pick = random_indices(n, k, seed=seed, split=split)
                    else:
                        limit = k
                sampling_info[split] = {"available": n, "selected": k}
                writer = writers[role] = JsonlWriter(out / SPLIT_FILES[role])
                sources_split[role] = split
                carve = role == "train" and validation_pc is not None
                if carve:
                    writers["validation"] = JsonlWriter(out / SPLIT_FILES["validation"])
                    sources_split["validation"] = split
                seen: set[bytes] = set()
                rows_iter = self._checked(
                    split,
                    purpose=_purpose_for(split, None),
                    max_tokens=max_tokens,
                    tokenizer=tokenizer,
                    limit=limit,
                    pick=pick,
                )
                for label, line, obj, issues, facts, raw in progress(
                    rows_iter, desc=f"prepare {split}", total=k, unit="rows"
                ):
                    if facts is not None:
                        _dup_and_leak(issues, facts, split, seen, train_keys)
                    bad = builder.row(split, label, line, issues)
                    if facts is None or (bad and on_invalid != "report"):
                        continue
                    if facts.prompt_id is not None and "prompt_id" not in obj:
                        obj = {**obj, "prompt_id": facts.prompt_id}
                        raw = None
                    if facts.first_user is not None and "prompt" not in obj:
                        obj = {**obj, "prompt": facts.first_user}
                        raw = None
                    target = writer
                    if (
                        carve
                        and facts.prompt_id is not None
                        and in_validation(facts.prompt_id, validation_pc or 0)
                    ):
                        target = writers["validation"]
                    # A JSONL line that needs no change is copied byte for byte (faster, and
                    # the text stays exactly as given); anything else is serialized canonically.
                    if raw is not None and raw[-1:] == b"\n" and raw[-2:-1] != b"\r":
                        target.write(raw)
                    else:
                        target.write(dumps_record(obj))
                    if role == "test_gen" and first_gen is None:
                        first_gen = obj
            report = builder.build()
            if on_invalid == "strict":
                report.raise_for_errors("prepare stopped; nothing was written")
            if writers["train"].rows == 0:
                raise DataValidationError(
                    "no training rows left to write: every sampled row was invalid or the sample "
                    "is empty; raise split_pc/rows or fix the data",
                    problems=report.error_problems(),
                    total=report.errors,
                )
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        return self._finish(
            out,
            writers,
            sources_split,
            sampling_info,
            report,
            first_gen,
            locals_={
                "split_pc": split_pc,
                "sample": sample,
                "seed": seed,
                "rows": rows,
                "validation_pc": validation_pc,
                "on_invalid": on_invalid,
                "max_tokens": max_tokens,
            },
            scoring_parameters=scoring_parameters,
        )

    def _finish(
        self,
        out: Path,
        writers: dict[str, JsonlWriter],
        sources_split: dict[str, str],
        sampling_info: dict[str, Any],
        report: ValidationReport,
        first_gen: dict[str, Any] | None,
        *,
        locals_: dict[str, Any],
        scoring_parameters: Mapping[str, Any] | None,
    ) -> PreparedData:
        from phi_finetune._atomic import atomic_write_text
        from phi_finetune._version import __version__
        from phi_finetune.data.scoring_sample import write_sample_score

        paths: dict[str, Path] = {}
        for role, writer in writers.items():
            if writer.rows == 0 and role != "train":
                writer.abort()
                (out / SPLIT_FILES[role]).unlink(missing_ok=True)
                continue
            paths[role] = writer.commit()
        for role, name in SPLIT_FILES.items():
            if role not in paths:
                (out / name).unlink(missing_ok=True)
        sample_path: Path | None = None
        if first_gen is not None:
            try:
                sample_path = write_sample_score(first_gen, out / SAMPLE_SCORE, scoring_parameters)
            except DataValidationError as exc:
                logger.warning("no %s written: %s", SAMPLE_SCORE, exc)
        if sample_path is None:
            (out / SAMPLE_SCORE).unlink(missing_ok=True)
        atomic_write_text(out / REPORT_FILE, report.to_json() + "\n", mode=0o644)
        files = {
            role: {
                "path": SPLIT_FILES[role],
                "rows": writers[role].rows,
                "bytes": writers[role].bytes,
                "sha256": writers[role].sha256,
                "source_split": sources_split[role],
            }
            for role in paths
        }
        summary = report.to_dict()
        del summary["problems"]
        manifest = {
            "format": MANIFEST_FORMAT,
            "generator": f"phi_finetune {__version__}",
            "source": {
                **self._origin,
                "splits": {
                    split: [s.describe() for s in srcs] for split, srcs in self._splits.items()
                },
            },
            "sampling": {**locals_, "splits": sampling_info},
            "files": files,
            "validation": summary,
        }
        if sample_path is not None:
            from phi_finetune.data.writer import sha256_file

            manifest["sample_score"] = {"path": SAMPLE_SCORE, "sha256": sha256_file(sample_path)}
        manifest_path = write_manifest(out / MANIFEST, manifest)
        return PreparedData(
            out_dir=out,
            train=paths["train"],
            validation=paths.get("validation"),
            test=paths.get("test"),
            test_gen=paths.get("test_gen"),
            sample_score=sample_path,
            manifest=manifest_path,
            counts={role: writers[role].rows for role in paths},
            sha256={role: writers[role].sha256 for role in paths},
            report=report,
        )


def _check_mode(mode: str, key: str) -> None:
    if mode not in MODES:
        raise ConfigurationError(f"{key} must be strict, skip or report, got {mode!r}", key=key)


def _is_error(code: str) -> bool:
    from phi_finetune.data.validation import RULES

    return RULES[code].severity == "error"


def _dup_and_leak(
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
    if split in _TRAIN_SPLITS:
        if id_key is not None:
            train_keys.add(id_key)
        if first_key is not None:
            train_keys.add(first_key)
    elif split in _TEST_SPLITS:
        if id_key is not None and id_key in train_keys:
            issues.append(("leakage", "prompt_id", f"prompt_id {prompt_id!r:.24} is also in train"))
        elif first_key is not None and first_key in train_keys:
            issues.append(
                ("leakage", "messages[0].content", "the first user message also appears in train")
            )
