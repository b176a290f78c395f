"""The local model registry: MLflow with a sqlite store and a local artifact folder.

The merged model folder (base + LoRA adapter, see :mod:`phi_finetune.local.training`) is logged
as a custom ``mlflow.pyfunc`` model (models-from-code: ``_pyfunc_entry.py`` around
:class:`ChatPyfuncModel`, with ``artifacts={"model": merged_dir}``), registered as a new version
of a registered model and given an alias (``champion`` by default). Logging a PEFT model
through ``mlflow.transformers`` is avoided on purpose: it re-initialises LoRA weights on reload.

The pyfunc's ``predict`` takes the Azure scoring body (``{"input_data": {"input_string":
[...], "parameters": {...}}}``), ``{"input_string": ..., "parameters": ...}``, a list of
conversations, one conversation, or a pandas DataFrame with a ``messages`` column; generation
parameters can also come through MLflow's ``params``. It returns one reply per conversation,
computed by :func:`generate` (shared with the HTTP server).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from phi_finetune.constants import ENV_MLFLOW_TRACKING_URI
from phi_finetune.errors import LocalBackendError, ModelNotFoundError
from phi_finetune.local._chat import generate, no_mlflow_telemetry
from phi_finetune.local._layout import ARTIFACT_FOLDER, DEFAULT_EXPERIMENT
from phi_finetune.scoring import validate_conversation, validate_parameters

logger = logging.getLogger(__name__)

__all__ = [
    "ChatPyfuncModel",
    "LocalRegistry",
    "RegisteredModel",
    "chat_model_folder",
    "conversations_from_input",
    "generate",
    "load_chat_model",
    "resolve_model_folder",
]

_PIP_REQUIREMENTS = ["mlflow", "torch", "transformers", "safetensors", "tokenizers", "phi-finetune"]


def conversations_from_input(
    model_input: Any,
    params: Mapping[str, Any] | None = None,
    *,
    max_new_tokens_limit: int | None = None,
    max_batch: int | None = None,
) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """Conversations and generation parameters from any input shape ``predict`` accepts.

    Raises :class:`~phi_finetune.errors.LocalBackendError` listing every problem.
    """
    # MLflow fills ``params`` with the signature's defaults, so the body's own parameters win.
    parameters: dict[str, Any] = dict(params or {})
    data = model_input
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas DataFrame
        columns = list(data.columns)
        column = next(
            (c for c in ("messages", "input_string", "conversation") if c in columns), None
        )
        if column is None:
            raise LocalBackendError(
                "a DataFrame input needs a 'messages' column (one conversation per row); "
                f"got {columns}"
            )
        data = [list(row) for row in data[column].tolist()]
    if isinstance(data, Mapping):
        body: Mapping[str, Any] = data
        if "input_data" in body:
            inner = body["input_data"]
            if not isinstance(inner, Mapping):
                raise LocalBackendError("input_data must be an object with 'input_string'")
            body = inner
        if "input_string" not in body:
            raise LocalBackendError(
                "expected {'input_data': {'input_string': [...], 'parameters': {...}}}"
            )
        raw_parameters = body.get("parameters") or {}
        if not isinstance(raw_parameters, Mapping):
            raise LocalBackendError("parameters must be an object")
        parameters.update(raw_parameters)
        data = body["input_string"]
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        data = [data]
    if not isinstance(data, list) or not data:
        raise LocalBackendError("expected a non-empty list of conversations")
    problems: list[str] = []
    conversations: list[list[dict[str, str]]] = []
    for index, conversation in enumerate(data):
        found = validate_conversation(conversation, where=f"input_string[{index}]")
        problems.extend(found)
        if not found:
            conversations.append(
                [{"role": m["role"], "content": m["content"]} for m in conversation]
            )
    if max_batch is not None and len(data) > max_batch:
        problems.append(f"at most {max_batch} conversations per request, got {len(data)}")
    problems.extend(validate_parameters(parameters, max_new_tokens_limit=max_new_tokens_limit))
    if problems:
        raise LocalBackendError("invalid scoring input: " + "; ".join(problems))
    return conversations, parameters


class ChatPyfuncModel:
    """The pyfunc model around a merged causal-LM folder (artifact ``model``).

    Defined without subclassing at import time so that importing this module does not import
    mlflow; :func:`_pyfunc_class` builds the ``mlflow.pyfunc.PythonModel`` subclass.
    """

    def __new__(cls) -> Any:  # pragma: no cover - trivial
        return _pyfunc_class()()


_PYFUNC_CLASS: Any = None


def _pyfunc_class() -> Any:
    global _PYFUNC_CLASS
    if _PYFUNC_CLASS is not None:
        return _PYFUNC_CLASS
    no_mlflow_telemetry()
    import mlflow.pyfunc

    with warnings.catch_warnings():
        # MLflow warns about predict() having no type hints; that is deliberate (see below).
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
        _PYFUNC_CLASS = _define_pyfunc_class(mlflow.pyfunc.PythonModel)
    return _PYFUNC_CLASS


def _define_pyfunc_class(base: Any) -> Any:
    class _ChatPyfuncModel(base):  # type: ignore[misc]
        model: Any = None
        tokenizer: Any = None

        def load_context(self, context):  # type: ignore[no-untyped-def]
            from phi_finetune.local.model_loading import load_model_and_tokenizer

            device = "cuda" if _cuda_available() else "cpu"
            self.model, self.tokenizer = load_model_and_tokenizer(
                context.artifacts["model"], device=device
            )
            self.model.eval()

        # No type hints on purpose: MLflow would otherwise validate inputs against them.
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            conversations, parameters = conversations_from_input(model_input, params)
            return generate(self.model, self.tokenizer, conversations, parameters)

    _ChatPyfuncModel.__name__ = _ChatPyfuncModel.__qualname__ = "ChatPyfuncModel"
    return _ChatPyfuncModel


def _signature() -> Any:
    """Only a params schema (generation parameters); inputs are validated by ``predict``."""
    no_mlflow_telemetry()
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    specs = [
        ParamSpec("max_new_tokens", "long", 200),
        ParamSpec("temperature", "double", 0.6),
        ParamSpec("top_p", "double", 0.9),
        ParamSpec("do_sample", "boolean", True),
        ParamSpec("top_k", "long", 50),
        ParamSpec("repetition_penalty", "double", 1.0),
        ParamSpec("num_beams", "long", 1),
        ParamSpec("return_full_text", "boolean", False),
    ]
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema(specs))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@attrs.frozen
class RegisteredModel:
    """One registered model version in the local registry."""

    name: str
    version: str
    alias: str | None
    run_id: str
    tracking_uri: str
    source: str
    """The logged model's artifact URI."""

    @property
    def model_uri(self) -> str:
        """``models:/<name>@<alias>`` (or ``models:/<name>/<version>`` without an alias)."""
        return f"models:/{self.name}@{self.alias}" if self.alias else self.version_uri

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


