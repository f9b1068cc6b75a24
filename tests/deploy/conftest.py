"""Fixtures for the deployment tests: rendered Kustomize overlays, parsed once per session.

``kubectl kustomize`` renders offline (no cluster); the tests skip with a clear reason when
``kubectl`` is not on the machine or its built-in kustomize is older than v5 (Debian bookworm's
``kubernetes-client`` 1.20 is: use the Kubernetes project's ``kubectl`` package, 1.27 or newer).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod")

Resource = dict[str, Any]


MIN_KUSTOMIZE = (5, 0)


@cache
def _kubectl() -> tuple[str | None, str]:
    """Path of a usable kubectl, or None and why not."""
    path = shutil.which("kubectl")
    if path is None:
        return None, "kubectl not installed: `apt-get install -y kubectl` (Kubernetes package, >= 1.27) renders offline"
    proc = subprocess.run(
        [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30, check=False
    )
    version = json.loads(proc.stdout or "{}").get("kustomizeVersion", "") if proc.returncode == 0 else ""
    found = re.match(r"v(\d+)\.(\d+)", version)
    if not found or (int(found.group(1)), int(found.group(2))) < MIN_KUSTOMIZE:
        return None, f"kubectl at {path} has kustomize {version or 'unknown'}; the overlays need kustomize >= v5"
    return path, ""


def kubectl() -> str:
    path, reason = _kubectl()
    if path is None:
        pytest.skip(reason)
    return path


def render(target: Path) -> list[Resource]:
    """Run ``kubectl kustomize`` on ``target``; fail the test with kustomize's message on error."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, f"kubectl kustomize {target} rendered nothing"
    return docs


_cache: dict[str, list[Resource]] = {}


def rendered_overlay(name: str) -> list[Resource]:
    if name not in _cache:
        _cache[name] = render(DEPLOY / "overlays" / name)
    return _cache[name]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def resources(overlay: str) -> list[Resource]:
    return rendered_overlay(overlay)


@pytest.fixture
def prod() -> list[Resource]:
    return rendered_overlay("prod")


def of_kind(docs: list[Resource], kind: str) -> list[Resource]:
    return [d for d in docs if d["kind"] == kind]


def by_name(docs: list[Resource], kind: str) -> dict[str, Resource]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def one(docs: list[Resource], kind: str, name: str) -> Resource:
    found = by_name(docs, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]
