"""Step 5: resolve the foundation model to fine-tune from an Azure ML registry.

:func:`resolve_foundation_model` gets a model by name and version or label (default ``latest``),
turns both not-found shapes of the SDK into :class:`~phi_finetune.errors.ModelNotFoundError`,
refuses archived or retired models for fine-tuning (unless ``allow_retired``), and reads the
compute allow lists and ``model_specific_defaults`` from wherever the registry keeps them: the
old tag layout (strings holding Python literals) or ``system_metadata`` (since mid-2026).
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import logging
import warnings as _warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune.azure.boundary import is_not_found, is_service_exception, translate
from phi_finetune.errors import ModelNotFoundError, ModelRetiredError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_REGISTRY",
    "REFERENCE_MODEL_NAME",
    "FoundationModel",
    "catalog_model",
    "check_lifecycle",
    "parse_literal_list",
    "parse_model_defaults",
    "reference_model",
    "resolve_foundation_model",
]

logger = logging.getLogger(__name__)

#: The default model: the live Phi model with managed-compute fine-tuning in the catalogue.
DEFAULT_MODEL_NAME = "Phi-4"
DEFAULT_REGISTRY = "azureml"

_DATE_KEYS = {
    # attribute: (system_metadata.deprecation key, tag key of the old layout)
    "finetune_deprecation_date": ("finetuneDeprecationDate", "FinetuneDeprecationDate"),
    "finetune_retirement_date": ("finetuneRetirementDate", "FinetuneRetirementDate"),
    "inference_deprecation_date": ("inferenceDeprecationDate", "InferenceDeprecationDate"),
    "inference_retirement_date": ("inferenceRetirementDate", "InferenceRetirementDate"),
}


def parse_literal_list(value: Any) -> tuple[str, ...] | None:
    """An allow list from a tag value: a list, or a string holding a Python/JSON literal list.

    Bare names (``[Standard_NC6s_v3, Standard_NC12s_v3]``, as YAML writes them) and comma
    separated strings are accepted too. Parsing never evaluates code (``ast.literal_eval``).
    ``None`` means "no allow list".
    """
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if not text:
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if isinstance(parsed, list | tuple | set):
        return tuple(str(v).strip() for v in parsed if str(v).strip())
    if isinstance(parsed, str):
        text = parsed
    inner = text.strip().strip("[]()")
    names = [part.strip().strip("'\"") for part in inner.replace("\n", ",").split(",")]
    return tuple(n for n in names if n)


def parse_model_defaults(value: Any) -> dict[str, Any]:
    """``model_specific_defaults`` as a dict, whether a mapping or a string (Python or JSON)."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    text = str(value).strip()
    for parse in (ast.literal_eval, json.loads):
        try:
            parsed = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, Mapping):
            return {str(k): v for k, v in parsed.items()}
    logger.warning("model_specific_defaults could not be read (%.60s...); ignored", text)
    return {}


