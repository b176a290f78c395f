"""MLflow models-from-code entry: the file MLflow stores with the model and runs on load."""

import mlflow

from phi_finetune.local.registry import ChatPyfuncModel

mlflow.models.set_model(ChatPyfuncModel())
