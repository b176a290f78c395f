"""HTTP requests of the reference notebook vs the library's whole flow, on the same fake.

Run: ``python benchmarks/bench_request_count.py [--calls]``. Both flows run against a fresh
``FakeAzureML`` (default seed data, nothing pre-created): the reference notebook's own cells
(``tests/fixtures/reference_notebook.py``) and ``FineTuneSession.run()`` on the azure backend
(prepare data, plan, fine-tune, register, deploy, score, teardown), both creating their compute
cluster. Prints, per flow, the requests grouped by method and normalised path (with the fake's
route name), the totals, every request repeated with the same method and URL, and with
``--calls`` the library call site (first ``phi_finetune`` frame) of each request group.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import re
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "fixtures" / "notebook_runner.py"

# A path segment after one of these is a resource name.
_COLLECTIONS = {
    "computes", "jobs", "onlineendpoints", "deployments", "models", "data", "versions",
    "components", "registries", "experiments", "runs", "operationsstatus", "operationresults",
    "locations", "datastores", "mfeoperationsstatus", "experimentids", "rundata",
    "environments", "codes",
}  # fmt: skip

Record = tuple[str, str, str | None, str]  # method, url, route, call site


def _load_runner() -> Any:
    spec = importlib.util.spec_from_file_location("notebook_runner", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["notebook_runner"] = module
    spec.loader.exec_module(module)
    return module


def normalise(method: str, url: str, ids: dict[str, str]) -> str:
    """``GET management/.../computes/{name}``: ids and resource names replaced."""
    parts = urlsplit(url)
    host = parts.netloc.lower()
    if host.endswith(".blob.core.windows.net"):
        return f"{method} blob/{{container}}/{{path}}"
    if host.endswith(".inference.ml.azure.com"):
        return f"{method} {{endpoint}}.inference{parts.path}"
    short = "management" if host == "management.azure.com" else host.split(".", 1)[-1]
    segments = []
    previous = ""
    for segment in parts.path.split("/"):
        label = next((f"{{{k}}}" for k, v in ids.items() if v and segment == v), None)
        if label is None and previous.lower() in _COLLECTIONS:
            label = "{name}"
        segments.append(label or segment)
        previous = segment
    path = "/".join(segments)
    path = re.sub(r"/subscriptions/\{sub\}/resourceGroups/\{rg\}", "/{scope}", path)
    path = path.replace("/providers/Microsoft.MachineLearningServices", "/{provider}")
    return f"{method} {short}{path}"


def _call_site(depth: int = 4) -> str:
    """The innermost ``depth`` frames in phi_finetune (not the fake), or the notebook cell."""
    import threading

    if threading.current_thread().name.startswith("LROPoller"):
        return "(azure-core LRO poller thread)"
    chain: list[str] = []
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename.replace("\\", "/")
        if "/phi_finetune/" in name and "/phi_finetune/testing/" not in name:
            if frame.name == "<lambda>" or "/azure/boundary.py" in name:
                continue
            chain.append(f"{name.split('/phi_finetune/', 1)[1]}:{frame.lineno} {frame.name}")
            if len(chain) == depth:
                break
        elif "reference_notebook.py" in name:
            return frame.filename.strip("<>")
    return " < ".join(chain) if chain else "(client construction)"


@contextmanager
def recording(fake: Any) -> Iterator[list[Record]]:
    """Record ``(method, url, route, call site)`` of every request the fake answers."""
    from azure.core.pipeline.transport import RequestsTransport

    sites: list[tuple[str, str]] = []
    patched = RequestsTransport.__dict__["send"]

    def send(transport: Any, request: Any, **kwargs: Any) -> Any:
        sites.append((str(request.url), _call_site()))
        return patched(transport, request, **kwargs)

    RequestsTransport.send = send  # type: ignore[method-assign]
    fake.clear_requests()
    records: list[Record] = []
    try:
        yield records
    finally:
        RequestsTransport.send = patched  # type: ignore[method-assign]
        by_url: dict[str, list[str]] = collections.defaultdict(list)
        for url, site in sites:
            by_url[url].append(site)
        for req in fake.requests:
            queue = by_url.get(req.url)
            site = queue.pop(0) if queue else "(requests)"
            records.append((req.method, req.url, req.route, site))


def reference_flow(runner: Any) -> tuple[list[Record], dict[str, str]]:
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as fake, tempfile.TemporaryDirectory() as workdir:
        with recording(fake) as records:
            runner.run_notebook(fake, Path(workdir))
        return records, _ids(fake)


def library_flow() -> tuple[list[Record], dict[str, str]]:
    from phi_finetune.azure.backend import AzureBackend
    from phi_finetune.azure.workspace import Workspace
    from phi_finetune.config import ComputeConfig, DataConfig, DeployConfig, RunConfig
    from phi_finetune.session import FineTuneSession
    from phi_finetune.testing import FakeAzureML

    with FakeAzureML() as fake, tempfile.TemporaryDirectory() as workdir:
        with recording(fake) as records:
            workspace = Workspace.from_clients(fake.workspace_client(), fake.registry_client())
            config = RunConfig(
                backend="azure",
                state_dir=Path(workdir) / "state",
                compute=ComputeConfig(
                    cluster="gpu-cluster-big", vm_size="Standard_NC24ads_A100_v4"
                ),
                data=DataConfig(source="demo", split_pc=None, output_dir=Path(workdir) / "data"),
                deploy=DeployConfig(
                    instance_type="Standard_NC6s_v3",  # the reference notebook's (retired)
                    allow_retired_size=True,
                    deployment_name="demo",
                ),
            )
            backend = AzureBackend(workspace=workspace, poll_interval_s=0)
            FineTuneSession(config, backend=backend).run()
        return records, _ids(fake)


def _ids(fake: Any) -> dict[str, str]:
    return {
        "sub": fake.subscription_id,
        "rg": fake.resource_group,
        "ws": fake.workspace_name,
        "registry_sub": fake.registry_subscription_id,
        "registry_rg": fake.registry_resource_group,
        "location": fake.location,
    }


def table(title: str, records: list[Record], ids: dict[str, str], calls: bool) -> Counter:
    groups: Counter = collections.Counter()
    routes: dict[str, str | None] = {}
    sites: dict[str, Counter] = collections.defaultdict(collections.Counter)
    for method, url, route, site in records:
        key = normalise(method, url, ids)
        groups[key] += 1
        routes[key] = route
        sites[key][site] += 1
    print(f"\n## {title}: {len(records)} requests, {len(groups)} distinct routes\n")
    print(f"{'count':>5}  {'route':26} request")
    for key, count in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{count:5}  {routes[key] or '-':26} {key}")
        if calls:
            for site, n in sites[key].most_common():
                print(f"{'':34}{n} x {site}")
    return groups


def repeated(title: str, records: list[Record], ids: dict[str, str]) -> int:
    """Print every (method, URL) sent more than once (the same resource fetched again)."""
    seen: Counter = collections.Counter((m, u.split("?", 1)[0]) for m, u, _, _ in records)
    sites: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for m, u, _, s in records:
        sites[(m, u.split("?", 1)[0])].add(s)
    dupes = {k: n for k, n in seen.items() if n > 1}
    extra = sum(n - 1 for n in dupes.values())
    print(f"\n### {title}: same method and URL sent again ({extra} avoidable at most)\n")
    for (method, url), n in sorted(dupes.items(), key=lambda kv: -kv[1]):
        where = "; ".join(sorted(sites[(method, url)]))
        print(f"{n:5} x {normalise(method, url, ids)}\n        from: {where}")
    return extra


Counter = collections.Counter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", action="store_true", help="show each group's call sites")
    args = parser.parse_args(argv)
    runner = _load_runner()
    ref, ids = reference_flow(runner)
    lib, lib_ids = library_flow()
    ref_groups = table("reference notebook", ref, ids, args.calls)
    lib_groups = table("library FineTuneSession.run()", lib, lib_ids, args.calls)
    repeated("reference notebook", ref, ids)
    repeated("library", lib, lib_ids)
    print("\n## Difference by route (library - reference)\n")
    for key in sorted(set(ref_groups) | set(lib_groups)):
        diff = lib_groups[key] - ref_groups[key]
        if diff:
            print(f"{diff:+5}  {key}")
    print(f"\ntotal: reference {len(ref)}, library {len(lib)} ({len(lib) - len(ref):+d})")


if __name__ == "__main__":
    main()
