"""The CLI skeleton: version, help, exit codes, error formatting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from phi_finetune import __version__
from phi_finetune.cli import main as cli_main
from phi_finetune.errors import ConfigurationError


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_command_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main([]) == 0
    out = capsys.readouterr().out
    for group in ("data", "plan", "run", "status", "resume", "teardown", "invoke", "demo", "serve"):
        assert group in out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["no-such-command"])
    assert exc.value.code == 2


def test_library_error_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> int:
        raise ConfigurationError("bad value for data.split_pc; use a number in (0, 100]")

    parser = cli_main.build_parser()
    real_parse = parser.parse_args

    def parse(argv: object = None) -> object:
        ns = real_parse(["status"])
        ns.handler = boom
        return ns

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    assert cli_main.main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: bad value for data.split_pc")
    assert "Traceback" not in err


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "phi_finetune.cli.main", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0
    assert __version__ in out.stdout


def test_main_in_process_leaves_logging_and_warnings_as_it_found_them(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging
    import os
    import warnings

    names = ("azure", "urllib3", "mlflow")
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = list(warnings.filters)
    env = os.environ.get("MLFLOW_LOGGING_LEVEL")
    try:
        assert cli_main.main(["status", "--state-dir", str(tmp_path)]) == 0
        assert [logging.getLogger(n).level for n in names] == [logging.DEBUG] * len(names)
        assert root.handlers == handlers and root.level == level
        assert warnings.filters == filters
        assert os.environ.get("MLFLOW_LOGGING_LEVEL") == env
    finally:
        for name in names:
            logging.getLogger(name).setLevel(logging.NOTSET)
