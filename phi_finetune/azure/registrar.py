"""Register a fine-tuning job's ``trained_model`` output as an MLflow model (workflow step 12).

Idempotent: the job output path is stored in the model's tags, so registering the same output
again returns the version that already holds it instead of creating another one.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from phi_finetune._redact import redact
from phi_finetune.azure.boundary import call, get_or_none
from phi_finetune.errors import ModelError
from phi_finetune.names import (
    RUN_ID_TAG,
    default_model_name,
    generate_model_version,
    validate_job_name,
    validate_model_name,
    validate_model_version,
)
from phi_finetune.observer import NullObserver, ResourceObserver, observer_from_callbacks

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Model

__all__ = ["TAG_PREFIX", "ModelRegistrar", "RegisteredModel", "job_output_path"]

logger = logging.getLogger(__name__)

TAG_PREFIX = "phi_finetune."
TAG_SOURCE = TAG_PREFIX + "source_path"
TAG_JOB = TAG_PREFIX + "job_name"
TAG_BASE = TAG_PREFIX + "base_model"
TAG_RUN = RUN_ID_TAG
_JOB_PATH = re.compile(r"^azureml://jobs/([^/]+)/outputs/([^/]+)/?$")
_MAX_TAG_VALUE = 256
_ENDED = frozenset({"Failed", "Canceled", "NotResponding", "Paused"})


def _status_text(status: Any) -> str:
    if status is None:
        return "Unknown"
    return str(getattr(status, "value", status))


@attrs.frozen
class RegisteredModel:
    """A model version in the workspace registry."""

    name: str
    version: str
    id: str | None = None
    """The service's resource id (``None`` when unknown)."""
    path: str | None = None
    tags: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    description: str | None = attrs.field(default=None, repr=False)
    created: bool = attrs.field(default=False, eq=False)
    """``True`` when this call registered it, ``False`` when it already existed."""

    @property
    def asset_id(self) -> str:
        """``azureml:<name>:<version>``, what deployments accept as ``model``."""
        return f"azureml:{self.name}:{self.version}"

    @property
    def source_path(self) -> str | None:
        """The job output this version was registered from (from its tags)."""
        return self.tags.get(TAG_SOURCE)

    @classmethod
    def from_entity(cls, model: Model, *, created: bool = False) -> RegisteredModel:
        """From the ``Model`` entity that ``models.get`` or ``create_or_update`` returns."""
        return cls(
            name=str(model.name),
            version=str(model.version),
            id=model.id,
            path=None if model.path is None else str(model.path),
            tags={str(k): str(v) for k, v in dict(model.tags or {}).items()},
            description=model.description,
            created=created,
        )

    @classmethod
    def from_azure(cls, model: Model, *, created: bool = False) -> RegisteredModel:
        """Deprecated alias of :meth:`from_entity` (removed in 0.3.0)."""
        warnings.warn(
            "RegisteredModel.from_azure is deprecated; use RegisteredModel.from_entity",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_entity(model, created=created)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "path": self.path,
            "asset_id": self.asset_id,
            "tags": dict(self.tags),
            "created": self.created,
        }


def job_output_path(job_output: str, *, output_name: str = "trained_model") -> str:
    """``azureml://jobs/<job>/outputs/<output>`` for a job name, or a given job output path."""
    if job_output.startswith("azureml://"):
        if not _JOB_PATH.match(job_output):
            logger.debug("registering from a non-job path %s", job_output)
        return job_output.rstrip("/")
    validate_job_name(job_output, parameter="job_output")
    return f"azureml://jobs/{job_output}/outputs/{output_name}"


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = redact(text)
    return text if len(text) <= _MAX_TAG_VALUE else text[: _MAX_TAG_VALUE - 3] + "..."


