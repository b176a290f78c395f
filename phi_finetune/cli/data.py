"""``phi-finetune data``: prepare, validate and describe chat data.

Exit codes: 0 valid / done, 1 invalid data (every problem listed as ``file:line``) or a failed
source, 2 a usage error (bad option, missing file). Never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``data`` command group (prepare, validate, stats)."""
    parser = subparsers.add_parser(
        "data",
        help="prepare, validate and describe chat data (ultrachat format)",
        description="Prepare, validate and describe chat data in the ultrachat format.",
    )
    parser.set_defaults(handler=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    prepare = sub.add_parser(
        "prepare",
        help="validate, sample and write train/validation/test JSONL with a manifest",
        description=(
            "Validate, sample and write train.jsonl [validation.jsonl] test.jsonl "
            "[test_gen.jsonl sample_score.json] and manifest.json (SHA-256 of every file)."
        ),
    )
    prepare.add_argument(
        "--source",
        required=True,
        help="a Hugging Face dataset id, a file or folder (JSONL/JSON/Parquet, .gz read), "
        "or 'demo'",
    )
    prepare.add_argument("--out", required=True, metavar="DIR", help="output folder")
    prepare.add_argument("--split-pc", type=float, metavar="P", help="take P%% of each split")
    prepare.add_argument("--sample", choices=("head", "random"), default="head")
    prepare.add_argument("--seed", type=int, default=42, metavar="N")
    prepare.add_argument(
        "--rows", type=_non_negative, metavar="N", help="take N rows of each split"
    )
    prepare.add_argument("--validation-pc", type=float, metavar="P", help="carve P%% of train")
    prepare.add_argument("--on-invalid", choices=("strict", "skip", "report"), default="strict")
    prepare.add_argument("--max-tokens", type=_positive, metavar="N")
    prepare.add_argument(
        "--hub-split",
        action="append",
        metavar="SPLIT",
        help="hub split to load (repeatable; default train_sft, test_sft, test_gen)",
    )
    _max_line_flag(prepare)
    _json_flag(prepare)
    prepare.set_defaults(handler=cmd_prepare)

    validate = sub.add_parser(
        "validate",
        help="check files record by record (exit 1 listing every problem as file:line)",
    )
    validate.add_argument(
        "files", nargs="+", metavar="FILE", help="JSONL/JSON/Parquet (.gz read) files or folders"
    )
    validate.add_argument("--max-tokens", type=_positive, metavar="N")
    validate.add_argument("--purpose", choices=("train", "score"))
    validate.add_argument("--max-problems", type=_positive, default=10_000, metavar="N")
    _max_line_flag(validate)
    _json_flag(validate)
    validate.set_defaults(handler=cmd_validate)

    stats = sub.add_parser("stats", help="rows, turns, characters, tokens, roles, duplicates")
    stats.add_argument(
        "files", nargs="+", metavar="FILE", help="JSONL/JSON/Parquet files or folders"
    )
    stats.add_argument("--max-tokens", type=_positive, metavar="N")
    _max_line_flag(stats)
    _json_flag(stats)
    stats.set_defaults(handler=cmd_stats)


def _max_line_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-line-bytes",
        type=_positive,
        metavar="N",
        help="longest JSONL line / JSON array element read, in bytes; a longer one is an "
        "error (default 16 MiB)",
    )


