"""``Workspace``: the credential and the lazily created workspace and registry ``MLClient`` objects.

Constructing a :class:`Workspace` is free: no network call, and neither ``azure.identity`` nor
``azure.ai.ml`` is imported until the credential or a client is first used.

Credential resolution (the reference notebook's step 1, made explicit):

1. an explicit ``credential=`` wins and is used as is;
2. otherwise ``DefaultAzureCredential`` is probed with a token for the management scope;
3. if that fails, ``InteractiveBrowserCredential`` is tried, only when interactive login is
   allowed (``allow_interactive=True``, or by default when running in a notebook kernel or
   when stdin is a terminal), and the fallback is logged at INFO;
4. otherwise :class:`~phi_finetune.errors.AuthenticationError` lists what was tried and why
   each failed (exception class and a short, redacted message; never a token).

Tests and other modules inject clients with :meth:`Workspace.from_clients` or a
``client_factory(kind, credential, config)``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from phi_finetune._redact import redact
from phi_finetune.azure.boundary import azure_errors, is_service_exception, translate
from phi_finetune.config import WorkspaceConfig
from phi_finetune.constants import ENV_FAKE_AZUREML_URL
from phi_finetune.errors import AuthenticationError, ConfigurationError, PhiFinetuneError

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.core.credentials import TokenCredential

__all__ = ["MANAGEMENT_SCOPE", "ClientFactory", "ClientKind", "Workspace", "default_client_factory"]

logger = logging.getLogger(__name__)

#: The scope the credential probe asks a token for (Azure Resource Manager).
MANAGEMENT_SCOPE = "https://management.azure.com/.default"

ClientKind = Literal["workspace", "registry"]
#: ``factory(kind, credential, config) -> MLClient``; ``kind`` is ``"workspace"`` or ``"registry"``.
ClientFactory = Callable[[ClientKind, "TokenCredential", WorkspaceConfig], "MLClient"]

_MAX_REASON = 300


def default_client_factory(
    kind: ClientKind, credential: TokenCredential, config: WorkspaceConfig
) -> MLClient:
    """Create a real ``MLClient`` (imports azure.ai.ml; the registry client calls the service)."""
    from azure.ai.ml import MLClient

    from phi_finetune.progress import progress_enabled

    # The SDK's own upload/download bars follow the same switch as ours.
    show_progress = progress_enabled()
    if kind == "workspace":
        return MLClient(
            credential,
            subscription_id=config.subscription_id,
            resource_group_name=config.resource_group,
            workspace_name=config.workspace_name,
            show_progress=show_progress,
        )
    if kind == "registry":
        return MLClient(credential, registry_name=config.registry_name, show_progress=show_progress)
    raise ValueError(f"unknown client kind {kind!r}; use 'workspace' or 'registry'")


class Workspace:
    """An Azure ML workspace and registry: credential plus two lazily created ``MLClient`` objects.

    ``Workspace(config)`` only stores its arguments. ``credential``, ``ml_client`` and
    ``registry_client`` are created on first access (thread-safe) and then reused.
    """

    def __init__(
        self,
        config: WorkspaceConfig,
        *,
        credential: TokenCredential | None = None,
        allow_interactive: bool | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        if not isinstance(config, WorkspaceConfig):
            raise ConfigurationError(
                f"Workspace needs a WorkspaceConfig, not {type(config).__name__}; build one with "
                "WorkspaceConfig(...), WorkspaceConfig.resolve() or use Workspace.from_config()."
            )
        self._config: WorkspaceConfig | None = config
        self._credential = credential
        self._credential_explicit = credential is not None
        self._allow_interactive = allow_interactive
        self._client_factory = client_factory
        self._ml_client: MLClient | None = None
        self._registry_client: MLClient | None = None
        self._other_registries: dict[str, MLClient] = {}
        self._lock = threading.RLock()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        file_name: str | None = None,
        registry_name: str = "azureml",
        credential: TokenCredential | None = None,
        allow_interactive: bool | None = None,
        client_factory: ClientFactory | None = None,
    ) -> Workspace:
        """From a ``config.json`` found as ``MLClient.from_config`` finds it (see
        :meth:`WorkspaceConfig.from_config_file`)."""
        config = WorkspaceConfig.from_config_file(
            path, file_name=file_name, registry_name=registry_name
        )
        return cls(
            config,
            credential=credential,
            allow_interactive=allow_interactive,
            client_factory=client_factory,
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        registry_name: str = "azureml",
        credential: TokenCredential | None = None,
        allow_interactive: bool | None = None,
        client_factory: ClientFactory | None = None,
    ) -> Workspace:
        """From ``AZURE_SUBSCRIPTION_ID``, ``AZURE_RESOURCE_GROUP``, ``AZUREML_WORKSPACE_NAME``."""
        config = WorkspaceConfig.from_env(environ, registry_name=registry_name)
        return cls(
            config,
            credential=credential,
            allow_interactive=allow_interactive,
            client_factory=client_factory,
        )

    @classmethod
    def resolve(
        cls,
        config: WorkspaceConfig | None = None,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        registry_name: str | None = None,
        path: str | os.PathLike[str] | None = None,
        file_name: str | None = None,
        environ: Mapping[str, str] | None = None,
        credential: TokenCredential | None = None,
        allow_interactive: bool | None = None,
        client_factory: ClientFactory | None = None,
    ) -> Workspace:
        """``config`` if given, else :meth:`WorkspaceConfig.resolve` (explicit > env > file)."""
        if config is None:
            config = WorkspaceConfig.resolve(
                subscription_id=subscription_id,
                resource_group=resource_group,
                workspace_name=workspace_name,
                registry_name=registry_name,
                path=path,
                file_name=file_name,
                environ=environ,
            )
        return cls(
            config,
            credential=credential,
            allow_interactive=allow_interactive,
            client_factory=client_factory,
        )

    @classmethod
    def from_clients(
        cls,
        ml_client: MLClient | Any,
        registry_client: MLClient | Any | None = None,
        config: WorkspaceConfig | None = None,
        *,
        credential: TokenCredential | None = None,
        client_factory: ClientFactory | None = None,
    ) -> Workspace:
        """Wrap prebuilt clients (real, specced mocks or the fake service's).

        Without ``config``, the scope is read from ``ml_client``'s ``subscription_id``,
        ``resource_group_name`` and ``workspace_name`` when they are strings (a mock's are not;
        then :attr:`config` is ``None``). Without ``registry_client``, it is created on first
        use through ``client_factory`` (that needs a config).
        """
        if config is None:
            config = _config_from_client(ml_client, registry_client)
        self = cls.__new__(cls)
        self._config = config
        self._credential = credential
        self._credential_explicit = credential is not None
        self._allow_interactive = None
        self._client_factory = client_factory
        self._ml_client = ml_client
        self._registry_client = registry_client
        self._other_registries = {}
        self._lock = threading.RLock()
        return self

    # -- scope -----------------------------------------------------------------------------

    @property
    def config(self) -> WorkspaceConfig | None:
        """The scope; ``None`` only for :meth:`from_clients` with clients that do not say."""
        return self._config

    @property
    def subscription_id(self) -> str | None:
        return None if self._config is None else self._config.subscription_id

    @property
    def resource_group(self) -> str | None:
        return None if self._config is None else self._config.resource_group

    @property
    def workspace_name(self) -> str | None:
        return None if self._config is None else self._config.workspace_name

    @property
    def registry_name(self) -> str | None:
        return None if self._config is None else self._config.registry_name

    def __repr__(self) -> str:
        cfg = self._config
        if cfg is None:
            scope = "scope=<from injected clients>"
        else:
            scope = (
                f"subscription_id={cfg.subscription_id!r}, resource_group={cfg.resource_group!r}, "
                f"workspace_name={cfg.workspace_name!r}, registry_name={cfg.registry_name!r}"
            )
        cred = "not resolved" if self._credential is None else type(self._credential).__name__
        return f"Workspace({scope}, credential={cred})"

    # -- credential ------------------------------------------------------------------------

    @property
    def interactive_allowed(self) -> bool:
        """Whether the interactive browser fallback may be used (see the module docstring)."""
        if self._allow_interactive is not None:
            return self._allow_interactive
        return _in_notebook() or _stdin_is_tty()

    @property
    def credential(self) -> TokenCredential:
        """The credential: explicit, else a probed DefaultAzureCredential, else interactive."""
        with self._lock:
            if self._credential is None:
                self._credential = self._resolve_credential()
            return self._credential

    def _resolve_credential(self) -> TokenCredential:
        fake_url = os.environ.get(ENV_FAKE_AZUREML_URL)
        if fake_url:  # tests only: a served FakeAzureML answers everything (docs/testing.md)
            from phi_finetune.testing._client_hook import activate

            return activate(fake_url)
        import azure.identity as identity

        attempts: list[str] = []
        last_error: BaseException | None = None
        try:
            default = identity.DefaultAzureCredential()
            default.get_token(MANAGEMENT_SCOPE)
        except Exception as exc:
            last_error = exc
            attempts.append(f"DefaultAzureCredential: {_reason(exc)}")
        else:
            logger.debug("using DefaultAzureCredential")
            return default

        if self.interactive_allowed:
            logger.info(
                "DefaultAzureCredential could not get a token (%s); falling back to "
                "interactive browser login (InteractiveBrowserCredential)",
                _reason(last_error),
            )
            try:
                interactive = identity.InteractiveBrowserCredential()
                interactive.get_token(MANAGEMENT_SCOPE)
            except Exception as exc:
                last_error = exc
                attempts.append(f"InteractiveBrowserCredential: {_reason(exc)}")
            else:
                return interactive
        else:
            attempts.append(
                "InteractiveBrowserCredential: not tried (interactive login is not allowed here: "
                "not a notebook and stdin is not a terminal; pass allow_interactive=True to allow "
                "it)"
            )
        tried = "\n".join(f"  - {a}" for a in attempts)
        raise AuthenticationError(
            "Could not get an Azure token for "
            f"{MANAGEMENT_SCOPE}{self._scope_hint()}. Tried:\n{tried}\n"
            "Fix: run `az login` (add --tenant for another tenant), or set AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal, or use a managed "
            "identity, or pass credential=... to Workspace.",
            attempts=attempts,
        ) from last_error

    def _scope_hint(self) -> str:
        cfg = self._config
        return "" if cfg is None else f" (workspace {cfg.workspace_name!r})"

    # -- clients ---------------------------------------------------------------------------

    @property
    def ml_client(self) -> MLClient:
        """The workspace ``MLClient``, created on first use."""
        with self._lock:
            if self._ml_client is None:
                self._ml_client = self._make_client("workspace")
            return self._ml_client

    @property
    def registry_client(self) -> MLClient:
        """The registry ``MLClient`` (registry ``azureml`` by default), created on first use."""
        with self._lock:
            if self._registry_client is None:
                self._registry_client = self._make_client("registry")
            return self._registry_client

    def registry_client_for(self, registry: str) -> MLClient:
        """A client for ``registry``: the registry client itself when it is that registry, else
        a new one (cached) with the same credential, e.g. for a model in ``azureml-meta``."""
        if registry == (self.registry_name or "azureml"):
            return self.registry_client
        with self._lock:
            cached = self._other_registries.get(registry)
        if cached is not None:
            return cached
        config = self._config
        if config is None:
            raise ConfigurationError(
                f"no client for registry {registry!r}: the workspace scope is unknown; pass "
                "config= to Workspace.from_clients(), or model_registry_client= to FineTuneJob"
            )
        client = self._make_client("registry", attrs.evolve(config, registry_name=registry))
        with self._lock:
            return self._other_registries.setdefault(registry, client)

    def _make_client(self, kind: ClientKind, config: WorkspaceConfig | None = None) -> MLClient:
        config = config or self._config
        if config is None:
            raise ConfigurationError(
                f"No {kind} client was injected and the workspace scope is unknown; pass "
                f"{'registry_client' if kind == 'registry' else 'ml_client'} or config= to "
                "Workspace.from_clients()."
            )
        credential = self.credential
        factory = self._client_factory or default_client_factory
        what = (
            f"the workspace client for {config.workspace_name!r} (resource group "
            f"{config.resource_group!r})"
            if kind == "workspace"
            else f"the registry client for registry {config.registry_name!r}"
        )
        with azure_errors(f"create {what}", not_found=ConfigurationError):
            client = factory(kind, credential, config)
        logger.debug("created %s", what)
        return client


def wrap_azure_error(exc: BaseException, doing: str) -> PhiFinetuneError | None:
    """Deprecated: use :func:`phi_finetune.azure.boundary.translate`. ``None`` for exceptions
    that do not come from the service."""
    if not isinstance(exc, PhiFinetuneError) and not is_service_exception(exc):
        return None
    return translate(doing, exc)


def _reason(exc: BaseException | None) -> str:
    """``ClassName: first line of the message``, redacted and shortened."""
    if exc is None:
        return "no error"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = redact(text)
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _config_from_client(ml_client: Any, registry_client: Any) -> WorkspaceConfig | None:
    sub = getattr(ml_client, "subscription_id", None)
    group = getattr(ml_client, "resource_group_name", None)
    name = getattr(ml_client, "workspace_name", None)
    if not (isinstance(sub, str) and isinstance(group, str) and isinstance(name, str)):
        return None
    registry = _registry_name_of(registry_client) or "azureml"
    try:
        return WorkspaceConfig(sub, group, name, registry_name=registry)
    except ConfigurationError:
        logger.debug("the injected client's scope is not a valid WorkspaceConfig", exc_info=True)
        return None


def _registry_name_of(client: Any) -> str | None:
    if client is None:
        return None
    scope = getattr(client, "_operation_scope", None)
    name = getattr(scope, "registry_name", None)
    return name if isinstance(name, str) and name else None


def _in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (never imports IPython)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    if shell is None:
        return False
    if type(shell).__name__ == "ZMQInteractiveShell":
        return True
    config = getattr(shell, "config", None)
    try:
        return "IPKernelApp" in config  # type: ignore[operator]
    except TypeError:
        return False


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        return False
