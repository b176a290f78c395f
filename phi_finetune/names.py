"""Names the Azure ML service accepts: validators and generators, checked before any call.

Every validator returns the name unchanged when it is valid and raises
:class:`~phi_finetune.errors.InvalidNameError` naming the parameter, the rule broken and a
valid suggestion otherwise. Generators always produce names their validator accepts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time

from phi_finetune.errors import InvalidNameError

__all__ = [
    "COMPUTE_NAME_PATTERN",
    "DEFAULT_ENDPOINT_PREFIX",
    "DEFAULT_MODEL_SUFFIX",
    "ENDPOINT_NAME_MAX",
    "ENDPOINT_NAME_MIN",
    "ENDPOINT_NAME_PATTERN",
    "MODEL_NAME_MAX",
    "MODEL_NAME_PATTERN",
    "REGISTRY_NAME_PATTERN",
    "RESOURCE_GROUP_PATTERN",
    "RUN_ID_TAG",
    "WORKSPACE_NAME_PATTERN",
    "default_model_name",
    "derive_endpoint_name",
    "endpoint_name_problems",
    "generate_endpoint_name",
    "generate_model_version",
    "sanitize_endpoint_name",
    "sanitize_model_name",
    "validate_deployment_name",
    "validate_endpoint_name",
    "validate_job_name",
    "validate_model_name",
    "validate_model_version",
]

#: Tag on every job, model and endpoint a run creates, valued with the run id (its journal).
RUN_ID_TAG = "phi_finetune.run_id"

ENDPOINT_NAME_MIN = 3
ENDPOINT_NAME_MAX = 32
#: Online endpoint and deployment names (the service's rule).
ENDPOINT_NAME_PATTERN = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
#: The reference notebook's endpoint name prefix.
DEFAULT_ENDPOINT_PREFIX = "ultrachat-completion"

MODEL_NAME_MAX = 255
#: Asset names, models included: start alphanumeric, then letters, digits, ``-``, ``_``, ``.``.
MODEL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
#: The reference notebook's registered-model suffix.
DEFAULT_MODEL_SUFFIX = "ultrachat-200k"

MODEL_VERSION_MAX = 30
MODEL_VERSION_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

JOB_NAME_MAX = 255
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")

#: Workspace names: 3-33 letters, digits, ``-`` or ``_``, starting with a letter or digit.
WORKSPACE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
#: Registry names: 2-33 letters, digits, ``-`` or ``_``, starting with a letter or digit.
REGISTRY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{1,32}$")
#: Resource group names: 1-90 letters, digits, ``_``, ``-``, ``.``, ``(`` or ``)`` (not ending
#: with ``.``, which the pattern does not check).
RESOURCE_GROUP_PATTERN = re.compile(r"^[-\w.()]{1,90}$")
#: Compute cluster names: 2-32 letters, digits or ``-``, starting with a letter.
COMPUTE_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def _to_base36(value: int) -> str:
    if value == 0:
        return "0"
    out: list[str] = []
    while value:
        value, rem = divmod(value, 36)
        out.append(string.digits[rem] if rem < 10 else string.ascii_lowercase[rem - 10])
    return "".join(reversed(out))


def endpoint_name_problems(name: str) -> list[str]:
    """What is wrong with ``name`` as an online endpoint or deployment name (empty: valid)."""
    if not isinstance(name, str):
        return [f"it must be a string, not {type(name).__name__}"]
    problems: list[str] = []
    if not ENDPOINT_NAME_MIN <= len(name) <= ENDPOINT_NAME_MAX:
        problems.append(
            f"it is {len(name)} characters long; "
            f"{ENDPOINT_NAME_MIN}-{ENDPOINT_NAME_MAX} are allowed"
        )
    if name and not (name[0].isascii() and name[0].isalpha()):
        problems.append("it must start with a letter")
    if re.search(r"[^-a-zA-Z0-9]", name):
        problems.append("only letters, digits and '-' are allowed")
    if name.endswith("-"):
        problems.append("it must end with a letter or digit")
    if not problems and not ENDPOINT_NAME_PATTERN.match(name):  # pragma: no cover - belt and braces
        problems.append(f"it must match {ENDPOINT_NAME_PATTERN.pattern}")
    return problems


def sanitize_endpoint_name(name: str) -> str:
    """The closest valid endpoint/deployment name to ``name`` (used for fix suggestions)."""
    _require_str(name, "name")
    cleaned = re.sub(r"[^-a-zA-Z0-9]+", "-", name.strip())
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    cleaned = re.sub(r"^[^a-zA-Z]+", "", cleaned)
    cleaned = cleaned[:ENDPOINT_NAME_MAX].rstrip("-")
    if len(cleaned) < ENDPOINT_NAME_MIN:
        cleaned = cleaned + "-ep" if cleaned else "endpoint"
    return cleaned


def validate_endpoint_name(name: str, *, parameter: str = "endpoint_name") -> str:
    """Return ``name`` if the service accepts it as an online endpoint name, else raise.

    Endpoint names are 3-32 characters, start with a letter, hold only letters, digits and ``-``
    and end with a letter or digit. They are unique per Azure region, and a just-deleted name
    cannot be reused at once.
    """
    return _validate_endpoint_like(name, parameter=parameter, what="endpoint")


def validate_deployment_name(name: str, *, parameter: str = "deployment_name") -> str:
    """Return ``name`` if the service accepts it as an online deployment name, else raise."""
    return _validate_endpoint_like(name, parameter=parameter, what="deployment")


def _validate_endpoint_like(name: str, *, parameter: str, what: str) -> str:
    if not isinstance(name, str):
        raise InvalidNameError(
            f"{parameter} must be a string, got {type(name).__name__}", key=parameter
        )
    problems = endpoint_name_problems(name)
    if problems:
        suggestion = sanitize_endpoint_name(name) if name.strip() else generate_endpoint_name()
        raise InvalidNameError(
            f"{parameter}={name!r} is not a valid {what} name: {'; '.join(problems)}. "
            f"Use 3-32 letters, digits and '-', starting with a letter and ending with a letter "
            f"or digit, for example {suggestion!r}.",
            key=parameter,
        )
    return name


def _require_str(value: object, parameter: str) -> None:
    if not isinstance(value, str):
        raise InvalidNameError(
            f"{parameter} must be a string, got {type(value).__name__}", key=parameter
        )


def _random_suffix(length: int) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def generate_endpoint_name(
    prefix: str = DEFAULT_ENDPOINT_PREFIX, *, now: float | None = None, random_chars: int = 4
) -> str:
    """A fresh, valid endpoint name like the reference's: ``ultrachat-completion-<suffix>``.

    The suffix is the time in base 36 (sortable) plus ``random_chars`` random characters, so
    two names generated in the same second still differ. A long prefix is shortened so the whole
    name fits in 32 characters.
    """
    stamp = _to_base36(int(time.time() if now is None else now))
    suffix = stamp + _random_suffix(random_chars)
    head = sanitize_endpoint_name(prefix) if prefix else "ep"
    room = ENDPOINT_NAME_MAX - len(suffix) - 1
    head = head[:room].rstrip("-") or "ep"
    name = f"{head}-{suffix}"
    return validate_endpoint_name(name, parameter="generated endpoint name")


def derive_endpoint_name(base: str, seed: str, attempt: int = 1) -> str:
    """A valid endpoint name ``<base>-<6 characters>`` whose suffix depends only on ``base``,
    ``seed`` (e.g. the run id) and ``attempt``: used when ``base`` is taken or reserved, so a
    resumed run derives the same replacement name again. ``base`` is shortened to fit 32."""
    digest = hashlib.sha256(f"{base}\0{seed}\0{attempt}".encode()).digest()
    suffix = _to_base36(int.from_bytes(digest[:8], "big"))[-6:].rjust(6, "0")
    head = sanitize_endpoint_name(base)[: ENDPOINT_NAME_MAX - len(suffix) - 1].rstrip("-")
    return validate_endpoint_name(f"{head or 'ep'}-{suffix}", parameter="derived endpoint name")


def sanitize_model_name(name: str) -> str:
    """``name`` turned into a valid model asset name (slashes and spaces become hyphens)."""
    _require_str(name, "name")
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", name.strip())
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    cleaned = re.sub(r"^[^a-zA-Z0-9]+", "", cleaned)
    cleaned = cleaned[:MODEL_NAME_MAX].rstrip("-.")
    return cleaned or "model"


def default_model_name(base_model: str, *, suffix: str = DEFAULT_MODEL_SUFFIX) -> str:
    """The reference's registered model name: ``<base model>-ultrachat-200k``, sanitised.

    ``base_model`` may be a bare name (``Phi-3-mini-4k-instruct``), a ``name:version`` pair, an
    ``azureml:`` asset id or a registry ARM id; only the model name part is used.
    """
    _require_str(base_model, "base_model")
    base = base_model.strip()
    match = re.search(r"/models/([^/]+)(?:/versions/[^/]+)?/?$", base)
    if match:
        base = match.group(1)
    elif base.startswith("azureml:"):
        base = base[len("azureml:") :].split(":", 1)[0]
    elif ":" in base and "/" not in base:
        base = base.split(":", 1)[0]
    name = sanitize_model_name(f"{base}-{suffix}" if suffix else base)
    return validate_model_name(name, parameter="generated model name")


def validate_model_name(name: str, *, parameter: str = "name") -> str:
    """Return ``name`` if the service accepts it as a model asset name, else raise."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(
            f"{parameter} must be a non-empty string, for example 'my-model'", key=parameter
        )
    problems: list[str] = []
    if len(name) > MODEL_NAME_MAX:
        problems.append(f"it is {len(name)} characters long; at most {MODEL_NAME_MAX} are allowed")
    if not MODEL_NAME_PATTERN.match(name):
        problems.append(
            "it must start with a letter or digit and hold only letters, digits, '-', '_' and '.'"
        )
    if problems:
        raise InvalidNameError(
            f"{parameter}={name!r} is not a valid model name: {'; '.join(problems)}. "
            f"Try {sanitize_model_name(name)!r}.",
            key=parameter,
        )
    return name


