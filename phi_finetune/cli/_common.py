"""What the command groups share: output, the one ``--state-dir`` option, the one way to a
workspace.

* :func:`emit` / :func:`say`: one place that prints text or JSON.
* :func:`add_state_dir_option` defines ``--state-dir`` for every command that reads or writes
  run journals; :func:`resolve_state_dir` (called by ``main`` before the handler) turns it into
  a path: ``--state-dir``, else the ``state_dir`` of ``--config``, else
  ``$PHI_FINETUNE_STATE_DIR``, else ``.phi_finetune``.
* :func:`workspace_for` builds the Azure ML workspace every command that talks to Azure uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import RunConfig
    from phi_finetune.journal import Journal

__all__ = [
    "STATE_DIR_HELP",
    "add_state_dir_option",
    "emit",
    "resolve_state_dir",
    "say",
    "workspace_for",
]

STATE_DIR_HELP = (
    "folder of the run journals (default: the state_dir of --config, else "
    "$PHI_FINETUNE_STATE_DIR, else .phi_finetune)"
)


def emit(args: Any, value: Any, text: str | None = None) -> None:
    """Print ``value`` as JSON when ``--json`` was given, else ``text`` (or ``value`` as text)."""
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")
    else:
        sys.stdout.write((text if text is not None else str(value)).rstrip("\n") + "\n")


def say(args: Any, text: str) -> None:
    """Print a progress line to stderr (kept off stdout so ``--json`` output stays parseable)."""
    if not getattr(args, "quiet", False):
        sys.stderr.write(text.rstrip("\n") + "\n")


def add_state_dir_option(parser: argparse.ArgumentParser) -> None:
    """The ``--state-dir DIR`` option of a command that uses run journals."""
    parser.add_argument("--state-dir", metavar="DIR", default=None, help=STATE_DIR_HELP)


def resolve_state_dir(args: argparse.Namespace) -> Path:
    """The state folder the arguments name (see the module docstring for the order)."""
    given = getattr(args, "state_dir", None)
    if given:
        return Path(given).expanduser()
    if getattr(args, "config", None):
        from phi_finetune.config import load_run_config

        return load_run_config(args.config).state_dir
    from phi_finetune.constants import default_state_dir

    return default_state_dir()


def workspace_for(
    args: Any, *, config: RunConfig | None = None, journal: Journal | None = None
) -> Workspace:
    """The Azure ML workspace of a command.

    Its ``[workspace]`` section comes from ``config`` when given, else from the ``--config``
    file, else from the configuration journaled with ``journal``; when none has one,
    :meth:`~phi_finetune.azure.workspace.Workspace.resolve` searches the environment and
    ``config.json``.
    """
    from phi_finetune.azure.workspace import Workspace

    if config is None and getattr(args, "config", None):
        from phi_finetune.config import load_run_config

        config = load_run_config(args.config)
    if config is None and journal is not None:
        from phi_finetune.config import RunConfig

        config = RunConfig.from_dict(journal.config, source=f"journal of run {journal.run_id}")
    return Workspace.resolve(None if config is None else config.workspace)
