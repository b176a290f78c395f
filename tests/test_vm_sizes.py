"""The pinned VM size table and retired sizes (issue 13 item 5)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest

from phi_finetune.azure import vm_sizes
from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.deployment_spec import DeploymentSpec
from phi_finetune.azure.foundation_model import FoundationModel
from phi_finetune.azure.job import FineTuneJob
from phi_finetune.azure.vm_sizes import (
    KNOWN_VM_SIZES,
    check_not_retired,
    known_size,
    retirement_of,
)
from phi_finetune.errors import ComputeNotAllowedError
from phi_finetune.interface import load_pinned_interface
from phi_finetune.testing import FakeAzureML

# Phi-4 version 8 (azureml-assets assets/models/system/Phi-4/spec.yaml, system_metadata.
# supportedComputes): the sizes a current model fine-tunes and deploys on.
PHI4_FINETUNE = (
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
)


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


@pytest.mark.parametrize(
    ("name", "vcpus", "gpus", "memory", "family", "gpu"),
    [
        # ncadsh100v5-series, ndh100v5-series, ncast4v3-series, nca100v4-series,
        # ndasra100v4-series, ndma100v4-series (learn.microsoft.com, read 2026-12-01)
        ("Standard_NC40ads_H100_v5", 40, 1, 320, "standardNCadsH100v5Family", "H100-NVL"),
        ("Standard_NC80adis_H100_v5", 80, 2, 640, "standardNCadsH100v5Family", "H100-NVL"),
        ("Standard_ND96isr_H100_v5", 96, 8, 1900, "standardNDSH100v5Family", "H100-80GB"),
        ("Standard_NC4as_T4_v3", 4, 1, 28, "standardNCASv3_T4Family", "T4"),
        ("Standard_NC8as_T4_v3", 8, 1, 56, "standardNCASv3_T4Family", "T4"),
        ("Standard_NC16as_T4_v3", 16, 1, 110, "standardNCASv3_T4Family", "T4"),
        ("Standard_NC64as_T4_v3", 64, 4, 440, "standardNCASv3_T4Family", "T4"),
        ("Standard_NC24ads_A100_v4", 24, 1, 220, "standardNCADSA100v4Family", "A100-80GB"),
        ("Standard_NC48ads_A100_v4", 48, 2, 440, "standardNCADSA100v4Family", "A100-80GB"),
        ("Standard_NC96ads_A100_v4", 96, 4, 880, "standardNCADSA100v4Family", "A100-80GB"),
        ("Standard_ND96asr_v4", 96, 8, 900, "standardNDASv4_A100Family", "A100-40GB"),
        ("Standard_ND96amsr_A100_v4", 96, 8, 1900, "standardNDAMSv4_A100Family", "A100-80GB"),
    ],
)
def test_pinned_size_facts(
    name: str, vcpus: int, gpus: int, memory: float, family: str, gpu: str
) -> None:
    info = known_size(name.upper())
    assert info is not None and info.name == name
    assert (info.vcpus, info.gpus, info.memory_gb, info.family, info.gpu_type) == (
        vcpus,
        gpus,
        memory,
        family,
        gpu,
    )
    assert info.retirement is None


def test_every_phi4_size_is_pinned_and_live() -> None:
    for name in PHI4_FINETUNE:
        info = known_size(name)
        assert info is not None, name
        assert retirement_of(name) is None, name


def test_old_import_path_is_the_same_table() -> None:
    from phi_finetune.azure import compute

    assert compute.KNOWN_VM_SIZES is KNOWN_VM_SIZES
    assert compute.VmSizeInfo is vm_sizes.VmSizeInfo


@pytest.mark.parametrize(
    ("name", "on", "replacement"),
    [
        ("Standard_NC6s_v3", "2025-09-30", "Standard_NC24ads_A100_v4"),
        ("standard_nc12s_v3", "2025-09-30", "Standard_NC48ads_A100_v4"),
        ("Standard_NC24s_v3", "2025-09-30", "Standard_NC96ads_A100_v4"),
        ("Standard_NC24rs_v3", "2025-09-30", "Standard_NC40ads_H100_v5"),
        ("Standard_NC6", "2023-09-06", "Standard_NC24ads_A100_v4"),
        ("Standard_NC12s_v2", "2023-09-06", "Standard_NC24ads_A100_v4"),
        ("Standard_ND24rs", "2023-09-06", "Standard_NC24ads_A100_v4"),
        ("Standard_NV12s_v3", "2026-09-30", "Standard_NV12ads_A10_v5"),
    ],
)
def test_retired_series(name: str, on: str, replacement: str) -> None:
    retirement = retirement_of(name)
    assert retirement is not None
    assert retirement.on == datetime.date.fromisoformat(on)
    assert replacement in retirement.replacements
    assert retirement.source.startswith("learn.microsoft.com/")


@pytest.mark.parametrize("name", ["Standard_ND40rs_v2", "Standard_NC4as_T4_v3", "Standard_D4s_v5"])
def test_live_sizes_have_no_retirement(name: str) -> None:
    assert retirement_of(name) is None
    assert check_not_retired(name, key="compute.vm_size", what="size") == []


def test_retired_size_is_an_error_naming_date_and_replacement() -> None:
    with pytest.raises(ComputeNotAllowedError) as info:
        check_not_retired("Standard_NC6s_v3", key="deploy.instance_type", what="instance type")
    text = str(info.value)
    assert "2025-09-30" in text and "Standard_NC24ads_A100_v4" in text
    assert "deploy.instance_type" in text and "no longer provisions" in text


def test_announced_retirement_is_a_warning_naming_date_and_replacement() -> None:
    before = datetime.date(2025, 9, 1)
    warnings = check_not_retired(
        "Standard_NC6s_v3", key="compute.vm_size", what="fine-tune VM size", today=before
    )
    assert len(warnings) == 1
    assert "retires on 2025-09-30" in warnings[0] and "Standard_NC24ads_A100_v4" in warnings[0]


def test_offline_plan_refuses_a_retired_fine_tune_size() -> None:
    selector = ComputeSelector(None, cluster="gpu", vm_size="Standard_NC6s_v3")
    with pytest.raises(ComputeNotAllowedError, match=r"2025-09-30.*Standard_NC24ads_A100_v4"):
        selector.plan_offline(allow_list=None)


def test_offline_unknown_size_lists_only_live_sizes() -> None:
    selector = ComputeSelector(None, cluster="gpu", vm_size="Standard_Imaginary_v9")
    with pytest.raises(ComputeNotAllowedError) as info:
        selector.plan_offline(allow_list=None)
    assert "Standard_NC40ads_H100_v5" in str(info.value)
    assert "Standard_NC6s_v3" not in str(info.value)


def test_live_plan_refuses_an_existing_cluster_of_a_retired_size(fake: FakeAzureML) -> None:
    fake.add_compute("v100", "Standard_NC6s_v3")
    selector = ComputeSelector(fake.workspace_client(), cluster="v100")
    with pytest.raises(ComputeNotAllowedError, match=r"cluster 'v100'.*2025-09-30"):
        selector.plan(allow_list=None)


def test_plan_refuses_a_retired_deployment_instance_type() -> None:
    model = FoundationModel.from_metadata("Phi-4", "8")
    job = FineTuneJob(
        model=model,
        compute=ComputeSelector(None, cluster="gpu", vm_size="Standard_NC24ads_A100_v4"),
        component=load_pinned_interface(),
        offline=True,
        deployment=DeploymentSpec(instance_type="Standard_NC6s_v3"),
    )
    with pytest.raises(ComputeNotAllowedError, match=r"deploy.instance_type.*2025-09-30"):
        job.plan()


def test_fake_serves_the_new_sizes(fake: FakeAzureML) -> None:
    sizes = {s.name: s for s in ComputeSelector(fake.workspace_client(), cluster="x").list_sizes()}
    for name in ("Standard_NC40ads_H100_v5", "Standard_ND96isr_H100_v5", "Standard_NC64as_T4_v3"):
        pinned = known_size(name)
        assert pinned is not None
        assert (sizes[name].vcpus, sizes[name].gpus, sizes[name].family) == (
            pinned.vcpus,
            pinned.gpus,
            pinned.family,
        )


def test_a_retired_deployment_size_can_be_acknowledged() -> None:
    model = FoundationModel.from_metadata("Phi-4", "8")
    job = FineTuneJob(
        model=model,
        compute=ComputeSelector(None, cluster="gpu", vm_size="Standard_NC24ads_A100_v4"),
        component=load_pinned_interface(),
        offline=True,
        deployment=DeploymentSpec(instance_type="Standard_NC6s_v3", allow_retired_size=True),
    )
    plan = job.plan()
    assert plan.deployment is not None and plan.deployment.instance_type == "Standard_NC6s_v3"
    (warning,) = [w for w in plan.warnings if "deploy.allow_retired_size" in w]
    assert "retired on 2025-09-30" in warning and "Standard_NC24ads_A100_v4" in warning


def test_the_example_acknowledges_the_notebooks_retired_size() -> None:
    from pathlib import Path

    from phi_finetune.config import load_run_config

    example = Path(__file__).resolve().parent.parent / "examples" / "phi-finetune.toml"
    deploy = load_run_config(example).deploy
    assert deploy.instance_type == "Standard_NC6s_v3" and deploy.allow_retired_size
