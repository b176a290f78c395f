"""Scrub secrets out of text before it is logged, stored or shown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"

_SECRET_HEADER_NAMES = frozenset(
    {"authorization", "api-key", "x-ms-authorization-auxiliary", "cookie"}
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_KEY_FIELDS = re.compile(
    r'(?i)("?(?:primaryKey|secondaryKey|primary_key|secondary_key|api_key|access_token|sig)"?\s*[:=]\s*"?)'
    r'([^",&\s}]+)'
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with bearer tokens, JWTs, key fields and every given secret masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _KEY_FIELDS.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    """Copy of ``headers`` with credential-bearing headers masked."""
    return {
        name: (REDACTED if name.lower() in _SECRET_HEADER_NAMES else str(value))
        for name, value in headers.items()
    }
