"""One ResourceObserver for the deployer, the registrar and the endpoint handle.

A recording observer sees ``creating -> created`` for endpoint and deployment in order (before
any waiting), ``deleted`` on deletion and on a failed deployment's cleanup, and the journal gets
the same records as with the 0.1 callbacks. The deprecated ``on_*`` keywords still work and warn.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from phi_finetune.azure.deployer import EndpointDeployer
from phi_finetune.azure.registrar import ModelRegistrar, RegisteredModel
from phi_finetune.backends import JournalObserver
from phi_finetune.endpoint import Endpoint
from phi_finetune.errors import DeploymentError
from phi_finetune.journal import Journal
from phi_finetune.observer import (
    CallbackObserver,
    NullObserver,
    ResourceObserver,
    observer_from_callbacks,
)
from phi_finetune.testing import FakeAzureML

BASE = "Phi-3-mini-4k-instruct"
Event = tuple[str, str, str, str | None, bool | None]
"""(event, kind, name, version, billable); billable is None for ``deleted``."""


class RecordingObserver:
    """Records every call; ``puts`` is the number of PUT requests the fake had seen by then."""

    def __init__(self, fake: FakeAzureML | None = None) -> None:
        self.events: list[Event] = []
        self.puts: list[int] = []
        self._fake = fake

    def _note(self, event: Event) -> None:
        self.events.append(event)
        self.puts.append(len(self._fake.find_requests("PUT")) if self._fake is not None else 0)

    def creating(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._note(("creating", kind, name, version, billable))

    def created(
        self,
        kind: str,
        name: str,
        version: str | None = None,
        *,
        billable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._note(("created", kind, name, version, billable))

    def deleted(self, kind: str, name: str, version: str | None = None) -> None:
        self._note(("deleted", kind, name, version, None))


@pytest.fixture
def fake() -> Iterator[FakeAzureML]:
    with FakeAzureML() as service:
        service.add_completed_job("job_1")  # the models below come from their outputs
        for job in ("job_2", "job_3", "job_4"):
            service.add_completed_job(job)
        yield service


def _model(fake: FakeAzureML) -> RegisteredModel:
    return ModelRegistrar(fake.workspace_client(), check_job_output=False).register(
        "job_1", base_model=BASE, version=1
    )


# ---------------------------------------------------------------------- the protocol helpers
def test_the_protocol_lives_in_observer_and_backends_re_exports_it() -> None:
    import phi_finetune.backends as backends

    assert backends.ResourceObserver is ResourceObserver
    assert "ResourceObserver" in backends.__all__
    observers: list[ResourceObserver] = [NullObserver(), CallbackObserver(), RecordingObserver()]
    for observer in observers:
        observer.creating("endpoint", "e", billable=True)
        observer.created("endpoint", "e", details={"a": 1})
        observer.deleted("endpoint", "e")
    assert repr(NullObserver()) == "NullObserver()"


def test_callback_observer_arities_and_fallback() -> None:
    two: list[tuple[Any, ...]] = []
    three: list[tuple[Any, ...]] = []
    fallback = RecordingObserver()
    pairs = CallbackObserver(on_created=lambda *a: two.append(a), fallback=fallback)
    pairs.creating("endpoint", "e", billable=True)
    pairs.created("endpoint", "e", billable=True)
    pairs.deleted("endpoint", "e")
    assert two == [("endpoint", "e")]
    assert fallback.events == [
        ("creating", "endpoint", "e", None, True),
        ("deleted", "endpoint", "e", None, None),
    ]
    triples = CallbackObserver(on_creating=lambda *a: three.append(a), with_version=True)
    triples.creating("model", "m", "3")
    triples.created("model", "m", "3")  # no callback, no fallback: nothing happens
    assert three == [("model", "m", "3")]


def test_observer_from_callbacks_chooses_warns_and_refuses_both() -> None:
    given, fallback = RecordingObserver(), RecordingObserver()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no callbacks: no warning
        assert observer_from_callbacks("X()", given, fallback=fallback) is given
        assert observer_from_callbacks("X()", None, fallback=fallback) is fallback
        assert observer_from_callbacks("X()", None) is None
    with pytest.warns(DeprecationWarning, match=r"X\(\): on_deleted= is deprecated.*observer="):
        wrapped = observer_from_callbacks("X()", None, on_deleted=print, fallback=fallback)
    assert isinstance(wrapped, CallbackObserver)
    assert wrapped.on_deleted is print and wrapped.fallback is fallback
    with pytest.raises(TypeError, match=r"X\(\): pass either observer= or .*on_created="):
        observer_from_callbacks("X()", given, on_created=print)


# ---------------------------------------------------------------------- deployer
def test_deploy_reports_creating_then_created_before_waiting(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    observer = RecordingObserver(fake)
    deployer = EndpointDeployer(ml, poll_interval_s=0.01, observer=observer)
    endpoint = deployer.deploy(model, endpoint_name="observed-one")
    assert observer.events == [
        ("creating", "endpoint", "observed-one", None, True),
        ("created", "endpoint", "observed-one", None, True),
        ("creating", "deployment", "demo", None, True),
        ("created", "deployment", "demo", None, True),
    ]
    # creating before the PUT of its resource, created right after it, before the next one
    endpoint_put, deployment_put = observer.puts[0] + 1, observer.puts[2] + 1
    assert observer.puts[:2] == [endpoint_put - 1, endpoint_put]
    assert observer.puts[2:] == [deployment_put - 1, deployment_put]
    endpoint.delete()  # the endpoint handle carries the deployer's observer
    assert observer.events[-1] == ("deleted", "endpoint", "observed-one", None, None)
    assert fake.endpoints == {}


def test_begin_deploy_observer_replaces_the_deployers(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    default, chosen = RecordingObserver(), RecordingObserver()
    deployer = EndpointDeployer(ml, poll_interval_s=0.01, observer=default)
    handle = deployer.begin_deploy(model, endpoint_name="chosen-one", observer=chosen)
    assert [e[:2] for e in chosen.events] == [("creating", "endpoint"), ("created", "endpoint")]
    handle.result()
    assert [e[1] for e in chosen.events] == ["endpoint", "endpoint", "deployment", "deployment"]
    deployer.delete("chosen-one")
    assert default.events == [("deleted", "endpoint", "chosen-one", None, None)]


def test_failed_deployment_reports_both_deletions(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    fake.script_deployment("Failed")
    observer = RecordingObserver()
    with pytest.raises(DeploymentError, match="was deleted"):
        EndpointDeployer(ml, poll_interval_s=0.01).deploy(
            model, endpoint_name="fails-here", observer=observer
        )
    assert [e[:3] for e in observer.events] == [
        ("creating", "endpoint", "fails-here"),
        ("created", "endpoint", "fails-here"),
        ("creating", "deployment", "demo"),
        ("created", "deployment", "demo"),
        ("deleted", "deployment", "demo"),
        ("deleted", "endpoint", "fails-here"),
    ]
    assert fake.endpoints == {}


def test_journal_observer_records_what_the_callbacks_did(fake: FakeAzureML, tmp_path: Any) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    journal = Journal.create(tmp_path, backend="azure")
    endpoint = EndpointDeployer(ml, poll_interval_s=0.01).deploy(
        model, endpoint_name="journaled-one", observer=JournalObserver(journal)
    )
    records = {(r.kind, r.name): r for r in journal.resources()}
    assert set(records) == {("endpoint", "journaled-one"), ("deployment", "demo")}
    assert all(r.billable and r.state == "created" for r in records.values())
    endpoint.delete()
    assert journal.resources(alive_only=True) == []  # the deployment went with its endpoint

    registrar = ModelRegistrar(ml, observer=JournalObserver(journal), check_job_output=False)
    registered = registrar.register("job_2", base_model=BASE, version=7)
    (model_record,) = journal.resources(kind="model")
    assert (model_record.name, model_record.version) == (registered.name, "7")
    assert model_record.state == "created" and not model_record.billable


# ---------------------------------------------------------------------- registrar
def test_registrar_reports_creating_then_created_once(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    observer = RecordingObserver(fake)
    registrar = ModelRegistrar(ml, observer=observer, check_job_output=False)
    model = registrar.register("job_3", base_model=BASE, version=2)
    assert observer.events == [
        ("creating", "model", model.name, "2", False),
        ("created", "model", model.name, "2", False),
    ]
    assert observer.puts[1] == observer.puts[0] + 1  # the create request sits between the two
    assert registrar.register("job_3", base_model=BASE, version=2) == model
    assert len(observer.events) == 2  # reusing the existing version creates nothing


# ---------------------------------------------------------------------- deprecated keywords
def test_deprecated_deployer_callbacks_still_work_and_warn(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    model = _model(fake)
    created: list[tuple[str, str]] = []
    deleted: list[tuple[str, str]] = []
    with pytest.warns(DeprecationWarning, match=r"EndpointDeployer\(\): on_deleted="):
        deployer = EndpointDeployer(
            ml, poll_interval_s=0.01, on_deleted=lambda k, n: deleted.append((k, n))
        )
    with pytest.warns(DeprecationWarning, match=r"EndpointDeployer\.deploy: on_created=") as info:
        endpoint = deployer.deploy(
            model, endpoint_name="old-style", on_created=lambda k, n: created.append((k, n))
        )
    assert info[0].filename == __file__  # the warning points at the caller
    assert created == [("endpoint", "old-style"), ("deployment", "demo")]
    endpoint.delete()  # on_deleted of the deployer is the fallback of deploy's callbacks
    assert deleted == [("endpoint", "old-style")]
    with pytest.warns(DeprecationWarning, match=r"EndpointDeployer\.begin_deploy: on_creating="):
        handle = deployer.begin_deploy(
            model, endpoint_name="old-begin", on_creating=lambda k, n: created.append((k, n))
        )
    handle.result()
    assert created[-2:] == [("endpoint", "old-begin"), ("deployment", "demo")]
    with pytest.raises(TypeError, match="not both"):
        deployer.deploy(model, observer=RecordingObserver(), on_created=print)


def test_deprecated_registrar_callbacks_still_work_and_warn(fake: FakeAzureML) -> None:
    events: list[tuple[str, ...]] = []
    with pytest.warns(
        DeprecationWarning, match=r"ModelRegistrar\(\): on_creating=, on_created= are deprecated"
    ):
        registrar = ModelRegistrar(
            fake.workspace_client(),
            on_creating=lambda *a: events.append(("creating", *a)),
            on_created=lambda *a: events.append(("created", *a)),
            check_job_output=False,
        )
    model = registrar.register("job_4", base_model=BASE, version=5)
    assert events == [("creating", "model", model.name, "5"), ("created", "model", model.name, "5")]


def test_deprecated_endpoint_on_deleted_still_works_and_warns(fake: FakeAzureML) -> None:
    ml = fake.workspace_client()
    deployer = EndpointDeployer(ml, poll_interval_s=0.01)
    deployer.deploy(_model(fake), endpoint_name="attach-old")
    deployer.deploy(_model(fake), endpoint_name="attach-older")
    deleted: list[tuple[str, str]] = []
    with pytest.warns(DeprecationWarning, match=r"Endpoint\.from_name: on_deleted="):
        handle = Endpoint.from_name(
            ml, "attach-old", on_deleted=lambda k, n: deleted.append((k, n))
        )
    handle.delete()
    assert deleted == [("endpoint", "attach-old")]
    with pytest.warns(DeprecationWarning) as record:
        older = Endpoint.from_azure(
            ml, "attach-older", on_deleted=lambda k, n: deleted.append((k, n))
        )
    messages = [str(w.message) for w in record]
    assert any("from_azure is deprecated" in m for m in messages)
    assert any(m.startswith("Endpoint.from_azure: on_deleted=") for m in messages)
    older.delete()
    assert deleted[-1] == ("endpoint", "attach-older") and fake.endpoints == {}


def test_endpoint_reports_its_own_kind_once() -> None:
    observer = RecordingObserver()
    endpoint = Endpoint(
        "ep", "http://127.0.0.1:9/score", None, deleter=lambda: None, observer=observer, kind="x"
    )
    endpoint.delete()
    endpoint.delete()  # already deleted: nothing is reported again
    assert observer.events == [("deleted", "x", "ep", None, None)]
    calls: list[tuple[str, str]] = []
    with pytest.warns(DeprecationWarning, match=r"Endpoint\(\): on_deleted="):
        old = Endpoint(
            "ep",
            "http://127.0.0.1:9/score",
            None,
            deleter=lambda: None,
            on_deleted=lambda k, n: calls.append((k, n)),
        )
    old.delete()
    assert calls == [("endpoint", "ep")]
