"""The ``[model]`` sources other than a registry model: a Hugging Face id or a model folder/asset.

``chat_completion_pipeline`` takes the model through one of three inputs: ``mlflow_model_path``
(a registry model or an MLflow model folder/asset), ``pytorch_model_path`` (a Hugging Face
style folder/asset, input type ``custom_model``) or ``huggingface_id``. A local folder is
uploaded by azure-ai-ml when the job is submitted, so it must exist before that.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from phi_finetune.errors import ConfigurationError

if TYPE_CHECKING:
    from phi_finetune.azure.foundation_model import FoundationModel

__all__ = ["is_asset_uri", "model_from_source"]

_KEYS = {
    "huggingface": "huggingface_id",
    "pytorch": "pytorch_model_path",
    "mlflow": "mlflow_model_path",
}
_ASSET_PREFIXES = ("azureml:", "azureml://", "https://", "http://", "wasbs://", "abfss://")


def is_asset_uri(value: str) -> bool:
    """Whether ``value`` names a registered asset or a remote path (not a local folder)."""
    return value.startswith(_ASSET_PREFIXES)


def model_from_source(kind: str, value: str) -> FoundationModel:
    """The :class:`FoundationModel` for ``[model] <key> = value``; a local folder must exist."""
    from phi_finetune.azure.foundation_model import FoundationModel

    if kind not in _KEYS:
        raise ConfigurationError(f"unknown model source {kind!r}; use one of {sorted(_KEYS)}")
    if kind != "huggingface" and not is_asset_uri(value):
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ConfigurationError(
                f"[model] {_KEYS[kind]} = {value!r}: no such folder. Give an existing model "
                "folder, or an asset id such as azureml:my-model:1 or "
                "azureml://registries/<registry>/models/<name>/versions/<n>"
            )
        value = str(folder.resolve())
    return FoundationModel.from_source(kind, value)
