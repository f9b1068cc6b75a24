"""The import rules of the one ``ledgerflow`` namespace, enforced with import-linter.

Composition (:mod:`ledgerflow.app`) on top; the services (ingress, transformers, connectors,
audit) beside each other and independent; the plumbing (:mod:`ledgerflow.core`) below them; the
wire contract (:mod:`ledgerflow.contracts`) at the bottom. The contract lives in
``pyproject.toml`` (``[tool.importlinter]``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("ingress", "transformers", "connectors", "audit", "contracts")


def test_the_graph_sees_every_service_under_the_namespace() -> None:
    graph = grimp.build_graph("ledgerflow")
    for name in ("ledgerflow.app.cli", "ledgerflow.core.settings", *(f"ledgerflow.{s}" for s in SERVICES)):
        assert name in graph.modules, name
    assert "ledgerflow.connectors.runtime" in graph.modules
    assert "ledgerflow.transformers.worker" in graph.modules
    # The layering is real: the composition imports every service.
    for service in ("ingress", "transformers", "connectors", "audit"):
        assert graph.chain_exists(importer="ledgerflow.app", imported=f"ledgerflow.{service}", as_packages=True)


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter (dev extra) is not installed")
    proc = subprocess.run(
        [lint, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_no_top_level_service_names_are_importable() -> None:
    """The wheel and the editable install expose ``ledgerflow`` only (``transformers`` is Hugging Face's)."""
    code = (
        "import importlib.util, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        f"print([n for n in {SERVICES!r} if importlib.util.find_spec(n) is not None])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_every_package_folder_is_in_the_wheel() -> None:
    """``[tool.setuptools] packages`` lists every folder with an ``__init__.py`` under the namespace."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {"ledgerflow": REPO / "ledgerflow", **{k: REPO / v for k, v in config["package-dir"].items()}}
    found: set[str] = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if rel.parts and rel.parts[0] in SERVICES and name == "ledgerflow":
                continue  # the symlinks that give type checkers the namespace's paths
            found.add(".".join((name, *rel.parts)))
    assert found - listed == set(), f"package folders missing from [tool.setuptools] packages: {found - listed}"
