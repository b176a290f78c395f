"""Build the fine-tuning ``PipelineJob`` the way the reference notebook does.

``@pipeline(name=display_name)`` calling ``chat_completion_pipeline`` with the model input
(``mlflow_model_path`` for a registry model, else ``huggingface_id`` / ``pytorch_model_path``),
the four ``compute_*`` inputs, the train/validation/test files, the parameters; output
``trained_model`` from ``mlflow_model_folder``; ``force_rerun=True``,
``continue_on_step_failure=False``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_finetune.errors import JobError

if TYPE_CHECKING:
    from phi_finetune.azure.compute import ComputeSelection
    from phi_finetune.azure.foundation_model import FoundationModel
    from phi_finetune.interface import ComponentInterface
    from phi_finetune.parameters import FineTuneParameters

__all__ = ["build_pipeline_job", "load_component_from_interface", "pipeline_yaml"]

logger = logging.getLogger(__name__)

_PLACEHOLDER_DATA = {
    "train": "azureml:<train-data>:1",
    "validation": "azureml:<validation-data>:1",
    "test": "azureml:<test-data>:1",
}


def build_pipeline_job(
    component: Any,
    model: FoundationModel,
    compute: ComputeSelection,
    params: FineTuneParameters,
    display: str,
    experiment: str,
    tags: Mapping[str, str],
    data: Mapping[str, Any],
) -> Any:
    """The azure-ai-ml ``PipelineJob`` calling ``component`` as the reference notebook does."""
    from azure.ai.ml import Input
    from azure.ai.ml.dsl import pipeline

    data_inputs = {
        f"{split}_file_path": _as_input(value or _PLACEHOLDER_DATA[split], Input)
        for split, value in data.items()
        if value is not None or split == "train"
    }
    kwargs = params.as_kwargs()
    for name, value in list(kwargs.items()):
        spec_type = params.values[name].type
        if spec_type in ("uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model"):
            kwargs[name] = _as_input(value, Input, type_=spec_type)
    compute_inputs = compute.component_inputs()
    model_inputs = model.pipeline_inputs(Input)

    @pipeline(name=display)  # type: ignore[call-overload, untyped-decorator]
    def create_pipeline() -> dict[str, Any]:
        finetune = component(
            **model_inputs,
            **compute_inputs,
            **data_inputs,
            **kwargs,
        )
        return {"trained_model": finetune.outputs.mlflow_model_folder}

    try:
        job = create_pipeline()
    except Exception as exc:
        raise JobError(f"building the pipeline failed: {exc}") from exc
    job.display_name = display
    job.experiment_name = experiment
    job.tags = dict(tags)
    job.settings.force_rerun = True
    job.settings.continue_on_step_failure = False
    return job


def data_text(value: Any) -> str:
    return str(getattr(value, "path", value))


def _as_input(value: Any, input_cls: Any, *, type_: str = "uri_file") -> Any:
    if isinstance(value, input_cls):
        return value
    return input_cls(type=type_, path=str(getattr(value, "path", value)))


def pipeline_yaml(job: Any, component_id: str) -> str:
    """The pipeline job as YAML, components shown by their registry id (compact and stable)."""
    import yaml  # type: ignore[import-untyped]

    try:
        data = job._to_dict()
    except Exception as exc:  # pragma: no cover - defensive: YAML is informative only
        logger.debug("pipeline YAML unavailable: %s", exc)
        return ""
    for step in (data.get("jobs") or {}).values():
        if isinstance(step, dict) and isinstance(step.get("component"), dict):
            step["component"] = component_id
    text: str = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return text


def load_component_from_interface(interface: ComponentInterface) -> Any:
    """A loadable component built from a pinned interface (offline plans)."""
    import yaml
    from azure.ai.ml import load_component

    with tempfile.TemporaryDirectory(prefix="phi-finetune-") as folder:
        path = Path(folder) / f"{interface.name}.yaml"
        path.write_text(yaml.safe_dump(interface.to_command_component_yaml()), "utf-8")
        return load_component(source=str(path))
