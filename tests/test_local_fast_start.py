"""Fast start (issue 16, item 3): the server loads the registered artifact folder without MLflow,
a new SQLite MLflow store starts from a cached schema, one ``ServerLimits`` object."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("mlflow")

from phi_finetune.local import _mlflow_store
from phi_finetune.local._mlflow_store import seed_sqlite_store
from phi_finetune.local.registry import _parse_models_uri, chat_model_folder
from phi_finetune.local.server import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    LocalServer,
    ServerLimits,
)
from phi_finetune.local.tracking import MlflowTracker
from phi_finetune.session import FineTuneSession


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(_mlflow_store.ENV_CACHE_DIR, str(folder))
    return folder


@pytest.fixture
def nothing_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As for an MLflow version the package ships no schema for: the cache path is used."""
    monkeypatch.setattr(_mlflow_store, "_SHIPPED_DIR", tmp_path / "no-shipped-schemas")


def _no_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make MLflow's schema migrations fail: a store must not be built by them."""
    from mlflow.store.db import utils as db_utils

    def refuse(engine: Any) -> None:
        raise AssertionError("MLflow ran its schema migrations for a new store")

    monkeypatch.setattr(db_utils, "_upgrade_db", refuse)


# --------------------------------------------------------------------------- tracking store


@pytest.mark.slow
def test_new_tracking_store_comes_from_the_cached_schema_and_keeps_everything(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, nothing_shipped: None
) -> None:
    from mlflow.tracking import MlflowClient

    from phi_finetune.local.results import StepMetrics

    first = MlflowTracker.start(f"sqlite:///{tmp_path / 'one' / 'mlflow.db'}")  # builds the cache
    first.finish("FINISHED")
    assert list(cache_dir.glob("mlflow-*-schema.db"))
    _no_migrations(monkeypatch)
    uri = f"sqlite:///{tmp_path / 'two' / 'mlflow.db'}"
    tracker = MlflowTracker.start(uri)
    tracker.log_params({"learning_rate": 0.01})
    tracker.log_step(
        StepMetrics(step=1, loss=2.5, tokens_per_s=10.0, learning_rate=0.01, epoch=0.5)
    )
    tracker.log_metric("eval_loss", 1.5, 1)
    tracker.finish("FINISHED")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(str(tracker.run_id))
    assert run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.01"}
    assert run.data.metrics["loss"] == 2.5 and run.data.metrics["eval_loss"] == 1.5
    names = {e.name: e for e in client.search_experiments()}
    assert "Default" in names  # MLflow adds it to a seeded store as to its own
    ours = [e for n, e in names.items() if n != "Default"]
    assert ours and ours[0].artifact_location == (tmp_path / "two" / "mlartifacts").as_uri()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["shipped", "cached"])
def test_seeded_store_has_mlflows_own_schema(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    from mlflow.tracking import MlflowClient

    if source == "cached":
        monkeypatch.setattr(_mlflow_store, "_SHIPPED_DIR", tmp_path / "no-shipped-schemas")

    own = tmp_path / "own.db"
    MlflowClient(tracking_uri=f"sqlite:///{own}").search_experiments()  # MLflow's migrations
    seeded = tmp_path / "seeded.db"
    assert seed_sqlite_store(f"sqlite:///{seeded}") is True
    MlflowClient(tracking_uri=f"sqlite:///{seeded}").search_experiments()

    def shape(path: Path) -> tuple[set[tuple[str, str]], list[Any], list[Any]]:
        with sqlite3.connect(path) as db:
            columns = {
                (table, column[1])
                for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                for column in db.execute(f'PRAGMA table_info("{table}")')
            }
            version = db.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = db.execute("SELECT experiment_id, name FROM experiments").fetchall()
        return columns, version, experiments

    assert shape(seeded) == shape(own)


def test_seeding_never_touches_an_existing_store_or_other_uris(
    tmp_path: Path, cache_dir: Path
) -> None:
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not yours")
    assert seed_sqlite_store(f"sqlite:///{existing}") is False
    assert existing.read_bytes() == b"not yours"
    assert seed_sqlite_store("sqlite:///:memory:") is False
    assert seed_sqlite_store(f"file://{tmp_path}/mlruns") is False
    assert seed_sqlite_store("http://127.0.0.1:5000") is False
    assert not cache_dir.exists()  # nothing was built for URIs it does not seed


def test_unusable_cache_falls_back_to_mlflows_own_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_shipped: None
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(_mlflow_store.ENV_CACHE_DIR, str(blocker / "cache"))  # cannot be made
    target = tmp_path / "store" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{target}") is False
    assert not target.exists()


def test_the_pinned_mlflow_has_a_shipped_schema() -> None:
    from importlib import metadata

    constraints = (Path(__file__).resolve().parents[1] / "constraints.txt").read_text()
    pinned = next(
        line.split("==", 1)[1].strip()
        for line in constraints.splitlines()
        if line.startswith("mlflow==")
    )
    shipped = _mlflow_store.shipped_schema_path(pinned)
    assert shipped.is_file(), f"run `python scripts/dump_mlflow_schema.py` for MLflow {pinned}"
    assert metadata.version("mlflow") == pinned  # so the shape test checks the shipped file


@pytest.mark.slow
def test_first_store_on_a_fresh_machine_runs_no_migrations(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    _no_migrations(monkeypatch)
    uri = f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}"
    tracker = MlflowTracker.start(uri)
    tracker.log_metric("loss", 2.0, 1)
    tracker.finish("FINISHED")
    assert MlflowClient(tracking_uri=uri).get_run(str(tracker.run_id)).data.metrics == {"loss": 2.0}
    assert not cache_dir.exists()  # nothing built: the shipped schema was enough


# --------------------------------------------------------------------------- model resolution


def test_models_uri_parsing() -> None:
    assert _parse_models_uri("models:/tiny/3") == ("tiny", "3", None)
    assert _parse_models_uri("models:/tiny@champion") == ("tiny", None, "champion")
    assert _parse_models_uri("models:/tiny/latest") == (None, None, None)
    assert _parse_models_uri("runs:/abc/model") == (None, None, None)
    assert _parse_models_uri("/some/folder") == (None, None, None)


def test_only_a_phi_finetune_pyfunc_on_local_disk_resolves_to_a_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "artifacts" / "merged").mkdir(parents=True)
    (model / "artifacts" / "merged" / "config.json").write_text("{}")

    def mlmodel(code: str) -> None:
        (model / "MLmodel").write_text(
            textwrap.dedent(
                f"""\
                flavors:
                  python_function:
                    artifacts:
                      model:
                        path: artifacts/merged
                    loader_module: mlflow.pyfunc.loaders.code_model
                    model_code_path: {code}
                """
            )
        )

    mlmodel("/x/phi_finetune/local/_pyfunc_entry.py")
    assert chat_model_folder(model) == model / "artifacts" / "merged"
    assert chat_model_folder(model.as_uri()) == model / "artifacts" / "merged"
    assert chat_model_folder("s3://bucket/model") is None
    mlmodel("/x/someone_else.py")
    assert chat_model_folder(model) is None
    assert chat_model_folder(tmp_path / "missing") is None


