"""Silence azure-ai-ml's notices about its own internal serialization schemas.

When a pipeline job or an asset is serialized, azure-ai-ml logs "Class XxxSchema: This is an
experimental class, and may change at any time" for marshmallow schemas the user never touches
(auto-delete settings, intellectual property). The filter drops only those ``...Schema`` notices;
experimental classes a user builds themselves are still announced. ``import phi_finetune``
installs it.
"""

from __future__ import annotations

import logging
import re

__all__ = ["quiet_internal_schema_notices"]

_LOGGER = "azure.ai.ml._utils._experimental"
_SCHEMA_NOTICE = re.compile(r"^Class \w+Schema: This is an experimental class")


class _InternalSchemaNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _SCHEMA_NOTICE.match(record.getMessage())


def quiet_internal_schema_notices() -> None:
    """Install the filter once (idempotent; logging only, imports nothing from azure)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _InternalSchemaNotices) for f in logger.filters):
        logger.addFilter(_InternalSchemaNotices())
