"""Reading ``phi-finetune.toml``: TOML syntax errors with file, line and column, then the checks
of :mod:`phi_finetune.config.run`, which collect every problem (file, dotted key, what is allowed,
the closest valid names) into one :class:`~phi_finetune.errors.ConfigurationError`. Writing is
:func:`~phi_finetune.config.run.dumps_run_config` (``tomli_w``).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from phi_finetune.config.run import RunConfig, build_run_config, dumps_run_config
from phi_finetune.errors import ConfigurationError

__all__ = ["DEFAULT_RUN_CONFIG_FILE", "dumps_run_config", "load_run_config"]

#: The run configuration file name the CLI looks for.
DEFAULT_RUN_CONFIG_FILE = "phi-finetune.toml"


def load_run_config(path: str | os.PathLike[str]) -> RunConfig:
    """Load and check ``phi-finetune.toml``; relative paths resolve against its folder."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"{file}: run configuration file not found. Create it (see docs/configuration.md "
            "and examples/phi-finetune.toml) or give another path.",
            source=str(file),
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"{file}: cannot read the run configuration ({type(exc).__name__}: {exc.strerror})",
            source=str(file),
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{file}: not UTF-8 text (byte {exc.start}); save the file as UTF-8",
            source=str(file),
        ) from exc
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigurationError(
            f"{file}: TOML nested too deeply to read; a run configuration needs only tables "
            "of plain values (see docs/configuration.md).",
            source=str(file),
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f"{file}:{match.group(1)}:{match.group(2)}" if match else str(file)
        detail = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        raise ConfigurationError(
            f"{where}: TOML syntax error: {detail}. Fix the file (TOML reference: "
            "https://toml.io/en/v1.0.0).",
            source=str(file),
        ) from exc
    return build_run_config(data, source=str(file), base_dir=file.resolve().parent)
