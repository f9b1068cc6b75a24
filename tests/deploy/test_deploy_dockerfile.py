"""deploy/Dockerfile, checked offline (no Docker engine here): parsed with BuildKit's own parser
(the ``dockerfile`` package), and the wheel built from exactly the files it copies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ledgerflow.core.settings import Settings
from tests.deploy.conftest import DEPLOY, REPO

dockerfile = pytest.importorskip("dockerfile", reason="dockerfile (dev extra) is BuildKit's Dockerfile parser")

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE = DEPLOY / "Dockerfile.dockerignore"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _stages() -> list[list[Any]]:
    stages: list[list[Any]] = []
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(cmd)
    return stages


def _args() -> dict[str, str]:
    args = {}
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "FROM":
            break
        if cmd.cmd == "ARG":
            name, _, default = cmd.value[0].partition("=")
            args[name] = default
    return args


def _copied_sources() -> list[str]:
    """Paths the build stage copies from the build context (not from other stages)."""
    build = _stages()[0]
    return [
        src.rstrip("/")
        for c in build
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    ]


def test_multi_stage_on_python_311_slim() -> None:
    stages = _stages()
    assert len(stages) >= 2
    args = _args()
    for stage in stages:
        image = stage[0].value[0]
        for name, default in args.items():
            image = image.replace(f"${{{name}}}", default)
        assert image.startswith("python:3.11-slim"), image
    runtime = stages[-1]
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in runtime), "runtime copies the built venv"
    assert not any(c.cmd == "ADD" for stage in stages for c in stage), "ADD fetches URLs and unpacks; use COPY"


def test_runtime_is_non_root_and_read_only_friendly() -> None:
    runtime = _stages()[-1]
    (user,) = [c.value[0] for c in runtime if c.cmd == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "numeric uid so runAsNonRoot can verify it"
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    # Matches the pods' runAsUser.
    for deployment in (DEPLOY / "base").rglob("deployment.yaml"):
        assert f"runAsUser: {uid}" in deployment.read_text(encoding="utf-8"), deployment
    env: dict[str, str] = {}
    for c in runtime:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes on a read-only root filesystem"
    assert env["HOME"].startswith("/tmp")
    assert env["TMPDIR"].startswith("/tmp")
    build = " ".join(c.value[0] for c in _stages()[0] if c.cmd == "RUN")
    assert "compileall" in build, "byte code compiled at build time"


def test_entrypoint_is_the_cli() -> None:
    runtime = _stages()[-1]
    (entrypoint,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json, "exec form, so SIGTERM reaches ledgerflow"
    assert list(entrypoint.value) == ["ledgerflow"]
    assert _pyproject()["project"]["scripts"]["ledgerflow"] == "ledgerflow.app.cli:app"
    exposed = {int(p) for c in runtime if c.cmd == "EXPOSE" for p in c.value}
    settings = Settings()
    assert {settings.ingress_port, settings.metrics_port} <= exposed


def test_copies_what_the_wheel_needs() -> None:
    pyproject = _pyproject()
    needed = {
        "pyproject.toml",
        pyproject["project"]["readme"],
        "ledgerflow",
        *pyproject["tool"]["setuptools"]["package-dir"].values(),
    }
    copied = set(_copied_sources())
    assert needed <= copied, f"not copied: {needed - copied}"
    assert all((REPO / p).exists() for p in copied)
    # The Dockerfile-specific ignore file lets exactly those through.
    lines = [
        ln.strip() for ln in IGNORE.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert copied <= allowed
    install = [c.value[0] for c in _stages()[0] if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert install
    # every ERP connector extra, so one image serves every connection
    assert ' install --no-compile ".[all]" ' in f"{install[0]} "


def test_wheel_builds_from_the_copied_files(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="setuptools (the build backend, in the dev extra) builds the wheel")
    context = tmp_path / "context"
    for src in _copied_sources():
        source = REPO / src
        if source.is_dir():
            shutil.copytree(source, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(source, context / src)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("ledgerflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "ledgerflow = ledgerflow.app.cli:app" in zf.read(entry_points).decode()
    for package in _pyproject()["tool"]["setuptools"]["packages"]:
        if not package.endswith("migrations") and not package.endswith("versions"):
            assert f"{package.replace('.', '/')}/__init__.py" in names, package
    assert "ledgerflow/app/cli.py" in names
    assert "ledgerflow/audit/migrations/env.py" in names
    # The console ships everything it serves (no CDN): templates, htmx and the stylesheet.
    for asset in ("static/htmx.min.js", "static/console.css", "templates/base.html", "templates/record.html"):
        assert f"ledgerflow/audit/{asset}" in names, asset
    assert not any(n.split("/")[0] in {"ingress", "transformers", "connectors", "contracts", "audit"} for n in names)
