"""MLflow tracking for the local trainer: parameters, per-step metrics and the run's status.

Everything goes through ``MlflowClient`` (no global mlflow state); without a tracking URI the
tracker does nothing. A ``sqlite:///`` store gets its artifacts beside the database file, the
layout :class:`~phi_finetune.local.registry.LocalRegistry` uses; a new one starts from a cached
empty schema (:mod:`phi_finetune.local._mlflow_store`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phi_finetune.local._layout import ARTIFACT_FOLDER, DEFAULT_EXPERIMENT
from phi_finetune.local.results import StepMetrics

__all__ = ["MlflowTracker", "artifact_location_beside"]

_FLUSH_EVERY = 200  # metrics buffered before one log_batch call
_RUN_NAME = "local-lora"


def artifact_location_beside(uri: str) -> str | None:
    """``<folder of the SQLite file>/mlartifacts`` for a ``sqlite:///`` store, else ``None``.

    Without it MLflow puts a SQLite store's artifacts in ``./mlruns`` of whatever folder the
    process runs in.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix) :]).resolve().parent / ARTIFACT_FOLDER).as_uri()


class MlflowTracker:
    """Metrics to an MLflow run, or nothing when there is no client (see :meth:`start`)."""

    def __init__(self, client: Any, run_id: str | None, owns_run: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.owns_run = owns_run
        """Whether :meth:`finish` terminates the run (only a run this tracker created)."""
        self._pending: list[Any] = []
        self._finished = False

    def __repr__(self) -> str:
        return f"MlflowTracker(run_id={self.run_id!r}, owns_run={self.owns_run})"

    @classmethod
    def start(
        cls, uri: str | None, experiment: str = DEFAULT_EXPERIMENT, run_id: str | None = None
    ) -> MlflowTracker:
        """Log into run ``run_id``, else into a new run of ``experiment``; no-op without ``uri``."""
        if uri is None:
            return cls(None, None, False)
        from phi_finetune.local._chat import no_mlflow_telemetry
        from phi_finetune.local._mlflow_store import seed_sqlite_store

        no_mlflow_telemetry()
        from mlflow.tracking import MlflowClient

        seed_sqlite_store(uri)  # a new SQLite store from the cached schema, not 50 migrations
        client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            return cls(client, run_id, False)
        found = client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(
                experiment, artifact_location=artifact_location_beside(uri)
            )
        )
        run = client.create_run(experiment_id, tags={"mlflow.runName": _RUN_NAME})
        return cls(client, run.info.run_id, True)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` (values as strings, cut to MLflow's 500 characters)."""
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:500]) for k, v in sorted(params.items())]  # type: ignore[no-untyped-call]
        self.client.log_batch(self.run_id, params=items)

    def log_step(self, m: StepMetrics) -> None:
        """Buffer one step's loss, tokens/s, learning rate and epoch."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in (
            ("loss", m.loss),
            ("tokens_per_s", m.tokens_per_s),
            ("learning_rate", m.learning_rate),
            ("epoch", m.epoch),
        ):
            self._pending.append(Metric(key, float(value), now, m.step))
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def log_metric(self, key: str, value: float, step: int) -> None:
        """Buffer one metric."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        self._pending.append(Metric(key, float(value), int(time.time() * 1000), step))

    def flush(self) -> None:
        """Send the buffered metrics."""
        if self.client is None or self.run_id is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        self.client.log_batch(self.run_id, metrics=pending)

    def finish(self, status: str) -> None:
        """Flush, and end the run with ``status`` if this tracker created it (once)."""
        if self.client is None or self._finished:
            return
        self._finished = True
        try:
            self.flush()
        finally:
            if self.owns_run and self.run_id is not None:
                self.client.set_terminated(self.run_id, status=status)
