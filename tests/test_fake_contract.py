"""The fake answers as the published Azure ML contract says (tests/data/contract/README.md).

Replies are validated against the vendored swagger definitions (``tests/_contract.py``), both
when driven through the real SDK and as raw replies (status, long-running-operation headers,
error bodies); vendored example bodies are replayed through the SDK; the seed data matches the
vendored azureml-assets facts and comes from no library module.
"""

from __future__ import annotations

import ast
import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _contract as contract
import pytest
import yaml

import phi_finetune.testing._catalog as catalog
from phi_finetune.testing import FakeAzureML

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARM = "https://management.azure.com"
API = "api-version=2023-08-01-preview"
ASSETS = contract.CONTRACT_DIR / "azureml-assets"
A100 = "Standard_NC24ads_A100_v4"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def _raw(
    fake: FakeAzureML, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    """``(status, headers, JSON body)`` of one raw request through the patched transport."""
    from azure.core.pipeline.transport import HttpRequest, RequestsTransport

    token = fake.credential().get_token("https://management.azure.com/.default").token
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body) if body is not None else None
    response = RequestsTransport().send(HttpRequest(method, url, headers=headers, data=data))
    text = response.text()
    return response.status_code, dict(response.headers), json.loads(text) if text else None


def _ws(fake: FakeAzureML, suffix: str) -> str:
    return f"{ARM}{fake.workspace_id}{suffix}?{API}"


def _loc(fake: FakeAzureML, suffix: str) -> str:
    return (
        f"{ARM}/subscriptions/{fake.subscription_id}/providers/"
        f"Microsoft.MachineLearningServices/locations/{fake.location}{suffix}?{API}"
    )


def _valid(definition: str, body: Any) -> None:
    problems = contract.errors(definition, body)
    assert problems == [], f"{definition}:\n" + "\n".join(problems)


def _compute_put_body(size: str) -> dict[str, Any]:
    return {
        "location": "eastus",
        "properties": {
            "computeType": "AmlCompute",
            "properties": {
                "vmSize": size,
                "vmPriority": "Dedicated",
                "scaleSettings": {"maxNodeCount": 2, "minNodeCount": 0},
            },
        },
    }


# ---------------------------------------------------------------------------- the vendored data

EXAMPLES = [
    ("Usage_list", "200", "ListUsagesResult"),
    ("VirtualMachineSize_list", "200", "VirtualMachineSizeListResult"),
    ("Compute_get_AmlCompute", "200", "ComputeResource"),
    ("Compute_createOrUpdate_BasicAmlCompute", "201", "ComputeResource"),
]


@pytest.mark.parametrize(("name", "status", "definition"), EXAMPLES)
def test_vendored_examples_validate_and_name_their_source(
    name: str, status: str, definition: str
) -> None:
    data = contract.example(name)
    source = data["_vendored"]
    assert source["repository"] == "Azure/azure-rest-api-specs"
    assert source["path"].endswith(".json") and "/examples/" in source["path"]
    assert source["apiVersion"] == "2023-08-01-preview"
    assert source["license"].startswith("MIT")
    _valid(definition, data["responses"][status]["body"])


def test_every_vendored_definition_names_its_source_file() -> None:
    spec = contract.spec()
    origin = spec["_vendored"]["definitionSource"]
    assert set(origin) == set(spec["definitions"])
    assert set(origin.values()) <= set(spec["_vendored"]["sources"])


def test_the_validator_rejects_unknown_keys_wrong_enums_and_missing_required() -> None:
    body = copy.deepcopy(contract.example("Compute_get_AmlCompute")["responses"]["200"]["body"])
    body["properties"]["properties"]["vmSizeX"] = "x"
    body["properties"]["provisioningState"] = "Done"
    del body["properties"]["properties"]["scaleSettings"]["maxNodeCount"]
    text = "\n".join(contract.errors("ComputeResource", body))
    assert "'vmSizeX' was unexpected" in text
    assert "'Done' is not one of" in text
    assert "'maxNodeCount' is a required property" in text
    assert contract.errors("ErrorResponse", {"error": {"code": 404}}) != []


# ---------------------------------------------------------------------------- usages (quota)


