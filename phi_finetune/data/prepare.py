"""The ``prepare`` pipeline: check, plan, sample, validate and write each split, then publish.

Steps, in order:

1. :func:`check_options`: the arguments, and the splits the data has.
2. :func:`plan_roles`: which split feeds which output file (train, validation, test, test_gen).
3. Per split (:meth:`_Preparation.write_split`): the sample (:func:`~.sampling.select_rows`),
   every sampled row checked, routed (train or the validation carve) and written.
4. :meth:`_Preparation.outcome`: the report; ``strict`` raises on errors, no train rows raises.
5. :meth:`_Preparation.finish`: commit the files, write ``sample_score.json``,
   ``validation_report.json`` and ``manifest.json``.

A failure before step 5 discards every temporary file: nothing half-written is published.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.azure.data_assets import RegisteredData, register_file
from phi_finetune.data.records import SPLIT_FILES, TokenizerLike, token_count_label
from phi_finetune.data.report import ReportBuilder, ValidationReport
from phi_finetune.data.rules import check_mode
from phi_finetune.data.sampling import check_sampling, in_validation, select_rows
from phi_finetune.data.sources import RowSource
from phi_finetune.data.validation import (
    RowFacts,
    check_duplicates_and_leakage,
    checked_rows,
    purpose_for,
)
from phi_finetune.data.writer import JsonlWriter, dumps_record, write_manifest
from phi_finetune.errors import ConfigurationError, DataSourceError, DataValidationError
from phi_finetune.progress import progress

logger = logging.getLogger(__name__)

__all__ = ["PrepareOptions", "PreparedData", "prepare_splits"]

MANIFEST = "manifest.json"
REPORT_FILE = "validation_report.json"
SAMPLE_SCORE = "sample_score.json"
MANIFEST_FORMAT = "phi_finetune.data/1"
#: (role, split) for the splits after train, in the order they are written.
_LATER_ROLES = (("validation", "validation"), ("test", "test_sft"), ("test_gen", "test_gen"))


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


@attrs.frozen(kw_only=True)
class PrepareOptions:
    """The arguments of :meth:`UltraChatDataset.prepare <.dataset.UltraChatDataset.prepare>`."""

    split_pc: float | None
    sample: str
    seed: int
    rows: int | Mapping[str, int] | None
    validation_pc: float | None
    on_invalid: str
    max_tokens: int | None
    tokenizer: TokenizerLike | None
    scoring_parameters: Mapping[str, Any] | None
    max_problems: int

    def manifest_sampling(self) -> dict[str, Any]:
        """The arguments recorded under ``sampling`` in ``manifest.json``."""
        return {
            "split_pc": self.split_pc,
            "sample": self.sample,
            "seed": self.seed,
            "rows": self.rows,
            "validation_pc": self.validation_pc,
            "on_invalid": self.on_invalid,
            "max_tokens": self.max_tokens,
        }


def check_options(splits: Mapping[str, Sequence[RowSource]], options: PrepareOptions) -> None:
    """Raise before anything is written when the arguments or the splits cannot work."""
    check_mode(options.on_invalid, "on_invalid")
    check_sampling(options.split_pc, options.rows, options.sample, options.validation_pc)
    if "train_sft" not in splits:
        raise DataSourceError(
            f"no training split; this dataset has {', '.join(splits)}. Name the file "
            "train_sft.jsonl/train.jsonl or pass split='train_sft'"
        )
    if options.validation_pc is not None and "validation" in splits:
        raise ConfigurationError(
            "the data already has a validation split; drop validation_pc or that split",
            key="validation_pc",
        )


def plan_roles(splits: Mapping[str, Sequence[RowSource]]) -> list[tuple[str, str]]:
    """(output role, source split) pairs: train first, then the splits the data has."""
    return [("train", "train_sft")] + [
        (role, split) for role, split in _LATER_ROLES if split in splits
    ]


def prepare_splits(
    splits: Mapping[str, Sequence[RowSource]],
    origin: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    options: PrepareOptions,
) -> PreparedData:
    """Run the pipeline over ``splits`` into ``out_dir`` (``origin`` goes into the manifest)."""
    check_options(splits, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    roles = plan_roles(splits)
    run = _Preparation(splits, out, options, check_leakage=len(roles) > 1)
    try:
        for role, split in roles:
            run.write_split(role, split)
        report = run.outcome()
    except BaseException:
        run.abort()
        raise
    return run.finish(report, origin)


class _Preparation:
    """One ``prepare`` run: the report, the open writers and what the manifest records."""

    def __init__(
        self,
        splits: Mapping[str, Sequence[RowSource]],
        out: Path,
        options: PrepareOptions,
        *,
        check_leakage: bool,
    ) -> None:
        self.splits = splits
        self.out = out
        self.options = options
        self.builder = ReportBuilder(
            mode=options.on_invalid,
            purpose=None,
            max_tokens=options.max_tokens,
            token_count=token_count_label(options.tokenizer),
            max_problems=options.max_problems,
        )
        self.writers: dict[str, JsonlWriter] = {}
        self.source_splits: dict[str, str] = {}
        self.sampling: dict[str, Any] = {}
        self.first_gen: dict[str, Any] | None = None
        self.train_keys: set[bytes] | None = set() if check_leakage else None

    def _open(self, role: str, split: str) -> JsonlWriter:
        writer = self.writers[role] = JsonlWriter(self.out / SPLIT_FILES[role])
        self.source_splits[role] = split
        return writer

    def write_split(self, role: str, split: str) -> None:
        """Sample ``split``, check each row and write the kept ones into ``role``'s file."""
        options = self.options
        selection = select_rows(
            self.splits[split],
            split,
            split_pc=options.split_pc,
            rows=options.rows,
            sample=options.sample,
            seed=options.seed,
        )
        self.sampling[split] = {"available": selection.available, "selected": selection.selected}
        writer = self._open(role, split)
        carve: JsonlWriter | None = None
        carve_pc = 0.0
        if role == "train" and options.validation_pc is not None:
            carve, carve_pc = self._open("validation", split), options.validation_pc
        rows = checked_rows(
            self.splits[split],
            purpose=purpose_for(split, None),
            max_tokens=options.max_tokens,
            tokenizer=options.tokenizer,
            limit=selection.limit,
            pick=selection.pick,
        )
        keep_invalid = options.on_invalid == "report"
        builder, train_keys = self.builder, self.train_keys
        seen: set[bytes] = set()
        for label, line, obj, issues, facts, raw in progress(
            rows, desc=f"prepare {split}", total=selection.selected, unit="rows"
        ):
            if facts is not None:
                check_duplicates_and_leakage(issues, facts, split, seen, train_keys)
            bad = builder.row(split, label, line, issues)
            if facts is None or (bad and not keep_invalid):
                continue
            target = writer
            if (
                carve is not None
                and facts.prompt_id is not None
                and in_validation(facts.prompt_id, carve_pc)
            ):
                target = carve
            written = _write_row(target, obj, facts, raw, where=(label, line))
            if role == "test_gen" and self.first_gen is None:
                self.first_gen = written

    def outcome(self) -> ValidationReport:
        """The report; raises when ``strict`` found errors or no training row is left."""
        report = self.builder.build()
        if self.options.on_invalid == "strict":
            report.raise_for_errors("prepare stopped; nothing was written")
        if self.writers["train"].rows == 0:
            raise DataValidationError(
                "no training rows left to write: every sampled row was invalid or the sample "
                "is empty; raise split_pc/rows or fix the data",
                problems=report.error_problems(),
                total=report.errors,
            )
        return report

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def finish(self, report: ValidationReport, origin: Mapping[str, Any]) -> PreparedData:
        """Publish the files, the scoring sample, the report and the manifest."""
        from phi_finetune._atomic import atomic_write_text

        out = self.out
        paths = self._publish()
        sample_path = self._write_sample_score()
        atomic_write_text(out / REPORT_FILE, report.to_json() + "\n", mode=0o644)
        manifest = self._manifest(paths, report, origin, sample_path)
        manifest_path = write_manifest(out / MANIFEST, manifest)
        writers = self.writers
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

    def _publish(self) -> dict[str, Path]:
        """Commit every written file (empty ones but train are dropped); remove stale ones."""
        paths: dict[str, Path] = {}
        for role, writer in self.writers.items():
            if writer.rows == 0 and role != "train":
                writer.abort()
                (self.out / SPLIT_FILES[role]).unlink(missing_ok=True)
                continue
            paths[role] = writer.commit()
        for role, name in SPLIT_FILES.items():
            if role not in paths:
                (self.out / name).unlink(missing_ok=True)
        return paths

    def _write_sample_score(self) -> Path | None:
        """``sample_score.json`` from the first test_gen row, when there is a usable one."""
        from phi_finetune.data.scoring_sample import write_sample_score

        sample_path: Path | None = None
        if self.first_gen is not None:
            try:
                sample_path = write_sample_score(
                    self.first_gen, self.out / SAMPLE_SCORE, self.options.scoring_parameters
                )
            except DataValidationError as exc:
                logger.warning("no %s written: %s", SAMPLE_SCORE, exc)
        if sample_path is None:
            (self.out / SAMPLE_SCORE).unlink(missing_ok=True)
        return sample_path

    def _manifest(
        self,
        paths: Mapping[str, Path],
        report: ValidationReport,
        origin: Mapping[str, Any],
        sample_path: Path | None,
    ) -> dict[str, Any]:
        """``manifest.json``: source, sampling, each file's rows and hash, the report summary."""
        from phi_finetune._version import __version__

        writers = self.writers
        files = {
            role: {
                "path": SPLIT_FILES[role],
                "rows": writers[role].rows,
                "bytes": writers[role].bytes,
                "sha256": writers[role].sha256,
                "source_split": self.source_splits[role],
            }
            for role in paths
        }
        summary = report.to_dict()
        del summary["problems"]
        manifest = {
            "format": MANIFEST_FORMAT,
            "generator": f"phi_finetune {__version__}",
            "source": {
                **origin,
                "splits": {
                    split: [s.describe() for s in srcs] for split, srcs in self.splits.items()
                },
            },
            "sampling": {**self.options.manifest_sampling(), "splits": self.sampling},
            "files": files,
            "validation": summary,
        }
        if sample_path is not None:
            from phi_finetune.data.writer import sha256_file

            manifest["sample_score"] = {"path": SAMPLE_SCORE, "sha256": sha256_file(sample_path)}
        return manifest


