"""``phi-finetune plan``: check a fine-tuning run without submitting anything.

``plan --config FILE`` resolves the model and the live component in the registry, checks the
compute (cluster state, allow list, GPUs per node, quota; nothing is created) and every
parameter, and prints the plan (model, compute, parameters with their source, display name,
warnings). ``--offline`` needs no Azure at all: it uses the pinned component interface (or
``finetune.interface_file``), the pinned model catalogue (``phi-finetune models --offline``;
a model not in it gets no allow list and no defaults), and GPUs per node from the pinned VM
size table; cluster state and quota are not checked. The plan also shows the deployment size
(``deploy.instance_type``, or the first size of the model's inference allow list that is not
retired and has quota) and a cost estimate (``[cost]``; ``--price-file``,
``--tokens-per-gpu-second``). Exit 0 with the plan, 1 with every problem found.

With ``backend = "serverless"`` the plan checks the serverless route instead: the model offers
serverless fine-tuning, the region, a hub-based project, the four accepted hyperparameters
(``--offline``: from pinned facts and ``[serverless] region`` / ``workspace_kind``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "run_plan"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="check model, compute and parameters and show the pipeline (submits nothing)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="no Azure: pinned interface, pinned model facts, pinned VM sizes",
    )
    parser.add_argument(
        "--price-file",
        metavar="FILE",
        help="your VM price table (TOML/JSON) for the cost estimate (overrides cost.price_file)",
    )
    parser.add_argument(
        "--tokens-per-gpu-second",
        type=float,
        metavar="N",
        help="training tokens per GPU per second for the cost estimate "
        "(overrides cost.tokens_per_gpu_second)",
    )
    parser.set_defaults(handler=run_plan)


def _make_workspace(config: Any) -> Any:
    """The workspace for a live plan (tests replace this)."""
    from phi_finetune.cli._common import workspace_for

    return workspace_for(None, config=config)


def build_job(config: Any, *, offline: bool) -> Any:
    """A :class:`~phi_finetune.azure.job.FineTuneJob` from a ``RunConfig``."""
    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.azure.job import FineTuneJob
    from phi_finetune.azure.model_source import model_from_source
    from phi_finetune.interface import interface_from_yaml, load_pinned_interface

    model_cfg, compute_cfg, ft = config.model, config.compute, config.finetune
    component: Any = ft.interface_file
    kind, value = model_cfg.source
    model: Any = model_cfg.name if kind == "registry" else model_from_source(kind, value)
    ml_client = registry_client = model_registry_client = None
    if offline:
        if component is None:
            component = load_pinned_interface()
        elif str(component).endswith(".json"):
            component = interface_from_yaml(component)
        if kind == "registry":
            model = _offline_model(model_cfg)
    else:
        workspace = _make_workspace(config)
        ml_client, registry_client = workspace.ml_client, workspace.registry_client
        if kind == "registry":
            model_registry_client = workspace.registry_client_for(model_cfg.registry)
    output_dir = getattr(getattr(config, "data", None), "output_dir", None)
    data: dict[str, Any] = {}
    if output_dir is not None:
        data = {
            "train_data": str(output_dir / "train.jsonl"),
            "test_data": str(output_dir / "test.jsonl"),
        }
    return FineTuneJob(
        **_deploy_and_cost(config),
        ml_client=ml_client,
        registry_client=registry_client,
        model_registry_client=model_registry_client,
        model=model,
        model_version=model_cfg.version,
        model_label=model_cfg.label,
        allow_retired=model_cfg.allow_retired,
        compute=ComputeSelector.from_config(ml_client, compute_cfg),
        parameters=dict(ft.parameters),
        component=component,
        component_name=ft.component,
        component_version=ft.component_version,
        component_label=ft.component_label,
        registry=model_cfg.registry,
        experiment_name=config.experiment_name,
        offline=offline,
        **data,
    )


def _offline_model(model_cfg: Any) -> Any:
    """The pinned catalogue's facts for the configured model (an offline plan's model).

    A model the catalogue does not know gets no allow list and no defaults, addressed by the
    configured version or label (never an invented version); the plan says so.
    """
    from phi_finetune.azure.foundation_model import FoundationModel, catalog_model

    model = catalog_model(model_cfg.name)
    if model is not None:
        return model
    selector = (
        f"versions/{model_cfg.version}"
        if model_cfg.version
        else f"labels/{model_cfg.label or 'latest'}"
    )
    return FoundationModel.from_metadata(
        model_cfg.name,
        model_cfg.version or model_cfg.label or "latest",
        id=f"azureml://registries/{model_cfg.registry}/models/{model_cfg.name}/{selector}",
        registry=model_cfg.registry,
    )


def _deploy_and_cost(config: Any) -> dict[str, Any]:
    """The deployment spec the plan sizes (when deploying) and the ``[cost]`` settings."""
    from phi_finetune.azure.deployment_spec import DeploymentSpec

    out: dict[str, Any] = {"cost": getattr(config, "cost", None)}
    deploy = getattr(config, "deploy", None)
    if deploy is not None and deploy.enabled:
        check = bool(getattr(config.compute, "check_quota", True))
        out["deployment"] = DeploymentSpec.from_config(deploy, check_quota=check)
    return out


def _with_cost_flags(config: Any, args: Any) -> Any:
    import attrs

    from phi_finetune.config import CostConfig

    changes: dict[str, Any] = {}
    if getattr(args, "price_file", None):
        changes["price_file"] = args.price_file
    rate = getattr(args, "tokens_per_gpu_second", None)
    if rate is not None:
        changes["tokens_per_gpu_second"] = rate
    if not changes:
        return config
    # Built again (not evolved) so the section's checks run on the flag values too.
    fields = {f.name: getattr(config.cost, f.name) for f in attrs.fields(CostConfig)}
    return attrs.evolve(config, cost=CostConfig(**{**fields, **changes}))


def run_plan(args: Any) -> int:
    from phi_finetune.cli._common import emit
    from phi_finetune.config import load_run_config
    from phi_finetune.errors import ConfigurationError, ParameterError, PhiFinetuneError

    if not getattr(args, "config", None):
        raise ConfigurationError("plan needs --config FILE (a phi-finetune.toml)")
    config = _with_cost_flags(load_run_config(args.config), args)
    if config.backend == "serverless":
        return _run_serverless_plan(config, args)
    try:
        plan = build_job(config, offline=bool(args.offline)).plan()
    except PhiFinetuneError as exc:
        problems: list[str] = []
        if isinstance(exc, ParameterError):
            problems += [str(p) for p in exc.problems]
        else:
            problems.append(str(exc))
        problems += list(getattr(exc, "__notes__", []))
        if getattr(args, "json", False):
            emit(args, {"ok": False, "error": type(exc).__name__, "problems": problems})
        else:
            sys.stderr.write(f"error: {exc}\n")
            for note in getattr(exc, "__notes__", []):
                sys.stderr.write(f"{note}\n")
        return 1
    emit(args, {"ok": True, **plan.to_dict()}, plan.to_table())
    return 0


def _run_serverless_plan(config: Any, args: Any) -> int:
    """The serverless backend's plan (see :mod:`phi_finetune.serverless.plan`)."""
    from phi_finetune.cli._common import emit
    from phi_finetune.errors import PhiFinetuneError
    from phi_finetune.serverless.plan import plan_from_config

    try:
        workspace = None if args.offline else _make_workspace(config)
        plan = plan_from_config(config, workspace=workspace)
    except PhiFinetuneError as exc:
        if getattr(args, "json", False):
            emit(args, {"ok": False, "error": type(exc).__name__, "problems": [str(exc)]})
        else:
            sys.stderr.write(f"error: {exc}\n")
        return 1
    emit(args, {"ok": True, **plan.to_dict()}, plan.table)
    return 0