def test_usages_reply_validates_and_has_the_specs_entries(fake: FakeAzureML) -> None:
    status, _, body = _raw(fake, "GET", _loc(fake, "/usages"))
    assert status == 200
    _valid("ListUsagesResult", body)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in body["value"]:
        by_name.setdefault(entry["name"]["value"], []).append(entry)
    total = by_name["Total Cluster Dedicated Regional vCPUs"][0]
    assert total["type"] == "Microsoft.MachineLearningServices/dedicatedCores/usages"
    assert total["limit"] == catalog.DEFAULT_REGIONAL_DEDICATED_LIMIT
    low_total = by_name["Total Cluster LowPriority Regional vCPUs"][0]
    assert low_total["type"] == "Microsoft.MachineLearningServices/lowPriorityCores/usages"
    a100 = by_name["Standard NCADSA100v4 Family Cluster Dedicated vCPUs"]
    assert [e["type"].split("/")[1] for e in a100] == ["vmFamily", "workspaces"]
    assert a100[1]["id"].startswith(fake.workspace_id)
    assert all(e["name"]["localizedValue"] == e["name"]["value"] for e in a100)
    (low,) = by_name["Standard NCADSA100v4 Family Cluster LowPriority vCPUs"]
    assert low["limit"] == -1
    assert "standardNCADSA100v4Family" not in by_name  # the key form is not the default


def test_usage_naming_forms_and_family_key_in_any_case(fake: FakeAzureML) -> None:
    fake.set_usage("StandardNCADSA100v4Family", 24, 48)  # the vmSizes spelling is kept
    fake.set_usage("standardNCSv3Family", 6, 12, naming="key")
    fake.set_usage_naming("key")
    fake.set_usage("standardDSv2Family", 1, 2)
    _, _, body = _raw(fake, "GET", _loc(fake, "/usages"))
    _valid("ListUsagesResult", body)
    names = {e["name"]["value"]: e for e in body["value"]}
    display = names["Standard NCADSA100v4 Family Cluster Dedicated vCPUs"]
    assert (display["currentValue"], display["limit"]) == (24, 48)
    assert names["standardNCSv3Family"]["name"]["localizedValue"] == (
        "Standard NCSv3 Family Cluster Dedicated vCPUs"
    )
    assert "standardDSv2Family" in names
    a100_entries = [e for e in body["value"] if "NCADSA100v4 Family Cluster Dedicated" in str(e)]
    assert len(a100_entries) == 2  # one family entry + its workspace duplicate, not two families


def test_regional_quota_can_be_set_and_sums_the_families_by_default(fake: FakeAzureML) -> None:
    fake.set_usage("standardNCSv3Family", 12, 24)
    fake.set_regional_quota(48, low_priority_limit=10)
    _, _, body = _raw(fake, "GET", _loc(fake, "/usages"))
    names = {e["name"]["value"]: e for e in body["value"]}
    total = names["Total Cluster Dedicated Regional vCPUs"]
    assert total["limit"] == 48
    family_sum = sum(
        e["currentValue"] for e in body["value"] if e["type"].endswith("/vmFamily/usages")
    )
    assert total["currentValue"] == family_sum == 12
    assert names["Total Cluster LowPriority Regional vCPUs"]["limit"] == 10
    fake.set_regional_quota(48, current=40)
    _, _, body = _raw(fake, "GET", _loc(fake, "/usages"))
    names = {e["name"]["value"]: e for e in body["value"]}
    assert names["Total Cluster Dedicated Regional vCPUs"]["currentValue"] == 40


