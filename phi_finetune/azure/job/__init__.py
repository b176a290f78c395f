"""The fine-tuning job: :mod:`.plan` checks and submits, :mod:`.pipeline` builds the pipeline,
:mod:`.handle` watches what was submitted."""

from phi_finetune.azure.job.handle import TERMINAL_STATUSES, JobHandle, JobMetrics
from phi_finetune.azure.job.plan import COMPONENT_NAME, FineTuneJob, FineTunePlan

__all__ = [
    "COMPONENT_NAME",
    "TERMINAL_STATUSES",
    "FineTuneJob",
    "FineTunePlan",
    "JobHandle",
    "JobMetrics",
]
