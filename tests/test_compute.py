"""ComputeSelector: every check before submit, through the real SDK and the fake service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phi_finetune.azure.compute import ComputeSelection, ComputeSelector
from phi_finetune.errors import (
    ComputeError,
    ComputeFailedStateError,
    ComputeNotAllowedError,
    ComputeNotFoundError,
    QuotaExceededError,
)
from phi_finetune.testing import FakeAzureML

A100 = "Standard_NC24ads_A100_v4"
ALLOW = (A100, "Standard_NC96ads_A100_v4")


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def _creates(fake: FakeAzureML) -> list[object]:
    return [r for r in fake.requests if r.method == "PUT" and "/computes/" in r.path]


def test_existing_cluster(fake: FakeAzureML) -> None:
    fake.add_compute("gpu", A100)
    sel = ComputeSelector(fake.workspace_client(), cluster="gpu").select(allow_list=ALLOW)
    assert (sel.name, sel.vm_size, sel.gpus_per_node, sel.nodes) == ("gpu", A100, 1, 1)
    assert sel.vcpus_per_node == 24 and not sel.created
    assert not _creates(fake)


def test_missing_cluster_is_created_idempotently(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    selector = ComputeSelector(
        ml, cluster="new-gpu", vm_size="Standard_NC96ads_A100_v4", max_instances=2
    )
    planned = selector.plan(allow_list=ALLOW)
    assert planned.will_create and not _creates(fake)
    sel = selector.select(allow_list=ALLOW)
    assert sel.created and sel.gpus_per_node == 4
    body = _creates(fake)[0].json  # type: ignore[attr-defined]
    scale = body["properties"]["properties"]["scaleSettings"]
    assert scale["minNodeCount"] == 0 and scale["maxNodeCount"] == 2
    again = selector.select(allow_list=ALLOW)
    assert not again.created and len(_creates(fake)) == 1


def test_missing_cluster_without_create(fake: FakeAzureML) -> None:
    selector = ComputeSelector(fake.workspace_client(), cluster="nope", create_if_missing=False)
    with pytest.raises(ComputeNotFoundError, match="nope"):
        selector.select(allow_list=ALLOW)


def test_failed_provisioning_state(fake: FakeAzureML) -> None:
    fake.add_compute("broken", A100, state="Failed")
    with pytest.raises(ComputeFailedStateError, match="broken"):
        ComputeSelector(fake.workspace_client(), cluster="broken").select(allow_list=ALLOW)


def test_size_not_in_allow_list_case_insensitive(fake: FakeAzureML) -> None:
    fake.add_compute("lower", A100.lower())
    sel = ComputeSelector(fake.workspace_client(), cluster="lower").select(allow_list=ALLOW)
    assert sel.gpus_per_node == 1
    fake.add_compute("t4", "Standard_NC4as_T4_v3")
    with pytest.raises(ComputeNotAllowedError, match="allow list"):
        ComputeSelector(fake.workspace_client(), cluster="t4").select(allow_list=ALLOW)


@pytest.mark.parametrize(
    "size", ["Standard_NC6", "standard_nc12", "Standard_NC24", "STANDARD_NC24R"]
)
def test_no_allow_list_refuses_old_sizes(fake: FakeAzureML, size: str) -> None:
    fake.add_compute("old", size)
    # K80 sizes: retired on 2023-09-06, refused before the allow-list rule is reached.
    with pytest.raises(ComputeNotAllowedError, match="retired on 2023-09-06"):
        ComputeSelector(fake.workspace_client(), cluster="old").select(allow_list=None)


def test_unknown_size_names_available_sizes(fake: FakeAzureML) -> None:
    fake.add_compute("odd", "Standard_Imaginary_v9")
    with pytest.raises(ComputeNotAllowedError, match=r"available GPU sizes: .*Standard_NC"):
        ComputeSelector(fake.workspace_client(), cluster="odd").select(allow_list=None)


def test_cpu_size_has_no_gpus(fake: FakeAzureML) -> None:
    fake.add_vm_size("Standard_D4_v9", 4, 0, "standardDFamily", 16)
    fake.add_compute("cpu", "Standard_D4_v9")
    with pytest.raises(ComputeNotAllowedError, match="no GPU"):
        ComputeSelector(fake.workspace_client(), cluster="cpu").select(allow_list=None)


def test_quota_exceeded_before_any_create(fake: FakeAzureML) -> None:
    fake.add_vm_size("Standard_NC96ads_A100_v4", 96, 4, "standardNCADSA100v4Family", 880)
    fake.set_usage("standardNCADSA100v4Family", 100, 200)
    selector = ComputeSelector(
        fake.workspace_client(), cluster="big", vm_size="Standard_NC96ads_A100_v4", nodes=2
    )
    with pytest.raises(QuotaExceededError) as info:
        selector.select(allow_list=ALLOW)
    assert (info.value.needed, info.value.available) == (192, 100)
    assert info.value.family == "standardNCADSA100v4Family"
    assert not _creates(fake)


def test_quota_check_can_be_disabled(fake: FakeAzureML) -> None:
    fake.set_usage("standardNCADSA100v4Family", 200, 200)
    selector = ComputeSelector(
        fake.workspace_client(), cluster="q", vm_size=A100, check_quota=False
    )
    assert selector.select(allow_list=ALLOW).created


def test_serverless(fake: FakeAzureML) -> None:
    sel = ComputeSelector(
        fake.workspace_client(),
        serverless=True,
        vm_size="Standard_NC48ads_A100_v4",
        instance_type_preprocess="Standard_D12_v2",
    ).select(allow_list=None)
    assert sel.serverless and sel.gpus_per_node == 2
    inputs = sel.component_inputs()
    assert inputs["compute_finetune"] == "serverless"
    assert inputs["instance_type_finetune"] == "Standard_NC48ads_A100_v4"
    assert inputs["instance_type_preprocess"] == "Standard_D12_v2"
    assert inputs["number_of_gpu_to_use_finetuning"] == 2
    assert not _creates(fake)


def test_existing_cluster_too_small_for_nodes(fake: FakeAzureML) -> None:
    fake.add_compute("one", A100, max_instances=1)
    with pytest.raises(ComputeError, match="scales to 1"):
        ComputeSelector(fake.workspace_client(), cluster="one", nodes=2).select(allow_list=ALLOW)


def test_offline_plan_uses_pinned_sizes() -> None:
    sel = ComputeSelector(None, cluster="gpu", vm_size=A100).plan_offline(allow_list=ALLOW)
    assert sel.gpus_per_node == 1 and sel.warnings
    with pytest.raises(ComputeNotAllowedError, match="unknown offline"):
        ComputeSelector(None, cluster="gpu", vm_size="Standard_X").plan_offline(allow_list=None)


def test_component_inputs_for_a_cluster() -> None:
    sel = ComputeSelection("gpu", A100, gpus_per_node=4, nodes=2)
    assert sel.component_inputs() == {
        "compute_model_import": "gpu",
        "compute_preprocess": "gpu",
        "compute_finetune": "gpu",
        "compute_model_evaluation": "gpu",
        "number_of_gpu_to_use_finetuning": 4,
        "num_nodes_finetune": 2,
    }


def test_list_sizes_reads_around_camel_case(fake: FakeAzureML) -> None:
    sizes = {s.name: s for s in ComputeSelector(fake.workspace_client(), cluster="x").list_sizes()}
    assert sizes[A100].vcpus == 24 and sizes[A100].gpus == 1 and sizes[A100].memory_gb > 0
