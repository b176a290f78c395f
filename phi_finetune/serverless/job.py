"""The serverless fine-tuning job: build, submit, reattach, wait.

Built with ``azure.ai.ml.finetuning.create_finetuning_job`` under a deterministic name (so a
resumed run finds its job with one GET even when the submit reply was lost) and tagged with the
run id. ``validation_data`` is always passed: azure-ai-ml 1.35.2 raises ``UnboundLocalError``
without it (Azure/azure-sdk-for-python#45770).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from phi_finetune.errors import JobError, JobFailedError, WaitTimeoutError
from phi_finetune.names import RUN_ID_TAG

__all__ = [
    "ENDED_BADLY",
    "TERMINAL",
    "build_job",
    "get_job",
    "job_status",
    "registered_model_name",
    "submit_job",
    "wait_job",
]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding"})
#: Statuses after which resuming submits a new job (under the next attempt's name).
ENDED_BADLY = frozenset({"Failed", "Canceled", "NotResponding"})
_TASK = "ChatCompletion"  # FineTuningTaskType.CHAT_COMPLETION


def build_job(
    *,
    name: str,
    model_id: str,
    training_data: str,
    validation_data: str,
    output_model_name: str,
    hyperparameters: Mapping[str, str],
    run_id: str,
    experiment_name: str | None = None,
    compute: str | None = None,
    instance_types: tuple[str, ...] = (),
    job_tier: str | None = None,
) -> Any:
    """The ``CustomModelFineTuningJob`` to submit."""
    from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job

    if not validation_data:  # the SDK would fail with UnboundLocalError (sdk issue 45770)
        raise JobError(
            f"job {name}: no validation data; the serverless job needs it ([data] "
            "validation_pc carves it from the training split)"
        )
    task = getattr(FineTuningTaskType, "CHAT_COMPLETION", _TASK)
    return create_finetuning_job(
        model=model_id,
        task=task,
        training_data=training_data,
        validation_data=validation_data,
        output_model_name_prefix=output_model_name,
        hyperparameters=dict(hyperparameters) or None,
        compute=compute,
        instance_types=list(instance_types) or None,
        job_tier=job_tier,
        name=name,
        display_name=name,
        experiment_name=experiment_name,
        tags={RUN_ID_TAG: run_id, "created_by": "phi_finetune"},
    )


def submit_job(ml_client: Any, job: Any) -> Any:
    """Submit ``job``; the created entity. A PUT of a named job: safe to repeat."""
    from phi_finetune.azure.boundary import call

    return call(
        f"submit fine-tuning job {job.name!r}", lambda: ml_client.jobs.create_or_update(job)
    )


def get_job(ml_client: Any, name: str) -> Any | None:
    """The job named ``name``, ``None`` when the workspace has none."""
    from phi_finetune.azure.boundary import get_or_none

    return get_or_none(f"get job {name!r}", lambda: ml_client.jobs.get(name))


def job_status(job: Any) -> str:
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "Unknown")


def wait_job(
    ml_client: Any,
    name: str,
    *,
    poll_interval_s: float,
    timeout_s: float | None,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Poll until the job ends; the finished entity. :class:`JobFailedError` when it failed or
    was canceled, :class:`WaitTimeoutError` after ``timeout_s`` (the job keeps running)."""
    from phi_finetune.azure.boundary import call

    started = clock()
    last = None
    while True:
        job = call(f"get job {name!r}", lambda: ml_client.jobs.get(name))
        status = job_status(job)
        if status != last:
            logger.info("job %s: %s", name, status)
            last = status
        if status == "Completed":
            return job
        if status in ENDED_BADLY:
            raise JobFailedError(
                f"fine-tuning job {name} ended {status}; read its logs in the Azure ML studio "
                f"(`phi-finetune job logs {name}`), fix the cause and resume the run: a new job "
                "is submitted",
                job_name=name,
                status=status,
                studio_url=getattr(job, "studio_url", None),
            )
        if timeout_s is not None and clock() - started >= timeout_s:
            raise WaitTimeoutError(
                f"job {name} is still {status} after {timeout_s:g} s; it keeps running: "
                "`phi-finetune resume RUN_ID` reattaches to it"
            )
        from phi_finetune.azure.boundary import _do_sleep

        # time.sleep looked up now, so boundary.sleeping() (a test tool) can take the waits.
        _do_sleep(sleep or time.sleep, poll_interval_s)


def registered_model_name(job: Any, default: str) -> str:
    """The name of the model the job registered (its ``registered_model`` output)."""
    outputs = getattr(job, "outputs", None) or {}
    output = outputs.get("registered_model") if hasattr(outputs, "get") else None
    name = getattr(output, "name", None)
    if name is None and isinstance(output, Mapping):
        name = output.get("name")
    return str(name) if name else default
