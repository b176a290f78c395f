"""The standby server process (issue 16, item 3): the endpoint's imports run while the model
trains; deploy hands the waiting process its command line. It never outlives its launcher and
never leaves a process behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from phi_finetune.errors import LocalBackendError
from phi_finetune.local._serve_process import server_environment
from phi_finetune.local.server import LocalServer
from phi_finetune.local.standby import ServerStandby
from phi_finetune.local.tiny_model import build_tiny_model

pytestmark = pytest.mark.slow

CHAT = [{"role": "user", "content": "the cat sat"}]
GREEDY = {"max_new_tokens": 8, "do_sample": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("standby") / "tiny")


def _reply(server: LocalServer) -> str:
    return server.score(CHAT, GREEDY).text


def test_a_server_started_from_a_standby_is_that_process_and_answers_as_a_new_one(
    model_dir: Path, tmp_path: Path
) -> None:
    standby = ServerStandby(tmp_path / "server.log", model_type="phi3").start()
    standby_pid = standby.pid
    with LocalServer(model_dir, threads=1) as cold:
        expected = _reply(cold)
        cold_pid = cold.pid
    server = LocalServer(model_dir, threads=1, log_path=tmp_path / "other.log")
    try:
        server.start(standby=standby)
        assert server.pid == standby_pid != cold_pid
        assert server.log_path == tmp_path / "server.log"  # where the standby writes
        assert not standby.alive and standby.pid is None  # the server owns the process now
        assert _reply(server) == expected
        # Its key came over stdin: not on its command line, not in its environment.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{server.pid}/environ").read_bytes()
        assert server.key.encode() not in cmdline
        assert server.key.encode() not in environ
        standby.stop()  # a no-op once launched: the server keeps running
        assert server.running
    finally:
        server.stop()
    assert not server.running
    assert not Path(f"/proc/{standby_pid}").exists()


def _is_zombie_free(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()


def test_a_standby_never_imports_mlflow(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the server it becomes: a package that fails on import shadows MLflow."""
    blocker = tmp_path / "no-mlflow"
    (blocker / "mlflow").mkdir(parents=True)
    (blocker / "mlflow" / "__init__.py").write_text("raise ImportError('imported mlflow')\n")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    standby = ServerStandby(tmp_path / "server.log", model_type="phi3").start()
    with LocalServer(model_dir, threads=1) as server:
        server.stop()
        server.start(standby=standby)
        assert server.pid is not None and _reply(server)
    log = (tmp_path / "server.log").read_text()
    assert "could not import" not in log and "imported mlflow" not in log


def test_a_dropped_session_stops_its_standby(tmp_path: Path) -> None:
    import gc

    from phi_finetune.local.backend import LocalBackend

    backend = LocalBackend()

    class _Ctx:
        run_dir = tmp_path
        config = type("C", (), {"local": type("L", (), {"base_model": None})()})()

    backend._start_standby(_Ctx())  # type: ignore[arg-type]
    assert backend._standby is not None
    process = backend._standby._process
    assert process is not None
    del backend
    gc.collect()
    assert process.poll() is not None


def test_a_standby_that_is_gone_means_a_new_server_process(model_dir: Path, tmp_path: Path) -> None:
    standby = ServerStandby(tmp_path / "standby.log").start()
    assert standby._process is not None
    standby._process.kill()
    standby._process.wait(timeout=30)
    with pytest.raises(LocalBackendError, match="not running"):
        standby.launch(["--model", str(model_dir)], "k")
    with LocalServer(model_dir, threads=1) as server:
        server_pid = server.pid
        assert server.running
        assert server.log_path != tmp_path / "standby.log"
    assert server_pid is not None
    standby.stop()


def test_a_standby_exits_when_its_launcher_closes_stdin_or_after_its_idle_timeout(
    tmp_path: Path,
) -> None:
    standby = ServerStandby(tmp_path / "a.log").start()
    process = standby._process
    assert process is not None and process.stdin is not None
    process.stdin.close()  # what the kernel does when the launcher dies, even on SIGKILL
    assert process.wait(timeout=60) == 0
    standby.stop()

    idle = ServerStandby(tmp_path / "b.log", idle_timeout=0.5).start()
    assert idle._process is not None
    assert idle._process.wait(timeout=60) == 0
    assert "no model to serve within" in (tmp_path / "b.log").read_text()
    idle.stop()


