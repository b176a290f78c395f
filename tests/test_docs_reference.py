"""The reference pages keep up with the code: every exception has a troubleshooting entry."""

from __future__ import annotations

import inspect
from pathlib import Path

import phi_finetune.errors as errors

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_error_class_has_a_troubleshooting_entry() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    classes = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, errors.PhiFinetuneError)
        and value.__module__ == errors.__name__
        and value is not errors.PhiFinetuneError
    ]
    assert len(classes) > 20
    missing = [name for name in classes if not any(f"`{name}`" in h for h in headings)]
    assert missing == [], f"docs/troubleshooting.md has no entry for {missing}"
