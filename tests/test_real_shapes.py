"""The library against replies shaped like the published Azure ML contract (issue 12, item 4).

Bodies come from the official REST examples (tests/data/real_shapes/, with source and
api-version); where an example lacks the family the flow uses, an entry of the same shape is
added here and says so.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.azure.quota import QuotaTable, deployment_vcpus, family_key
from phi_finetune.errors import QuotaExceededError
from phi_finetune.testing import FakeAzureML

DATA = Path(__file__).parent / "data" / "real_shapes"
A100 = "Standard_NC24ads_A100_v4"
USAGES_URL = r"/locations/[^/]+/usages\?api-version=[^&]+$"


def spec_usages() -> list[dict[str, Any]]:
    """The ``value`` of the Usage/list example (2024-10-01-preview)."""
    doc = json.loads((DATA / "usage_list.json").read_text(encoding="utf-8"))
    return copy.deepcopy(doc["responses"]["200"]["body"]["value"])


def family_entry(
    display: str, current: int, limit: int, *, kind: str = "vmFamily"
) -> dict[str, Any]:
    """An entry shaped like the example's family entries (display form in both names)."""
    ident = display.replace(" ", "_")
    return {
        "id": f"/subscriptions/00000000-0000-0000-0000-000000000000/usages/{ident}",
        "type": f"Microsoft.MachineLearningServices/{kind}/usages",
        "currentValue": current,
        "limit": limit,
        "name": {"localizedValue": display, "value": display},
        "unit": "Count",
    }


def a100(current: int, limit: int) -> dict[str, Any]:
    return family_entry("Standard NCADSA100v4 Family Cluster Dedicated vCPUs", current, limit)


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")  # the models below come from their outputs
        service.add_completed_job("job_2")
        yield service


def serve_usages(fake: FakeAzureML, value: list[dict[str, Any]]) -> None:
    """Answer the usages list with ``value`` (as the service would, status 200)."""
    fake.inject_fault("GET", USAGES_URL, status=200, times=None, body={"value": value})


# ----------------------------------------------------------------------------- quota


@pytest.mark.parametrize(
    "spelling",
    [
        "standardNCADSA100v4Family",
        "StandardNCADSA100v4Family",
        "Standard NCADSA100v4 Family Cluster Dedicated vCPUs",
        "Standard_NCADSA100v4_Family_Cluster_Dedicated_vCPUs",
        "standard ncads_a100_v4 family vcpus",
        "Standard NCADS_A100_v4 Family Cores",
    ],
)
def test_family_key_matches_every_spelling(spelling: str) -> None:
    assert family_key(spelling) == family_key("standardNCADSA100v4Family") == "ncadsa100v4"


def test_family_key_keeps_families_apart() -> None:
    assert family_key("Standard NC Family Cluster Dedicated vCPUs") == "nc"
    assert family_key("Standard NCv3 Family Cluster Dedicated vCPUs") == "ncv3"
    assert family_key("standardNCSv3Family") == "ncsv3"


def test_spec_list_regional_workspace_and_low_priority_entries() -> None:
    table = QuotaTable.from_usages(spec_usages(), workspace="demo_workspace1")
    nc = table.family("standardNCFamily")
    # Region 12/24 and demo_workspace1 6/24: the stricter (region, 12 left) counts; the
    # per-cluster entries and demo_workspace2's cap are ignored.
    assert nc is not None and nc.scope == "region" and nc.available == 12
    total = table.regional_total()
    assert total is not None and total.available == 10  # 14 of 24 in use
    low = table.family("standardNCFamily", tier="lowpriority")
    assert low is not None and low.limit is None and low.available == float("inf")
    low_total = table.regional_total(tier="lowpriority")
    assert low_total is not None and low_total.available == 32
    assert table.family("standardNCv3Family") is not None
    assert table.family("standardNCv3Family").available == 0  # type: ignore[union-attr]


