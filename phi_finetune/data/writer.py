"""Deterministic, atomic JSONL output and the ``manifest.json`` beside it.

A valid JSON Lines row that needs no change is copied byte for byte; every other record (from
Parquet, pandas, lists, Hugging Face, or a row that gained a derived ``prompt_id``) is written as
``orjson.dumps(record, option=OPT_SORT_KEYS)`` plus ``\\n``. Either way the same input and
arguments give byte-identical files on every platform. Files are written to a
temporary name in the same folder, hashed (SHA-256) while written, fsynced and renamed over the
target only when the whole split succeeded (the ``phi_finetune._atomic`` contract, streamed).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from phi_finetune._atomic import atomic_write_json

__all__ = ["JsonlWriter", "dumps_record", "sha256_file", "write_manifest"]

#: Mode of written files (mkstemp would leave them owner-only).
FILE_MODE = 0o644
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps_record(record: Any) -> bytes:
    """One canonical JSONL line (with the newline)."""
    return orjson.dumps(record, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE, default=str)


class JsonlWriter:
    """Stream lines into ``path`` atomically; :meth:`commit` publishes, :meth:`abort` discards.

    Lines are gathered into ~1 MiB blocks, each hashed and written in one call (a background
    thread for this measured slower on a busy 2-core machine: the GIL hand-offs cost more).
    """

    def __init__(self, path: Path, *, block_size: int = 1 << 20) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self._tmp = Path(tmp)
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._block: list[bytes] = []
        self._block_bytes = 0
        self._block_size = block_size
        self.rows = 0
        self.bytes = 0
        self._done = False

    def write(self, line: bytes) -> None:
        self._block.append(line)
        self._block_bytes += len(line)
        self.rows += 1
        if self._block_bytes >= self._block_size:
            self._flush_block()

    def _flush_block(self) -> None:
        if not self._block:
            return
        data = b"".join(self._block)
        self._block = []
        self.bytes += self._block_bytes
        self._block_bytes = 0
        self._hash.update(data)
        self._handle.write(data)

    @property
    def sha256(self) -> str:
        """SHA-256 of everything written (complete after :meth:`commit`)."""
        self._flush_block()
        return self._hash.hexdigest()

    def commit(self) -> Path:
        if self._done:
            return self.path
        try:
            self._flush_block()
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except BaseException:
            self.abort()
            raise
        self._handle.close()
        self._tmp.chmod(FILE_MODE)
        self._tmp.replace(self.path)
        self._done = True
        return self.path

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._block = []
        self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (indented, sorted keys: deterministic)."""
    return atomic_write_json(path, manifest, mode=FILE_MODE)
