"""docs/deploy.md's "Adding an ERP connection", followed step by step on a copy of deploy/.

The steps' commands and snippets are read from the document itself where they are literal (the
routing snippet, the copy-and-rename commands), so the test fails when the text and the layout
drift apart; the rendered manifests of both overlays validate against the Kubernetes schemas.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ledgerflow.app.config_check import check_config
from ledgerflow.core.settings import Routing, Settings
from tests.deploy.conftest import DEPLOY, REPO, of_kind, render

DOC = REPO / "docs" / "deploy.md"


def _section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Adding an ERP connection")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(section: str, language: str) -> list[str]:
    """Fenced blocks of ``language``, dedented (they sit inside a numbered list)."""
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^ *```", section, flags=re.S | re.M)
    return ["\n".join(line[len(indent) :] for line in body.splitlines()) + "\n" for indent, body in blocks]


def test_adding_a_connection_as_documented(tmp_path: Path) -> None:
    section = _section()
    repo = tmp_path / "repo"
    shutil.copytree(DEPLOY, repo / "deploy")
    base = repo / "deploy" / "base"

    # 1. The routing file gets the documented snippet, and the tenant feeds the connection.
    (snippet,) = _blocks(section, "yaml")
    added = yaml.safe_load(snippet)["connections"]
    (name,) = added
    routing_path = base / "app" / "config" / "routing.yaml"
    routing = yaml.safe_load(routing_path.read_text(encoding="utf-8"))
    routing["connections"].update(added)
    routing["tenants"]["acme"]["connections"].append(name)
    routing_path.write_text(yaml.safe_dump(routing), encoding="utf-8")

    # 2. The documented shell commands, run as written (from the repository root).
    commands = [
        line for block in _blocks(section, "sh") for line in block.splitlines() if line.startswith(("cp ", "sed "))
    ]
    assert len(commands) == 4
    for command in commands:
        subprocess.run(command, shell=True, cwd=repo, check=True)

    # 3. List the folder in the app kustomization.
    erp = added[name]["erp"]
    app = base / "app" / "kustomization.yaml"
    text = app.read_text(encoding="utf-8")
    assert "  - ../fleets/xero\n" in text
    text = text.replace("  - ../fleets/xero\n", f"  - ../fleets/xero\n  - ../fleets/{erp}\n")
    # ... and its component mounting the credentials into the reference sync pod.
    component = "  - ../connections/xero-main/sync-reference\n"
    assert component in text
    app.write_text(text.replace(component, f"{component}  - ../connections/{name}/sync-reference\n"))

    # 4. The dev overlay's worked example: an env file and a secretGenerator entry.
    dev = repo / "deploy" / "overlays" / "dev"
    example = (dev / "connections" / "xero-main.env").read_text(encoding="utf-8")
    assert "replace-with-" in example
    (dev / "connections" / f"{name}.env").write_text(
        "account_id=replace-with-account\nconsumer_key=replace-with-key\nconsumer_secret=replace-with-secret\n"
        "token_id=replace-with-token\ntoken_secret=replace-with-token-secret\n"
    )
    overlay = yaml.safe_load((dev / "kustomization.yaml").read_text(encoding="utf-8"))
    overlay["secretGenerator"].append(
        {
            "name": f"ledgerflow-connection-{name}",
            "namespace": "ledgerflow",
            "envs": [f"connections/{name}.env"],
            "options": {"disableNameSuffixHash": True},
        }
    )
    (dev / "kustomization.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")

    # 5. The checks the document names: config check, then the rendered manifests.
    report = check_config(Settings(routing_file=routing_path))
    assert report.ok, report.problems
    assert report.plan["services"]["connectors"][name]["credentials_dir"] == added[name]["credentials_dir"]

    validate = pytest.importorskip("kubernetes_validate").validate
    for overlay_name in ("prod", "dev"):
        docs = render(repo / "deploy" / "overlays" / overlay_name)
        for resource in docs:
            if resource["apiVersion"].startswith(("apps/", "v1", "policy/", "autoscaling/")):
                validate(resource, "1.29.0", strict=True)
        deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
        new = deployments[f"ledgerflow-connector-{erp}"]
        container = new["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["connector", "--erp", erp]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert added[name]["credentials_dir"] in mounts
        assert f"ledgerflow-connection-{name}" in yaml.safe_dump(new["spec"]["template"]["spec"]["volumes"])
        assert "ledgerflow-connector-xero" in deployments
        assert "ledgerflow-connection-xero-main" in yaml.safe_dump(deployments["ledgerflow-connector-xero"])
        assert "ledgerflow-connection-xero-main" not in yaml.safe_dump(new)
        sync = deployments["ledgerflow-sync-reference"]["spec"]["template"]["spec"]
        (volume,) = [v["name"] for v in sync["volumes"] if f"ledgerflow-connection-{name}" in yaml.safe_dump(v)]
        mounted = {m["name"]: m["mountPath"] for m in sync["containers"][0]["volumeMounts"]}
        assert mounted[volume] == added[name]["credentials_dir"]
        assert "/run/secrets/ledgerflow/connections/xero-main" in mounted.values()
        groups = {s["spec"]["triggers"][0]["metadata"]["consumerGroup"] for s in of_kind(docs, "ScaledObject")}
        assert {f"ledgerflow.connector.fleet.{erp}", "ledgerflow.connector.fleet.xero"} <= groups
        assert f"ledgerflow-connector-{erp}" in {p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")}
        (cm,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("ledgerflow-routing")]
        rendered = Routing.model_validate(yaml.safe_load(cm["data"]["routing.yaml"]))
        # Every other service loads the routing without the connection's folder mounted.
        assert not rendered.connections[name].credentials_mounted
    secrets = {s["metadata"]["name"] for s in of_kind(render(dev), "Secret")}
    assert f"ledgerflow-connection-{name}" in secrets
