"""Only azure-ai-ml's notices about its internal schemas are silenced."""

from __future__ import annotations

import logging

from phi_finetune._sdk_notices import quiet_internal_schema_notices


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_schema_notices_dropped_other_experimental_notices_kept() -> None:
    quiet_internal_schema_notices()
    quiet_internal_schema_notices()  # idempotent
    # azure-ai-ml may have set this logger up (propagation, levels): listen on it directly
    logger = logging.getLogger("azure.ai.ml._utils._experimental")
    assert len(logger.filters) == 1
    keep = _Keep()
    logger.addHandler(keep)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning(
            "Class AutoDeleteSettingSchema: This is an experimental class, and may change at any "
            "time. Please see https://aka.ms/azuremlexperimental for more information."
        )
        logger.warning(
            "Class ServerlessEndpoint: This is an experimental class, and may change at any time."
        )
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert [m.split(":")[0] for m in keep.messages] == ["Class ServerlessEndpoint"]