@pytest.mark.slow
def test_registered_uri_loads_from_its_artifact_folder_without_a_pyfunc_load(
    trained_run_copy: FineTuneSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    from phi_finetune.local.registry import load_chat_model, resolve_model_folder

    ref = trained_run_copy.register()
    folder = resolve_model_folder(ref.uri, tracking_uri=ref.tracking_uri)
    state = Path(trained_run_copy.config.state_dir)
    assert folder is not None and (folder / "config.json").is_file()
    assert folder.is_relative_to(state / "mlartifacts")  # the registry's copy, not the run's

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a full MLflow pyfunc load")

    monkeypatch.setattr(mlflow.pyfunc, "load_model", refuse)
    model, tokenizer = load_chat_model(ref.uri, tracking_uri=ref.tracking_uri)
    assert model.config.model_type == "phi3" and tokenizer.chat_template
    alias_uri = f"models:/{ref.name}@{ref.alias}"
    assert resolve_model_folder(alias_uri, tracking_uri=ref.tracking_uri) == folder


@pytest.mark.slow
def test_deployed_server_process_does_not_import_mlflow(
    trained_run_copy: FineTuneSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deploy step resolves the folder once; the server process never imports MLflow (a
    package that fails on import shadows it in the server's environment)."""
    session = trained_run_copy
    session.register()
    blocker = tmp_path / "no-mlflow"
    (blocker / "mlflow").mkdir(parents=True)
    (blocker / "mlflow" / "__init__.py").write_text(
        "raise ImportError('the local server imported mlflow')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    try:
        endpoint = session.deploy()
        reply = session.score_sample()
        assert endpoint.scoring_uri.startswith("http://127.0.0.1:")
        assert isinstance(reply.reply, str)
    finally:
        session.teardown()


# --------------------------------------------------------------------------- limits


def test_server_limits_one_object_with_compatible_keywords(tmp_path: Path) -> None:
    assert ServerLimits().max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert ServerLimits().max_connections == DEFAULT_MAX_CONNECTIONS
    assert ServerLimits().batch_window_ms == DEFAULT_BATCH_WINDOW_MS
    base = ServerLimits(max_body_bytes=10, max_batch=2)
    server = LocalServer(tmp_path, limits=base, max_batch=3, header_timeout=1.5)
    assert server.limits == ServerLimits(max_body_bytes=10, max_batch=3, header_timeout=1.5)
    assert (server.max_body_bytes, server.max_batch, server.header_timeout) == (10, 3, 1.5)
    assert LocalServer(tmp_path).limits == ServerLimits()
    with pytest.raises(AttributeError, match="no_such_limit"):
        _ = server.no_such_limit
    with pytest.raises(AttributeError):
        base.max_batch = 4  # type: ignore[misc]
