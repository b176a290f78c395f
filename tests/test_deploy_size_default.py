"""The default deployment size: the model's inference allow list and the quota (issue 13 item 5)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.deploy_size import FALLBACK_INSTANCE_TYPE, choose_deployment_size
from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.deployment_spec import DeploymentSpec
from phi_finetune.azure.foundation_model import FoundationModel
from phi_finetune.azure.job import FineTuneJob
from phi_finetune.config import DeployConfig
from phi_finetune.errors import ComputeNotAllowedError, QuotaExceededError
from phi_finetune.interface import load_pinned_interface
from phi_finetune.observer import NullObserver
from phi_finetune.testing import FakeAzureML

A100 = "Standard_NC24ads_A100_v4"
H100 = "Standard_NC40ads_H100_v5"
ALLOW = ("Standard_NC6s_v3", A100, H100)  # a retired size first, as Phi-3's list has
A100_FAMILY = "standardNCADSA100v4Family"
H100_FAMILY = "standardNCadsH100v5Family"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def _model(inference: tuple[str, ...] | None = ALLOW) -> FoundationModel:
    return FoundationModel(
        name="Phi-4",
        version="8",
        id="azureml://registries/azureml/models/Phi-4/versions/8",
        registry="azureml",
        finetune_allow_list=(A100, H100),
        inference_allow_list=inference,
    )


def test_deploy_config_default_is_chosen_not_fixed() -> None:
    assert DeployConfig().instance_type is None
    assert DeploymentSpec().instance_type is None


def test_offline_choice_skips_retired_and_says_quota_was_not_checked() -> None:
    choice = choose_deployment_size(ALLOW)
    assert choice.instance_type == A100
    assert choice.source == "inference allow list"
    assert not choice.quota_checked and "quota not checked" in choice.reason
    assert choice.skipped == ("Standard_NC6s_v3: retired on 2025-09-30",)


def test_every_allowed_size_retired_is_an_error_listing_them() -> None:
    with pytest.raises(ComputeNotAllowedError, match=r"Standard_NC6s_v3, Standard_NC12s_v3"):
        choose_deployment_size(["Standard_NC6s_v3", "Standard_NC12s_v3"])


def test_no_allow_list_falls_back_to_the_ncv3_replacement() -> None:
    choice = choose_deployment_size(None)
    assert choice.instance_type == FALLBACK_INSTANCE_TYPE == A100
    assert choice.source == "fallback"


def test_live_choice_takes_the_first_size_with_quota(fake: FakeAzureML) -> None:
    fake.set_usage(A100_FAMILY, 190, 200)  # 10 vCPUs left; NC24ads needs 24
    ml = fake.workspace_client()
    choice = choose_deployment_size(ALLOW, ml_client=ml)
    assert choice.instance_type == H100 and choice.quota_checked
    assert choice.skipped[0] == "Standard_NC6s_v3: retired on 2025-09-30"
    assert choice.skipped[1].startswith(f"{A100}: needs 24 vCPUs of {A100_FAMILY}")
    assert "leaves 10" in choice.skipped[1]


def test_live_choice_counts_the_upgrade_reserve(fake: FakeAzureML) -> None:
    # Standard_NC4as_T4_v3 is not exempt from the 20% reserve: 2 instances need
    # ceil(2.4) = 3 x 4 = 12 vCPUs, more than the 10 left.
    fake.set_usage("standardNCASv3_T4Family", 190, 200)
    ml = fake.workspace_client()
    with pytest.raises(QuotaExceededError) as info:
        choose_deployment_size(["Standard_NC4as_T4_v3"], instance_count=2, ml_client=ml)
    assert "needs 12 vCPUs" in str(info.value)


def test_live_choice_without_any_quota_lists_allow_list_and_quota(fake: FakeAzureML) -> None:
    fake.set_usage(A100_FAMILY, 200, 200)
    fake.set_usage(H100_FAMILY, 180, 200)
    ml = fake.workspace_client()
    with pytest.raises(QuotaExceededError) as info:
        choose_deployment_size(ALLOW, ml_client=ml)
    text = str(info.value)
    assert "Standard_NC6s_v3, Standard_NC24ads_A100_v4, Standard_NC40ads_H100_v5" in text
    assert "retired on 2025-09-30" in text
    assert f"needs 24 vCPUs of {A100_FAMILY}, the quota leaves 0" in text
    assert f"needs 40 vCPUs of {H100_FAMILY}, the quota leaves 20" in text
    assert "deploy.instance_type" in text


def test_live_choice_skips_sizes_the_region_does_not_offer(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    choice = choose_deployment_size(["Standard_ND40rs_v2", H100], ml_client=ml)
    assert choice.instance_type == H100
    assert choice.skipped == ("Standard_ND40rs_v2: not offered in the workspace region",)


def _offline_job(**kwargs: Any) -> FineTuneJob:
    return FineTuneJob(
        model=_model(),
        compute=ComputeSelector(None, cluster="gpu", vm_size=A100),
        component=load_pinned_interface(),
        offline=True,
        deployment=DeploymentSpec(),
        **kwargs,
    )


def test_offline_plan_shows_the_chosen_size_and_why() -> None:
    plan = _offline_job().plan()
    assert plan.deployment is not None and plan.deployment.instance_type == A100
    data = plan.to_dict()["deployment"]
    assert data["instance_type"] == A100 and data["quota_checked"] is False
    assert data["source"] == "inference allow list"
    row = next(line for line in plan.to_table().splitlines() if line.startswith("deployment"))
    assert A100 in row and "quota not checked" in row
    json.dumps(plan.to_dict())  # JSON-ready


def test_plan_with_a_user_size_says_so() -> None:
    job = _offline_job()
    job.deployment = DeploymentSpec(instance_type=H100)
    plan = job.plan()
    assert plan.deployment is not None
    assert plan.deployment.instance_type == H100 and plan.deployment.source == "user"


def test_live_plan_chooses_with_the_workspace_quota(fake: FakeAzureML) -> None:
    fake.add_compute("gpu", H100)
    fake.set_usage(A100_FAMILY, 200, 200)
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        model=_model(),
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
        deployment=DeploymentSpec(),
    )
    plan = job.plan()
    assert plan.deployment is not None
    assert plan.deployment.instance_type == H100 and plan.deployment.quota_checked
    assert plan.to_dict()["deployment"]["skipped"][1].startswith(A100)


class _Recorder(NullObserver):
    def __init__(self) -> None:
        self.creating_details: dict[tuple[str, str], Any] = {}

    def creating(self, kind: str, name: str, *args: Any, **kwargs: Any) -> None:
        self.creating_details[(kind, name)] = kwargs.get("details")


def test_deployer_chooses_and_reports_the_size(fake: FakeAzureML) -> None:
    fake.set_usage(A100_FAMILY, 200, 200)
    ml = fake.workspace_client()
    recorder = _Recorder()
    endpoint = EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        "azureml:my-model:1",
        DeploymentSpec(inference_allow_list=ALLOW),
        observer=recorder,
    )
    (put,) = fake.find_requests("PUT", route="deployments.create")
    assert put.json["properties"]["instanceType"] == H100
    assert recorder.creating_details[("deployment", "demo")] == {
        "instance_type": H100,
        "instance_count": 1,
    }
    endpoint.delete()


def test_session_deploys_on_the_size_the_plan_journaled(tmp_path: Path, fake: FakeAzureML) -> None:
    from phi_finetune.azure.backend import AzureBackend
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import DataConfig, RunConfig
    from phi_finetune.journal import Journal
    from phi_finetune.session import FineTuneSession

    fake.add_compute("gpu-cluster", A100)
    workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
    config = RunConfig(
        backend="azure",
        state_dir=tmp_path / "state",
        data=DataConfig(source="demo", split_pc=None, output_dir=tmp_path / "data"),
    )
    session = FineTuneSession(config, backend=AzureBackend(workspace=workspace, poll_interval_s=0))
    result = session.run()
    journal = Journal.load(tmp_path / "state", result.run_id)
    plan = journal.outputs_of("plan")
    planned = plan["details"]["deployment"]
    # The fake's Phi-3 list starts with retired NCv3 sizes and ND40rs_v2 (not in its region).
    assert planned["instance_type"] == A100 and planned["quota_checked"] is True
    (put,) = fake.find_requests("PUT", route="deployments.create")
    assert put.json["properties"]["instanceType"] == A100
    (deployment,) = journal.resources(kind="deployment")
    assert deployment.details["instance_type"] == A100
    assert "cost (estimate)" in plan["table"]
