"""Names the local trainer and the local registry share (kept here so neither imports the other)."""

from __future__ import annotations

__all__ = ["ARTIFACT_FOLDER", "DEFAULT_EXPERIMENT"]

#: The MLflow experiment that local training runs and registered models use by default.
DEFAULT_EXPERIMENT = "phi-finetune-local"
#: Artifacts live in this folder beside the SQLite store (``state_dir/mlartifacts``).
ARTIFACT_FOLDER = "mlartifacts"
