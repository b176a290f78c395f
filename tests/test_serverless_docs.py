"""The serverless docs keep up with the code: every ``[serverless]`` key in the configuration
reference, every serverless error in the troubleshooting page, the how-to in the toctree."""

from __future__ import annotations

import inspect
from pathlib import Path

import attrs

import phi_finetune.serverless.errors as serverless_errors
from phi_finetune.config.serverless import ServerlessConfig
from phi_finetune.errors import PhiFinetuneError

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_serverless_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [
        f.name for f in attrs.fields(ServerlessConfig) if f"`serverless.{f.name}`" not in text
    ]
    assert missing == []
    assert '`"serverless"`' in text


def test_every_serverless_error_has_a_troubleshooting_entry() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("#")]
    classes = [
        name
        for name, value in vars(serverless_errors).items()
        if inspect.isclass(value)
        and issubclass(value, PhiFinetuneError)
        and value.__module__ == serverless_errors.__name__
    ]
    assert len(classes) == 5
    assert [c for c in classes if not any(f"`{c}`" in h for h in headings)] == []


def test_the_howto_is_in_the_toctree_and_concepts_links_it() -> None:
    assert "howto/serverless" in (DOCS / "index.md").read_text(encoding="utf-8")
    assert "howto/serverless.md" in (DOCS / "concepts.md").read_text(encoding="utf-8")
