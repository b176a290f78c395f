"""``phi-finetune``: the command line entry point.

Each command group lives in its own module (``phi_finetune/cli/<group>.py``) exposing
``register(subparsers)``; handlers are attached with ``set_defaults(handler=fn)`` and return
the exit code. Exit codes: 0 success, 1 a library error (one clear message; the traceback only
with ``-v``), 2 a usage error, 3 an authentication error (sign in again, then ``resume``),
130 interrupted. An exception from azure-core, azure-ai-ml or requests that slipped past the
library's own translation still becomes one line (exit 1). Only argparse is imported here so
``--help`` stays fast.

Commands that use run journals take ``--state-dir``
(:func:`phi_finetune.cli._common.add_state_dir_option`); :func:`_dispatch` resolves it to a path
once, before the handler runs, so every handler sees the same folder.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from phi_finetune._version import __version__

#: Command-group modules, in the order their commands appear in ``--help``.
COMMAND_MODULES = (
    "data",
    "models",
    "plan",
    "run",
    "job",
    "status",
    "resume",
    "teardown",
    "invoke",
    "endpoints",
    "demo",
    "serve",
    "report",
    "rollout",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command group registered)."""
    parser = argparse.ArgumentParser(
        prog="phi-finetune",
        description=(
            "Fine-tune a chat model with Azure ML registry components (or locally, offline), "
            "register it, deploy it, score it and delete it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"phi-finetune {__version__}")
    _add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"phi_finetune.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"phi_finetune.cli.{name}":
                raise
            continue
        module.register(subparsers)
    for sub in subparsers.choices.values():
        _add_global_options(sub, suppress=True)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    # Global options are accepted before or after the command; on subcommands their defaults
    # are suppressed so a value given before the command is not overwritten.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config", metavar="FILE", default=default, help="run configuration (phi-finetune.toml)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="machine-readable output",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more logging; tracebacks on errors",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with _cli_logging(args.verbose):
        return _dispatch(parser, args)


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr if args.command else sys.stdout)
        return 2 if args.command else 0
    from phi_finetune.errors import AuthenticationError, PhiFinetuneError

    try:
        if "state_dir" in vars(args):
            from phi_finetune.cli._common import resolve_state_dir

            args.state_dir = resolve_state_dir(args)
        code: int = handler(args)
    except PhiFinetuneError as exc:
        if args.verbose:
            raise
        if isinstance(exc, AuthenticationError):
            sys.stderr.write(f"error: {_one_line(str(exc))}\n")
            return EXIT_AUTH
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        # Defence in depth: the library translates service errors at its boundary; one that
        # slipped through is still one line, not a traceback.
        from phi_finetune.azure.boundary import is_service_exception, translate

        if args.verbose or not is_service_exception(exc):
            raise
        error = translate(f"run `phi-finetune {args.command}`", exc)
        sys.stderr.write(f"error: {_one_line(str(error))}\n")
        return EXIT_AUTH if isinstance(error, AuthenticationError) else 1
    return code


EXIT_AUTH = 3
"""Exit code of an authentication error: sign in again (``az login``), then ``resume``."""


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


_NOISY_LOGGERS = ("azure", "urllib3", "mlflow", "httpx", "filelock")


@contextlib.contextmanager
def _cli_logging(verbosity: int) -> Iterator[None]:
    """Logging and warning filters for one CLI call, undone afterwards (``main()`` may be called
    in-process, from tests or a notebook)."""
    root = logging.getLogger()
    saved_root_level, saved_handlers = root.level, list(root.handlers)
    saved_levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    saved_env = os.environ.get("MLFLOW_LOGGING_LEVEL")
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    with warnings.catch_warnings():
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        if verbosity < 2:
            # MLflow installs its own INFO handler at import time; this is how it is told not to.
            os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            for noisy in _NOISY_LOGGERS:
                logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, saved in saved_levels.items():
                logging.getLogger(name).setLevel(saved)
            for added in [h for h in root.handlers if h not in saved_handlers]:
                root.removeHandler(added)
            root.setLevel(saved_root_level)
            if saved_env is None:
                os.environ.pop("MLFLOW_LOGGING_LEVEL", None)
            else:
                os.environ["MLFLOW_LOGGING_LEVEL"] = saved_env


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
