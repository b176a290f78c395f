"""Names are checked (and generated valid) before any request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phi_finetune.errors import ConfigurationError, InvalidNameError
from phi_finetune.names import (
    ENDPOINT_NAME_PATTERN,
    default_model_name,
    generate_endpoint_name,
    generate_model_version,
    sanitize_endpoint_name,
    validate_deployment_name,
    validate_endpoint_name,
    validate_job_name,
    validate_model_name,
    validate_model_version,
)


@pytest.mark.parametrize(
    "name", ["abc", "ultrachat-completion-1700000000", "A1", "a" * 32, "x-y-z"]
)
def test_valid_endpoint_names(name: str) -> None:
    if len(name) < 3:
        with pytest.raises(InvalidNameError):
            validate_endpoint_name(name)
    else:
        assert validate_endpoint_name(name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ab", "3-32"),
        ("a" * 33, "33 characters"),
        ("1abc", "start with a letter"),
        ("-abc", "start with a letter"),
        ("abc-", "end with a letter or digit"),
        ("ab_c", "only letters, digits and '-'"),
        ("ab c", "only letters, digits and '-'"),
        ("ébc", "start with a letter"),
    ],
)
def test_invalid_endpoint_names_say_why_and_suggest(name: str, fragment: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_endpoint_name(name)
    message = str(info.value)
    assert fragment in message
    assert "endpoint_name" in message
    assert info.value.key == "endpoint_name"
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, ValueError)
    suggestion = message.rsplit("for example ", 1)[1].strip(".'\"")
    assert ENDPOINT_NAME_PATTERN.match(suggestion) and 3 <= len(suggestion) <= 32


def test_deployment_names_follow_the_same_rule() -> None:
    assert validate_deployment_name("demo") == "demo"
    with pytest.raises(InvalidNameError, match="deployment_name"):
        validate_deployment_name("de")


def test_generated_endpoint_names_are_valid_and_unique() -> None:
    # 4 random characters: 30 names in one second collide with odds of about 1 in 4,000
    names = {generate_endpoint_name() for _ in range(30)}
    assert len(names) == 30
    for name in names:
        assert name.startswith("ultrachat-completion-")
        assert validate_endpoint_name(name) == name


def test_generated_name_with_long_or_odd_prefix_fits() -> None:
    name = generate_endpoint_name("9 My Very Long Prefix For An Endpoint Name!!", now=0)
    assert len(name) <= 32 and ENDPOINT_NAME_PATTERN.match(name)


def test_generated_names_sort_by_time() -> None:
    early = generate_endpoint_name(now=1_700_000_000)
    late = generate_endpoint_name(now=1_800_000_000)
    assert early[:-4] < late[:-4]


@given(st.text(max_size=60))
def test_sanitized_endpoint_names_are_always_valid(text: str) -> None:
    assert validate_endpoint_name(sanitize_endpoint_name(text)) == sanitize_endpoint_name(text)


@given(st.text(min_size=1, max_size=80))
def test_generated_name_is_valid_for_any_prefix(prefix: str) -> None:
    validate_endpoint_name(generate_endpoint_name(prefix))


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("Phi-3-mini-4k-instruct", "Phi-3-mini-4k-instruct-ultrachat-200k"),
        ("microsoft/Phi-3-mini-4k-instruct", "microsoft-Phi-3-mini-4k-instruct-ultrachat-200k"),
        ("azureml:Phi-3-mini-4k-instruct:15", "Phi-3-mini-4k-instruct-ultrachat-200k"),
        (
            "azureml://registries/azureml/models/Phi-3-mini-4k-instruct/versions/15",
            "Phi-3-mini-4k-instruct-ultrachat-200k",
        ),
        ("Phi-3-mini-4k-instruct:15", "Phi-3-mini-4k-instruct-ultrachat-200k"),
        ("my model (v2)", "my-model-v2-ultrachat-200k"),
    ],
)
def test_default_model_name(base: str, expected: str) -> None:
    assert default_model_name(base) == expected


@given(st.text(min_size=1, max_size=300))
def test_default_model_name_is_always_valid(base: str) -> None:
    validate_model_name(default_model_name(base))


def test_model_name_and_version_validation() -> None:
    assert validate_model_name("a.b_c-1") == "a.b_c-1"
    with pytest.raises(InvalidNameError, match="Try 'my-model'"):
        validate_model_name("my/model")
    with pytest.raises(InvalidNameError):
        validate_model_name("")
    assert validate_model_version(3) == "3"
    assert validate_model_version("1700000000") == "1700000000"
    for bad in (0, -1, "", "a/b", "x" * 31, True, 1.5):
        with pytest.raises(InvalidNameError):
            validate_model_version(bad)  # type: ignore[arg-type]
    assert generate_model_version(now=1_700_000_000.7) == "1700000000"


def test_job_names() -> None:
    assert validate_job_name("calm_kiwi_1x2y") == "calm_kiwi_1x2y"
    with pytest.raises(InvalidNameError):
        validate_job_name("bad/job")
