"""Regenerate ``phi_finetune/azure/model_catalog.json`` from an azureml-assets checkout.

Usage: ``python scripts/pin_model_catalog.py /path/to/azureml-assets [--out FILE]``. Reads every
``assets/models/system/*/spec.yaml`` whose system metadata lists ``chat-completion`` among its
fine-tuning tasks, keeps the facts the planner uses, and records each file's path and last
commit. Models not published in azureml-assets (Phi-4-mini-instruct) are kept from the current
file as they are: edit them by hand, with their source.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

_REPO = "Azure/azureml-assets"
_OUT = Path(__file__).resolve().parents[1] / "phi_finetune" / "azure" / "model_catalog.json"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-6`` as a string; the specs mean a number (YAML 1.2 reads it so)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _git(checkout: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), *args], check=True, capture_output=True, text=True
    ).stdout


def _entry(checkout: Path, path: str) -> dict[str, Any] | None:
    spec = yaml.load(_git(checkout, "show", f"HEAD:{path}"), Loader=_Loader)
    meta = spec.get("system_metadata") or {}
    if "chat-completion" not in ((meta.get("tasks") or {}).get("fineTuningTasks") or []):
        return None
    tags = spec.get("tags") or {}
    computes = meta.get("supportedComputes") or {}
    commit, date = _git(checkout, "log", "-1", "--format=%H %cs", "HEAD", "--", path).split()
    return {
        "name": spec["name"],
        "version": str(spec["version"]),
        # Meta's models are served from their own registry (azureml-examples' notebooks say so).
        "registry": "azureml-meta" if "llama" in spec["name"].lower() else "azureml",
        "archived": bool(spec.get("isArchived", False)),
        "deprecation": meta.get("deprecation") or {},
        "finetune_allow_list": computes.get("finetuneComputes"),
        "inference_allow_list": computes.get("inferenceComputes"),
        "model_specific_defaults": tags.get("model_specific_defaults") or {},
        "context_length": meta.get("textContextWindow"),
        "deployment_options": meta.get("deploymentOptions") or [],
        "source": {"repo": _REPO, "path": path, "commit": commit, "date": date},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="an azureml-assets git checkout (bare is fine)")
    parser.add_argument("--out", type=Path, default=_OUT)
    args = parser.parse_args(argv)
    paths = [
        line.removeprefix("HEAD:")
        for line in _git(
            args.checkout, "grep", "-l", "fineTuningTasks", "HEAD", "--", "assets/models/system"
        ).split()
        if line.endswith("/spec.yaml")
    ]
    models = [e for e in (_entry(args.checkout, p) for p in sorted(paths)) if e is not None]
    pinned = {m["name"] for m in models}
    if args.out.exists():  # keep hand-pinned models that azureml-assets does not publish
        old = json.loads(args.out.read_text("utf-8"))
        models += [
            m for m in old["models"] if m["name"] not in pinned and m["source"]["repo"] != _REPO
        ]
    head = _git(args.checkout, "log", "-1", "--format=%H %cs").split()
    document = {
        "about": "Pinned facts of fine-tunable chat-completion models "
        "(read by phi_finetune/azure/model_catalog.py)",
        "license": "azureml-assets is MIT-licensed; facts only, no code",
        "snapshot": {"repo": _REPO, "commit": head[0], "date": head[1]},
        "pinned_on": dt.date.today().isoformat(),
        "models": sorted(models, key=lambda m: m["name"].lower()),
    }
    args.out.write_text(json.dumps(document, indent=1) + "\n", "utf-8")
    sys.stdout.write(f"{len(models)} models written to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