#: Model-version tag naming the folder (and run) a version was registered from.
SOURCE_TAG = "phi_finetune.source"


def _source_key(folder: Path, run_id: str | None) -> str:
    return f"{folder.resolve()}|run={run_id or ''}"


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore what was there."""
    no_mlflow_telemetry()
    import mlflow

    previous = os.environ.get(ENV_MLFLOW_TRACKING_URI)
    had_uri = mlflow.tracking._tracking_service.utils.is_tracking_uri_set()  # type: ignore[no-untyped-call]
    old = mlflow.get_tracking_uri() if had_uri else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        if old is not None:
            mlflow.set_tracking_uri(old)
            mlflow.set_registry_uri(old)
        else:
            mlflow.tracking._tracking_service.utils._tracking_uri = None
            mlflow.tracking._model_registry.utils._registry_uri = None
        if previous is None:
            os.environ.pop(ENV_MLFLOW_TRACKING_URI, None)


class LocalRegistry:
    """An MLflow tracking store and model registry in ``state_dir``.

    ``state_dir/mlflow.db`` (sqlite) holds runs and registered models; logged models live in
    ``state_dir/mlartifacts``. A new database starts from a cached empty schema (milliseconds;
    building that cache, once per MLflow version, takes 1-2 s).
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, experiment: str = DEFAULT_EXPERIMENT):
        self.state_dir = Path(state_dir).resolve()
        self.experiment = experiment
        self.tracking_uri = f"sqlite:///{self.state_dir / 'mlflow.db'}"
        self.artifact_root = self.state_dir / ARTIFACT_FOLDER
        self._client: Any = None

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.state_dir)!r})"

    @property
    def client(self) -> Any:
        """An ``MlflowClient`` on this store (created on first use)."""
        if self._client is None:
            no_mlflow_telemetry()
            from mlflow.tracking import MlflowClient

            from phi_finetune.local._mlflow_store import seed_sqlite_store

            self.state_dir.mkdir(parents=True, exist_ok=True)
            seed_sqlite_store(self.tracking_uri)
            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def experiment_id(self) -> str:
        """The experiment's id, created with the local artifact folder on first use."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        return str(
            self.client.create_experiment(
                self.experiment, artifact_location=self.artifact_root.as_uri()
            )
        )

    def log_model(
        self,
        merged_dir: str | os.PathLike[str],
        *,
        name: str,
        alias: str | None = "champion",
        run_id: str | None = None,
        description: str | None = None,
        reuse: bool = True,
    ) -> RegisteredModel:
        """Log ``merged_dir`` as a pyfunc model, register it as a new version, set ``alias``.

        ``run_id`` (e.g. the training run) receives the model; otherwise a new run is made.
        With ``reuse`` (the default) a version already registered from the same folder (and
        run) is returned instead of a second one, so a register step that was killed after
        registering and then resumed leaves one version.
        """
        no_mlflow_telemetry()
        import mlflow

        folder = Path(merged_dir)
        if not (folder / "config.json").is_file():
            raise LocalBackendError(
                f"{folder} is not a saved model folder (no config.json); pass the merged model "
                "folder from the training result (TrainingResult.merged_dir)"
            )
        source_key = _source_key(folder, run_id)
        if reuse:
            found = self._version_from(name, source_key)
            if found is not None:
                logger.info(
                    "model %s version %s was registered from %s before; reusing it",
                    name,
                    found.version,
                    folder,
                )
                self._label(found.name, found.version, alias=alias, description=description)
                return attrs.evolve(found, alias=alias)
        entry = Path(__file__).with_name("_pyfunc_entry.py")
        experiment_id = self.experiment_id()
        with _tracking(self.tracking_uri), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            if run_id is None:
                run_id = self.client.create_run(
                    experiment_id, tags={"mlflow.runName": f"register-{name}"}
                ).info.run_id
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(entry),
                    artifacts={"model": str(folder)},
                    pip_requirements=_PIP_REQUIREMENTS,
                    signature=_signature(),
                )
            # The tag goes in with the version itself: a kill cannot leave it untagged.
            version = mlflow.register_model(info.model_uri, name, tags={SOURCE_TAG: source_key})
        self._label(name, str(version.version), alias=alias, description=description)
        return RegisteredModel(
            name=name,
            version=str(version.version),
            alias=alias,
            run_id=run_id,
            tracking_uri=self.tracking_uri,
            source=str(info.model_uri),
        )

    def _label(
        self, name: str, version: str, *, alias: str | None, description: str | None
    ) -> None:
        if alias:
            self.client.set_registered_model_alias(name, alias, version)
        if description:
            self.client.update_model_version(name, version, description=description)

    def _version_from(self, name: str, source_key: str) -> RegisteredModel | None:
        """The newest version of ``name`` registered from ``source_key``, if any."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return None
        matching = [v for v in versions if (v.tags or {}).get(SOURCE_TAG) == source_key]
        if not matching:
            return None
        mv = max(matching, key=lambda v: int(v.version))
        return RegisteredModel(
            name=name,
            version=str(mv.version),
            alias=None,
            run_id=str(mv.run_id or ""),
            tracking_uri=self.tracking_uri,
            source=str(mv.source),
        )

    def get(
        self, name: str, *, alias: str | None = None, version: str | int | None = None
    ) -> RegisteredModel:
        """Look up a version by alias or number (latest when neither is given)."""
        no_mlflow_telemetry()
        from mlflow.exceptions import MlflowException

        try:
            if alias is not None:
                mv = self.client.get_model_version_by_alias(name, alias)
            elif version is not None:
                mv = self.client.get_model_version(name, str(version))
            else:
                versions = self.client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise ModelNotFoundError(f"no registered model {name!r} in {self.tracking_uri}")
                mv = max(versions, key=lambda v: int(v.version))
        except MlflowException as exc:
            which = f"alias {alias}" if alias else f"version {version}"
            raise ModelNotFoundError(
                f"registered model {name!r} ({which}) not found in {self.tracking_uri}"
            ) from exc
        return RegisteredModel(
            name=name,
            version=str(mv.version),
            alias=alias,
            run_id=str(mv.run_id or ""),
            tracking_uri=self.tracking_uri,
            source=str(mv.source),
        )

    def load(self, model_uri: str) -> Any:
        """Load a registered model (``models:/name@alias``, ``models:/name/3``) as pyfunc."""
        return load_pyfunc(model_uri, tracking_uri=self.tracking_uri)

    def delete(self, name: str) -> None:
        """Delete the registered model and all its versions (artifact files stay on disk)."""
        no_mlflow_telemetry()
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model(name)
        except MlflowException as exc:
            raise ModelNotFoundError(
                f"registered model {name!r} not found in {self.tracking_uri}"
            ) from exc