def test_workspace_cap_below_region_is_the_stricter() -> None:
    value = spec_usages()
    for entry in value:
        if "demo_workspace1/usages/Standard_NC_Family_Cluster_Dedicated" in entry["id"]:
            entry["currentValue"] = 22  # 2 left in this workspace, 12 in the region
    table = QuotaTable.from_usages(value, workspace="demo_workspace1")
    nc = table.family("Standard NC Family")
    assert nc is not None and nc.scope == "workspace" and nc.available == 2
    other = QuotaTable.from_usages(value, workspace="demo_workspace2")
    assert other.family("Standard NC Family").available == 12  # type: ignore[union-attr]


def test_unlimited_low_priority_family_checks_the_regional_total() -> None:
    table = QuotaTable.from_usages(spec_usages())
    assert table.check(family="standardNCFamily", needed=30, what="x", tier="lowpriority") == []
    with pytest.raises(QuotaExceededError, match="Total Cluster LowPriority Regional vCPUs"):
        table.check(family="standardNCFamily", needed=40, what="x", tier="lowpriority")
    # Dedicated and low-priority are kept apart: 40 dedicated NC vCPUs exceed 12 left.
    with pytest.raises(QuotaExceededError, match="Standard NC Family Cluster Dedicated"):
        table.check(family="standardNCFamily", needed=40, what="x")


def test_plan_fails_on_spec_shaped_a100_limit_zero(fake: FakeAzureML) -> None:
    serve_usages(fake, [*spec_usages(), a100(0, 0)])
    selector = ComputeSelector(fake.workspace_client(), cluster="gpu", vm_size=A100)
    with pytest.raises(QuotaExceededError) as info:
        selector.plan(allow_list=[A100])
    err = info.value
    assert err.needed == 24 and err.available == 0
    assert "Standard NCADSA100v4 Family Cluster Dedicated vCPUs" in str(err)
    assert "Request at least 24 more vCPUs" in str(err)


def test_plan_fails_when_the_regional_total_is_below_the_need(fake: FakeAzureML) -> None:
    # The family has room (100 of 200 free) but the region's dedicated total leaves 10.
    serve_usages(fake, [*spec_usages(), a100(100, 200)])
    selector = ComputeSelector(fake.workspace_client(), cluster="gpu", vm_size=A100)
    with pytest.raises(QuotaExceededError, match="Total Cluster Dedicated Regional vCPUs") as info:
        selector.plan(allow_list=[A100])
    assert info.value.available == 10 and info.value.needed == 24


def test_plan_passes_with_room_in_family_and_region(fake: FakeAzureML) -> None:
    value = [e for e in spec_usages() if "Regional" not in e["name"]["value"]]
    serve_usages(fake, [*value, a100(0, 48)])
    selection = ComputeSelector(fake.workspace_client(), cluster="gpu", vm_size=A100).plan(
        allow_list=[A100]
    )
    assert selection.will_create and not selection.warnings


def test_usages_on_two_pages_are_all_read(fake: FakeAzureML) -> None:
    """The usages list follows ``nextLink``: the A100 entry sits on the second page."""
    ml = fake.workspace_client()
    next_link = (
        f"https://management.azure.com/subscriptions/{fake.subscription_id}/providers/"
        "Microsoft.MachineLearningServices/locations/eastus/usages"
        "?api-version=2023-08-01-preview&$skipToken=page2"
    )
    fake.inject_fault(
        "GET", USAGES_URL, status=200, body={"value": spec_usages(), "nextLink": next_link}
    )
    second = fake.inject_fault("GET", r"skipToken=page2", status=200, body={"value": [a100(0, 0)]})
    selector = ComputeSelector(ml, cluster="gpu", vm_size=A100)
    with pytest.raises(QuotaExceededError):
        selector.plan(allow_list=[A100])
    assert second.hits == 1


