"""Reading data files as streams of raw records: gzip detection, read errors, line limits.

:func:`jsonl_lines` and :func:`array_elements` yield ``(line or row, bytes | SourceProblem)``
without ever holding more than one record (at most ``max_line_bytes``) plus one read chunk,
so a 50 MB JSON array needs about as little memory as the same rows as JSON Lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from phi_finetune.errors import DataSourceError

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "GZIP_MAGIC",
    "MAX_LINE_SETTING",
    "SourceProblem",
    "array_elements",
    "guarded",
    "jsonl_lines",
    "open_data",
    "read_failure",
]

#: The longest JSON Lines line (or JSON array element) read, in bytes: one record, so this
#: bounds the memory used (``max_line_bytes=`` of ``UltraChatDataset.from_files``,
#: ``--max-line-bytes`` of ``phi-finetune data``).
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_LINE_SETTING = "max_line_bytes (--max-line-bytes)"
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
# Everything up to the next structural character outside strings, which it captures: group 1
# opens, 2 closes, 3 a comma, 4 a '"' that starts a string the buffer cuts (read more).
# Possessive quantifiers: no backtracking, so the scan stays linear.
_TOKEN = re.compile(
    rb'(?:[^"\[\]{},]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+(?:([\[{])|([\]}])|(,)|("))',
    re.DOTALL,
)
_OPEN, _CLOSE, _COMMA = 1, 2, 3


class SourceProblem(NamedTuple):
    """A line or element that cannot be read as a record (reported by its rule ``code``)."""

    code: str
    message: str


def read_failure(path: Path, exc: BaseException) -> DataSourceError:
    """The library's error for a file that cannot be read (gzip damage named as such)."""
    if isinstance(exc, OSError) and not is_gzip_error(exc):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return DataSourceError(
            f"cannot read {path}: {reason}; check that the file exists, is readable and that "
            "its disk is healthy"
        )
    return DataSourceError(
        f"cannot read {path}: corrupt or truncated gzip data ({exc}); re-download or "
        "re-compress the file, or decompress it and pass the plain file"
    )