def validate_model_version(version: str | int, *, parameter: str = "version") -> str:
    """Return ``version`` as a string if the service accepts it as a model version, else raise."""
    if isinstance(version, bool) or not isinstance(version, str | int):
        raise InvalidNameError(
            f"{parameter} must be a string or an integer, got {type(version).__name__}",
            key=parameter,
        )
    text = str(version)
    if isinstance(version, int) and version < 1:
        raise InvalidNameError(
            f"{parameter}={version!r} is not a valid model version: use a positive integer "
            f"such as {generate_model_version()!r}.",
            key=parameter,
        )
    if not text or len(text) > MODEL_VERSION_MAX or not MODEL_VERSION_PATTERN.match(text):
        raise InvalidNameError(
            f"{parameter}={text!r} is not a valid model version: use 1-{MODEL_VERSION_MAX} "
            f"letters, digits, '.', '_' or '-', starting with a letter or digit, such as "
            f"{generate_model_version()!r}.",
            key=parameter,
        )
    return text


def generate_model_version(*, now: float | None = None) -> str:
    """A model version like the reference's: the Unix time in seconds (a positive integer)."""
    return str(int(time.time() if now is None else now))


def validate_job_name(name: str, *, parameter: str = "job_name") -> str:
    """Return ``name`` if it can be an Azure ML job name, else raise."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > JOB_NAME_MAX
        or not JOB_NAME_PATTERN.match(name)
    ):
        raise InvalidNameError(
            f"{parameter}={name!r} is not a valid job name: use letters, digits, '-' and '_', "
            "starting with a letter or digit (the name shown by `phi-finetune status`).",
            key=parameter,
        )
    return name
