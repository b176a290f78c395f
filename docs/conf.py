"""Sphinx configuration: Markdown pages (MyST), API reference from docstrings, CLI reference
generated from the CLI's own parser at build time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phi_finetune._version import __version__  # noqa: E402

project = "phi_finetune"
author = "phi_finetune developers"
copyright = "2026, phi_finetune developers"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = f"phi_finetune {__version__}"


def _write_cli_reference() -> None:
    from phi_finetune.cli.main import build_parser

    parser = build_parser()
    lines = [
        "# CLI reference",
        "",
        "Generated from `phi-finetune` itself at documentation build time.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    subactions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subactions:
        for name, sub in action.choices.items():
            lines += [
                f"## `phi-finetune {name}`",
                "",
                "```text",
                sub.format_help().rstrip(),
                "```",
                "",
            ]
            nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            for inner in nested:
                for inner_name, inner_sub in inner.choices.items():
                    lines += [
                        f"### `phi-finetune {name} {inner_name}`",
                        "",
                        "```text",
                        inner_sub.format_help().rstrip(),
                        "```",
                        "",
                    ]
    target = Path(__file__).parent / "reference" / "cli.md"
    text = "\n".join(lines)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


_write_cli_reference()
