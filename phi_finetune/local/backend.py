"""The local backend of :class:`~phi_finetune.session.FineTuneSession`: the same steps on one
machine, no cloud.

- plan: the same :class:`~phi_finetune.parameters.FineTuneParameters` validation as on Azure
  against the pinned ``chat_completion_pipeline`` interface; Azure-only inputs are listed as
  ignored.
- fine_tune: LoRA on the ``[local] base_model`` (a local folder or hub id), or on a tiny
  Phi-3-architecture **test model** built offline when none is given.
- register: an MLflow pyfunc model in a sqlite registry under the state folder, with an alias.
- deploy: a FastAPI server on 127.0.0.1 speaking the Azure scoring contract (a subprocess);
  the key is in a 0600 file beside the journal, never in the journal itself.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_finetune.backends import StepContext, prepare_data_files
from phi_finetune.steps import (
    JobRecord,
    ModelRef,
    PlannedModel,
    PlanParameter,
    PlanRecord,
    PreparedDataRecord,
    TrainingSummary,
    plan_table,
)

if TYPE_CHECKING:
    from phi_finetune.endpoint import Endpoint
    from phi_finetune.journal import ResourceRecord
    from phi_finetune.local.server import LocalServer
    from phi_finetune.local.standby import ServerStandby

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

TEST_MODEL_NAME = "phi3-tiny-test-model"
SERVER_KIND = "local_server"


class LocalBackend:
    """Runs each step on this machine (CPU, or CUDA with bf16 when available)."""

    name = "local"

    def __init__(self) -> None:
        self._servers: dict[str, LocalServer] = {}
        self._standby: ServerStandby | None = None

    # -- steps ----------------------------------------------------------------------------

    def prepare_data(self, ctx: StepContext) -> PreparedDataRecord:
        return prepare_data_files(ctx)[1]

    def _parameters(self, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        from phi_finetune.interface import load_pinned_interface
        from phi_finetune.parameters import FineTuneParameters

        params = FineTuneParameters.build(
            dict(ctx.config.finetune.parameters), interface=load_pinned_interface()
        )
        values = dict(params.as_kwargs())
        if ctx.config.local.max_steps is not None:
            values["max_steps"] = ctx.config.local.max_steps
        return params, values

    def plan(self, ctx: StepContext) -> PlanRecord:
        from phi_finetune.local.training import resolve_parameters

        params, values = self._parameters(ctx)
        _, ignored = resolve_parameters(values)
        base = ctx.config.local.base_model or TEST_MODEL_NAME
        test_model = ctx.config.local.base_model is None
        parameters = {
            name: PlanParameter(v.value, str(v.source), v.type)
            for name, v in sorted(params.values.items())
        }
        display = params.display_name(Path(str(base)).name, gpus_per_node=1)
        ignored_on_local = {i.name: i.reason for i in ignored}
        rows = [
            ("model", f"{base}" + (" (offline test model)" if test_model else "")),
            ("backend", "local"),
            ("display name", display),
        ]
        rows += [(f"ignored {name}", reason) for name, reason in ignored_on_local.items()]
        return PlanRecord(
            model=PlannedModel(name=str(base), test_model=test_model),
            parameters=parameters,
            ignored_on_local=ignored_on_local,
            warnings=tuple(params.warnings),
            display_name=display,
            table=plan_table(rows, parameters, params.warnings),
        )

    def fine_tune(self, ctx: StepContext) -> JobRecord:
        _follow_progress_switch()  # first: the standby inherits this environment
        local = ctx.config.local
        if local.prestart_server:
            # Before this process imports torch: both imports then share the machine's cores.
            self._start_standby(ctx)
        try:
            return self._fine_tune(ctx)
        except BaseException:
            self._stop_standby()
            raise

    def _fine_tune(self, ctx: StepContext) -> JobRecord:
        from phi_finetune.local.training import LocalTrainer

        local = ctx.config.local
        model_dir = local.base_model
        files = ctx.prepared.files
        if model_dir is None:
            from phi_finetune.local.tiny_model import build_tiny_model

            texts = _training_texts(files["train"])
            model_dir = str(build_tiny_model(ctx.run_dir / "base-model", texts=texts, seed=0))
        _, values = self._parameters(ctx)
        # A re-run of this step (a resumed run) continues from the newest checkpoint of the
        # same settings unless resume_from_checkpoint is set to "false".
        values.setdefault("resume_from_checkpoint", "true")
        values["gradient_checkpointing"] = local.gradient_checkpointing
        if local.save_steps is not None:
            values["save_steps"] = local.save_steps
        trainer = LocalTrainer(
            model_dir,
            output_dir=ctx.run_dir / "training",
            parameters=values,
            device=local.device,
            mlflow_tracking_uri=ctx.config.mlflow_tracking_uri,
            processes=local.processes,
        )
        result = trainer.train(
            files["train"], validation=files.get("validation") or files.get("test")
        )
        ctx.observer.created("local_model", str(result.merged_dir), billable=False)
        return JobRecord(
            name=f"local-{ctx.journal.run_id}",
            status="Completed",
            training=TrainingSummary(
                base_model=str(model_dir),
                merged_dir=str(result.merged_dir),
                adapter_dir=str(result.adapter_dir),
                final_loss=result.final_loss,
                eval_loss=result.eval_loss,
                steps=result.steps,
                tokens_trained=result.tokens_trained,
                duration_s=result.duration_s,
                device=str(result.device),
                mlflow_run_id=result.mlflow_run_id,
                history=tuple(dict(m) for m in result.metrics),
                ignored={i.name: i.reason for i in result.ignored},
            ),
        )

    def register(self, ctx: StepContext) -> ModelRef:
        from phi_finetune.errors import RunStateError
        from phi_finetune.local.registry import LocalRegistry
        from phi_finetune.names import default_model_name

        _follow_progress_switch()
        config = ctx.config
        registry = LocalRegistry(config.state_dir)
        trained = ctx.job.training
        if trained is None:
            raise RunStateError(
                f"run {ctx.journal.run_id}: the fine_tune step recorded no local training "
                "output to register; resume the run on the backend that trained it"
            )
        # The training run is reused for the model when both live in the same store.
        same_store = config.mlflow_tracking_uri == registry.tracking_uri
        base = config.local.base_model or TEST_MODEL_NAME
        name = config.deploy.model_name or default_model_name(Path(str(base)).name)
        # Intent before action: the registry picks the version, the name is known now.
        ctx.observer.creating(
            "model", name, billable=False, details={"source": str(trained.merged_dir)}
        )
        model = registry.log_model(
            trained.merged_dir,
            name=name,
            alias=config.local.registered_model_alias,
            run_id=trained.mlflow_run_id if same_store else None,
            description=f"fine-tuned by phi_finetune run {ctx.journal.run_id}",
        )
        ctx.observer.created("model", model.name, str(model.version), billable=False)
        ctx.observer.deleted("model", name)  # the versioned entry above replaces the intent
        return ModelRef(
            name=model.name,
            version=str(model.version),
            uri=model.version_uri,
            tracking_uri=model.tracking_uri,
            alias=model.alias,
        )

    def deploy(self, ctx: StepContext) -> Endpoint:
        from phi_finetune._atomic import atomic_write_text
        from phi_finetune.errors import ModelNotFoundError
        from phi_finetune.local.registry import resolve_model_folder
        from phi_finetune.local.server import LocalServer

        # A server of an earlier (crashed) attempt of this run is stopped first.
        for old in ctx.existing(SERVER_KIND):
            self.delete_resource(ctx, old)
            ctx.observer.deleted(SERVER_KIND, old.name)
        model = ctx.model
        key = secrets.token_urlsafe(32)
        key_file = ctx.run_dir / "endpoint.key"
        atomic_write_text(key_file, key, mode=0o600)
        name = ctx.config.deploy.endpoint_name or f"local-{ctx.journal.run_id[-12:]}"
        # Resolved here, once: the server then loads the folder without MLflow (seconds less).
        # A model the registry cannot find is left to the server, which fails as before.
        try:
            model_dir = resolve_model_folder(model.uri, tracking_uri=model.tracking_uri)
        except ModelNotFoundError:
            model_dir = None
        server = LocalServer(
            model.uri,
            key=key,
            tracking_uri=model.tracking_uri,
            model_dir=model_dir,
            port=ctx.config.local.port,
            log_path=ctx.run_dir / "server.log",
            key_file=key_file,
            batch_window_ms=ctx.config.local.batch_window_ms,
            max_batch_size=ctx.config.local.max_batch_size,
        )
        # Intent before action: a kill while it starts still leaves the server findable (by
        # its model URI; its watchdog also stops it once this process is gone).
        ctx.observer.creating(
            SERVER_KIND,
            name,
            billable=True,
            details={
                "model_uri": model.uri,
                "tracking_uri": model.tracking_uri,
                "key_file": str(key_file),
                **({"standby_pid": self._standby.pid} if self._standby is not None else {}),
            },
        )
        standby, self._standby = self._standby, None
        try:
            server.start(standby=standby)
        finally:
            if standby is not None:
                standby.stop()  # a no-op once launched; stops one the server did not take
        self._servers[name] = server
        ctx.observer.created(
            SERVER_KIND,
            name,
            billable=True,
            details={
                "pid": server.pid,
                "scoring_uri": server.scoring_uri,
                "key_file": str(key_file),
            },
        )
        return self._endpoint(name, server.scoring_uri, key, server)

    def endpoint(self, ctx: StepContext) -> Endpoint | None:
        for record in reversed(ctx.existing(SERVER_KIND)):
            server = self._servers.get(record.name)
            if server is not None and server.running:
                return self._endpoint(record.name, server.scoring_uri, server.key, server)
        return None

    def delete_resource(self, ctx: StepContext, resource: ResourceRecord) -> None:
        if resource.kind != SERVER_KIND:
            return
        server = self._servers.pop(resource.name, None)
        if server is not None:
            server.stop()
            return
        from phi_finetune.local.server import remove_server_files

        pid = resource.details.get("pid")
        if pid is None and isinstance(resource.details.get("model_uri"), str):
            # Journaled as "creating" only: the server may have started before the kill.
            details = resource.details
            for orphan in _servers_serving(details["model_uri"], details.get("tracking_uri")):
                _stop_orphan(orphan)
            _stop_orphan(details.get("standby_pid"))  # started from a standby: no --model
        else:
            _stop_orphan(pid)
        remove_server_files(key_file=resource.details.get("key_file"))

    def _start_standby(self, ctx: StepContext) -> None:
        from phi_finetune.local.standby import ServerStandby

        self._stop_standby()
        standby = ServerStandby(
            ctx.run_dir / "server.log", model_type=_model_type(ctx.config.local.base_model)
        ).start()
        self._standby = standby
        # A session dropped before deploy does not keep its waiting process.
        weakref.finalize(self, standby.stop)

    def _stop_standby(self) -> None:
        standby, self._standby = self._standby, None
        if standby is not None:
            standby.stop()

    def _endpoint(self, name: str, scoring_uri: str, key: str, server: LocalServer) -> Endpoint:
        from phi_finetune.endpoint import Endpoint

        def delete() -> None:
            self._servers.pop(name, None)
            server.stop()

        return Endpoint(
            name,
            scoring_uri,
            key,
            deployment_name="local",
            fetch_logs=lambda lines: server.log_tail(lines),
            deleter=delete,
            kind="local",
        )


def _follow_progress_switch() -> None:
    """Make transformers' and MLflow's own progress bars obey phi_finetune's progress switch."""
    from phi_finetune.progress import progress_enabled

    if progress_enabled():
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _training_texts(train_file: str, limit: int = 2000) -> list[str]:
    """Message texts to train the test model's tokenizer on (so it fits the data)."""
    import orjson

    texts: list[str] = []
    with Path(train_file).open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            for message in orjson.loads(line).get("messages", []):
                texts.append(str(message.get("content", "")))
            if len(texts) >= limit:
                break
    return texts


