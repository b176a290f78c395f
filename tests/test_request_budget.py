"""The library's whole flow makes no more HTTP requests than the reference notebook (issue 12,
item 5), and what one step read is not read again by the next."""

from __future__ import annotations

import collections
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from phi_finetune.azure.compute import ComputeSelector
from phi_finetune.testing import FakeAzureML

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_request_count.py"


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_request_count", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_request_count"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flows() -> tuple[list[Any], list[Any]]:
    bench = _bench()
    reference, _ = bench.reference_flow(bench._load_runner())
    library, _ = bench.library_flow()
    return reference, library


def test_library_makes_no_more_requests_than_the_reference(
    flows: tuple[list[Any], list[Any]],
) -> None:
    reference, library = flows
    assert len(library) <= len(reference), (
        f"library {len(library)} requests, reference notebook {len(reference)}"
    )


def test_each_fact_of_the_plan_is_read_once(flows: tuple[list[Any], list[Any]]) -> None:
    _, library = flows
    # method + URL of what plan/submit/deploy read: the size catalogue, the foundation model
    # version by label, the workspace's region.
    counts = collections.Counter((method, url.split("?")[0]) for method, url, *_ in library)
    by_route = collections.Counter(route for _, _, route, _ in library)
    assert by_route["compute.list_sizes"] == 1
    # plan() and the deploy's own check: the cluster's quota usage is read again at deploy.
    assert by_route["compute.list_usage"] == 2
    model_gets = [n for (m, u), n in counts.items() if m == "GET" and "/models/" in u]
    assert model_gets and max(model_gets) <= 2  # label lookup + the REST details, plan only
    assert by_route["assets.version_put"] == 3  # train and test data, the model; not test_gen
    assert by_route["deployments.get"] <= 1  # the LRO poller's; no extra state read


def test_select_right_after_plan_reads_nothing_again() -> None:
    with FakeAzureML() as fake:
        client = fake.workspace_client()
        selector = ComputeSelector(client, cluster="gpu-new", vm_size="Standard_NC24ads_A100_v4")
        planned = selector.plan()
        assert planned.will_create
        fake.clear_requests()
        selected = selector.select()
        routes = [r.route for r in fake.requests]
        assert "compute.list_sizes" not in routes and "compute.list_usage" not in routes
        assert routes.count("compute.get") <= 1  # only the create poller's
        assert selected.created and not selected.will_create
        assert fake.find_requests("PUT", route="compute.create")


def test_select_after_a_stale_plan_checks_again() -> None:
    with FakeAzureML() as fake:
        client = fake.workspace_client()
        selector = ComputeSelector(client, cluster="gpu-new", vm_size="Standard_NC24ads_A100_v4")
        selector.plan()
        selector.plan_reuse_s = -1.0
        fake.clear_requests()
        selector.select()
        routes = [r.route for r in fake.requests]
        assert "compute.list_usage" in routes  # the quota is checked again


def test_deleting_a_missing_endpoint_is_one_request_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from phi_finetune.endpoint import delete_online_endpoint

    with FakeAzureML() as fake:
        client = fake.workspace_client()
        fake.clear_requests()
        with caplog.at_level(logging.INFO, logger="phi_finetune.endpoint"):
            delete_online_endpoint(client, "never-made")
        assert [r.method for r in fake.requests if r.route != "workspace.get"] == ["DELETE"]
        assert "never-made was already deleted" in caplog.text
