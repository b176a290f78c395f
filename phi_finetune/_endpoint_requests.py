"""Request bodies for :class:`~phi_finetune.endpoint.Endpoint`: strict JSON encoding, request
files, and the hint an error status gets (kept apart so ``endpoint.py`` stays short)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi_finetune.errors import DataProblem, DataValidationError
from phi_finetune.scoring import build_request

__all__ = [
    "Retry",
    "Secret",
    "encode_body",
    "parse_retry_after",
    "request_from_file",
    "status_hint",
]


class Secret:
    """Holds a key; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value or ""

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<none>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled along with the handle
        raise TypeError("endpoint keys cannot be pickled")


class Retry(Exception):
    """A retryable scoring answer (carries what the final error needs)."""

    def __init__(
        self, status: int | None, body: str, retry_after: float | None, *, timed_out: bool = False
    ) -> None:
        self.timed_out = timed_out
        super().__init__(f"HTTP {status}" if status is not None else "a connection error")
        self.status = status
        self.body = body
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def encode_body(body: Any) -> bytes:
    """``body`` as strict JSON in UTF-8, or :class:`DataValidationError` saying why not."""
    try:
        return json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DataValidationError(
            "the scoring request cannot be sent as JSON",
            problems=[
                DataProblem(
                    source="<request>",
                    line=None,
                    field=None,
                    message=reason,
                    fix="send a JSON object of strings, numbers, lists and objects (no NaN, "
                    "no unpaired surrogates), e.g. one built by build_request",
                    code="invalid-request",
                )
            ],
        ) from None


def status_hint(status: int) -> str:
    if status in (401, 403):
        return (
            "the key was refused; it may have been regenerated: attach again "
            "(`phi-finetune invoke --endpoint NAME`) to fetch the current key"
        )
    if status == 404:
        return "no such endpoint or deployment; check the names with `phi-finetune endpoints list`"
    if status == 408:
        return "the model took longer than the deployment's request_timeout_ms"
    if status == 413:
        return "the request is too large; send fewer or shorter conversations"
    if status == 424:
        return "the model container failed on this input; read `Endpoint.logs()`"
    if status >= 500:
        return "the deployment failed on this request; read `Endpoint.logs()`"
    return "the request was refused; see the body excerpt"


def request_from_file(path: str | os.PathLike[str], **parameters: Any) -> dict[str, Any]:
    """Read a scoring request file (see :meth:`Endpoint.invoke_file`) into a request body."""
    source = os.fspath(path)

    def problem(message: str, fix: str) -> DataValidationError:
        return DataValidationError(
            f"{source} is not a usable scoring request",
            problems=[DataProblem(source=source, line=None, field=None, message=message, fix=fix)],
        )

    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise problem(f"cannot read it: {exc.strerror or exc}", "check the path") from exc
    except UnicodeDecodeError as exc:
        raise problem(f"not UTF-8 text (byte {exc.start})", "save the file as UTF-8") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise problem("JSON nested too deeply", "write a JSON scoring body") from None
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) >= 1:
            try:
                data = json.loads(lines[0])
            except (ValueError, RecursionError) as exc:
                raise problem(
                    f"not JSON ({exc})", "write a JSON scoring body or a JSON list of messages"
                ) from exc
        else:
            raise problem("the file is empty", "write a JSON scoring body") from None
    if isinstance(data, Mapping) and "messages" in data and "input_data" not in data:
        messages = list(data["messages"]) if isinstance(data["messages"], list) else []
        while messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") != "user":
            messages.pop()
        data = messages
    try:
        if isinstance(data, Mapping) and "input_data" in data:
            input_data = data["input_data"]
            if not isinstance(input_data, Mapping):
                raise ValueError("input_data must be an object")
            conversations = input_data.get("input_string")
            merged = {**dict(input_data.get("parameters") or {}), **parameters}
            body = build_request(conversations or [], merged)
            body["params"] = dict(data.get("params") or {})
            return body
        if isinstance(data, list):
            return build_request(data, parameters)
        raise ValueError("expected a scoring body, a list of messages or {'messages': [...]}")
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise problem(
            str(exc),
            'use {"input_data": {"input_string": [[{"role": "user", "content": "..."}]], '
            '"parameters": {}}, "params": {}}',
        ) from exc
