"""The fake's serverless seed (``phi_finetune/testing/_maas_catalog.py``) agrees with the vendored
public sources and comes from no library module."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import _contract as contract
import pytest
import yaml

from phi_finetune.testing import FakeAzureML, _maas_catalog

pytest.importorskip("azure.ai.ml")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOTEBOOK = contract.CONTRACT_DIR / "azureml-examples" / "maas-chat-completion-notebook.excerpt.md"
PHI35 = contract.CONTRACT_DIR / "azureml-assets" / "phi-3.5-mini-128k-instruct.spec.yaml"


def _matrix() -> dict[str, list[str]]:
    """The notebook's "support matrix for FT deployments": model -> regions marked ✅."""
    rows = [line for line in NOTEBOOK.read_text(encoding="utf-8").splitlines() if "|" in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    regions = header[1:]
    table: dict[str, list[str]] = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = [r for r, mark in zip(regions, cells[1:], strict=True) if "✅" in mark]
    return table


def _record(name: str) -> dict[str, object]:
    return next(r for r in _maas_catalog.MAAS_MODELS if r["name"] == name)


def test_vendored_sources_name_their_origin() -> None:
    for path in (NOTEBOOK, PHI35):
        head = path.read_text(encoding="utf-8")[:600]
        assert "MIT" in head and re.search(r"\b[0-9a-f]{40}\b", head), path


def test_phi4_mini_regions_are_the_notebooks_support_matrix() -> None:
    wanted = _matrix()["Phi-4-mini-instruct"]
    record = _record("Phi-4-mini-instruct")
    tags = record["tags"]
    assert isinstance(tags, dict)
    assert ast.literal_eval(tags[_maas_catalog.REGIONS_TAG]) == wanted
    assert record["version"] == "1"


def test_phi35_mini_is_seeded_as_its_published_spec() -> None:
    spec = yaml.safe_load(PHI35.read_text(encoding="utf-8"))
    record = _record("Phi-3.5-mini-instruct")
    assert record["version"] == str(spec["version"]) and record["archived"] == spec["isArchived"]
    meta = record["system_metadata"]
    assert isinstance(meta, dict)
    for key, value in spec["system_metadata"].items():
        assert meta[key] == value, key
    tags = record["tags"]
    assert isinstance(tags, dict)
    before = spec["tags_before_migration"]
    assert ast.literal_eval(tags[_maas_catalog.REGIONS_TAG]) == before[_maas_catalog.REGIONS_TAG]


def test_the_seed_module_imports_nothing_from_the_library() -> None:
    tree = ast.parse(Path(_maas_catalog.__file__).read_text(encoding="utf-8"))
    imported = [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ] + [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    assert [m for m in imported if m.startswith("phi_finetune")] == []


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def test_the_notebooks_region_check_reads_the_seeded_tag(fake: FakeAzureML) -> None:
    registry = fake.registry_client()
    model = registry.models.get("Phi-4-mini-instruct", label="latest")
    assert model.version == "1"
    supported_regions = model.tags["maas-finetuning-deploy-regions"]
    assert fake.location in supported_regions  # the notebook's own test
    phi35 = registry.models.get("Phi-3.5-mini-instruct", "6")
    assert "eastus2" in phi35.tags["maas-finetuning-deploy-regions"]


def test_deploy_regions_reads_both_spellings() -> None:
    tagged = {"properties": {"tags": {_maas_catalog.REGIONS_TAG: "['westus3', 'eastus2']"}}}
    assert _maas_catalog.deploy_regions(tagged) == ["westus3", "eastus2"]
    comma = {"properties": {"tags": {_maas_catalog.REGIONS_TAG: "westus3, eastus2"}}}
    assert _maas_catalog.deploy_regions(comma) == ["westus3", "eastus2"]
    migrated = {
        "properties": {
            "systemMetadata": {"maasFinetuning": {"maasFinetuningDeployRegions": ["eastus"]}}
        }
    }
    assert _maas_catalog.deploy_regions(migrated) == ["eastus"]
    assert _maas_catalog.deploy_regions({"properties": {"tags": {}}}) is None


def test_add_serverless_model_supports_the_route_in_its_regions(fake: FakeAzureML) -> None:
    fake.add_serverless_model("Phi-x-mini", 2, deploy_regions=["westus3"])
    body = fake.registry_models[("azureml", "Phi-x-mini", "2")]
    assert _maas_catalog.deploy_regions(body) == ["westus3"]
    fake.add_serverless_model("Phi-y", 1, deploy_regions=None)
    assert _maas_catalog.deploy_regions(fake.registry_models[("azureml", "Phi-y", "1")]) is None
