"""`import phi_finetune` and `phi-finetune --help` must not import the heavy dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("azure.ai.ml", "azure.identity", "mlflow", "datasets", "pandas", "torch", "transformers")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys, json\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{{'azure','mlflow','datasets','pandas','torch','transformers'}})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return [name for name in loaded if any(name == h or name.startswith(h + ".") for h in HEAVY)]


def test_import_is_light() -> None:
    assert _loaded_after("import phi_finetune") == []


def test_cli_help_is_light() -> None:
    code = (
        "import contextlib, io\n"
        "from phi_finetune.cli.main import build_parser\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        build_parser().parse_args(['--help'])\n"
        "    except SystemExit:\n"
        "        pass"
    )
    assert _loaded_after(code) == []


@pytest.mark.parametrize("name", ["Workspace", "WorkspaceConfig", "RunConfig"])
def test_light_names_stay_light(name: str) -> None:
    assert _loaded_after(f"import phi_finetune\nphi_finetune.{name}") == []