def _parse_date(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text[:10])
        except ValueError:
            logger.debug("unreadable date %r ignored", value)
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _lower_get(mapping: Mapping[str, Any], *names: str) -> Any:
    lowered = {str(k).lower(): v for k, v in mapping.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _norm(key: Any) -> str:
    return str(key).replace("_", "").replace("-", "").lower()


def _norm_get(mapping: Mapping[str, Any], *names: str) -> Any:
    """``mapping[name]`` ignoring case and ``_`` (``systemMetadata`` = ``system_metadata``)."""
    lowered = {_norm(k): v for k, v in mapping.items()}
    for name in names:
        value = lowered.get(_norm(name))
        if value is not None:
            return value
    return None


def _as_mapping(value: Any) -> dict[str, Any]:
    """A metadata mapping, also from a JSON string (as some service replies carry it)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            logger.debug("unreadable metadata string ignored")
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def _system_metadata_of(obj: Any) -> dict[str, Any] | None:
    """System metadata of a model entity or REST object under either spelling: the
    ``system_metadata`` attribute (or a private ``_system_metadata``), ``systemMetadata``,
    or those keys of a mapping / of its ``__dict__``; ``None`` when there is none."""
    candidates: list[Any] = []
    if isinstance(obj, Mapping):
        candidates.append(_norm_get(obj, "systemMetadata"))
    else:
        for attr in ("system_metadata", "systemMetadata", "_system_metadata"):
            candidates.append(getattr(obj, attr, None))
        raw = getattr(obj, "__dict__", None)
        if isinstance(raw, Mapping):
            candidates.append(_norm_get(raw, "systemMetadata"))
        props = getattr(obj, "properties", None)
        if isinstance(props, Mapping):
            candidates.append(_norm_get(props, "systemMetadata"))
    for candidate in candidates:
        meta = _as_mapping(candidate)
        if meta:
            return meta
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


#: Model source -> (pipeline input of chat_completion_pipeline, its input type).
_SOURCE_INPUTS: Mapping[str, tuple[str, str]] = {
    "registry": ("mlflow_model_path", "mlflow_model"),
    "huggingface": ("huggingface_id", "string"),
    "pytorch": ("pytorch_model_path", "custom_model"),
    "mlflow": ("mlflow_model_path", "mlflow_model"),
}


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _as_tuple(value: tuple[str, ...] | list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen
class FoundationModel:
    """A registry model: identity, allow lists, ``model_specific_defaults`` and lifecycle."""

    name: str
    version: str
    id: str
    """The asset id passed as ``mlflow_model_path`` (``azureml://registries/.../versions/N``)."""
    registry: str | None = None
    tags: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    system_metadata: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    archived: bool = False
    finetune_allow_list: tuple[str, ...] | None = attrs.field(default=None, converter=_as_tuple)
    """Sizes allowed for fine-tuning; ``None`` when the model has no list."""
    inference_allow_list: tuple[str, ...] | None = attrs.field(default=None, converter=_as_tuple)
    model_specific_defaults: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    finetune_deprecation_date: dt.datetime | None = None
    finetune_retirement_date: dt.datetime | None = None
    inference_deprecation_date: dt.datetime | None = None
    inference_retirement_date: dt.datetime | None = None
    lifecycle_warnings: tuple[str, ...] = ()
    """Warnings found when the model was resolved (deprecated, retiring soon, ...)."""
    context_length: int | None = None
    """The model's context window in tokens (``textContextWindow``), when published."""
    source: str = "registry"
    """Where the model comes from: ``registry``, ``huggingface``, ``pytorch`` or ``mlflow``."""

    @property
    def asset_id(self) -> str:
        return self.id

    @classmethod
    def from_metadata(
        cls,
        name: str,
        version: str,
        *,
        id: str | None = None,
        registry: str | None = DEFAULT_REGISTRY,
        tags: Mapping[str, Any] | None = None,
        system_metadata: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        archived: bool = False,
    ) -> FoundationModel:
        """Build from tags / system_metadata in either layout (the reading rules live here)."""
        tags = dict(tags or {})
        meta = _as_mapping(system_metadata)
        props = dict(properties or {})
        computes = _as_mapping(_norm_get(meta, "supportedComputes"))
        ft_meta = parse_literal_list(_norm_get(computes, "finetuneComputes"))
        inf_meta = parse_literal_list(_norm_get(computes, "inferenceComputes"))
        ft_tags = parse_literal_list(_lower_get(tags, "finetune_compute_allow_list"))
        inf_tags = parse_literal_list(_lower_get(tags, "inference_compute_allow_list"))
        deprecation = _as_mapping(_norm_get(meta, "deprecation"))
        dates: dict[str, dt.datetime | None] = {}
        for attr, (meta_key, tag_key) in _DATE_KEYS.items():
            dates[attr] = _parse_date(_norm_get(deprecation, meta_key)) or _parse_date(
                _lower_get(tags, tag_key)
            )
        defaults = _lower_get(tags, "model_specific_defaults")
        if defaults is None:
            defaults = _norm_get(meta, "modelSpecificDefaults")
        archived = (
            archived
            or _truthy(_norm_get(meta, "isArchived"))
            or _truthy(_lower_get(props, "isArchived", "is_archived"))
            or _truthy(_lower_get(tags, "isArchived"))
        )
        context = _norm_get(meta, "textContextWindow")
        if context is None:
            context = _lower_get(tags, "textContextWindow")
        if id is None:
            id = (
                f"azureml://registries/{registry}/models/{name}/versions/{version}"
                if registry
                else f"azureml:{name}:{version}"
            )
        return cls(
            name=name,
            version=str(version),
            id=id,
            registry=registry,
            tags=tags,
            system_metadata=meta,
            archived=archived,
            # System metadata first (where the registry keeps them since 2026), tags second.
            finetune_allow_list=ft_meta if ft_meta is not None else ft_tags,
            inference_allow_list=inf_meta if inf_meta is not None else inf_tags,
            model_specific_defaults=parse_model_defaults(defaults),
            finetune_deprecation_date=dates["finetune_deprecation_date"],
            finetune_retirement_date=dates["finetune_retirement_date"],
            inference_deprecation_date=dates["inference_deprecation_date"],
            inference_retirement_date=dates["inference_retirement_date"],
            context_length=_as_int(context),
        )

    @classmethod
    def from_source(cls, kind: str, value: str) -> FoundationModel:
        """A model given as ``huggingface_id``, ``pytorch_model_path`` or ``mlflow_model_path``.

        It has no allow lists, no ``model_specific_defaults`` and no lifecycle; the context
        length comes from the catalogue when the name matches a catalogued model.
        """
        if kind not in _SOURCE_INPUTS or kind == "registry":
            raise ValueError(f"unknown model source {kind!r}; use one of {sorted(_SOURCE_INPUTS)}")
        from phi_finetune.azure.model_catalog import load_catalog

        name = value.rstrip("/").rsplit("/", 1)[-1].split(":")[0] or value
        entry = load_catalog().get(name)
        return cls(
            name=name,
            version="",
            id=value,
            registry=None,
            context_length=entry.context_length if entry else None,
            source=kind,
        )

    def pipeline_inputs(self, input_cls: Any) -> dict[str, Any]:
        """The component input this model is passed as (``input_cls``: ``azure.ai.ml.Input``)."""
        name, input_type = _SOURCE_INPUTS[self.source]
        if self.source in ("registry", "huggingface"):
            return {name: self.id}
        return {name: input_cls(type=input_type, path=self.id)}

    @classmethod
    def from_azure(cls, model: Model, *, registry: str | None = None) -> FoundationModel:
        """Deprecated alias of :meth:`from_entity` (removed in 0.3.0)."""
        _warnings.warn(
            "FoundationModel.from_azure is deprecated; use FoundationModel.from_entity",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_entity(model, registry=registry)

    @classmethod
    def from_entity(cls, model: Model, *, registry: str | None = None) -> FoundationModel:
        """From an ``azure.ai.ml.entities.Model`` returned by ``models.get``."""
        # system_metadata and is_archived are not attributes of azure-ai-ml 1.35's Model (some
        # releases set them, some keep a private _system_metadata): read them defensively.
        meta = _system_metadata_of(model)
        stage = str(model.stage or "")
        return cls.from_metadata(
            str(model.name),
            str(model.version),
            id=str(model.id or "") or None,
            registry=registry,
            tags=dict(model.tags or {}),
            system_metadata=meta or {},
            properties=dict(model.properties or {}),
            archived=stage.lower() == "archived"
            or _truthy(getattr(model, "is_archived", False))
            or _truthy(getattr(model, "isArchived", False)),
        )

    def finetune_retired(self, now: dt.datetime | None = None) -> bool:
        """Whether the fine-tune retirement date has passed."""
        now = now or dt.datetime.now(dt.UTC)
        return self.finetune_retirement_date is not None and now >= self.finetune_retirement_date

    def inference_retired(self, now: dt.datetime | None = None) -> bool:
        """Whether the inference retirement date has passed."""
        now = now or dt.datetime.now(dt.UTC)
        return self.inference_retirement_date is not None and now >= self.inference_retirement_date

    def allows_finetune_on(self, vm_size: str) -> bool | None:
        """Case-insensitive allow-list check; ``None`` when the model has no allow list."""
        if self.finetune_allow_list is None:
            return None
        return vm_size.lower() in {s.lower() for s in self.finetune_allow_list}

    def allows_inference_on(self, vm_size: str) -> bool | None:
        if self.inference_allow_list is None:
            return None
        return vm_size.lower() in {s.lower() for s in self.inference_allow_list}

    def to_dict(self) -> dict[str, Any]:
        def date(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "registry": self.registry,
            "archived": self.archived,
            "finetune_allow_list": list(self.finetune_allow_list or []) or None,
            "inference_allow_list": list(self.inference_allow_list or []) or None,
            "model_specific_defaults": dict(self.model_specific_defaults),
            "finetune_retirement_date": date(self.finetune_retirement_date),
            "inference_retirement_date": date(self.inference_retirement_date),
            "context_length": self.context_length,
            "source": self.source,
        }


#: The model the reference notebook fine-tunes (archived; see :func:`reference_model`).
REFERENCE_MODEL_NAME = "Phi-3-mini-4k-instruct"


def catalog_model(name: str) -> FoundationModel | None:
    """The pinned catalogue's facts for ``name`` as a :class:`FoundationModel`, or ``None``."""
    from phi_finetune.azure.model_catalog import load_catalog

    entry = load_catalog().get(name)
    if entry is None:
        return None
    computes: dict[str, Any] = {}
    if entry.finetune_allow_list is not None:
        computes["finetuneComputes"] = list(entry.finetune_allow_list)
    if entry.inference_allow_list is not None:
        computes["inferenceComputes"] = list(entry.inference_allow_list)
    meta: dict[str, Any] = {"deprecation": dict(entry.deprecation)}
    if computes:
        meta["supportedComputes"] = computes
    if entry.context_length is not None:
        meta["textContextWindow"] = entry.context_length
    return FoundationModel.from_metadata(
        entry.name,
        entry.version or "latest",
        # Without a published version the asset is addressed by its label.
        id=None
        if entry.version
        else f"azureml://registries/{entry.registry}/models/{entry.name}/labels/latest",
        registry=entry.registry,
        archived=entry.archived,
        system_metadata=meta,
        tags={"model_specific_defaults": dict(entry.model_specific_defaults)},
    )


def reference_model() -> FoundationModel:
    """Pinned facts of ``Phi-3-mini-4k-instruct`` version 15 in ``azureml`` (for offline plans).

    Archived, fine-tune retirement 2025-08-30: an offline plan with it needs ``allow_retired``.
    """
    model = catalog_model(REFERENCE_MODEL_NAME)
    assert model is not None, "the packaged model catalogue lacks the reference model"
    return model


def _how_to_fix(name: str, registry: str) -> str:
    return (
        f"List its versions with `ml_client.models.list(name={name!r})` on a client for registry "
        f"{registry!r} (or browse the model catalog), then pin one with version=..., or choose "
        "another model name."
    )


def _replacements_text(model: FoundationModel, now: dt.datetime) -> str:
    from phi_finetune.azure.model_catalog import load_catalog

    live = [n for n in load_catalog().replacements(now) if n.lower() != model.name.lower()]
    if not live:
        return ""
    return f"Live fine-tunable chat models that replace it: {', '.join(live)}. "


def check_lifecycle(
    model: FoundationModel, *, allow_retired: bool = False, now: dt.datetime | None = None
) -> list[str]:
    """Raise :class:`ModelRetiredError` for an archived/retired model; return warnings."""
    now = now or dt.datetime.now(dt.UTC)
    warnings: list[str] = []
    reasons: list[str] = []
    if model.archived:
        reasons.append("it is archived in the registry")
    if model.finetune_retired(now):
        assert model.finetune_retirement_date is not None
        reasons.append(
            f"its fine-tune retirement date {model.finetune_retirement_date:%Y-%m-%d} passed"
        )
    if reasons:
        text = f"model {model.name} version {model.version}: " + " and ".join(reasons)
        if not allow_retired:
            raise ModelRetiredError(
                f"{text}; the service refuses to fine-tune it. {_replacements_text(model, now)}"
                "Set [model] name to one of them, or set allow_retired=True (config: [model] "
                "allow_retired = true) to try anyway."
            )
        warnings.append(f"{text}; continuing because allow_retired is set")
    elif model.finetune_retirement_date is not None:
        dep = model.finetune_deprecation_date
        if dep is not None and now >= dep:
            warnings.append(
                f"model {model.name} version {model.version} is deprecated for fine-tuning; it "
                f"retires on {model.finetune_retirement_date:%Y-%m-%d}"
            )
        elif model.finetune_retirement_date - now < dt.timedelta(days=90):
            warnings.append(
                f"model {model.name} version {model.version} retires for fine-tuning on "
                f"{model.finetune_retirement_date:%Y-%m-%d}"
            )
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def resolve_foundation_model(
    registry_client: MLClient,
    name: str = DEFAULT_MODEL_NAME,
    *,
    version: str | int | None = None,
    label: str | None = "latest",
    allow_retired: bool = False,
    now: dt.datetime | None = None,
    registry: str | None = None,
) -> FoundationModel:
    """Get ``name`` (by ``version``, else by ``label``) from the registry ``registry_client``.

    Raises :class:`ModelNotFoundError` for both SDK not-found shapes and
    :class:`ModelRetiredError` for an archived model or one past its fine-tune retirement date
    (a warning instead when ``allow_retired``; a warning before that date).
    """
    registry = registry or getattr(registry_client, "_registry_name", None) or DEFAULT_REGISTRY
    what = f"version {version}" if version is not None else f"label {label or 'latest'!r}"
    try:
        if version is not None:
            raw = registry_client.models.get(name, version=str(version))
        else:
            raw = registry_client.models.get(name, label=label or "latest")
    except Exception as exc:
        if is_not_found(exc):
            raise ModelNotFoundError(
                f"model {name!r} {what} not found in registry {registry!r}. "
                + _how_to_fix(name, registry)
            ) from exc
        # The SDK's other not-found shape: get(label=...) without a match.
        if type(exc).__name__ == "ValidationException":
            raise ModelNotFoundError(
                f"model {name!r} has no version with {what} in registry {registry!r} (it may not "
                f"exist, or every version is archived). {_how_to_fix(name, registry)}"
            ) from exc
        if not is_service_exception(exc):
            raise
        raise translate(f"get model {name!r} {what} from registry {registry!r}", exc) from exc
    model = FoundationModel.from_entity(raw, registry=registry)
    archived, rest_meta = _rest_details(registry_client, model.name, model.version)
    if rest_meta and not model.system_metadata:
        model = FoundationModel.from_metadata(
            model.name,
            model.version,
            id=model.id,
            registry=registry,
            tags=model.tags,
            system_metadata=rest_meta,
            archived=model.archived,
        )
    if archived and not model.archived:
        model = attrs.evolve(model, archived=True)
    logger.info("foundation model: %s version %s (%s)", model.name, model.version, model.id)
    warnings = check_lifecycle(model, allow_retired=allow_retired, now=now)
    return attrs.evolve(model, lifecycle_warnings=tuple(warnings))


def _rest_details(
    registry_client: MLClient, name: str, version: str
) -> tuple[bool, dict[str, Any] | None]:
    """``(isArchived, systemMetadata)`` of a model version, read from the REST object.

    azure-ai-ml 1.35's ``Model`` entity drops both for registry models (and ignores
    ``list_view_type`` for registries), so this reads the REST model version through
    ``models._get`` (best effort: any failure means "unknown").
    """
    try:
        rest = registry_client.models._get(name, version)
    except Exception as exc:  # private SDK surface: never let it block resolving
        logger.debug("could not read the REST model version %s %s: %s", name, version, exc)
        return False, None
    props = getattr(rest, "properties", None)
    if isinstance(props, Mapping):
        flag = _norm_get(props, "isArchived")
    else:
        flag = getattr(props, "is_archived", None)
        if flag is None:
            flag = getattr(props, "isArchived", None)
    meta = _system_metadata_of(props) if props is not None else None
    return _truthy(flag), meta