@pytest.mark.parametrize(
    ("instance_type", "count", "vcpus", "expected"),
    [
        ("Standard_DS3_v2", 10, 4, 48),  # the docs' example: ceil(1.2 * 10) * 4
        ("Standard_NC6s_v3", 1, 6, 12),  # ceil(1.2) = 2 instances
        ("Standard_NC6s_v3", 5, 6, 36),  # exactly 6 instances
        ("Standard_NC24ads_A100_v4", 2, 24, 48),  # exempt from the reserve
    ],
)
def test_deployment_vcpus_with_the_upgrade_reserve(
    instance_type: str, count: int, vcpus: int, expected: int
) -> None:
    assert deployment_vcpus(instance_type, count, vcpus) == expected


# ----------------------------------------------------------------- online deployments


def _deploy_model(fake: FakeAzureML) -> Any:
    from phi_finetune.azure.registrar import ModelRegistrar

    return ModelRegistrar(fake.workspace_client(), check_job_output=False).register(
        "job_1", base_model="Phi-3-mini-4k-instruct", version=1
    )


def _puts(fake: FakeAzureML, part: str) -> list[Any]:
    return [r for r in fake.requests if r.method == "PUT" and part in r.path]


def test_deployment_quota_with_the_upgrade_reserve_fails_before_any_put(
    fake: FakeAzureML,
) -> None:
    from phi_finetune.azure.deployer import EndpointDeployer

    model = _deploy_model(fake)
    # 6 vCPUs free: one Standard_NC6s_v3 fits, but with the 20% reserve it needs 2 x 6 = 12.
    fake.set_usage("standardNCSv3Family", 194, 200)
    deployer = EndpointDeployer(fake.workspace_client(), poll_interval_s=0.01)
    with pytest.raises(QuotaExceededError, match="20% upgrade reserve") as info:
        deployer.deploy(model, endpoint_name="quota-ep", instance_type="Standard_NC6s_v3")
    assert info.value.needed == 12 and info.value.available == 6
    assert "Request at least 6 more vCPUs" in str(info.value)
    assert not _puts(fake, "/onlineEndpoints/")
    fake.set_usage("standardNCSv3Family", 188, 200)  # 12 free: enough
    endpoint = deployer.deploy(model, endpoint_name="quota-ep", instance_type="Standard_NC6s_v3")
    assert endpoint.name == "quota-ep"


def test_deployment_quota_spec_shaped_regional_total(fake: FakeAzureML) -> None:
    from phi_finetune.azure.deployer import EndpointDeployer

    model = _deploy_model(fake)
    ncsv3 = family_entry("Standard NCSv3 Family Cluster Dedicated vCPUs", 0, 100)
    serve_usages(fake, [*spec_usages(), ncsv3])  # the region's dedicated total leaves 10
    deployer = EndpointDeployer(fake.workspace_client(), poll_interval_s=0.01)
    with pytest.raises(QuotaExceededError, match="Total Cluster Dedicated Regional vCPUs"):
        deployer.deploy(model, endpoint_name="region-ep", instance_type="Standard_NC6s_v3")
    assert not _puts(fake, "/onlineEndpoints/")


def test_plan_checks_the_deployment_quota(fake: FakeAzureML) -> None:
    from phi_finetune.azure.deployment_spec import DeploymentSpec
    from phi_finetune.azure.foundation_model import reference_model
    from phi_finetune.azure.job import FineTuneJob

    fake.add_compute("gpu", A100)
    fake.set_usage("standardNCASv3_T4Family", 200, 200)
    ml = fake.workspace_client()
    job = FineTuneJob(
        ml_client=ml,
        registry_client=fake.registry_client(),
        model=reference_model(),
        allow_retired=True,
        compute=ComputeSelector(ml, cluster="gpu"),
        train_data="azureml:train:1",
        deployment=DeploymentSpec(instance_type="Standard_NC4as_T4_v3", instance_count=1),
    )
    with pytest.raises(QuotaExceededError, match="online deployment"):
        job.plan()
    fake.set_usage("standardNCASv3_T4Family", 0, 200)
    assert job.plan().compute.name == "gpu"