class ModelRegistrar:
    """Registers job outputs as MLflow models through an ``MLClient``.

    ``observer`` (a :class:`~phi_finetune.observer.ResourceObserver`) hears
    ``creating("model", name, version, billable=False)`` right before the create request and
    ``created(...)`` right after it succeeds, so a journal can record the model on both sides of
    the remote call. The 0.1 callbacks ``on_creating``/``on_created``
    (``fn(kind, name, version)``) are deprecated.

    Before registering from ``azureml://jobs/<job>/outputs/<output>`` it checks that the job
    exists, has completed and has that output (``check_job_output=False`` skips this).
    """

    def __init__(
        self,
        ml_client: MLClient,
        *,
        observer: ResourceObserver | None = None,
        on_creating: Callable[[str, str, str], object] | None = None,
        on_created: Callable[[str, str, str], object] | None = None,
        check_job_output: bool = True,
        known_jobs: Mapping[str, Any] | None = None,
    ) -> None:
        """``known_jobs``: job name -> the job entity the caller just read (its output check
        uses it instead of reading the job again)."""
        self._ml_client = ml_client
        self._check_job_output = check_job_output
        self._known_jobs = dict(known_jobs or {})
        chosen = observer_from_callbacks(
            "ModelRegistrar()",
            observer,
            on_creating=on_creating,
            on_created=on_created,
            with_version=True,
        )
        self._observer: ResourceObserver = NullObserver() if chosen is None else chosen

    def register(
        self,
        job_output: str,
        *,
        base_model: str,
        name: str | None = None,
        version: str | int | None = None,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        data_hashes: Mapping[str, str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        output_name: str = "trained_model",
    ) -> RegisteredModel:
        """Register ``job_output`` (a job name or an ``azureml://jobs/...`` path).

        ``name`` defaults to ``<base model>-ultrachat-200k``; ``version`` to the Unix time.
        Tags link the base model, the job, the data manifest hashes (``data_hashes``, e.g.
        ``{"train": "<sha256>"}``) and the fine-tuning ``parameters``. Names and versions are
        checked before any request. Registering the same output again returns the existing
        version; a given ``name``/``version`` that already holds another output is an error.
        """
        path = job_output_path(job_output, output_name=output_name)
        model_name = (
            validate_model_name(name) if name is not None else default_model_name(base_model)
        )
        wanted_version = None if version is None else validate_model_version(version)
        job_match = _JOB_PATH.match(path)

        all_tags: dict[str, str] = {_tag_value(k): _tag_value(v) for k, v in (tags or {}).items()}
        all_tags[TAG_SOURCE] = path
        all_tags[TAG_BASE] = _tag_value(base_model)
        if job_match:
            all_tags[TAG_JOB] = job_match.group(1)
        if run_id:
            all_tags[TAG_RUN] = _tag_value(run_id)
        for split, digest in (data_hashes or {}).items():
            all_tags[f"{TAG_PREFIX}data.{split}"] = _tag_value(digest)
        for param, value in (parameters or {}).items():
            all_tags[f"{TAG_PREFIX}param.{param}"] = _tag_value(value)

        if wanted_version is not None:
            existing = self._get(model_name, wanted_version)
            if existing is not None:
                if self._same_source(existing, path):
                    logger.info(
                        "model %s:%s already holds %s; reusing it",
                        model_name,
                        wanted_version,
                        path,
                    )
                    return existing
                raise ModelError(
                    f"model {model_name}:{wanted_version} already exists and was registered from "
                    f"{existing.source_path or existing.path!r}, not {path!r}; pick another "
                    "version, or omit version to get a new one"
                )
        else:
            found, taken = self._find(model_name, source_path=path)
            if found is not None:
                logger.info(
                    "model %s:%s already holds %s; reusing it", found.name, found.version, path
                )
                return found
            wanted_version = generate_model_version()
            # The list find() read names every version: a taken one is bumped without a GET.
            # When the list could not be read, each candidate is read instead.
            while (
                wanted_version in taken
                if taken is not None
                else self._get(model_name, wanted_version) is not None
            ):
                wanted_version = str(int(wanted_version) + 1)

        if job_match and self._check_job_output:
            self._check_job(job_match.group(1), job_match.group(2), path)

        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        model = Model(
            path=path,
            type=AssetTypes.MLFLOW_MODEL,
            name=model_name,
            version=wanted_version,
            description=description
            or f"{base_model} fine-tuned on UltraChat 200k (job output {path})",
            tags=all_tags,
        )
        self._observer.creating("model", model_name, wanted_version, billable=False)
        created = call(
            f"register model {model_name}:{wanted_version}",
            lambda: self._ml_client.models.create_or_update(model),
        )
        result = RegisteredModel.from_entity(created, created=True)
        if not result.tags.get(TAG_SOURCE):
            result = attrs.evolve(result, tags={**result.tags, TAG_SOURCE: path})
        logger.info("registered model %s:%s from %s", result.name, result.version, path)
        self._observer.created("model", result.name, result.version, billable=False)
        return result

    def get(self, name: str, version: str | int) -> RegisteredModel:
        """A registered model version; :class:`ModelError` when it does not exist."""
        found = self._get(validate_model_name(name), validate_model_version(version))
        if found is None:
            raise ModelError(
                f"model {name}:{version} is not registered in this workspace; register it with "
                "ModelRegistrar.register(job_name, base_model=...)"
            )
        return found

    def find(self, name: str, *, source_path: str) -> RegisteredModel | None:
        """The version of ``name`` registered from ``source_path`` (``None`` if there is none)."""
        return self._find(name, source_path=source_path)[0]

    def _find(
        self, name: str, *, source_path: str
    ) -> tuple[RegisteredModel | None, set[str] | None]:
        """:meth:`find` and every version of ``name`` that list read (``None``: not read)."""
        versions = get_or_none(
            f"list versions of model {name}", lambda: list(self._ml_client.models.list(name=name))
        )
        found: RegisteredModel | None = None
        taken: set[str] = set()
        for model in versions or ():
            candidate = RegisteredModel.from_entity(model)
            taken.add(str(candidate.version))
            if found is None and self._same_source(candidate, source_path):
                found = candidate
        return found, (taken if versions is not None else None)

    # ------------------------------------------------------------------ internals
    def _check_job(self, job_name: str, output_name: str, path: str) -> None:
        """Refuse, before any PUT, an output of a job that is missing or not completed."""
        job = self._known_jobs.get(job_name)
        if job is None:
            job = get_or_none(
                f"get job {job_name!r} (to register its output)",
                lambda: self._ml_client.jobs.get(job_name),
            )
        asked = f"cannot register {path}"
        if job is None:
            raise ModelError(
                f"{asked}: job {job_name!r} does not exist in this workspace. Check the job "
                "name (`phi-finetune status RUN_ID` shows the run's job) and the workspace in "
                "your configuration."
            )
        status = _status_text(getattr(job, "status", None))
        if status != "Completed":
            if status in _ENDED:
                todo = "its outputs are incomplete: fix the cause and submit a new job"
            else:
                todo = (
                    f"wait until it completes (`phi-finetune job stream {job_name}`), then "
                    "register again"
                )
            raise ModelError(f"{asked}: job {job_name!r} is {status}, not Completed; {todo}")
        outputs = getattr(job, "outputs", None)
        if isinstance(outputs, Mapping) and outputs and output_name not in outputs:
            raise ModelError(
                f"{asked}: job {job_name!r} has no output {output_name!r} (its outputs: "
                f"{', '.join(sorted(map(str, outputs)))}); pass output_name=... or the full "
                "azureml://jobs/... path of the model output"
            )

    @staticmethod
    def _same_source(model: RegisteredModel, path: str) -> bool:
        return model.source_path == path or (model.path or "").rstrip("/") == path

    def _get(self, name: str, version: str) -> RegisteredModel | None:
        model = get_or_none(
            f"read model {name}:{version}",
            lambda: self._ml_client.models.get(name=name, version=version),
        )
        return None if model is None else RegisteredModel.from_entity(model)
