"""Safe rollouts against FakeAzureML through the real azure-ai-ml SDK: v1 at 100%, v2 added,
90/10, 0/100, v1 deleted; a kill in the middle and a resume; rollback; mirrored traffic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.deployment_spec import DeploymentSpec
from phi_finetune.azure.registrar import ModelRegistrar
from phi_finetune.azure.rollout import Rollout, current_deployment
from phi_finetune.backends import JournalObserver
from phi_finetune.errors import ConfigurationError, DeploymentError, RunStateError
from phi_finetune.journal import Journal
from phi_finetune.testing import FakeAzureML

ENDPOINT = "ep-rollout"
SIZE = "Standard_NC24ads_A100_v4"
REQUEST = {"input_data": {"input_string": [[{"role": "user", "content": "hi"}]]}}


class Killed(BaseException):
    """A simulated process kill (nothing after it may be written)."""


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")
        service.add_completed_job("job_2")
        yield service


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.create(tmp_path / "state", backend="azure")


def _v1_at_100(fake: FakeAzureML, journal: Journal) -> tuple[str, str]:
    """An endpoint with deployment ``blue`` (model version 1) at 100%; the two model ids."""
    ml = fake.workspace_client()
    registrar = ModelRegistrar(ml, check_job_output=False)
    v1 = registrar.register("job_1", base_model="Phi-4", name="phi-ft", version=1)
    v2 = registrar.register("job_2", base_model="Phi-4", name="phi-ft", version=2)
    EndpointDeployer(ml, poll_interval_s=0, observer=JournalObserver(journal)).deploy(
        v1, endpoint_name=ENDPOINT, deployment_name="blue", instance_type=SIZE
    )
    assert fake.endpoints[ENDPOINT]["properties"]["traffic"] == {"blue": 100}
    return v1.asset_id, v2.asset_id


def _begin(fake: FakeAzureML, journal: Journal, model: str, **kwargs: Any) -> Rollout:
    spec = DeploymentSpec(
        endpoint_name=ENDPOINT, deployment_name=kwargs.pop("name", "green"), instance_type=SIZE
    )
    return Rollout.begin(
        fake.workspace_client(),
        journal,
        model,
        endpoint_name=ENDPOINT,
        spec=spec,
        poll_interval_s=0,
        **kwargs,
    )


def _reload(fake: FakeAzureML, journal: Journal) -> Rollout:
    """A fresh process: only the journal on disk."""
    again = Journal.load(journal.path.parents[2], journal.run_id)
    return Rollout.load(fake.workspace_client(), again, poll_interval_s=0)


def _traffic(fake: FakeAzureML) -> dict[str, int]:
    props = fake.endpoints[ENDPOINT]["properties"]
    return {k: v for k, v in props["traffic"].items() if v}


def _deployment_puts(fake: FakeAzureML, name: str) -> int:
    return len(fake.find_requests("PUT", f"/onlineEndpoints/{ENDPOINT}/deployments/{name}"))


def _score(fake: FakeAzureML, times: int) -> list[str]:
    """Where ``times`` unpinned scoring calls went."""
    import requests

    key = fake.endpoint_keys(ENDPOINT)[0]
    before = len(fake.scoring_calls)
    for _ in range(times):
        reply = requests.post(
            fake.scoring_uri(ENDPOINT),
            json=REQUEST,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
    return [str(dep) for _, dep, _ in fake.scoring_calls[before:]]


def test_rollout_90_10_then_0_100_with_a_kill_and_resume(
    fake: FakeAzureML, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineEndpointOperations

    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2, steps=(10, 100))
    assert rollout.status().stages == (
        "create deployment green with 0% live traffic",
        "live traffic blue 90% / green 10%",
        "live traffic blue 0% / green 100%",
        "delete deployment blue",
    )
    # The deployment is journaled before its create request.
    (green,) = [r for r in journal.resources(kind="deployment") if r.name == "green"]
    assert green.state == "creating" and green.billable

    status = rollout.start()
    assert status.stages_done == 1 and _traffic(fake) == {"blue": 100}
    assert (ENDPOINT, "green") in fake.deployments
    assert _score(fake, 20) == ["blue"] * 20

    status = rollout.step()
    assert _traffic(fake) == {"blue": 90, "green": 10}
    assert status.traffic == {"blue": 90, "green": 10}
    routed = _score(fake, 100)
    assert (routed.count("blue"), routed.count("green")) == (90, 10)

    # Killed right after the service accepted the 0/100 update: the reply is lost.
    real = OnlineEndpointOperations.begin_create_or_update

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(OnlineEndpointOperations, "begin_create_or_update", killed)
    with pytest.raises(Killed):
        rollout.finish()
    monkeypatch.undo()
    on_disk = Journal.load(journal.path.parents[2], journal.run_id)
    plan = on_disk.resource("deployment", "green")
    assert plan is not None
    assert plan.details["rollout"]["pending"] == {"traffic": {"green": 100}, "mirror_traffic": {}}
    assert plan.details["rollout"]["stages_done"] == 2

    resumed = _reload(fake, journal)
    status = resumed.finish()
    assert status.phase == "done" and status.next_stage is None
    assert _traffic(fake) == {"green": 100}
    assert list(fake.deployments) == [(ENDPOINT, "green")]
    # One create request for the new deployment, kill or not.
    assert _deployment_puts(fake, "green") == 1
    assert _score(fake, 10) == ["green"] * 10
    # Every traffic state is journaled as it was applied.
    assert [h["traffic"] for h in status.history] == [
        {"blue": 100},
        {"blue": 90, "green": 10},
        {"green": 100},
    ]
    final = Journal.load(journal.path.parents[2], journal.run_id)
    assert not final.resource("deployment", "blue").alive  # type: ignore[union-attr]
    assert final.resource("deployment", "green").state == "created"  # type: ignore[union-attr]
    assert current_deployment(final, "blue") == "green"
    assert resumed.endpoint().deployment_name == "green"
    # Finishing again is a no-op (no request changes anything).
    puts = len(fake.find_requests("PUT"))
    assert resumed.finish().phase == "done" and len(fake.find_requests("PUT")) == puts
    with pytest.raises(RunStateError, match="deleted 'blue'"):
        resumed.rollback()


def test_kill_right_after_the_deployment_create_request_does_not_create_it_twice(
    fake: FakeAzureML, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineDeploymentOperations

    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2)
    real = OnlineDeploymentOperations.begin_create_or_update

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise Killed

    monkeypatch.setattr(OnlineDeploymentOperations, "begin_create_or_update", killed)
    with pytest.raises(Killed):
        rollout.start()
    monkeypatch.undo()
    fake.lro_polls = 3  # the deployment is still being created when the new process looks

    status = _reload(fake, journal).finish()
    assert status.phase == "done" and _traffic(fake) == {"green": 100}
    assert _deployment_puts(fake, "green") == 1
    assert list(fake.deployments) == [(ENDPOINT, "green")]


def test_rollback_returns_traffic_and_deletes_the_new_deployment(
    fake: FakeAzureML, journal: Journal
) -> None:
    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2, steps=(10, 50, 100))
    rollout.start()
    rollout.step()
    rollout.step()
    assert _traffic(fake) == {"blue": 50, "green": 50}
    status = rollout.rollback()
    assert status.phase == "rolled_back" and status.traffic == {"blue": 100}
    assert _traffic(fake) == {"blue": 100}
    assert list(fake.deployments) == [(ENDPOINT, "blue")]
    assert not journal.resource("deployment", "green").alive  # type: ignore[union-attr]
    assert current_deployment(journal, "blue") == "blue"
    assert _score(fake, 5) == ["blue"] * 5
    # A new rollout may start after a rollback.
    again = _begin(fake, journal, v2, name="green2", steps=(100,))
    assert again.finish().phase == "done" and _traffic(fake) == {"green2": 100}


def test_rollback_interrupted_is_finished_by_a_resume(
    fake: FakeAzureML, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.ai.ml.operations import OnlineDeploymentOperations

    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2)
    rollout.start()
    rollout.step()

    def killed(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise Killed

    monkeypatch.setattr(OnlineDeploymentOperations, "begin_delete", killed)
    with pytest.raises(Killed):
        rollout.rollback()
    monkeypatch.undo()
    assert _traffic(fake) == {"blue": 100}
    status = _reload(fake, journal).finish()
    assert status.phase == "rolled_back" and list(fake.deployments) == [(ENDPOINT, "blue")]


def test_mirrored_traffic_is_a_shadow_test(fake: FakeAzureML, journal: Journal) -> None:
    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2, mirror_percent=20)
    status = rollout.start()
    assert status.mirror_traffic == {"green": 20}
    assert fake.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] == {"green": 20}
    mirrored_before = len(fake.mirrored_calls)
    assert _score(fake, 50) == ["blue"] * 50  # the live answers all come from blue
    shadow = fake.mirrored_calls[mirrored_before:]
    assert len(shadow) == 10 and {dep for _, dep, _ in shadow} == {"green"}
    # Live traffic on green ends the mirror (a deployment gets one or the other).
    status = rollout.step()
    assert status.mirror_traffic == {} and status.traffic == {"blue": 90, "green": 10}
    assert fake.endpoints[ENDPOINT]["properties"]["mirrorTraffic"] == {}


@pytest.mark.parametrize(
    ("kwargs", "key", "words"),
    [
        ({"steps": (50, 10, 100)}, "steps", "rise strictly"),
        ({"steps": (10, 50)}, "steps", "must end at 100"),
        ({"steps": ()}, "steps", "non-empty"),
        ({"mirror_percent": 60}, "mirror_percent", "at most 50%"),
        ({"old_deployment": "nope"}, "old_deployment", "not a deployment of endpoint"),
        ({"name": "blue"}, "deployment_name", "another name"),
    ],
)
def test_bad_plans_are_refused_before_anything_is_created(
    fake: FakeAzureML, journal: Journal, kwargs: dict[str, Any], key: str, words: str
) -> None:
    _, v2 = _v1_at_100(fake, journal)
    puts = len(fake.find_requests("PUT"))
    with pytest.raises(ConfigurationError, match=words) as caught:
        _begin(fake, journal, v2, **kwargs)
    assert caught.value.key == key
    assert len(fake.find_requests("PUT")) == puts
    assert [r.name for r in journal.resources(kind="deployment")] == ["blue"]


def test_a_second_rollout_while_one_is_in_progress_is_refused(
    fake: FakeAzureML, journal: Journal
) -> None:
    v1, v2 = _v1_at_100(fake, journal)
    first = _begin(fake, journal, v2)
    # The same plan again (a re-run cell) is the same rollout.
    assert _begin(fake, journal, v2).status() == first.status()
    with pytest.raises(RunStateError, match="in progress"):
        _begin(fake, journal, v1, name="other")


def test_failed_new_deployment_keeps_the_old_one_serving(
    fake: FakeAzureML, journal: Journal
) -> None:
    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2)
    fake.script_deployment("Failed", logs=["Loading model", "CUDA out of memory"])
    with pytest.raises(DeploymentError, match="rollout rollback") as caught:
        rollout.start()
    assert "CUDA out of memory" in caught.value.log_lines
    assert _traffic(fake) == {"blue": 100} and ENDPOINT in fake.endpoints
    assert rollout.rollback().phase == "rolled_back"
    assert list(fake.deployments) == [(ENDPOINT, "blue")]


def test_status_prints_the_stages(fake: FakeAzureML, journal: Journal) -> None:
    _, v2 = _v1_at_100(fake, journal)
    rollout = _begin(fake, journal, v2, mirror_percent=10)
    rollout.start()
    text = str(rollout.status())
    assert "[x] create deployment green with 0% live traffic, 10% of the traffic mirrored" in text
    assert "[ ] live traffic blue 90% / green 10%" in text
    assert "mirrored: green 10%" in text
    data = rollout.status().to_dict()
    assert json.loads(json.dumps(data))["next_stage"] == "live traffic blue 90% / green 10%"