def test_sdk_reads_the_spec_shaped_usages(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    names = [u.name["value"] for u in ml.compute.list_usage()]
    assert "Total Cluster Dedicated Regional vCPUs" in names
    assert "Standard NCSv3 Family Cluster Dedicated vCPUs" in names


def test_sdk_reads_the_vendored_usages_example(fake: FakeAzureML) -> None:
    example = contract.example("Usage_list")["responses"]["200"]["body"]
    fake.inject_fault("GET", r"/usages\?", status=200, body=example)
    usages = list(fake.workspace_client().compute.list_usage())
    assert [u.name["value"] for u in usages] == [e["name"]["value"] for e in example["value"]]
    assert [u.limit for u in usages][-3:] == [-1, -1, -1]


def _spec_usages(a100_limit: int, regional_limit: int) -> dict[str, Any]:
    """Usage/list.json's shape, for the A100 family of the fake's catalog."""
    example = contract.example("Usage_list")["responses"]["200"]["body"]
    entries = copy.deepcopy(example["value"])
    name = "Standard NCADSA100v4 Family Cluster Dedicated vCPUs"
    for entry in entries:
        if entry["name"]["value"] == "Total Cluster Dedicated Regional vCPUs":
            entry["currentValue"], entry["limit"] = 0, regional_limit
    entries.append(
        {
            "id": "/subscriptions/x/usages/Standard_NCADSA100v4_Family_Cluster_Dedicated_vCPUs",
            "type": "Microsoft.MachineLearningServices/vmFamily/usages",
            "currentValue": 0,
            "limit": a100_limit,
            "name": {"value": name, "localizedValue": name},
            "unit": "Count",
        }
    )
    return {"value": entries}


def test_library_checks_quota_named_in_display_form(fake: FakeAzureML) -> None:
    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.errors import QuotaExceededError

    fake.inject_fault("GET", r"/usages\?", status=200, body=_spec_usages(0, 1000), times=None)
    selector = ComputeSelector(fake.workspace_client(), cluster="a100", vm_size=A100)
    with pytest.raises(QuotaExceededError):
        selector.select(allow_list=[A100])


def test_library_checks_the_regional_dedicated_total(fake: FakeAzureML) -> None:
    from phi_finetune.azure.compute import ComputeSelector
    from phi_finetune.errors import QuotaExceededError

    fake.inject_fault("GET", r"/usages\?", status=200, body=_spec_usages(200, 8), times=None)
    selector = ComputeSelector(fake.workspace_client(), cluster="a100", vm_size=A100)
    with pytest.raises(QuotaExceededError):
        selector.select(allow_list=[A100])


# ---------------------------------------------------------------------------- VM sizes


def test_vm_sizes_reply_validates_and_uses_the_family_key_spelling(fake: FakeAzureML) -> None:
    status, _, body = _raw(fake, "GET", _loc(fake, "/vmSizes"))
    assert status == 200
    _valid("VirtualMachineSizeListResult", body)
    families = {s["name"]: s["family"] for s in body["value"]}
    assert families[A100] == "standardNCADSA100v4Family"
    assert all(f.startswith("standard") and f.endswith("Family") for f in families.values())
    sdk = {s.name: s for s in fake.workspace_client().compute.list_sizes()}
    assert sdk[A100].gpus == 1


# ---------------------------------------------------------------------------- compute


def test_compute_get_and_list_validate_and_upper_case_the_size(fake: FakeAzureML) -> None:
    fake.add_compute("gpu", A100, max_instances=2)
    status, _, body = _raw(fake, "GET", _ws(fake, "/computes/gpu"))
    assert status == 200
    _valid("ComputeResource", body)
    assert body["properties"]["properties"]["vmSize"] == A100.upper()
    status, _, listing = _raw(fake, "GET", _ws(fake, "/computes"))
    assert status == 200
    _valid("PaginatedComputeResourcesList", listing)
    assert fake.workspace_client().compute.get("gpu").size.lower() == A100.lower()


def test_compute_put_answers_201_with_only_type_and_state(fake: FakeAzureML) -> None:
    status, headers, body = _raw(fake, "PUT", _ws(fake, "/computes/new"), _compute_put_body(A100))
    assert status == 201
    assert "azure-asyncoperation" in {h.lower() for h in headers}
    _valid("ComputeResource", body)
    example = contract.example("Compute_createOrUpdate_BasicAmlCompute")["responses"]["201"]
    assert set(body) == set(example["body"])
    assert body["properties"] == {"computeType": "AmlCompute", "provisioningState": "Creating"}
    operation = {k.lower(): v for k, v in headers.items()}["azure-asyncoperation"]
    for _ in range(10):  # bounded: a second PUT while creating is a 409; wait for the first
        if _raw(fake, "GET", operation)[2]["status"] != "InProgress":
            break
    status, headers, body = _raw(fake, "PUT", _ws(fake, "/computes/new"), _compute_put_body(A100))
    assert status == 200
    _valid("ComputeResource", body)
    ops = contract.operation("Compute_CreateOrUpdate")
    assert set(ops["responses"]) == {"200", "201"}


def test_async_operation_status_validates_and_ends_in_a_terminal_state(fake: FakeAzureML) -> None:
    _, headers, _ = _raw(fake, "PUT", _ws(fake, "/computes/lro"), _compute_put_body(A100))
    url = {k.lower(): v for k, v in headers.items()}["azure-asyncoperation"]
    statuses = []
    for _ in range(10):  # bounded: the fake finishes after its configured polls
        status, _, body = _raw(fake, "GET", url)
        assert status == 200
        _valid("OperationStatusResult", body)
        statuses.append(body["status"])
        if body["status"] != "InProgress":
            break
    assert statuses[-1] == "Succeeded"
    assert fake.computes["lro"]["properties"]["provisioningState"] == "Succeeded"


def test_compute_create_through_the_sdk_ends_in_a_valid_full_body(fake: FakeAzureML) -> None:
    from azure.ai.ml.entities import AmlCompute

    ml = fake.workspace_client()
    cluster = AmlCompute(name="sdk-gpu", size=A100, min_instances=0, max_instances=2)
    result = ml.compute.begin_create_or_update(cluster).result()
    assert result.provisioning_state == "Succeeded"
    assert result.size.lower() == A100.lower()
    _valid("ComputeResource", fake.computes["sdk-gpu"])


def test_compute_delete_202_with_headers_then_204(fake: FakeAzureML) -> None:
    fake.add_compute("old", A100)
    url = _ws(fake, "/computes/old") + "&underlyingResourceAction=Delete"
    status, headers, _ = _raw(fake, "DELETE", url)
    assert status == 202
    expected = contract.operation("Compute_Delete")["responses"]["202"]["headers"]
    assert {h.lower() for h in expected} <= {h.lower() for h in headers}
    status, _, _ = _raw(fake, "DELETE", _ws(fake, "/computes/never") + "&x=1")
    assert status == 204


def test_compute_create_for_a_size_the_region_lacks_fails(fake: FakeAzureML) -> None:
    from azure.ai.ml.entities import AmlCompute
    from azure.core.exceptions import HttpResponseError

    status, _, body = _raw(
        fake, "PUT", _ws(fake, "/computes/nope"), _compute_put_body("Standard_ND1000_v9")
    )
    assert status == 400
    _valid("ErrorResponse", body)
    assert body["error"]["code"] == "VMSizeNotSupported"
    assert "Standard_ND1000_v9" in body["error"]["message"]
    assert "list_sizes" in body["error"]["message"]
    assert "nope" not in fake.computes
    with pytest.raises(HttpResponseError, match="VMSizeNotSupported"):
        fake.workspace_client().compute.begin_create_or_update(
            AmlCompute(name="nope2", size="Standard_ND1000_v9", max_instances=1)
        ).result()
    assert "nope2" not in fake.computes


def test_error_replies_are_error_responses(fake: FakeAzureML) -> None:
    status, _, body = _raw(fake, "GET", _ws(fake, "/computes/missing"))
    assert status == 404
    _valid("ErrorResponse", body)
    assert body["error"]["code"] and body["error"]["message"]


def test_sdk_reads_the_vendored_compute_example(fake: FakeAzureML) -> None:
    example = contract.example("Compute_get_AmlCompute")["responses"]["200"]["body"]
    fake.inject_fault("GET", r"/computes/compute123\?", status=200, body=example)
    compute = fake.workspace_client().compute.get("compute123")
    assert (compute.size, compute.max_instances, compute.provisioning_state) == (
        "STANDARD_NC6",
        1,
        "Succeeded",
    )


# ---------------------------------------------------------------------------- registry


def _raw_model(fake: FakeAzureML, version: str = "15") -> dict[str, Any]:
    reg = fake.registry_client()
    raw = reg.models._get("Phi-3-mini-4k-instruct", version)
    return raw.as_dict() if hasattr(raw, "as_dict") else dict(raw)


def _registry_url(fake: FakeAzureML, version: str = "15") -> str:
    return (
        f"https://{fake.api_host}/mferp/managementfrontend/subscriptions/"
        f"{fake.registry_subscription_id}/resourceGroups/{fake.registry_resource_group}/"
        "providers/Microsoft.MachineLearningServices/registries/azureml/models/"
        f"Phi-3-mini-4k-instruct/versions/{version}?api-version=2021-10-01-dataplanepreview"
    )


def test_registry_model_carries_system_metadata_under_either_spelling(fake: FakeAzureML) -> None:
    fake.registry_client()  # discovery, as a real client does first
    _, _, body = _raw(fake, "GET", _registry_url(fake))
    props = body["properties"]
    assert "systemMetadata" not in props
    computes = props["system_metadata"]["supportedComputes"]
    assert A100 in computes["finetuneComputes"]
    assert "finetune_compute_allow_list" not in props["tags"]
    assert "inference_compute_allow_list" not in props["tags"]
    fake.set_system_metadata_key("systemMetadata")
    _, _, body = _raw(fake, "GET", _registry_url(fake))
    assert "system_metadata" not in body["properties"]
    assert body["properties"]["systemMetadata"]["supportedComputes"] == computes


def test_reference_model_as_published(fake: FakeAzureML) -> None:
    fake.add_reference_model()
    fake.registry_client()
    _, _, body = _raw(fake, "GET", _registry_url(fake))
    props = body["properties"]
    assert props["isArchived"] is True
    deprecation = props["system_metadata"]["deprecation"]
    retired = dt.datetime.fromisoformat(deprecation["finetuneRetirementDate"].replace("Z", "+00"))
    assert retired.date() == dt.date(2025, 8, 30)
    assert retired < dt.datetime.now(dt.UTC)


def test_default_seed_serves_the_reference_model_as_published(fake: FakeAzureML) -> None:
    fake.registry_client()
    _, _, body = _raw(fake, "GET", _registry_url(fake))
    props = body["properties"]
    published = catalog.reference_model_record()
    assert props["isArchived"] is True
    assert props["system_metadata"] == published["system_metadata"]
    assert props["tags"] == published["tags"]
    # the lenient copy differs only in lifecycle
    active = catalog.reference_model_record(published_lifecycle=False)
    del published["system_metadata"]["deprecation"]
    assert active["system_metadata"] == published["system_metadata"]


# ---------------------------------------------------------------------------- seed data


def _assets(name: str) -> Any:
    return yaml.safe_load((ASSETS / name).read_text(encoding="utf-8"))


def _same(a: Any, b: Any) -> bool:
    """Equal, reading numbers the way YAML 1.2 would (PyYAML keeps ``5e-6`` a string)."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def test_catalog_model_matches_the_vendored_azureml_assets_spec() -> None:
    spec = _assets("phi-3-mini-4k-instruct.spec.yaml")
    model = catalog.PHI3_MODEL
    assert (model["name"], model["version"]) == (spec["name"], str(spec["version"]))
    assert model["archived"] is spec["isArchived"] is True
    meta = spec["system_metadata"]
    assert model["system_metadata"]["supportedComputes"] == meta["supportedComputes"]
    assert model["system_metadata"]["deprecation"] == meta["deprecation"]
    assert model["system_metadata"]["SKU"] == meta["SKU"]
    assert model["system_metadata"]["tasks"] == meta["tasks"]
    defaults = ast.literal_eval(model["tags"]["model_specific_defaults"])
    published = spec["tags"]["model_specific_defaults"]
    assert list(defaults) == list(published)
    assert all(_same(defaults[k], published[k]) for k in published), defaults
    assert not any("allow_list" in key for key in model["tags"])  # only in system metadata


def test_catalog_component_interface_matches_the_vendored_pipeline_spec() -> None:
    spec = _assets("chat_completion_pipeline.0.0.82.interface.yaml")
    assert (
        spec["name"],
        str(spec["version"]),
    ) == (catalog.CHAT_COMPLETION_COMPONENT, catalog.CHAT_COMPLETION_VERSION)
    ours = catalog.chat_completion_inputs()
    assert list(ours) == list(spec["inputs"])
    for name, published in spec["inputs"].items():
        mine = ours[name]
        assert mine["type"] == published["type"], name
        assert mine["optional"] == bool(published.get("optional", False)), name
        if "default" in published:
            assert _same(mine.get("default"), published["default"]), name
        if "enum" in published:
            assert [str(v) for v in mine["enum"]] == [str(v) for v in published["enum"]], name
    outputs = {k: v["type"] for k, v in spec["outputs"].items()}
    assert {k: v["type"] for k, v in catalog.chat_completion_outputs().items()} == outputs


def test_catalog_vm_size_from_the_example_matches_it() -> None:
    example = contract.example("VirtualMachineSize_list")["responses"]["200"]["body"]
    ds3 = next(s for s in example["value"] if s["name"] == "Standard_DS3_v2")
    vcpus, gpus, family, memory = catalog.DEFAULT_VM_SIZES["Standard_DS3_v2"]
    assert (vcpus, gpus, family, memory) == (ds3["vCPUs"], ds3["gpus"], ds3["family"], 14.0)


def test_catalog_imports_nothing_from_the_library() -> None:
    source = Path(catalog.__file__).read_text(encoding="utf-8")
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append("." * node.level + (node.module or ""))
    assert imported, "the checker found no import at all"
    library = [m for m in imported if m.startswith(("phi_finetune", "."))]
    assert library == [], f"_catalog.py imports library modules: {library}"