def test_a_standby_exits_when_its_launcher_is_killed(tmp_path: Path) -> None:
    launcher = (
        "import sys, time\n"
        "from phi_finetune.local.standby import ServerStandby\n"
        f"s = ServerStandby({str(tmp_path / 'c.log')!r}).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", launcher],
        stdout=subprocess.PIPE,
        env=server_environment(),
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{child}").exists() and _is_zombie_free(child):
            assert time.monotonic() < deadline, "the standby outlived its killed launcher"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)


def test_a_command_that_is_not_the_launchers_json_is_refused(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "phi_finetune.local.standby", "--idle-timeout", "60"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=server_environment(),
    )
    out, _ = process.communicate(json.dumps({"argv": []}).encode() + b"\n", timeout=120)
    assert process.returncode == 2
    assert b"not the JSON its launcher sends" in out


def test_the_demo_config_deploys_from_the_standby_it_started(tmp_path: Path) -> None:
    from phi_finetune.cli.demo import demo_config
    from phi_finetune.local.backend import SERVER_KIND, LocalBackend
    from phi_finetune.session import FineTuneSession

    config = demo_config(tmp_path, max_steps=2)
    assert config.local.prestart_server
    session = FineTuneSession.from_config(config)
    backend = session.backend
    assert isinstance(backend, LocalBackend)
    session.fine_tune()
    standby = backend._standby  # it waits while register runs
    assert standby is not None and standby.alive
    standby_pid = standby.pid
    session.register()
    try:
        session.deploy()
        record = session.journal.resource(SERVER_KIND)
        assert record is not None and record.details["pid"] == standby_pid
        assert backend._standby is None
        assert session.score_sample().reply is not None
    finally:
        session.teardown()
    assert not Path(f"/proc/{standby_pid}").exists()


def test_a_kill_while_the_standby_starts_the_server_is_cleaned_up_on_resume(
    tmp_path: Path,
) -> None:
    """Journaled ``creating`` with the standby's pid only: deleting it stops that process."""
    from phi_finetune.journal_records import ResourceRecord
    from phi_finetune.local.backend import SERVER_KIND, LocalBackend

    standby = ServerStandby(tmp_path / "s.log").start()
    process = standby._process
    assert process is not None
    # As after a fine-tune step: Python runs in the standby (it ignores SIGPIPE from its start-up
    # on). Sent before that, in this test after the others of this module, the SIGTERM went
    # without effect in 4 of 6 runs; the cause is not known (alone, stop() right after start()
    # ends the process at once).
    deadline = time.monotonic() + 60
    while "SigIgn:\t0000000000000000" in Path(f"/proc/{process.pid}/status").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    record = ResourceRecord(
        SERVER_KIND,
        "local-x",
        state="creating",
        details={"model_uri": "models:/nothing/1", "standby_pid": process.pid},
    )
    LocalBackend().delete_resource(None, record)  # type: ignore[arg-type]
    assert process.wait(timeout=60) != 0  # terminated, not a clean exit
    standby.stop()


def test_a_failed_fine_tune_stops_the_standby(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_finetune.cli.demo import demo_config
    from phi_finetune.local import backend as local_backend
    from phi_finetune.session import FineTuneSession

    started: list[ServerStandby] = []
    original = local_backend.LocalBackend._start_standby

    def spy(self: local_backend.LocalBackend, ctx: object) -> None:
        original(self, ctx)  # type: ignore[arg-type]
        assert self._standby is not None
        started.append(self._standby)

    def fail(self: object, ctx: object) -> None:
        raise RuntimeError("training broke")

    monkeypatch.setattr(local_backend.LocalBackend, "_start_standby", spy)
    monkeypatch.setattr(local_backend.LocalBackend, "_fine_tune", fail)
    session = FineTuneSession.from_config(demo_config(tmp_path, max_steps=2))
    with pytest.raises(Exception, match="training broke"):
        session.fine_tune()
    assert started and started[0].pid is None and not started[0].alive  # stopped and reaped