#: Command-line words of a local server process (started directly or from a standby).
_SERVER_MARKERS = (b"phi_finetune.local.server", b"phi_finetune.local.standby")


def _model_type(base_model: str | None) -> str | None:
    """The transformers ``model_type`` of a local base model folder (or of the tiny model)."""
    if base_model is None:
        from phi_finetune.local.tiny_model import TEST_MODEL_TYPE

        return TEST_MODEL_TYPE
    try:
        config = json.loads((Path(base_model) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a hub id or an unreadable folder: the standby imports only the common part
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def _stop_orphan(pid: Any) -> None:
    """Stop a server left by a killed process, only if that pid really is our server."""
    if not isinstance(pid, int):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return  # already gone (or not Linux: the server's watchdog stops it anyway)
    if not any(marker in cmdline for marker in _SERVER_MARKERS):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    logger.info("stopped the orphaned local server (pid %s)", pid)


def _servers_serving(model_uri: str, tracking_uri: Any = None) -> list[int]:
    """Pids of this machine's local servers started for ``model_uri`` from ``tracking_uri``'s
    registry (Linux ``/proc``)."""
    wanted = [b"\0--model\0" + model_uri.encode() + b"\0"]
    if isinstance(tracking_uri, str) and tracking_uri:
        wanted.append(b"\0--tracking-uri\0" + tracking_uri.encode() + b"\0")
    pids: list[int] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return pids
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"phi_finetune.local.server" in cmdline and all(w in cmdline for w in wanted):
            pids.append(int(entry.name))
    return pids
