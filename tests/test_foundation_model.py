"""resolve_foundation_model through the real SDK and the fake service; pure parsing rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from phi_finetune.azure.foundation_model import (
    FoundationModel,
    check_lifecycle,
    parse_literal_list,
    parse_model_defaults,
    reference_model,
    resolve_foundation_model,
)
from phi_finetune.errors import ModelNotFoundError, ModelRetiredError
from phi_finetune.testing import FakeAzureML

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
A100 = "Standard_NC24ads_A100_v4"


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        yield service


def test_resolves_latest_by_default(fake: FakeAzureML) -> None:
    # The default is Phi-4 (live); the fake seeds it from its published spec.
    model = resolve_foundation_model(fake.registry_client(), now=NOW)
    assert (model.name, model.version) == ("Phi-4", "8")
    assert model.id == "azureml://registries/azureml/models/Phi-4/versions/8"
    assert model.finetune_allow_list is not None and A100 in model.finetune_allow_list
    assert model.model_specific_defaults["deepspeed_stage"] == 3
    assert model.context_length == 16384


def test_seeded_reference_model_is_refused_as_retired_naming_replacements(
    fake: FakeAzureML,
) -> None:
    with pytest.raises(ModelRetiredError, match="2025-08-30") as info:
        resolve_foundation_model(fake.registry_client(), "Phi-3-mini-4k-instruct", version=15)
    assert "Phi-4" in str(info.value) and "Phi-4-mini-instruct" in str(info.value)


def test_not_found_by_label_is_model_not_found(fake: FakeAzureML) -> None:
    # label lookups raise the SDK's ValidationException
    with pytest.raises(ModelNotFoundError, match=r"models.list\(name='Nope'\)"):
        resolve_foundation_model(fake.registry_client(), "Nope")


def test_not_found_by_version_is_model_not_found(fake: FakeAzureML) -> None:
    # version lookups raise ResourceNotFoundError
    with pytest.raises(ModelNotFoundError, match="version 99 not found"):
        resolve_foundation_model(fake.registry_client(), "Phi-3-mini-4k-instruct", version=99)


def test_archived_version_is_refused_unless_allowed(fake: FakeAzureML) -> None:
    fake.add_model("Old-model", 3, archived=True)
    registry = fake.registry_client()
    with pytest.raises(ModelRetiredError, match=r"archived.*allow_retired"):
        resolve_foundation_model(registry, "Old-model", version=3, now=NOW)
    model = resolve_foundation_model(registry, "Old-model", version=3, allow_retired=True, now=NOW)
    assert model.archived
    assert any("archived" in w for w in model.lifecycle_warnings)


def test_passed_retirement_date_is_refused(fake: FakeAzureML) -> None:
    fake.add_model(
        "Retired",
        1,
        system_metadata={"deprecation": {"finetuneRetirementDate": "2025-08-30T00:00:00Z"}},
    )
    with pytest.raises(ModelRetiredError, match="2025-08-30"):
        resolve_foundation_model(fake.registry_client(), "Retired", version=1, now=NOW)


def test_retirement_ahead_is_a_warning(fake: FakeAzureML) -> None:
    fake.add_model(
        "Retiring",
        1,
        system_metadata={
            "deprecation": {
                "finetuneDeprecationDate": "2025-12-01T00:00:00Z",
                "finetuneRetirementDate": "2026-03-01T00:00:00Z",
            }
        },
    )
    model = resolve_foundation_model(fake.registry_client(), "Retiring", version=1, now=NOW)
    assert model.lifecycle_warnings and "2026-03-01" in model.lifecycle_warnings[0]


def test_allow_lists_from_tags(fake: FakeAzureML) -> None:
    fake.add_model(
        "Tagged",
        1,
        tags={
            "finetune_compute_allow_list": "['Standard_NC24ads_A100_v4', 'Standard_ND96asr_v4']",
            "inference_compute_allow_list": '["Standard_NC6s_v3"]',
            "model_specific_defaults": "{'learning_rate': 1e-05, 'deepspeed_stage': 2}",
        },
    )
    model = resolve_foundation_model(fake.registry_client(), "Tagged", version=1, now=NOW)
    assert model.finetune_allow_list == ("Standard_NC24ads_A100_v4", "Standard_ND96asr_v4")
    assert model.inference_allow_list == ("Standard_NC6s_v3",)
    assert model.model_specific_defaults == {"learning_rate": 1e-05, "deepspeed_stage": 2}
    assert model.allows_finetune_on("standard_nc24ads_a100_v4") is True


def test_allow_lists_from_system_metadata(fake: FakeAzureML) -> None:
    fake.add_model(
        "Meta",
        1,
        system_metadata={
            "supportedComputes": {
                "finetuneComputes": ["Standard_NC48ads_A100_v4"],
                "inferenceComputes": ["Standard_NC12s_v3"],
            }
        },
    )
    model = resolve_foundation_model(fake.registry_client(), "Meta", version=1, now=NOW)
    assert model.finetune_allow_list == ("Standard_NC48ads_A100_v4",)
    assert model.inference_allow_list == ("Standard_NC12s_v3",)


def test_no_allow_list_is_none(fake: FakeAzureML) -> None:
    fake.add_model("Plain", 1)
    model = resolve_foundation_model(fake.registry_client(), "Plain", version=1, now=NOW)
    assert model.finetune_allow_list is None
    assert model.allows_finetune_on(A100) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("['A', 'B']", ("A", "B")),
        ('["A"]', ("A",)),
        ("[A, B]", ("A", "B")),
        ("A, B", ("A", "B")),
        (["A"], ("A",)),
        (None, None),
        ("", None),
    ],
)
def test_parse_literal_list_is_safe(raw: object, expected: tuple[str, ...] | None) -> None:
    assert parse_literal_list(raw) == expected


def test_parse_literal_list_never_evaluates_code() -> None:
    result = parse_literal_list("__import__('os').system('exit 3')")
    assert result is not None and all(isinstance(x, str) for x in result)


def test_model_defaults_dict_or_string() -> None:
    assert parse_model_defaults({"a": 1}) == {"a": 1}
    assert parse_model_defaults("{'a': 1}") == {"a": 1}
    assert parse_model_defaults('{"a": true}') == {"a": True}
    assert parse_model_defaults("not a dict") == {}


def test_old_tag_layout_dates_and_lists() -> None:
    model = FoundationModel.from_metadata(
        "M",
        "1",
        tags={"FinetuneRetirementDate": "2025-08-30", "finetune_compute_allow_list": "[X]"},
    )
    assert model.finetune_retirement_date == dt.datetime(2025, 8, 30, tzinfo=dt.UTC)
    assert model.finetune_retired(NOW)
    assert model.finetune_allow_list == ("X",)


def test_reference_model_facts() -> None:
    model = reference_model()
    assert model.archived and model.finetune_retired(NOW)
    assert "learning_rate_min" in model.model_specific_defaults


# --------------------------------------------- system metadata under either spelling (issue 12)

SYSMETA = {
    "supportedComputes": {
        "finetuneComputes": ["Standard_NC24ads_A100_v4"],
        "inferenceComputes": ["Standard_NC6s_v3"],
    },
    "deprecation": {"finetuneRetirementDate": "2025-08-30T00:00:00Z"},
    "isArchived": True,
}
SNAKE = {
    "supported_computes": {
        "finetune_computes": ["Standard_NC24ads_A100_v4"],
        "inference_computes": ["Standard_NC6s_v3"],
    },
    "deprecation": {"finetune_retirement_date": "2025-08-30T00:00:00Z"},
    "is_archived": "true",
}


def _entity(**attrs: object) -> object:
    from types import SimpleNamespace

    base: dict[str, object] = {
        "name": "Phi-3-mini-4k-instruct",
        "version": "15",
        "id": None,
        "tags": {"finetune_compute_allow_list": "['Standard_ND96asr_v4']"},
        "stage": None,
        "properties": {},
    }
    base.update(attrs)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    "entity",
    [
        _entity(system_metadata=SYSMETA),
        _entity(systemMetadata=SYSMETA),
        _entity(_system_metadata=SNAKE),
        _entity(system_metadata=__import__("json").dumps(SYSMETA)),
        _entity(properties={"systemMetadata": SYSMETA}),
    ],
    ids=["attribute", "camelCase-attribute", "snake-keys", "json-string", "properties-key"],
)
def test_system_metadata_in_either_spelling_wins_over_tags(entity: object) -> None:
    model = FoundationModel.from_entity(entity)  # type: ignore[arg-type]
    # System metadata first: the tag's list is only a fallback.
    assert model.finetune_allow_list == ("Standard_NC24ads_A100_v4",)
    assert model.inference_allow_list == ("Standard_NC6s_v3",)
    assert model.finetune_retirement_date == dt.datetime(2025, 8, 30, tzinfo=dt.UTC)
    assert model.archived
    with pytest.raises(ModelRetiredError, match="it is archived in the registry"):
        check_lifecycle(model, now=NOW)


def test_tags_are_the_fallback_without_system_metadata() -> None:
    model = FoundationModel.from_entity(_entity())  # type: ignore[arg-type]
    assert model.finetune_allow_list == ("Standard_ND96asr_v4",)
    assert not model.archived


def test_rest_object_with_camel_case_system_metadata() -> None:
    """The registry's REST reply may carry ``systemMetadata`` and ``isArchived`` as dict keys
    (the shape of Phi-3-mini-4k-instruct v15 in azureml-assets: archived, lists only there)."""
    from unittest.mock import MagicMock

    registry = MagicMock()
    registry._registry_name = "azureml"
    registry.models.get.return_value = _entity(tags={})
    registry.models._get.return_value = MagicMock(
        properties={"isArchived": True, "systemMetadata": SYSMETA}
    )
    with pytest.raises(ModelRetiredError, match="archived"):
        resolve_foundation_model(registry, version=15, now=NOW)
    model = resolve_foundation_model(registry, version=15, allow_retired=True, now=NOW)
    assert model.archived and model.finetune_allow_list == ("Standard_NC24ads_A100_v4",)
