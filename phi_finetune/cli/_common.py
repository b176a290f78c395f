"""Output helpers shared by the command groups: one place that prints text or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any


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
