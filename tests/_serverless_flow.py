"""Helpers for the serverless ("models as a service") tests of the fake: the notebook's SDK calls
(azureml-examples ``chat_completion_with_model_as_service.ipynb``) and raw ARM requests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

    from phi_finetune.testing import FakeAzureML

BASE_MODEL = "azureml://registries/azureml/models/Phi-4-mini-instruct/versions/1"
TRAIN = "azureml://datastores/workspaceblobstore/paths/train.jsonl"
VALIDATION = "azureml://datastores/workspaceblobstore/paths/validation.jsonl"
HYPERPARAMETERS = {"per_device_train_batch_size": "1", "learning_rate": "0.00002"}
FINAL = ("Completed", "Failed", "Canceled")


def finetuning_job(**overrides: Any) -> Any:
    """``create_finetuning_job(...)`` as the notebook calls it (overrides replace arguments)."""
    from azure.ai.ml.finetuning import FineTuningTaskType, create_finetuning_job

    kwargs: dict[str, Any] = {
        "task": FineTuningTaskType.CHAT_COMPLETION,
        "training_data": TRAIN,
        "validation_data": VALIDATION,
        "hyperparameters": dict(HYPERPARAMETERS),
        "model": BASE_MODEL,
        "output_model_name_prefix": "phi4-mini-ft",
    }
    kwargs.update(overrides)
    return create_finetuning_job(**kwargs)


def wait_for_job(ml: MLClient, name: str, *, polls: int = 30) -> list[str]:
    """The statuses ``jobs.get`` reads until the job ends (bounded, no sleeping)."""
    seen: list[str] = []
    for _ in range(polls):
        value = ml.jobs.get(name).status
        status = str(getattr(value, "value", value))
        seen.append(status)
        if status in FINAL:
            return seen
    raise AssertionError(f"job {name} did not end in {polls} polls: {seen}")


def workspace_model_id(ml: MLClient, model_name: str, version: str = "1") -> str:
    """The notebook's model id for a fine-tuned model of this workspace."""
    workspace = ml.workspaces.get(ml.workspace_name)
    return (
        f"azureml://locations/{workspace.location}/workspaces/{workspace._workspace_id}"
        f"/models/{model_name}/versions/{version}"
    )


def raw(
    fake: FakeAzureML, method: str, path: str, body: Any = None, *, api: str = "2024-01-01-preview"
) -> tuple[int, Any, dict[str, str]]:
    """``(status, JSON body, lower-cased headers)`` of one ARM request under the workspace."""
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    url = (
        f"https://management.azure.com{fake.workspace_id}{path}"
        f"{'&' if '?' in path else '?'}api-version={api}"
    )
    token = fake.credential().get_token("https://management.azure.com/.default").token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body) if body is not None else None
    response = RequestsTransport().send(HttpRequest(method, url, headers=headers, data=data))
    text = response.text()
    headers_out = {k.lower(): v for k, v in response.headers.items()}
    return response.status_code, json.loads(text) if text else None, headers_out


def finetuning_body(**details: Any) -> dict[str, Any]:
    """A FineTuning job PUT body as the SDK sends it; ``details`` replace fineTuningDetails keys
    (``None`` removes one)."""
    fine_tuning: dict[str, Any] = {
        "taskType": "chatCompletion",
        "model": {"uri": BASE_MODEL, "jobInputType": "mlflow_model"},
        "modelProvider": "Custom",
        "trainingData": {"uri": TRAIN, "jobInputType": "uri_file"},
        "validationData": {"uri": VALIDATION, "jobInputType": "uri_file"},
        "hyperParameters": dict(HYPERPARAMETERS),
    }
    for key, value in details.items():
        if value is None:
            fine_tuning.pop(key, None)
        else:
            fine_tuning[key] = value
    return {
        "properties": {
            "jobType": "FineTuning",
            "fineTuningDetails": fine_tuning,
            "outputs": {
                "registered_model": {"assetName": "phi4-mini-ft", "jobOutputType": "mlflow_model"}
            },
        }
    }
