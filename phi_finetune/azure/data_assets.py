"""Register prepared files as Azure ML ``uri_file`` data assets, idempotently.

The version of each asset is derived from the file's SHA-256 (its first 16 hex digits): the same
content always maps to the same ``name:version``. Registering again finds the existing asset
(one GET) and uploads nothing. ``azure.ai.ml`` is imported only inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import call, get_or_none
from phi_finetune.errors import ServiceError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient

logger = logging.getLogger(__name__)

__all__ = ["PIPELINE_INPUTS", "RegisteredAsset", "RegisteredData", "asset_version", "register_file"]

#: Pipeline input name of each prepared file (``chat_completion_pipeline``).
PIPELINE_INPUTS: Mapping[str, str] = {
    "train": "train_file_path",
    "validation": "validation_file_path",
    "test": "test_file_path",
}
VERSION_DIGITS = 16


def asset_version(sha256: str) -> str:
    """The data asset version for content with this SHA-256."""
    return sha256[:VERSION_DIGITS]


@attrs.frozen
class RegisteredAsset:
    """One registered ``uri_file`` data asset."""

    role: str
    name: str
    version: str
    sha256: str
    created: bool
    """``True`` when this call created it, ``False`` when it already existed."""
    asset_id: str | None = None

    @property
    def uri(self) -> str:
        """``azureml:<name>:<version>``: what a job input's ``path`` takes."""
        return f"azureml:{self.name}:{self.version}"


@attrs.frozen
class RegisteredData:
    """The assets of one prepared data set; :meth:`inputs` plugs them into the fine-tune job."""

    assets: Mapping[str, RegisteredAsset]

    def input_paths(self) -> dict[str, str]:
        """Pipeline input name -> ``azureml:name:version`` (train, validation, test only)."""
        return {
            PIPELINE_INPUTS[role]: asset.uri
            for role, asset in self.assets.items()
            if role in PIPELINE_INPUTS
        }

    def inputs(self) -> dict[str, Any]:
        """Pipeline input name -> ``azure.ai.ml.Input(type="uri_file", path="azureml:n:v")``."""
        from azure.ai.ml import Input

        return {name: Input(type="uri_file", path=uri) for name, uri in self.input_paths().items()}

    def to_dict(self) -> dict[str, Any]:
        return {role: {**attrs.asdict(a), "uri": a.uri} for role, a in self.assets.items()}


def register_file(
    ml_client: MLClient,
    path: Path,
    *,
    role: str,
    name: str,
    sha256: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredAsset:
    """Get ``name:version`` (version from ``sha256``) or create it from ``path``."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Data

    version = asset_version(sha256)
    existing = get_or_none(
        f"look up data asset {name}:{version}",
        lambda: ml_client.data.get(name=name, version=version),
    )
    if existing is not None:
        found = (existing.tags or {}).get("sha256")
        if found and found != sha256:
            raise ServiceError(
                f"data asset {name}:{version} exists with sha256 {found}, but {path} has {sha256}; "
                "use another name_prefix or archive the old asset"
            )
        logger.info("data asset %s:%s already registered", name, version)
        return RegisteredAsset(role, name, version, sha256, False, existing.id)
    data = Data(
        name=name,
        version=version,
        type=AssetTypes.URI_FILE,
        path=str(path),
        description=description or f"{role} split prepared by phi_finetune",
        tags={"sha256": sha256, "created_by": "phi_finetune", **(tags or {})},
    )
    created = call(
        f"register {path} as data asset {name}:{version}",
        lambda: ml_client.data.create_or_update(data),
    )
    logger.info("registered %s as data asset %s:%s", path, name, version)
    return RegisteredAsset(role, name, version, sha256, True, created.id)