def _files_options(args: argparse.Namespace) -> dict[str, Any]:
    """``from_files`` keyword arguments from the common options."""
    limit = getattr(args, "max_line_bytes", None)
    return {} if limit is None else {"max_line_bytes": limit}


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _out(text: str) -> None:
    sys.stdout.write(text.rstrip("\n") + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


def _dump(value: Any) -> None:
    import json

    _out(json.dumps(value, indent=2, sort_keys=True, default=str))


def _missing(paths: list[str]) -> list[str]:
    return [p for p in paths if not Path(p).exists()]


def _fail(exc: Exception, args: argparse.Namespace) -> int:
    """Map a library error to its exit code and one clear message (problems listed)."""
    from phi_finetune.errors import ConfigurationError, DataValidationError

    code = EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_INVALID
    if _wants_json(args):
        payload: dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, DataValidationError):
            payload["problems"] = [p.to_dict() for p in exc.problems]
            payload["total"] = exc.total
        _dump(payload)
    else:
        _err(f"error: {exc}")
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    """``data validate FILE...``: 0 valid, 1 invalid, 2 usage error."""
    from phi_finetune.data import UltraChatDataset
    from phi_finetune.errors import PhiFinetuneError

    missing = _missing(args.files)
    if missing:
        _err(f"error: no such file or folder: {', '.join(missing)}")
        return EXIT_USAGE
    try:
        dataset = UltraChatDataset.from_files(args.files, **_files_options(args))
        report = dataset.validate(
            mode="report",
            purpose=args.purpose,
            max_tokens=args.max_tokens,
            max_problems=args.max_problems,
        )
    except PhiFinetuneError as exc:
        return _fail(exc, args)
    if _wants_json(args):
        _out(report.to_json())
    else:
        _out(report.format(limit=None))
    return EXIT_OK if report.ok else EXIT_INVALID


def cmd_stats(args: argparse.Namespace) -> int:
    """``data stats FILE...``."""
    from phi_finetune.data import UltraChatDataset
    from phi_finetune.errors import PhiFinetuneError

    missing = _missing(args.files)
    if missing:
        _err(f"error: no such file or folder: {', '.join(missing)}")
        return EXIT_USAGE
    try:
        dataset = UltraChatDataset.from_files(args.files, **_files_options(args))
        stats = dataset.stats(max_tokens=args.max_tokens)
    except PhiFinetuneError as exc:
        return _fail(exc, args)
    _out(stats.to_json() if _wants_json(args) else str(stats))
    return EXIT_OK


def cmd_prepare(args: argparse.Namespace) -> int:
    """``data prepare --source S --out DIR``: 0 written, 1 invalid data, 2 usage error."""
    from phi_finetune.data import UltraChatDataset
    from phi_finetune.errors import PhiFinetuneError

    if args.split_pc is not None and args.rows is not None:
        _err("error: give --split-pc or --rows, not both")
        return EXIT_USAGE
    try:
        source = args.source
        if source == "demo":
            dataset = UltraChatDataset.demo()
        elif Path(source).exists():
            dataset = UltraChatDataset.from_files(source, **_files_options(args))
        elif source.startswith((".", "/", "~")) or source.lower().endswith(
            (".jsonl", ".json", ".parquet", ".gz")
        ):
            _err(f"error: no such file or folder: {source}")
            return EXIT_USAGE
        else:
            splits = args.hub_split or ["train_sft", "test_sft", "test_gen"]
            dataset = UltraChatDataset.from_hub(source, splits=splits)
        prepared = dataset.prepare(
            args.out,
            split_pc=args.split_pc,
            sample=args.sample,
            seed=args.seed,
            rows=args.rows,
            validation_pc=args.validation_pc,
            on_invalid=args.on_invalid,
            max_tokens=args.max_tokens,
        )
    except PhiFinetuneError as exc:
        return _fail(exc, args)
    files = {role: str(path) for role, path in prepared.files().items()}
    if _wants_json(args):
        _dump(
            {
                "ok": True,
                "out_dir": str(prepared.out_dir),
                "files": files,
                "counts": dict(prepared.counts),
                "sha256": dict(prepared.sha256),
                "manifest": str(prepared.manifest),
                "sample_score": str(prepared.sample_score) if prepared.sample_score else None,
                "validation": {
                    k: v for k, v in prepared.report.to_dict().items() if k != "problems"
                },
            }
        )
    else:
        for role, path in files.items():
            _out(f"{role}: {path} ({prepared.counts[role]} rows)")
        if prepared.sample_score:
            _out(f"sample_score: {prepared.sample_score}")
        _out(f"manifest: {prepared.manifest}")
        _out(prepared.report.format(limit=20 if prepared.report.ok else None))
    return EXIT_OK
