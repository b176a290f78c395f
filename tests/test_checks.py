"""The one coercer (``phi_finetune.config.checks.coerce``) and the environment constants."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from phi_finetune import constants
from phi_finetune.config import DeployConfig, RunConfig, load_run_config
from phi_finetune.config.checks import CoercionError, coerce
from phi_finetune.errors import ConfigurationError
from phi_finetune.names import endpoint_name_problems


@pytest.mark.parametrize(
    ("value", "kind", "mode", "expected"),
    [
        (True, "boolean", "exact", True),
        ("True ", "boolean", "text", True),
        ("false", "boolean", "text", False),
        ("yes", "boolean", "loose", True),
        ("0", "boolean", "loose", False),
        (1, "boolean", "loose", True),
        (3, "integer", "exact", 3),
        ("3", "integer", "text", 3),
        ("3.0", "integer", "text", 3),
        (4.0, "integer", "loose", 4),
        (2, "number", "exact", 2.0),
        ("5e-6", "number", "text", 5e-6),
        (" 0.5 ", "number", "loose", 0.5),
        ("x", "string", "exact", "x"),
        (2, "string", "text", "2"),
        (2.0, "string", "text", "2"),
        (2.5, "string", "loose", "2.5"),
        ("  cosine ", str, "loose", "cosine"),
        ("8", int, "loose", 8),
        ("true", bool, "loose", True),
        ("1e-3", float, "loose", 1e-3),
    ],
)
def test_coerce_converts(value: Any, kind: Any, mode: Any, expected: Any) -> None:
    result = coerce(value, kind, mode=mode)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    ("value", "kind", "mode", "message"),
    [
        (True, "integer", "loose", "expected an integer"),  # bool is never a number
        (False, "number", "loose", "expected a number"),
        ("3", "integer", "exact", "expected an integer"),
        ("3.5", "integer", "text", "expected an integer"),
        (4.0, "integer", "text", "expected an integer"),
        ("abc", "number", "text", "expected a number"),
        ("true", "boolean", "exact", "expected true or false"),
        ("yes", "boolean", "text", "expected true or false"),
        (2, "boolean", "loose", "expected true or false"),
        (2, "string", "exact", "expected a string"),
        (True, "string", "text", "expected a string"),
        (2.5, "string", "text", "expected a string"),
    ],
)
def test_coerce_refuses(value: Any, kind: Any, mode: Any, message: str) -> None:
    with pytest.raises(CoercionError, match=message) as info:
        coerce(value, kind, mode=mode)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working


def test_coerce_leaves_ranges_to_the_caller() -> None:
    assert math.isnan(coerce("nan", "number", mode="text"))


def test_coerce_names_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind 'list'"):
        coerce([], "list")  # type: ignore[arg-type]


def test_config_uses_the_exact_mode() -> None:
    # Text forms are not silently accepted in the run configuration.
    with pytest.raises(ConfigurationError, match="expected boolean, got str 'true'"):
        DeployConfig(enabled="true")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="expected integer, got bool True"):
        DeployConfig(instance_count=True)


def test_config_endpoint_rule_is_the_names_rule() -> None:
    assert endpoint_name_problems("ok-name") == []
    problems = endpoint_name_problems("1-bad-")
    with pytest.raises(ConfigurationError) as info:
        DeployConfig(endpoint_name="1-bad-")
    for problem in problems:
        assert problem in str(info.value)


def test_constants_read_the_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(constants.STATE_DIR_ENV, raising=False)
    assert constants.default_state_dir() == Path(constants.DEFAULT_STATE_DIR)
    monkeypatch.setenv(constants.STATE_DIR_ENV, "~/runs")
    assert constants.default_state_dir() == Path("~/runs").expanduser()
    assert constants.default_state_dir({}) == Path(".phi_finetune")
    assert constants.progress_disabled_by_env({"NO_PROGRESS": "1"})
    assert not constants.progress_disabled_by_env({"PHI_FINETUNE_NO_PROGRESS": "0"})
    assert constants.workspace_env({"AZURE_RESOURCE_GROUP": ""}) == {
        "subscription_id": None,
        "resource_group": "",
        "workspace_name": None,
    }


def test_run_config_state_dir_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(constants.STATE_DIR_ENV, "from-env")
    assert RunConfig().state_dir == tmp_path / "from-env"
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "phi-finetune.toml").write_text("", encoding="utf-8")
    # Relative to the current folder, not to the file's.
    assert load_run_config(folder / "phi-finetune.toml").state_dir == tmp_path / "from-env"
    (folder / "phi-finetune.toml").write_text('state_dir = "mine"\n', encoding="utf-8")
    assert load_run_config(folder / "phi-finetune.toml").state_dir == folder / "mine"
    monkeypatch.delenv(constants.STATE_DIR_ENV)
    assert RunConfig().state_dir == Path(".phi_finetune")