def is_gzip_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from damaged gzip data rather than from the disk."""
    import gzip
    import zlib

    return isinstance(exc, gzip.BadGzipFile | EOFError | zlib.error)


def open_data(path: Path) -> Any:
    """``path`` opened for binary reading, decompressed when it is gzip (by magic bytes)."""
    try:
        handle = path.open("rb")
        head = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
    except OSError as exc:
        raise read_failure(path, exc) from None
    if head != GZIP_MAGIC:
        return handle
    import gzip

    handle.close()
    try:
        return gzip.open(path, "rb")  # owns (and closes) its file
    except OSError as exc:
        raise read_failure(path, exc) from None


def guarded(path: Path, rows: Callable[[Any], Iterator[tuple[int, Any]]]) -> Iterator[Any]:
    """``rows(handle)`` over the opened file; read errors become :class:`DataSourceError`."""
    import zlib

    handle = open_data(path)
    try:
        with handle:
            yield from rows(handle)
    except (OSError, EOFError, zlib.error) as exc:
        raise read_failure(path, exc) from None


def _too_long(limit: int, what: str) -> SourceProblem:
    return SourceProblem(
        "line-too-long",
        f"{what} is longer than {limit} bytes; split the record, or raise the limit with "
        f"{MAX_LINE_SETTING}",
    )


def jsonl_lines(handle: Any, limit: int) -> Iterator[tuple[int, Any]]:
    """The non-blank lines of a JSON Lines file as raw bytes; an over-long line is skipped in
    chunks and reported (memory stays bounded by ``limit``)."""
    readline = handle.readline
    number = 0
    while True:
        line = readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit and line[-1:] != b"\n":
            while line and line[-1:] != b"\n":  # skip the rest, a chunk at a time
                line = readline(_CHUNK)
            yield number, _too_long(limit, "the line")
            continue
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        # orjson ignores the trailing newline: lines go on unstripped (no copy).
        if line and not line.isspace():
            yield number, line


def _first_value(handle: Any) -> bytearray:
    """The file from its first non-blank byte on (a first chunk of it; empty: no value)."""
    buf = bytearray(handle.read(_CHUNK))
    if buf.startswith(b"\xef\xbb\xbf"):
        del buf[:3]
    while True:
        del buf[: len(buf) - len(buf.lstrip())]
        if buf:
            return buf
        more = handle.read(_CHUNK)
        if not more:
            return buf
        buf.extend(more)


def _single_value(handle: Any, buf: bytearray, limit: int) -> Iterator[tuple[int, Any]]:
    """One value, not an array: read whole (up to ``limit``) as a single record."""
    while len(buf) <= limit:
        more = handle.read(_CHUNK)
        if not more:
            yield 1, bytes(buf)
            return
        buf.extend(more)
    yield 1, _too_long(limit, "the file's single JSON value")


def array_elements(handle: Any, limit: int) -> Iterator[tuple[int, Any]]:
    """The elements of the JSON array in ``handle`` as raw bytes, one at a time.

    Only the structure is scanned here (strings, brackets, commas at depth 1); each element is
    parsed later like a JSON Lines line, so its errors are reported the same way.
    """
    buf = _first_value(handle)
    if not buf:
        return
    if buf[:1] != b"[":
        yield from _single_value(handle, buf, limit)
        return
    index, depth, pos, start, eof = 0, 1, 1, 1, False
    while True:
        for match in _TOKEN.finditer(buf, pos):
            if match.start() != pos:  # the run before the buffer's end found no token: read
                break
            pos = match.end()
            kind = match.lastindex
            if kind == _OPEN:
                depth += 1
            elif kind == _CLOSE:
                depth -= 1
                if depth == 0:
                    yield from _last_element(handle, buf, start, match, index)
                    return
            elif kind == _COMMA:
                if depth == 1:
                    index += 1
                    element = bytes(buf[start : match.start(3)])
                    yield index, element if element.strip() else _EMPTY_ELEMENT
                    start = match.end()
            else:  # a string cut by the end of the buffer
                pos = match.start(4)
                break
            if depth == 1 and pos - start > limit:
                yield index + 1, _too_long(limit, "the JSON array element")
                return
        if eof:
            yield (
                index + 1,
                SourceProblem("invalid-json", "the JSON array is not closed (truncated file?)"),
            )
            return
        if len(buf) - start > limit:
            yield index + 1, _too_long(limit, "the JSON array element")
            return
        del buf[:start]
        pos -= start
        start = 0
        more = handle.read(max(_CHUNK, len(buf)))
        eof = not more
        buf.extend(more)


_EMPTY_ELEMENT = SourceProblem("invalid-json", "an empty element (two commas in a row?)")


def _last_element(
    handle: Any, buf: bytearray, start: int, match: re.Match[bytes], index: int
) -> Iterator[tuple[int, Any]]:
    """The element before the array's closing bracket, then what follows the array."""
    if buf[match.start(2) : match.end(2)] != b"]":
        yield (
            index + 1,
            SourceProblem("invalid-json", "a '}' closes the JSON array; check the brackets"),
        )
        return
    element = bytes(buf[start : match.start(2)])
    if element.strip():
        index += 1
        yield index, element
    elif index:
        index += 1
        yield index, SourceProblem("invalid-json", "a trailing comma before ']'")
    yield from _after_array(handle, bytes(buf[match.end() :]), index)


def _after_array(handle: Any, rest: bytes, index: int) -> Iterator[tuple[int, Any]]:
    """Only whitespace may follow the closing ``]``."""
    while True:
        if rest.strip():
            yield (
                index + 1,
                SourceProblem("invalid-json", "content after the closing ']' of the JSON array"),
            )
            return
        rest = handle.read(_CHUNK)
        if not rest:
            return
