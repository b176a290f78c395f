"""Files a local endpoint server leaves: removed when it stops or its run is torn down."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["remove_server_files"]


def remove_server_files(
    *,
    key_file: str | os.PathLike[str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> None:
    """Delete a stopped server's key file and log (missing files are fine).

    For teardown from another process, which has only the journaled paths.
    """
    for path in (key_file, log_path):
        if path:
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