def load_pyfunc(model_uri: str, *, tracking_uri: str | None = None) -> Any:
    """Load ``model_uri`` (``models:/...``, ``runs:/...`` or a local pyfunc folder) as pyfunc."""
    no_mlflow_telemetry()
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            if tracking_uri is None:
                return mlflow.pyfunc.load_model(model_uri)
            with _tracking(tracking_uri):
                return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"cannot load {model_uri!r} from {tracking_uri or 'the default MLflow store'}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from exc


def resolve_model_folder(model_uri: str, *, tracking_uri: str | None = None) -> Path | None:
    """The merged model folder inside a registered phi_finetune chat model, or ``None``.

    ``models:/name@alias`` and ``models:/name/N`` are looked up once in the registry at
    ``tracking_uri`` (default: MLflow's); the version's local artifact folder is read from its
    ``MLmodel`` file, with no pyfunc load and no requirement checks. ``None`` when the URI is
    not a ``models:/`` URI, the artifacts are not on a local disk, or the model is not one this
    library logged (then a full :func:`load_pyfunc` is the way).
    """
    name, version, alias = _parse_models_uri(model_uri)
    if name is None:
        return None
    no_mlflow_telemetry()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri[len("sqlite:///") :])
        if not store.is_file():  # MLflow would create an empty store just to fail
            raise ModelNotFoundError(
                f"cannot resolve {model_uri!r}: there is no MLflow store at {store}; pass the "
                "tracking URI the model was registered in"
            )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if alias is not None:
            version = str(client.get_model_version_by_alias(name, alias).version)
        location = str(client.get_model_version_download_uri(name, str(version)))
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"cannot resolve {model_uri!r} in {tracking_uri or 'the default MLflow store'}: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from exc
    return chat_model_folder(location)