TAKEN_BODY = {
    "error": {
        "code": "BadRequest",
        "message": "The request is invalid.",
        "details": [
            {
                "code": "InferencingClientCallFailed",
                "message": '{"errors":{"":["There is already an endpoint with this name, '
                "Endpoint name needs to be unique within a region. Try some other name."
                '"]},"title":"One or more validation errors occurred."}',
            }
        ],
    }
}
RESERVED_BODY = {
    "error": {
        "code": "NotFound",
        "message": "The specified resource was not found.",
        "details": [{"code": "InferencingClientCallFailed", "message": '{"title":"Not Found"}'}],
    }
}


@pytest.mark.parametrize(("status", "body"), [(400, TAKEN_BODY), (404, RESERVED_BODY)])
def test_refused_endpoint_name_gets_a_derived_name_that_is_journaled(
    fake: FakeAzureML, tmp_path: Path, status: int, body: dict[str, Any]
) -> None:
    from phi_finetune.azure.deployer import EndpointDeployer
    from phi_finetune.backends import JournalObserver
    from phi_finetune.journal import Journal
    from phi_finetune.names import derive_endpoint_name

    model = _deploy_model(fake)
    journal = Journal.create(tmp_path, backend="azure")
    refused = fake.inject_fault(
        "PUT", r"/onlineEndpoints/my-ep\?", status=status, body=body, times=None
    )
    endpoint = EndpointDeployer(fake.workspace_client(), poll_interval_s=0.01).deploy(
        model, endpoint_name="my-ep", run_id=journal.run_id, observer=JournalObserver(journal)
    )
    expected = derive_endpoint_name("my-ep", journal.run_id, 1)
    assert refused.hits >= 1
    assert endpoint.name == expected and expected in fake.endpoints
    assert "my-ep" not in fake.endpoints
    alive = {r.name for r in journal.resources(kind="endpoint", alive_only=True)}
    assert alive == {expected}  # teardown deletes the endpoint made, never the refused name
    gone = journal.resource("endpoint", "my-ep")
    assert gone is not None and not gone.alive


# ------------------------------------------------------------------ lists follow nextLink


def test_model_versions_on_two_pages_are_all_searched(fake: FakeAzureML) -> None:
    from phi_finetune.azure.registrar import ModelRegistrar

    ml = fake.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)
    first = registrar.register("job_1", base_model="base", version=1)
    second = registrar.register("job_2", base_model="base", version=2)
    bodies = {version: body for (_, version), body in fake.models.items()}
    versions = r"/models/base-ultrachat-200k/versions\?api-version=[^&]+&listViewType=[^&]+$"
    list(ml.models.list(name=first.name))  # the URL the SDK lists with
    next_link = fake.requests[-1].url + "&$skipToken=page2"
    fake.inject_fault(
        "GET", versions, status=200, body={"value": [bodies["1"]], "nextLink": next_link}
    )
    page2 = fake.inject_fault("GET", r"skipToken=page2", status=200, body={"value": [bodies["2"]]})
    found = registrar.find(second.name, source_path=second.source_path or "")
    assert found is not None and found.version == "2" and page2.hits == 1
    assert first.version == "1"


def test_child_jobs_on_two_pages_are_all_walked() -> None:
    """failure() reads every page of the children (the failed step may be on page 2)."""
    from types import SimpleNamespace
    from unittest.mock import MagicMock

    from azure.core.paging import ItemPaged

    from phi_finetune.azure.job import JobHandle

    def node(name: str, status: str) -> Any:
        return SimpleNamespace(
            name=name, display_name=name, status=status, error=None, properties={}
        )

    pages = {None: ([node("ok", "Completed")], "page2"), "page2": ([node("ft", "Failed")], None)}

    def get_next(token: str | None) -> Any:
        return pages[token]

    def extract(page: Any) -> Any:
        items, token = page
        return token, iter(items)

    ml = MagicMock()
    ml.jobs.list.side_effect = lambda parent_job_name=None, **_: (
        ItemPaged(get_next, extract) if parent_job_name == "root" else iter([])
    )
    ml.jobs._runs_operations.get_run.side_effect = RuntimeError("none")
    assert JobHandle(ml, "root").failure()[0] == "ft"