def _write_row(
    writer: JsonlWriter,
    obj: Any,
    facts: RowFacts,
    raw: bytes | None,
    *,
    where: tuple[str, int | None] = ("<records>", None),
) -> Any:
    """Write one kept row, a derived ``prompt_id``/``prompt`` added; return what was written."""
    if facts.prompt_id is not None and "prompt_id" not in obj:
        obj = {**obj, "prompt_id": facts.prompt_id}
        raw = None
    if facts.first_user is not None and "prompt" not in obj:
        obj = {**obj, "prompt": facts.first_user}
        raw = None
    # A JSONL line that needs no change is copied byte for byte (faster, and the text stays
    # exactly as given); anything else is serialized canonically.
    if raw is not None and raw[-1:] == b"\n" and raw[-2:-1] != b"\r":
        writer.write(raw)
    else:
        writer.write(_dumps_kept(obj, where))
    return obj


def _dumps_kept(obj: Any, where: tuple[str, int | None]) -> bytes:
    """The canonical line; rows orjson refuses (lone surrogates that ``report`` keeps, integers
    beyond 64 bits) fall back to ASCII-escaped JSON, which reads back to the same value."""
    try:
        return dumps_record(obj)
    except TypeError:
        pass
    import json

    try:
        text = json.dumps(
            obj, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str
        )
    except (TypeError, ValueError, RecursionError) as exc:
        from phi_finetune.errors import DataProblem

        source, line = where
        raise DataValidationError(
            "prepare stopped: a kept row cannot be written as JSON",
            problems=[
                DataProblem(
                    source,
                    line,
                    None,
                    f"not serializable as JSON: {exc}",
                    "drop the row or use JSON values only (strings, numbers, lists, objects)",
                    code="invalid-json",
                )
            ],
        ) from None
    return text.encode("ascii") + b"\n"