def _parse_models_uri(model_uri: str) -> tuple[str | None, str | None, str | None]:
    """``(name, version, alias)`` of ``models:/name/N`` or ``models:/name@alias``."""
    prefix = "models:/"
    if not model_uri.startswith(prefix):
        return None, None, None
    rest = model_uri[len(prefix) :].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return (name, None, alias) if name and alias else (None, None, None)
    name, _, version = rest.rpartition("/")
    if not name or not version.isdigit():
        return None, None, None  # e.g. models:/name/latest or a stage: MLflow resolves those
    return name, version, None


def chat_model_folder(model_location: str | os.PathLike[str]) -> Path | None:
    """The merged model folder of a logged phi_finetune pyfunc model at ``model_location``
    (a local path or ``file:`` URI of the folder holding ``MLmodel``), else ``None``."""
    location = os.fspath(model_location)
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    elif "://" in location:
        return None  # not on this disk
    root = Path(location)
    try:
        import yaml  # type: ignore[import-untyped]

        meta = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return None
    pyfunc = (meta or {}).get("flavors", {}).get("python_function", {})
    code = str(pyfunc.get("model_code_path") or "")
    artifact = (pyfunc.get("artifacts") or {}).get("model") or {}
    if not code.endswith("_pyfunc_entry.py") or not isinstance(artifact, Mapping):
        return None
    folder = root / str(artifact.get("path", ""))
    return folder if (folder / "config.json").is_file() else None


def load_chat_model(
    model_uri: str,
    *,
    tracking_uri: str | None = None,
    model_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a registered pyfunc model URI or a plain model folder.

    ``model_dir`` (the folder ``model_uri`` resolves to, from :func:`resolve_model_folder`)
    skips the registry. A registered phi_finetune model is loaded from its artifact folder;
    only other pyfunc models get a full MLflow load.
    """
    path = Path(model_dir) if model_dir is not None else Path(model_uri)
    if not (path.is_dir() and (path / "config.json").is_file()):
        if model_dir is not None:
            raise LocalBackendError(
                f"model folder {model_dir} (resolved from {model_uri!r}) has no config.json; "
                "register the model again or serve its URI without a folder"
            )
        folder = resolve_model_folder(model_uri, tracking_uri=tracking_uri)
        if folder is None:
            return _load_through_pyfunc(model_uri, tracking_uri)
        path = folder
    from phi_finetune.local.model_loading import load_model_and_tokenizer

    device = "cuda" if _cuda_available() else "cpu"
    model, tokenizer = load_model_and_tokenizer(path, device=device)
    model.eval()
    return model, tokenizer


def _load_through_pyfunc(model_uri: str, tracking_uri: str | None) -> tuple[Any, Any]:
    pyfunc = load_pyfunc(model_uri, tracking_uri=tracking_uri)
    inner = pyfunc.unwrap_python_model()
    if getattr(inner, "model", None) is None:
        raise LocalBackendError(f"{model_uri!r} is not a phi_finetune chat model")
    return inner.model, inner.tokenizer


def predict(
    pyfunc_model: Any, conversations: Sequence[Any], parameters: Mapping[str, Any] | None = None
) -> list[str]:
    """Convenience: the Azure body for ``conversations`` through ``pyfunc_model.predict``."""
    body = {
        "input_data": {"input_string": list(conversations), "parameters": dict(parameters or {})}
    }
    return list(pyfunc_model.predict(body))
