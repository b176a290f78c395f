"""Developer sessions: ``nox -s tests`` (default), lint, typecheck, docs, build, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
# torch==2.13.0 is the CPU wheel on this kind of machine; installed first (and held by the
# constraints file) so no dependency pulls a multi-GB CUDA build.
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _install(session: nox.Session, *extras: str, editable: bool = True) -> None:
    session.install(*CONSTRAINTS, "torch==2.13.0")
    target = f".[{','.join(extras)}]" if extras else "."
    if editable:
        session.install(*CONSTRAINTS, "-e", target)
    else:
        session.install(*CONSTRAINTS, target)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (network blocked, local backend and fake Azure ML service)."""
    _install(session, "local", "dev")
    session.run("pip", "check")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "local", "dev")
    session.run("mypy", "--strict", "phi_finetune")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors."""
    _install(session, "local", "docs")
    out = ROOT / "docs" / "_build" / "html"
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(out))


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Wheel + sdist, twine check, then install the wheel in a clean venv and use it."""
    session.install("build==1.6.1", "twine==7.0.0")
    dist = ROOT / "dist"
    for old in dist.glob("*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *[str(p) for p in dist.glob("*")])
    wheel = next(dist.glob("*.whl"))
    venv = Path(session.create_tmp()).resolve() / "wheel-venv"
    session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    pip = str(bindir / "pip")
    session.run(pip, "install", "-q", *CONSTRAINTS, "torch==2.13.0", external=True)
    session.run(pip, "install", "-q", *CONSTRAINTS, f"{wheel}[local]", external=True)
    session.run(str(bindir / "phi-finetune"), "--version", external=True)
    workdir = Path(session.create_tmp()).resolve() / "quickstart"
    workdir.mkdir(parents=True, exist_ok=True)
    # Run the quickstart from outside the checkout so the installed wheel is what runs.
    session.chdir(str(workdir))
    session.run(
        str(bindir / "python"),
        str(ROOT / "examples" / "quickstart_local.py"),
        external=True,
        env={"PHI_FINETUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"},
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The whole workflow on the local backend, offline: tiny model, demo data."""
    _install(session, "local")
    workdir = session.posargs[0] if session.posargs else str(ROOT / "phi-finetune-demo")
    session.run("phi-finetune", "demo", "--workdir", workdir, env={"HF_HUB_OFFLINE": "1"})
